"""``expt metafeatures`` and ``expt recommend``: commands on the records ."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from expt.cli.common import Debug, Group, JsonOut, user_errors

group = Group()

DatasetFile = Annotated[Path | None, typer.Argument(help="A dataset.yaml: the keys of a data config (path/id/item, "
                                                 "target, task).", show_default=False)]


@group.command()
def metafeatures(
    dataset: DatasetFile = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                      help="Seed of the subsample and the landmarkers.")] = 0,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """Print a dataset's meta-features (what `expt recommend` compares datasets by)."""
    with user_errors(debug):
        from expt.core.errors import UsageError

        if dataset is None:
            raise UsageError("pass a dataset.yaml: expt metafeatures dataset.yaml")
        from expt.meta.advise import load
        from expt.meta.features import dataset_features

        _spec, data = load(str(dataset))
        features = dataset_features(data, seed=seed)
        if json_out:
            import json

            typer.echo(json.dumps({"dataset": data.name, "task": data.task, "fingerprint": data.fingerprint,
                                   "meta_features": features}, indent=2))
            return
        from expt.cli.render import print_metafeatures

        print_metafeatures(data, features)


@group.command()
def recommend(
    dataset: DatasetFile = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many configurations to recommend.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", help="Write each as DIR/<rank>.yaml, runnable with "
                                             "expt train conf=... and usable as sweep --warm-start DIR.")] = None,
    records: Annotated[list[str] | None, typer.Option("--records", help="Records to learn from: a JSON-lines "
                                                      "file, a folder of them or an MLflow tracking URI (repeat "
                                                      "for several). Default: ./records.jsonl if present.")] = None,
    no_kb: Annotated[bool, typer.Option("--no-kb", help="Leave out the knowledge base shipped with expt.")] = False,
    method: Annotated[str, typer.Option("--method", help="knn (nearest datasets by meta-features) or portfolio "
                                        "(best on average).")] = "knn",
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Leave-one-dataset-out quality of every recommender "
                                           "and the baselines, on the records.")] = False,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                      help="Seed of the meta-features and of the random baseline.")] = 0,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """Recommend configurations for a dataset from the records of earlier runs, with the evidence."""
    with user_errors(debug):
        from expt.core.errors import UsageError
        from expt.meta.recommend import RANKERS

        if method not in RANKERS:
            raise UsageError(f"--method {method!r} is not a recommender; use {' or '.join(RANKERS)}")
        if evaluate == (dataset is not None):
            raise UsageError("pass a dataset.yaml to recommend for, or --evaluate (not both)")
        if out is not None and out.exists() and not out.is_dir():
            raise UsageError(f"--out {str(out)!r} is a file; pass a folder for the recommended configs")
        from expt.meta.recommend import check_records
        from expt.meta.records import read_records

        loaded = None
        if dataset is not None:  # the user's own file first: its mistakes are named before anything else
            from expt.meta.advise import load

            loaded = load(str(dataset))
        sources = list(records) if records else [p for p in ("records.jsonl",) if Path(p).is_file()]
        found = read_records(sources, kb=not no_kb)
        check_records(found)
        if loaded is None:
            _evaluate(found, seed, json_out)
        else:
            _recommend(found, loaded, top=top, out=out, method=method, seed=seed, json_out=json_out)


def _evaluate(found: list, seed: int, json_out: bool) -> None:
    from expt.meta.recommend import DEFAULT_METHOD, build_table, evaluate, rf_default_key

    evaluations = []
    for task in sorted({r["dataset"]["task"] for r in found}):
        table = build_table(found, task)
        evaluations.append(evaluate(table, rf_default_key=rf_default_key(task), seed=seed))
    if json_out:
        import json

        typer.echo(json.dumps([vars(e) for e in evaluations], indent=2))
        return
    from expt.cli.render import print_evaluation

    print_evaluation(evaluations, DEFAULT_METHOD)


def _recommend(found: list, loaded: tuple, *, top: int, out: Path | None, method: str, seed: int,
               json_out: bool) -> None:
    from expt.core.errors import UsageError
    from expt.meta.advise import recommend, write_config
    from expt.meta.features import dataset_features
    from expt.meta.recommend import build_table, check_records

    spec, data = loaded
    check_records(found, data.task)
    table = build_table(found, data.task)
    if len(table.datasets) < 2:
        raise UsageError(f"records of {len(table.datasets)} {data.task} dataset(s) only: recommending needs "
                         "at least 2; run more experiments or pass --records")
    recs = recommend(table, dataset_features(data, seed=seed), method=method, top=top)
    written = [write_config(r, spec, out, method=method, dataset_name=data.name) for r in recs] if out else []
    if json_out:
        import json

        typer.echo(json.dumps({"dataset": data.name, "task": data.task, "method": method,
                               "recommendations": [{**vars(r), "config": r.config} for r in recs],
                               "written": [str(p) for p in written]}, indent=2, default=str))
        return
    from expt.cli.render import print_recommendations

    print_recommendations(recs, dataset=data, method=method, table=table, written=written)
