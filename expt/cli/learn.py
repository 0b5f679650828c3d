"""``expt metafeatures`` and ``expt recommend``: commands on the records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from expt.cli.common import WITH_OVERRIDES, Debug, Group, JsonOut, out_option, user_errors

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
        from expt.meta.dataset_features import dataset_features

        _spec, data = load(str(dataset))
        features = dataset_features(data, seed=seed)
        if json_out:
            import json

            typer.echo(json.dumps({"dataset": data.name, "task": data.task, "fingerprint": data.fingerprint,
                                   "meta_features": features}, indent=2))
            return
        from expt.cli.render import print_metafeatures

        print_metafeatures(data, features)


@group.command(**WITH_OVERRIDES, options_metavar="[OPTIONS] [OVERRIDES]...")
def recommend(
    ctx: typer.Context,
    dataset: DatasetFile = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many configurations to recommend (ridge, conditioned "
                                     "and portfolio: a complementary set, each chosen given the ones above it).")] = 5,
    out: Annotated[Path | None, out_option("Write each as DIR/<rank>.yaml, runnable with expt train conf=... and "
                                           "usable as sweep --warm-start DIR.")] = None,
    records: Annotated[list[str] | None, typer.Option("--records", help="Records to learn from: a JSON-lines "
                                                      "file, a folder of them or an MLflow tracking URI (repeat "
                                                      "for several). Default: ./records.jsonl if present.")] = None,
    no_kb: Annotated[bool, typer.Option("--no-kb", help="Leave out the knowledge base shipped with expt.")] = False,
    method: Annotated[str, typer.Option("--method", help="ridge (first pick by a regression of regret on the "
                                        "meta-features, or the single best where that does not help; then the "
                                        "greedy portfolio), conditioned (greedy portfolio over similar datasets), "
                                        "portfolio (static greedy portfolio), knn (nearest datasets by "
                                        "meta-features) or single-best (best on average).")] = "ridge",
    metric: Annotated[str | None, typer.Option("--metric", help="The metric to rank by, when the records have "
                                               "several for the task.")] = None,
    include_self: Annotated[bool, typer.Option("--include-self", help="Keep the dataset's own records (by "
                                               "fingerprint); a sweep then warm-starts only its final search "
                                               "from these configs.")] = False,
    family: Annotated[list[str] | None, typer.Option("--family", help="Only configurations of this model family "
                                                     "(repeat for several).")] = None,
    max_fit_seconds: Annotated[float | None, typer.Option("--max-fit-seconds", min=0, help="Only configurations "
                                                          "estimated to fit once on all this dataset's rows in at "
                                                          "most this many seconds. The estimate is linear in rows: "
                                                          "a record's seconds per fit x this dataset's rows / the "
                                                          "rows that fit trained on (the knowledge base's tables "
                                                          "are capped at 3,000 rows), the median over records.")
                                 ] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Leave-one-group-out quality of every recommender "
                                           "and the baselines on the records, with bootstrap intervals and a "
                                           "learning curve.")] = False,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                      help="Seed of the meta-features, the bootstrap and the learning curve.")] = 0,
    probe: Annotated[int | None, typer.Option("--probe", min=1, metavar="K", help="Try K configurations on this "
                                              "dataset, each picked given the scores so far: ordinary expt train "
                                              "runs under your learner (overrides after the options) under one "
                                              "probe run; prints their ranking and writes them, best first.")
                     ] = None,
    budget_seconds: Annotated[float | None, typer.Option("--budget-seconds", min=0, help="With --probe: start no "
                                                         "candidate after this many seconds.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", metavar="PROBE_ID", help="Continue a stopped probe: "
                                               "finished candidates are not run again.")] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", metavar="ADDRESS", help="With --probe: run each "
                                                "candidate on this Dask scheduler's workers (default "
                                                "$EXPT_CLUSTER).")] = None,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """Recommend configurations for a dataset from the records of earlier runs, with the evidence; or, with
    --probe K, try K of them on it."""
    with user_errors(debug):
        if probe is not None or budget_seconds is not None or resume is not None or ctx.args or cluster:
            from expt.cli.probe_render import probe_command

            probe_command(ctx)
            return
        from expt.core.errors import UsageError
        from expt.meta.rankers import METHODS

        if method not in METHODS:
            raise UsageError(f"--method {method!r} is not a recommender; use {', '.join(METHODS)}")
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
            _evaluate(found, metric=metric, seed=seed, json_out=json_out)
        else:
            _recommend(found, loaded, top=top, out=out, method=method, metric=metric, include_self=include_self,
                       families=family, max_fit_seconds=max_fit_seconds, seed=seed, json_out=json_out)


def _evaluate(found: list, *, metric: str | None, seed: int, json_out: bool) -> None:
    from expt.meta.evaluate import evaluate
    from expt.meta.rankers import DEFAULT_METHOD
    from expt.meta.recommend import build_table, rf_default_key

    evaluations = []
    for task in sorted({r["dataset"]["task"] for r in found}):
        table = build_table(found, task, metric=metric if metric is not None and any(
            r["metric"]["name"] == metric for r in found if r["dataset"]["task"] == task) else None)
        evaluations.append(evaluate(table, rf_key=rf_default_key(task), seed=seed))
    if json_out:
        import json

        typer.echo(json.dumps([vars(e) for e in evaluations], indent=2))
        return
    from expt.cli.evaluation_render import print_evaluation

    print_evaluation(evaluations, DEFAULT_METHOD)


def _recommend(found: list, loaded: tuple, *, top: int, out: Path | None, method: str, metric: str | None,
               include_self: bool, families: list[str] | None, max_fit_seconds: float | None, seed: int,
               json_out: bool) -> None:
    from expt.core.errors import UsageError
    from expt.meta.advise import constraints, recommend, write_config
    from expt.meta.dataset_features import dataset_features
    from expt.meta.recommend import build_table, check_records

    spec, data = loaded
    check_records(found, data.task)
    own = 0 if include_self else sum(r["dataset"]["fingerprint"] == data.fingerprint for r in found)
    table = build_table(found, data.task, metric=metric, exclude=() if include_self else (data.fingerprint,))
    if len(table.datasets) < 2:
        hint = " (its own records are left out: --include-self keeps them)" if own else ""
        raise UsageError(f"records of {len(table.datasets)} other {data.task} dataset(s) only{hint}: recommending "
                         "needs at least 2; run more experiments or pass --records")
    allowed, notes = constraints(table, families=families, max_fit_seconds=max_fit_seconds, n_rows=data.n_rows)
    if own:
        notes.insert(0, f"left out this dataset's own {own} record(s), so that the recommendations were not chosen "
                        "on the data they will be tested on (--include-self keeps them)")
    recs, ranked = recommend(table, dataset_features(data, seed=seed), method=method, top=top, allowed=allowed,
                             n_rows=data.n_rows)
    written = [write_config(r, spec, out, method=method, dataset=data, self_included=include_self)
               for r in recs] if out else []
    if json_out:
        import json

        typer.echo(json.dumps({"dataset": data.name, "task": data.task, "method": method, "metric": table.metric,
                               "params": ranked.params, "notes": notes,
                               "recommendations": [{**vars(r), "config": r.config} for r in recs],
                               "written": [str(p) for p in written]}, indent=2, default=str))
        return
    from expt.cli.render import print_recommendations

    print_recommendations(recs, dataset=data, method=method, table=table, written=written, params=ranked.params,
                          notes=notes)
