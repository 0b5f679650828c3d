"""``expt sweep``: nested cross-validation with Optuna, every outer fold and trial in MLflow.

The Optuna storage holds everything needed to continue: the resolved config, the
outer-fold manifest, one study per outer fold and one for the final search on all
data. Starting, joining (the same ``--sweep-id``) and resuming are one code path:
the plan is rebuilt from the stored config, stale trials are failed (resume only),
finished work is replayed to the MLflow sink (which skips what it already has),
and the workers take what budget is left.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expt.config import Composed, compose, logged_yaml
from expt.errors import ConfigError, ExptError, TrackingError, UsageError
from expt.nested import Engine, Unit, UnitResult, counts, fail_stale_trials, finalized, result_of
from expt.plan import SweepPlan, display_params, make_plan

OUTPUTS = Path("outputs") / "sweeps"
META_CONFIG, META_MANIFEST, META_FAMILIES = "expt.config", "expt.manifest_hash", "expt.family_models"


def new_sweep_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def default_storage(sweep_id: str) -> str:
    return str((OUTPUTS / sweep_id / "optuna.journal").resolve())


def open_storage(url: str) -> Any:
    """A journal file (a path, default) or any Optuna RDB URL (sqlite:///, postgresql://...)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    try:
        if "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(url))
        from expt.distributed import rdb_storage

        return rdb_storage(url)  # with heartbeats: a dead worker's trial is detected and re-run
    except ExptError:
        raise
    except Exception as exc:  # noqa: BLE001 - any driver error means the same to the user
        from expt.tracking import mask_credentials

        raise TrackingError(f"cannot open the Optuna storage {mask_credentials(url)!r}: "
                            f"{str(exc).splitlines()[0][:200]}; check --storage") from None


def _study(storage: Any, name: str, *, create: bool, sampler: Any = None, pruner: Any = None) -> Any:
    import optuna

    if create:
        return optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                   sampler=sampler, pruner=pruner)
    return optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)


