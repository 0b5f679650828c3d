"""``python -m expt.kb``: the knowledge-base builder's command line (what ``make kb`` runs).

It builds (:mod:`expt.kb.build`), or with ``--describe`` checks the datasets and rewrites DATASETS.md
(:mod:`expt.kb.describe`), or with ``--estimate`` projects the build's wall time (:mod:`expt.kb.estimate`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from expt.kb import build as kb
from expt.kb.describe import describe
from expt.kb.estimate import estimate
from expt.kb.protocol import BUILD, DATASETS, PORTFOLIO, Protocol, load_datasets, load_portfolio
from expt.kb.shards import SHARDS


def main(argv: list[str] | None = None) -> None:
    from expt.grid.workers import cores

    parser = argparse.ArgumentParser(prog="python -m expt.kb", description=kb.__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--portfolio", type=Path, default=PORTFOLIO)
    parser.add_argument("--build", type=Path, default=BUILD, help="working folder (records, done list, samples)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the gzipped records (default: expt/kb/records.jsonl.gz)")
    parser.add_argument("--workers", type=int, default=cores(), help="worker processes (default: one per core)")
    parser.add_argument("--cluster", metavar="ADDRESS", default=None,
                        help="run the jobs on this Dask scheduler's workers (default $EXPT_CLUSTER); the --build "
                             "folder must be shared with them at the same path")
    parser.add_argument("--folds", type=int, default=Protocol.folds, help="CV folds of every cell (default 3)")
    parser.add_argument("--max-rows", type=int, default=Protocol.max_rows,
                        help="rows per dataset; a larger one is subsampled, seeded (default 3000)")
    parser.add_argument("--seed", type=int, default=Protocol.seed, help="the subsample's and the folds' seed")
    parser.add_argument("--repeats", type=int, default=Protocol.repeats, help="CV repeats of every cell (default 2)")
    parser.add_argument("--stop-after", type=float, metavar="MINUTES", default=None,
                        help="start no cell after this many minutes; run again to continue (make kb: 120)")
    parser.add_argument("--shards", type=Path, default=None,
                        help="one file of records per finished dataset, imported when a build starts (default: "
                             "recipes/kb/shards/ for the default --build folder, none for any other)")
    parser.add_argument("--commit", action="store_true",
                        help="git-commit each shard as its dataset finishes (that file alone)")
    parser.add_argument("--only", action="append", metavar="DATASET", help="only these datasets (repeatable)")
    parser.add_argument("--configs", action="append", metavar="CONFIG", help="only these configurations")
    parser.add_argument("--describe", action="store_true",
                        help="check every dataset (load, subsample, one cheap cell) and rewrite DATASETS.md")
    parser.add_argument("--estimate", type=int, metavar="CELLS", default=None,
                        help="time a stratified random sample of CELLS cells on one thread and project the build")
    args = parser.parse_args(argv)
    protocol = Protocol(folds=args.folds, max_rows=args.max_rows, seed=args.seed, repeats=args.repeats)
    if args.shards is None and args.build == BUILD:
        args.shards = SHARDS
    datasets, portfolio = load_datasets(args.datasets), load_portfolio(args.portfolio)
    if args.only:
        unknown = set(args.only) - {e["name"] for e in datasets}
        if unknown:
            raise SystemExit(f"--only: no dataset named {', '.join(sorted(unknown))} in {args.datasets}")
        datasets = [e for e in datasets if e["name"] in args.only]
    if args.configs:
        unknown = set(args.configs) - {c["name"] for c in portfolio}
        if unknown:
            raise SystemExit(f"--configs: no configuration named {', '.join(sorted(unknown))} in {args.portfolio}")
        portfolio = [c for c in portfolio if c["name"] in args.configs]
    if args.estimate is not None:
        estimate(datasets, portfolio, protocol, args.estimate, args.build, max(1, args.workers))
    if args.describe:
        describe(datasets, portfolio, protocol, args.datasets, args.build)
    if args.describe or args.estimate is not None:
        return
    kb.build(args, datasets, portfolio, protocol)


if __name__ == "__main__":
    main()
