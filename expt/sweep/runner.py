"""``expt sweep``: nested cross-validation with Optuna, every outer fold and trial in MLflow.

Runs a sweep to its end in this process (and ``--workers`` more): attach, start the
MLflow sink, work the studies, and let one process close the sweep. How a sweep is
kept in its storage is :mod:`expt.sweep.attach`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from expt.core.config import Composed, logged_yaml
from expt.core.errors import ExptError
from expt.sweep.attach import (
    Sweep,
    all_finalized,
    attach,
    fail_stale,
    make_engine,
    manifest_json,
    reap,
    replay,
    summary,
)
from expt.sweep.plan import SweepPlan
from expt.sweep.storage import default_storage, new_sweep_id
from expt.tracking.tags import RESUMES_TAG, TRUSTED_TAG, WARM_START_TAG, WORKERS_TAG

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue

    from expt.sweep.reporter import Reporter, SinkProcess


class Progress(Protocol):
    """What shows a sweep's progress while it runs (``expt.cli.render.SweepProgress``): a context, refreshed after
    each trial."""

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> None: ...

    def refresh(self) -> None: ...


@dataclass
class SweepOptions:
    sweep_id: str | None = None
    storage: str | None = None
    resume: bool = False
    workers: int = 1
    warm_start: str | None = None
    config_dir: str | None = None
    tags: dict[str, str] | None = None  # on every run of the sweep (expt rerun: expt.rerun_of)


def run_sweep(composed: Composed | None, options: SweepOptions,
              progress_factory: Callable[[Sweep], Progress] | None = None) -> tuple[Sweep, dict[str, Any]]:
    """Start, join or resume a sweep and work it to the end; returns the sweep and its summary."""
    from expt.core.timeline import mark
    from expt.sweep.reporter import SinkProcess

    mark("sweep modules imported")
    sink = SinkProcess()  # first: its imports (MLflow's take seconds) overlap the data, the plan and the studies
    mark("sink spawned")
    try:
        return _run_sweep(composed, options, progress_factory, sink)
    finally:
        if sink.process.is_alive() and not sink.configured:
            sink.abandon()


def _run_sweep(composed: Composed | None, options: SweepOptions, progress_factory: Callable[[Sweep], Progress] | None,
               sink: SinkProcess) -> tuple[Sweep, dict[str, Any]]:
    from expt.core.timeline import mark
    from expt.sweep.reporter import Reporter
    from expt.sweep.warmstart import enqueue_warm_start, read_warm_start
    from expt.tracking.client import flatten
    from expt.tracking.environment import environment_tags
    from expt.tracking.uri import masked_config, normalize_uri, probe_server, with_credentials

    sweep_id = options.sweep_id or new_sweep_id()
    storage_url = options.storage or default_storage(sweep_id)
    warm: list[dict[str, Any]] | None = None

    def check(plan: SweepPlan) -> None:  # a new sweep: a bad --warm-start file is refused before it exists
        nonlocal warm
        warm = read_warm_start(options.warm_start, plan, composed.choices.get("model") if composed else None)

    sweep = attach(sweep_id, storage_url, composed=composed, resume=options.resume, config_dir=options.config_dir,
                   check=check)
    plan = sweep.plan
    mark("attached (data, plan, studies)")
    if warm is None:  # joined or resumed an existing sweep
        warm = read_warm_start(options.warm_start, plan, sweep.choices.get("model"))
    from expt.sweep.coordination import Node, claim_close, foreign_workers, worker_id

    node = Node(sweep).start()  # other processes on this sweep see this one at work
    stale = fail_stale(sweep) if options.resume else reap(sweep)
    enqueued = enqueue_warm_start(sweep, warm) if warm else 0
    record_shape(sweep, options, warm if enqueued else None)
    tracking = plan.config.tracking
    uri = with_credentials(tracking.uri, str(composed.cfg.tracking.uri) if composed is not None else None)
    probe_server(uri)
    sink.configure(uri, tracking.experiment, sweep_id, tracking.sqlite_wal, storage_url)
    try:  # from here on the sink logs: any failure must stop it (a live sink would hold the exit)
        base_tags = {**environment_tags(plan.prepared.dataset.fingerprint, plan.seed), **(options.tags or {})}
        reporter = Reporter(sink.queue, plan, sweep_id, base_tags)
        shown = masked_config(plan.values)
        reporter.open_sweep(logged_yaml(shown, sweep.choices), manifest_json(plan), flatten(shown), shape_tags(sweep))
        for unit in plan.units:
            reporter.open_unit(unit)
        for unit, t in stale:
            reporter.trial(unit, t)
        if options.resume or not node.others_working():  # while others work, their own sinks log their trials
            replay(sweep, reporter)
        mark("sweep and folds opened")
        progress = progress_factory(sweep) if progress_factory else None
        with progress if progress is not None else contextlib.nullcontext():
            own = {worker_id()}
            if options.workers > 1:
                own |= _run_with_workers(sweep, reporter, options.workers, sink, progress)
            else:
                def tick() -> None:
                    sink.check()
                    if progress is not None:
                        progress.refresh()
                with _thread_limits(reserve=1):
                    make_engine(sweep, reporter, tick).run()
        mark("trials done")
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
            mark("closing sent")
    except KeyboardInterrupt:
        sink.stop(close="KILLED")
        node.drained()
        raise
    except BaseException:
        sink.stop(close="FAILED")
        node.drained()
        raise
    sink.stop()
    mark("sink drained")
    node.drained()
    result["stale"] = len(stale)
    result["uri"] = normalize_uri(uri)
    return sweep, result


def _close(sweep: Sweep, reporter: Reporter, result: dict[str, Any]) -> None:
    from expt.meta.records import sweep_records
    from expt.sweep.plots import plot_data

    plan = sweep.plan
    tracking, metric = plan.config.tracking, plan.prepared.metric
    records = sweep_records(sweep, tracking.uri) if tracking.records else []
    reporter.close_sweep({f"outer_{metric}_mean": result["outer_mean"], f"outer_{metric}_std": result["outer_std"],
                          f"inner_best_{metric}_mean": result["inner_mean"]}, plot_data(sweep, result), records,
                         tags=shape_tags(sweep))  # every process that took part has recorded its share by now


# What shaped a sweep beyond its config: each sampler is seeded per worker and per restart, and warm-start
# entries are the first trials, so the same config gives other results with other workers, a --warm-start
# file or a --resume. Each process that works a sweep records its share in the meta study (one user attribute
# per process: no read-modify-write between processes); the closing process sums them up as tags on the sweep
# run, which `expt rerun` lists as reasons a result may differ.
SHAPE_ATTR = "expt.shape:"


def warm_start_hash(configs: list[dict[str, Any]]) -> str:
    """A content hash of the warm-start entries (not the file name: the same file can change), and of which of
    them seed the final search only."""
    import hashlib
    import json

    content = [list(configs), sorted(getattr(configs, "final_only", ()))]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_shape(sweep: Sweep, options: SweepOptions, warm: list[dict[str, Any]] | None) -> None:
    """This process's share in what shaped the sweep: its worker count, the warm-start entries it enqueued
    (``None``: none), whether it resumed, and the prefixes it trusted."""
    import secrets
    import time

    from expt.core.build import trusted_prefixes
    from expt.sweep.coordination import worker_id
    from expt.sweep.storage import storage_of

    storage = storage_of(sweep.studies["final"])
    share = {"at": time.time(), "workers": options.workers, "resume": bool(options.resume),
             "warm_start": warm_start_hash(warm) if warm else None, "trusted": trusted_prefixes()}
    key = f"{SHAPE_ATTR}{worker_id()}:{secrets.token_hex(3)}"  # a pid can come back on another day
    storage.set_study_user_attr(storage.get_study_id_from_name(sweep.sweep_id), key, share)


def shape_tags(sweep: Sweep) -> dict[str, str]:
    """Every share recorded so far, as the sweep run's tags: workers per invocation in order ("1", "2", "1+1"
    for a run resumed once), the warm-start hashes ("none"), the number of resumes, the trusted prefixes."""
    from expt.sweep.storage import storage_of

    storage = storage_of(sweep.studies["final"])
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(sweep.sweep_id))
    shares = sorted((v for k, v in attrs.items() if k.startswith(SHAPE_ATTR) and isinstance(v, dict)),
                    key=lambda v: v.get("at", 0))
    warm = sorted({str(v["warm_start"]) for v in shares if v.get("warm_start")})
    return {WORKERS_TAG: "+".join(str(v.get("workers", "?")) for v in shares) or "?",
            WARM_START_TAG: ",".join(warm) or "none",
            RESUMES_TAG: str(sum(bool(v.get("resume")) for v in shares)),
            TRUSTED_TAG: ",".join(sorted({str(p) for v in shares for p in v.get("trusted", [])}))}


def _thread_limits(reserve: int, workers: int = 1) -> AbstractContextManager[object]:
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


# A worker process pays its own start-up (an interpreter, the imports, the plan and the studies) before its
# first trial: ~2 s of CPU here, about what this process spent before its own first trial. It is started
# only once the trials left would keep it busy for PAYOFF times that, and only while a core is free of this
# process and of the MLflow sink (a sink with messages waiting has a core's worth of work): on 2 cores a
# short logistic-regression sweep with --workers 2 took 1.42x as long as with one, its second worker busy
# importing, then taking the sink's core, while the first had already done the work; a random-forest
# sweep (~80 s, its sink idle between trials) still halves.
PAYOFF = 2.0
SINK_BUSY = 8  # messages waiting for the sink: it is using its core


def _spare_cores(sink: SinkProcess) -> float:
    """Cores left over by this process and the sink; a sink with a backlog counts as a whole core."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = sink.queue.qsize() >= SINK_BUSY
    except NotImplementedError:  # macOS: no queue size; assume the sink takes its core
        busy = True
    return cores - 1 - (1 if busy else 0.25)