def _exists(storage: Any, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


@dataclass
class Sweep:
    sweep_id: str
    storage_url: str
    plan: SweepPlan
    studies: dict[str, Any]
    choices: dict[str, str]


def attach(sweep_id: str, storage_url: str, *, composed: Composed | None = None, resume: bool = False,
           config_dir: str | None = None, worker: int = 0, check: Callable[[SweepPlan], None] | None = None) -> Sweep:
    """Create the sweep's studies, or load them and rebuild the plan from the stored config."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    journal = Path(storage_url) if "://" not in storage_url else None
    made = [p for p in (journal, *journal.parents) if not p.exists()] if journal else []  # innermost first
    storage = open_storage(storage_url)
    exists = _exists(storage, sweep_id)
    if resume and not exists:
        from expt.tracking import mask_credentials

        raise UsageError(f"no sweep {sweep_id!r} in the storage {mask_credentials(storage_url)}; check the id and "
                         "--storage")
    if exists:
        meta = _study(storage, sweep_id, create=False)
        stored = _from_stored(meta.user_attrs[META_CONFIG])
        if composed is not None and not resume and (
                _config_text(composed, make_plan(composed, config_dir=config_dir)) != meta.user_attrs[META_CONFIG]):
            raise ConfigError(f"sweep {sweep_id!r} already exists with another config; resume it with "
                              f"--resume {sweep_id}, or start a new one with another --sweep-id")
        composed = stored
        plan = make_plan(composed, family_models=meta.user_attrs.get(META_FAMILIES))
        if plan.manifest["hash"] != meta.user_attrs[META_MANIFEST]:
            raise UsageError(f"the data or folds of sweep {sweep_id!r} changed since it started (fold manifest "
                             "differs); restore the data or start a new sweep")
    else:
        assert composed is not None
        try:
            plan = make_plan(composed, config_dir=config_dir)
            if check is not None:
                check(plan)
        except BaseException:
            for path in made:  # a config refused before the sweep existed leaves no empty journal behind
                path.unlink() if path.is_file() else path.rmdir() if not any(path.iterdir()) else None
            raise
        meta = _study(storage, sweep_id, create=True)
        meta.set_user_attr(META_CONFIG, _config_text(composed, plan))
        meta.set_user_attr(META_MANIFEST, plan.manifest["hash"])
        meta.set_user_attr(META_FAMILIES, plan.family_models)
    studies = {}
    for unit in plan.units:
        existing = _exists(storage, f"{sweep_id}/{unit.key}")
        n_seen = len(_study(storage, f"{sweep_id}/{unit.key}", create=False).trials) if existing else 0
        studies[unit.key] = _study(storage, f"{sweep_id}/{unit.key}", create=True,
                                   sampler=_sampler(plan, unit, worker, n_seen), pruner=_pruner(plan))
    return Sweep(sweep_id, storage_url, plan, studies, composed.choices)


def _sampler(plan: SweepPlan, unit: Unit, worker: int, n_seen: int) -> Any:
    """Seeded per unit, per worker and per restart, so no two processes propose the same points."""
    from expt.search import make_sampler

    return make_sampler(plan.search["sampler"], plan.seed * 1_000_003 + unit.index * 1009 + worker * 101 + n_seen)


def _pruner(plan: SweepPlan) -> Any:
    from expt.search import make_pruner

    epochs = plan.epochs_per_fold
    if epochs is None:
        return make_pruner(plan.search["pruner"], plan.search["inner_folds"])
    return make_pruner(plan.search["pruner"], plan.search["inner_folds"] * epochs, warmup=min(5, epochs // 4))


def _config_text(composed: Composed, plan: SweepPlan) -> str:
    return logged_yaml(plan.values, composed.choices)


def _from_stored(text: str) -> Composed:
    """The stored config is untrusted input like any logged config: it goes through compose and the allow-list."""
    with tempfile.TemporaryDirectory(prefix="expt-sweep-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        return compose([f"conf={path}"])


def make_engine(sweep: Sweep, reporter: Any, on_progress: Callable[[], None] | None = None,
                keep_going: Callable[[], bool] = lambda: True) -> Engine:
    plan = sweep.plan

    def on_trial(unit: Unit, frozen: Any) -> None:
        reporter.trial(unit, frozen)
        if on_progress is not None:
            on_progress()

    def on_unit(unit: Unit, result: UnitResult) -> None:
        reporter.unit_done(unit, result, sweep.studies[unit.key])
        if on_progress is not None:
            on_progress()

    return Engine(units=plan.units, studies=sweep.studies, n_trials=plan.search["n_trials"],
                  max_failure_rate=plan.search["max_failure_rate"], objective=plan.objective, refit=plan.refit,
                  on_trial=on_trial, on_unit=on_unit, keep_going=keep_going)


def fail_stale(sweep: Sweep) -> list[tuple[Unit, Any]]:
    """--resume: every trial left RUNNING is a dead worker's (the user says none is at work)."""
    return [(u, t) for u in sweep.plan.units for t in fail_stale_trials(sweep.studies[u.key])]


def replay(sweep: Sweep, reporter: Any) -> None:
    """Send everything already in the storage to the sink; it logs only what MLflow lacks."""
    from optuna.trial import TrialState

    from expt.nested import SURPLUS

    for unit in sweep.plan.units:
        study = sweep.studies[unit.key]
        for t in study.get_trials(deepcopy=False):
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                    t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS)):
                reporter.trial(unit, t)
        stored = result_of(study)
        if stored is not None:
            # The final model may have died with the process before the sink logged it; refitting is
            # deterministic, and the sink drops it again if the final run already ended with it.
            model = None
            if unit.test is None and sweep.plan.values["tracking"]["log_model"]:
                model, _ = sweep.plan.refit(stored["best_params"], unit)
            reporter.unit_done(unit, UnitResult(unit.key, stored["outer_score"], stored["inner_best"],
                                                stored["best_params"], stored["best_number"], model), study)


