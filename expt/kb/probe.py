"""``expt recommend DATASET --probe K``: try K recommended configurations on the user's data, each picked given the
scores so far, and keep the best.

A recommendation from the records alone is noise-limited (the evaluation in docs/guides/recommend.md): what
pays off is trying a few
on the data itself. Each candidate is an ordinary ``expt train`` run (cross-validated under the user's learner,
preprocessing inside the folds, its record appended) made by the grid's machinery: a one-cell plan
(:func:`expt.grid.plan.plan_grid`, so that every input check is the grid's), run by :func:`expt.grid.cells.run_cell`
under one ``probe-<id>`` run, compared at the end by :func:`expt.grid.runner.close_grid` (mean ± sd, the corrected
t-test against the best on the same folds), with the grid's single writer. What the grid cannot do is adapt: its
cells are fixed before the first runs, a probe's next cell depends on the last one's score
(:func:`expt.meta.adaptive.next_candidate`), so the loop and its state are here.

Resume is the grid's rule: a candidate is done when MLflow holds its FINISHED run. The state file
(``outputs/probes/<id>/probe.json``) holds what MLflow cannot: the options, the query's meta-features and the
candidates in the order they were picked, each written before its run starts. So ``--resume`` runs again the
candidate a kill interrupted (its run ended KILLED) and then picks as the probe would have: nothing runs twice.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import UsageError
from expt.grid.runner import new_grid_id
from expt.grid.spec import sweep_overrides
from expt.kb.probe_loop import (
    OUTPUTS,
    STATE,
    Candidate,
    Probe,
    ProbeOptions,
    close_probe,
    end_probe,
    load_state,
    open_probe,
    probe_dir,
    reopen_probe,
    write_config,
)

if TYPE_CHECKING:
    from expt.grid.plan import GridPlan
    from expt.grid.runner import GridProgress
    from expt.grid.stats import Comparison
    from expt.train.writer import Writer

__all__ = ["ProbeOptions", "ProbeOutcome", "check_overrides", "new_probe_id", "probe_dir", "resume_probe",
           "start_probe"]

CAVEAT = ("The winner's CV score is optimistic: it is the best of {n} measured on the same folds, so part of its lead "
          "is luck. For an unbiased estimate of what {model} reaches on this data, run the sweep above: its outer "
          "folds search {model} afresh and test on rows their search never saw (the probe's picks, chosen on every "
          "row, seed only its final search, as its warning says).")
OWN_KEYS = ("data", "model", "conf", "search", "learner.metric")  # set by the probe (or its --metric, --family)


@dataclass
class ProbeOutcome:
    probe_id: str
    run_id: str
    uri: str
    dataset: str
    task: str
    metric: str
    k: int
    ranking: list[Candidate]  # done candidates best first, then the failed ones
    not_started: int = 0  # candidates the budget left out
    next_pick: str | None = None  # the first of them
    notes: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # the user's, masked: they go into the printed commands
    spent_seconds: float = 0.0
    ran: int = 0  # candidates run by this invocation
    records: str | None = None  # where the candidates' records were appended
    train_command: str | None = None  # the winner, trained as is
    sweep_command: str | None = None  # a nested CV of its model, warm-started from the ranked configs
    caveat: str | None = None

    @property
    def winner(self) -> Candidate | None:
        return next((c for c in self.ranking if c.status == "done"), None)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for c in out["ranking"]:
            c.pop("entry", None)
        return out


def check_overrides(overrides: list[str]) -> None:
    """The probe sets the data, the model and the metric; a sweep would be a grid. One line naming the fix."""
    for o in overrides:
        key = o.partition("=")[0].lstrip("+~")
        own = next((k for k in OWN_KEYS if key == k or key.startswith(k + ".")), None)
        if own is not None:
            fix = {"data": "the dataset.yaml names the data", "learner.metric": "pass --metric",
                   "model": "restrict the candidates with --family", "conf": "pass the dataset.yaml",
                   "search": "a probe has no search space"}[own.split(".")[0] if own != "learner.metric" else own]
            raise UsageError(f"{o!r}: the probe sets {own} itself ({fix}); drop it")
    swept = sweep_overrides(overrides)
    if swept:
        raise UsageError(f"{swept[0]!r} lists several values; a probe's overrides set one value each")


def new_probe_id() -> str:
    return new_grid_id()


# --- a new probe, a resumed one ---------------------------------------------------------------------------------

def start_probe(options: ProbeOptions, progress: GridProgress | None = None,
                probe_id: str | None = None) -> ProbeOutcome:
    """Check everything (the dataset, the records, the user's overrides on the first candidate), then open the
    probe's run and run the candidates. Bad input leaves nothing: no run, no state, no file."""
    import shutil

    from expt.meta.advise import load
    from expt.meta.dataset_features import dataset_features
    from expt.meta.records import read_records
    from expt.train.process import start_writer

    check_overrides(options.overrides)
    out = Path(options.out) if options.out else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {options.out!r} is not an empty folder; pass a new one for the probe's configs")
    writer = start_writer(evaluates=True)  # first: MLflow's imports overlap the table and the meta-features
    try:
        spec, data = load(options.dataset)
        probe = Probe(probe_id or new_probe_id(), options, spec, data)
        probe.learn(read_records(options.records, kb=options.kb))
        probe.features = dataset_features(data, seed=options.seed)
        j = probe.pick()
        if j is None:
            raise UsageError("no configuration of the records is left to try; loosen --family/--max-fit-seconds")
        try:
            first = probe.plan(probe.add(j))  # the user's overrides checked here, before any run exists
        except BaseException:
            shutil.rmtree(probe_dir(probe.id), ignore_errors=True)
            for folder in (OUTPUTS, OUTPUTS.parent):  # made for it alone: gone with it
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        tracking = first.tracking
        probe.tracking = {"uri": tracking.uri, "experiment": tracking.experiment, "sqlite_wal": tracking.sqlite_wal,
                          "records": tracking.records}
        if options.cluster is not None:
            from expt.grid.runner import check_store_and_cluster

            check_store_and_cluster(tracking.uri, options.cluster, [])
        writer.configure(tracking.uri, tracking.experiment, tracking.sqlite_wal)
        probe.run_id = writer.on_store(open_probe, _head(probe))
        probe.save()
        return _drive(probe, writer, progress, first)
    finally:
        writer.close()
        _disconnect(options.cluster)


def _disconnect(cluster: str | None) -> None:
    if cluster is not None:
        from expt.grid.cluster import disconnect

        disconnect(cluster)


def resume_probe(probe_id: str, progress: GridProgress | None = None, cluster: str | None = None) -> ProbeOutcome:
    """The probe as it stopped: finished candidates kept (MLflow says which), the interrupted one run again, then
    the picks go on with the same options, records and meta-features (on ``cluster`` if given, else where it
    ran)."""
    from expt.meta.advise import load
    from expt.meta.records import read_records
    from expt.tracking.uri import with_credentials
    from expt.train.process import start_writer

    state = load_state(probe_id)
    options = ProbeOptions(**state["options"])
    if cluster is not None:
        options.cluster = cluster
    spec, data = load(options.dataset)
    if data.fingerprint != state["fingerprint"]:
        raise UsageError(f"the data of probe {probe_id} changed since it started ({options.dataset}); its "
                         "candidates would not compare: start a new probe")
    probe = Probe(probe_id, options, spec, data)
    probe.run_id, probe.features, probe.spent = state["run_id"], state["features"], state["spent_seconds"]
    probe.candidates = [Candidate(**c) for c in state["candidates"]]
    probe.tracking = state["tracking"]
    if options.cluster is not None:
        from expt.grid.runner import check_store_and_cluster

        check_store_and_cluster(with_credentials(probe.tracking["uri"]), options.cluster, [])
    writer = start_writer(evaluates=True)
    try:
        writer.configure(with_credentials(probe.tracking["uri"]), probe.tracking["experiment"],
                         probe.tracking["sqlite_wal"])
        done, runs = writer.on_store(reopen_probe, probe.run_id)
        try:
            found = read_records(options.records, kb=options.kb)
            probe.learn([r for r in found if (r.get("source") or {}).get("run_id") not in runs])
        except BaseException:
            writer.on_store(end_probe, probe.run_id, "KILLED")
            raise
        for cand in probe.candidates:
            metrics = done.get(f"candidate={cand.n}")
            if metrics is not None:  # its score from MLflow: a kill may have come before the state had it
                metric = probe.table.metric
                cand.status, cand.score, cand.sd = "done", metrics[f"{metric}_mean"], metrics[f"{metric}_std"]
            elif cand.status != "failed":
                cand.status, cand.score, cand.sd = "pending", None, None
        return _drive(probe, writer, progress, None)
    finally:
        writer.close()
        _disconnect(options.cluster)


def _head(probe: Probe) -> dict[str, Any]:
    o = probe.options
    params = {"probe.k": o.k, "probe.budget_seconds": o.budget_seconds, "probe.dataset": o.dataset,
              "probe.metric": probe.table.metric, "probe.families": ",".join(o.families or []) or "all",
              "probe.max_fit_seconds": o.max_fit_seconds, "probe.records": ",".join(o.records) or "-",
              "probe.kb": o.kb, "probe.include_self": o.include_self, "probe.seed": o.seed,
              "probe.overrides": " ".join(probe.grid_spec()["overrides"])[:6000]}
    return {"probe_id": probe.id, "fingerprint": probe.data.fingerprint, "seed": o.seed,
            "dataset": probe.data.name, "params": params}


def _drive(probe: Probe, writer: Writer, progress: GridProgress | None, first: GridPlan | None) -> ProbeOutcome:
    """Run, compare, write the ranked configs; the probe's run ends KILLED on Ctrl-C, FAILED on an error."""
    try:
        probe.save()
        probe.run(writer, progress, first)
        writer.drain()
        probe.save()
        failed = [(f"candidate={c.n}", c.reason or "failed") for c in probe.candidates
                  if c.status == "failed" and c.entry is not None]
        state = (probe_dir(probe.id) / STATE).read_text()
        comparison, fits, uri = writer.on_store(close_probe, probe.run_id, probe.grid_spec(), state, failed)
    except KeyboardInterrupt:
        _quietly(writer, "KILLED", probe)
        raise
    except BaseException:
        _quietly(writer, "FAILED", probe)
        raise
    outcome = outcome_of(probe, uri, comparison, fits)
    probe.save()
    outcome.written = [str(p) for p in write_ranking(probe, outcome)]
    outcome.records = probe.tracking.get("records")
    winner = outcome.winner
    if winner is not None:
        import shlex

        best, extra = outcome.written[0], outcome.overrides
        outcome.train_command = shlex.join(["expt", "train", f"conf={best}", *extra])
        outcome.sweep_command = shlex.join(["expt", "sweep", f"conf={best}", "--warm-start", str(Path(best).parent),
                                            *extra])
        tried = sum(c.status == "done" for c in outcome.ranking)
        outcome.caveat = CAVEAT.format(n=tried, model=winner.label.split()[0])
    return outcome


def _quietly(writer: Writer, status: str, probe: Probe) -> None:
    """The probe's run ended on the way out of an error, best effort: the store may be what failed."""
    try:
        writer.on_store(end_probe, probe.run_id, status)
    except Exception:  # noqa: BLE001, S110 - the first error is the one the user sees
        pass
    probe.save()


def write_ranking(probe: Probe, outcome: ProbeOutcome) -> list[Path]:
    """The candidates that ran, best first, as ``1.yaml``, ``2.yaml``...: ``expt train conf=`` runs each, and the
    folder is a sweep's ``--warm-start``."""
    folder = Path(probe.options.out) if probe.options.out else probe_dir(probe.id) / "best"
    done = [c for c in outcome.ranking if c.status == "done"]
    paths = []
    for rank, c in enumerate(done, 1):
        line = (f"# Probe {probe.id} (`expt recommend --probe`) on {probe.data.name}: rank {rank} of {len(done)} "
                f"(candidate {c.n}), CV {outcome.metric} {c.score:.4f} +- {c.sd or 0.0:.4f}, optimistic for the "
                "best of several; `expt sweep` estimates it without bias.")
        paths.append(write_config(c.column, probe.spec, probe.data, folder, rank, line, outcome.metric))
    return paths


def outcome_of(probe: Probe, uri: str, comparison: Comparison,
               fits: dict[str, tuple[str, float | None]]) -> ProbeOutcome:
    """The ranking from what MLflow holds (the comparison of the cells' fold runs), best first."""
    from expt.tracking.uri import mask_credentials

    for cand in probe.candidates:
        key = f"candidate={cand.n}"
        cell = comparison.cells.get((probe.data.name, f"#{cand.n} {cand.label}"))
        if key in fits and cell is not None and cell.status == "ok":
            cand.status, cand.score, cand.sd = "done", cell.mean, cell.std
            cand.run_id, cand.fit_seconds = fits[key]
            p = comparison.p_vs_best.get((cell.row, cell.column))
            cand.p_vs_best = None if p is None or math.isnan(p) else float(p)
    done = sorted((c for c in probe.candidates if c.status == "done"), key=lambda c: -(c.score or -math.inf))
    failed = [c for c in probe.candidates if c.status == "failed"]
    return ProbeOutcome(probe.id, probe.run_id, mask_credentials(uri), probe.data.name, probe.data.task,
                        probe.table.metric, probe.options.k, done + failed, probe.not_started, probe.next_pick,
                        probe.notes, [], [mask_credentials(o) for o in probe.options.overrides], probe.spent,
                        probe.ran)