def _run_with_workers(sweep: Sweep, reporter: Reporter, n: int, sink: SinkProcess,
                      progress: Progress | None) -> set[str]:
    """This process is the first of ``n`` workers; the other ``n - 1`` are started once the trials left pay for
    their start-up (:data:`PAYOFF`). Returns the ids of the processes started."""
    import multiprocessing as mp
    import time

    from expt.core.errors import RunFailedError
    from expt.sweep.coordination import worker_id
    from expt.sweep.engine import counts

    ctx = mp.get_context("spawn")
    errors: Queue[str] = ctx.Queue()
    procs: list[BaseProcess] = []
    startup = time.process_time()  # what this process spent to get here: what a worker's start-up costs
    budget = sweep.plan.settings.n_trials * len(sweep.plan.units)
    done_before = sum(min(counts(study).done, sweep.plan.settings.n_trials) for study in sweep.studies.values())
    began, mine = time.monotonic(), [0]

    def start_workers() -> None:
        for i in range(1, n):
            p = ctx.Process(target=worker_main, args=(sweep.sweep_id, sweep.storage_url, sink.queue, errors, i, n),
                            name=f"expt-worker-{i}")
            p.start()
            procs.append(p)

    def tick() -> None:
        sink.check()
        if progress is not None:
            progress.refresh()
        mine[0] += 1
        if not procs:
            left = budget - done_before - mine[0]
            per_trial = (time.monotonic() - began) / mine[0]
            if left * per_trial > PAYOFF * startup and _spare_cores(sink) >= 0.5:
                start_workers()

    def keep_going() -> bool:  # a worker that died (or failed) stops this one too: its trials would never end
        return errors.empty() and all(p.exitcode in (None, 0) for p in procs)

    with _thread_limits(reserve=1, workers=n):
        try:
            make_engine(sweep, reporter, tick, keep_going).run()
            while any(p.is_alive() for p in procs):  # the others finish the trials they hold
                sink.check()
                if progress is not None:
                    progress.refresh()
                time.sleep(0.1)
        except KeyboardInterrupt:
            for p in procs:
                p.join(30)
            raise
    if not errors.empty():
        raise RunFailedError(errors.get())
    if not all_finalized(sweep):
        codes = [p.exitcode for p in procs]
        raise RunFailedError(f"workers stopped before the sweep finished (exit codes {codes}); "
                             f"continue with: expt sweep --resume {sweep.sweep_id}")
    return {worker_id(p.pid) for p in procs}


def worker_main(sweep_id: str, storage_url: str, queue: Queue[dict[str, Any]], errors: Queue[str], index: int,
                workers: int = 1) -> None:
    """A worker process: rebuild the plan from the storage and take trials until none are left."""
    import signal
    import warnings

    from expt.sweep.reporter import Reporter
    from expt.tracking.environment import environment_tags

    warnings.filterwarnings("ignore")
    try:
        sweep = attach(sweep_id, storage_url, worker=index)
        reporter = Reporter(queue, sweep.plan, sweep_id,
                            environment_tags(sweep.plan.prepared.dataset.fingerprint, sweep.plan.seed))
        from expt.sweep.sink import parent_alive

        with _thread_limits(reserve=1, workers=workers):
            make_engine(sweep, reporter, keep_going=parent_alive).run()  # a worker outlives no dead sweep process
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ExptError as exc:
        errors.put(str(exc))
    except Exception as exc:  # noqa: BLE001 - one line to the parent
        errors.put(f"worker {index}: {type(exc).__name__}: {exc}")