def summary(sweep: Sweep) -> dict[str, Any]:
    import numpy as np

    folds = [result_of(sweep.studies[u.key]) for u in sweep.plan.units if u.test is not None]
    outer = [f["outer_score"] for f in folds]
    inner = [f["inner_best"] for f in folds]
    return {"outer": outer, "inner": inner, "outer_mean": float(np.mean(outer)), "outer_std": float(np.std(outer)),
            "inner_mean": float(np.mean(inner)), "final": result_of(sweep.studies["final"]),
            "counts": {u.key: counts(sweep.studies[u.key]) for u in sweep.plan.units}}


def all_finalized(sweep: Sweep) -> bool:
    return all(finalized(sweep.studies[u.key]) for u in sweep.plan.units)


def manifest_json(plan: SweepPlan) -> str:
    return json.dumps(plan.manifest)


def trial_params(frozen: Any) -> dict[str, Any]:
    return display_params(frozen.params)


@dataclass
class SweepOptions:
    sweep_id: str | None = None
    storage: str | None = None
    resume: bool = False
    workers: int = 1
    warm_start: str | None = None
    config_dir: str | None = None
    tags: dict[str, str] | None = None  # on every run of the sweep (expt rerun: expt.rerun_of)


def run_sweep(composed: Composed | None, options: SweepOptions, progress_factory: Any = None) -> tuple[Sweep, dict]:
    """Start, join or resume a sweep and work it to the end; returns the sweep and its summary."""
    from expt.sweeplog import Reporter, SinkProcess
    from expt.tracking import _probe_server, environment_tags, flatten, normalize_uri
    from expt.train import _masked
    from expt.warmstart import enqueue_warm_start, read_warm_start

    sweep_id = options.sweep_id or new_sweep_id()
    storage_url = options.storage or default_storage(sweep_id)
    warm: list[dict[str, Any]] | None = None

    def check(plan: SweepPlan) -> None:  # a new sweep: a bad --warm-start file is refused before it exists
        nonlocal warm
        warm = read_warm_start(options.warm_start, plan, composed.choices.get("model") if composed else None)

    sweep = attach(sweep_id, storage_url, composed=composed, resume=options.resume, config_dir=options.config_dir,
                   check=check)
    plan = sweep.plan
    if warm is None:  # joined or resumed an existing sweep
        warm = read_warm_start(options.warm_start, plan, sweep.choices.get("model"))
    from expt.distributed import Node, claim_close, foreign_workers, reap, worker_id

    node = Node(sweep).start()  # other processes on this sweep see this one at work
    stale = fail_stale(sweep) if options.resume else reap(sweep)
    if warm:
        enqueue_warm_start(sweep, warm)
    tracking = plan.values["tracking"]
    _probe_server(tracking["uri"])
    sink = SinkProcess(tracking["uri"], tracking["experiment"], sweep_id, tracking["sqlite_wal"], storage_url)
    base_tags = {**environment_tags(plan.prepared.dataset.fingerprint, plan.seed), **(options.tags or {})}
    reporter = Reporter(sink.queue, plan, sweep_id, base_tags)
    shown = _masked(plan.values)
    reporter.open_sweep(logged_yaml(shown, sweep.choices), manifest_json(plan), flatten(shown))
    for unit in plan.units:
        reporter.open_unit(unit)
    for unit, t in stale:
        reporter.trial(unit, t)
    if options.resume or not node.others_working():  # while others work, their own sinks log their trials
        replay(sweep, reporter)
    progress = progress_factory(sweep) if progress_factory else None
    try:
        with progress if progress is not None else _nullcontext():
            own = {worker_id()}
            if options.workers > 1:
                own |= _run_workers(sweep, options.workers, sink, progress)
            else:
                def tick() -> None:
                    sink.check()
                    if progress is not None:
                        progress.refresh()
                with _thread_limits(reserve=1):
                    make_engine(sweep, reporter, tick).run()
        result = summary(sweep)
        sink.check()  # a process whose logging died must not take the closing on itself
        if options.resume or claim_close(sweep):  # one process closes the sweep and appends its records
            if not options.resume and foreign_workers(sweep, own):
                # Others took part, and one that died may have taken unlogged trials with it: once every
                # live one's sink has drained, log what the store lacks.
                node.wait_for_others()
                reporter.put({"op": "rescan"})
                replay(sweep, reporter)
            _close(sweep, reporter, result)
    except KeyboardInterrupt:
        sink.stop(close="KILLED")
        node.drained()
        raise
    except BaseException:
        sink.stop(close="FAILED")
        node.drained()
        raise
    sink.stop()
    node.drained()
    result["stale"] = len(stale)
    result["uri"] = normalize_uri(tracking["uri"])
    return sweep, result


def _close(sweep: Sweep, reporter: Any, result: dict[str, Any]) -> None:
    from expt.records import sweep_records
    from expt.sweepplots import plot_data

    plan = sweep.plan
    tracking, metric = plan.values["tracking"], plan.prepared.metric
    records = sweep_records(sweep, tracking["uri"]) if tracking["records"] else []
    reporter.close_sweep({f"outer_{metric}_mean": result["outer_mean"], f"outer_{metric}_std": result["outer_std"],
                          f"inner_best_{metric}_mean": result["inner_mean"]}, plot_data(sweep, result), records)


def _thread_limits(reserve: int, workers: int = 1) -> Any:
    """Leave a core to the MLflow sink: threads of a trial waiting on a busy core cost more than they give.

    Every pool, not just BLAS: scikit-learn's losses and gradients run OpenMP ``prange``
    loops on all cores. Measured on 2 cores with the other core busy (as the sink
    keeps it), one logistic-regression fit and score: 23.9 ms with every pool at one
    thread, 29.4 ms with only BLAS at one (each OpenMP region waited for its second
    thread); with both cores idle one thread was as fast as two (19.2 vs 21.7 ms).
    """
    import os

    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = max(1, (cores - reserve) // workers)
    if "torch" in sys.modules:  # a torch model: its intra-op pool is its own, threadpoolctl does not reach it
        sys.modules["torch"].set_num_threads(limit)
    return threadpool_limits(limits=limit)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _run_workers(sweep: Sweep, n: int, sink: Any, progress: Any) -> set[str]:
    """N processes on the same studies; this one watches the storage and shows progress. Returns their ids."""
    import multiprocessing as mp
    import time

    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(sweep.sweep_id, sweep.storage_url, sink.queue, errors, i + 1, n),
                         name=f"expt-worker-{i + 1}") for i in range(n)]
    for p in procs:
        p.start()
    from expt.distributed import worker_id

    ids = {worker_id(p.pid) for p in procs}
    try:
        while any(p.is_alive() for p in procs):
            sink.check()
            if progress is not None:
                progress.refresh()
            time.sleep(0.5)
    except KeyboardInterrupt:
        for p in procs:
            p.join(30)
        raise
    if not errors.empty():
        from expt.errors import RunFailedError

        raise RunFailedError(errors.get())
    if not all_finalized(sweep):
        from expt.errors import RunFailedError

        codes = [p.exitcode for p in procs]
        raise RunFailedError(f"workers stopped before the sweep finished (exit codes {codes}); "
                             f"continue with: expt sweep --resume {sweep.sweep_id}")
    return ids


def worker_main(sweep_id: str, storage_url: str, queue: Any, errors: Any, index: int, workers: int = 1) -> None:
    """A worker process: rebuild the plan from the storage and take trials until none are left."""
    import signal
    import warnings

    from expt.errors import ExptError
    from expt.sweeplog import Reporter
    from expt.tracking import environment_tags

    warnings.filterwarnings("ignore")
    try:
        sweep = attach(sweep_id, storage_url, worker=index)
        reporter = Reporter(queue, sweep.plan, sweep_id,
                            environment_tags(sweep.plan.prepared.dataset.fingerprint, sweep.plan.seed))
        from expt.logsink import parent_alive

        with _thread_limits(reserve=1, workers=workers):
            make_engine(sweep, reporter, keep_going=parent_alive).run()  # a worker outlives no dead sweep process
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ExptError as exc:
        errors.put(str(exc))
    except Exception as exc:  # noqa: BLE001 - one line to the parent
        errors.put(f"worker {index}: {type(exc).__name__}: {exc}")
