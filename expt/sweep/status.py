"""``expt sweep --status ID``: a sweep's progress, read from its Optuna storage alone.

No MLflow and no plan: the storage holds the studies, the stored config (for the
budget) and, on every trial, the worker that ran it. Safe to run while workers work.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import UsageError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

RECENT = dt.timedelta(minutes=10)


def sweep_status(sweep_id: str, storage_url: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
    import logging

    import optuna
    import yaml
    from optuna.trial import TrialState

    from expt.sweep.storage import ERROR, META_CONFIG, RESULT, SURPLUS, WORKER_ATTR, open_storage
    from expt.tracking.uri import mask_credentials

    optuna.logging.set_verbosity(logging.WARNING)
    if "://" not in storage_url and not Path(storage_url).is_file():  # reading must not create a journal
        raise UsageError(f"no sweep {sweep_id!r}: there is no storage at {storage_url}; pass the sweep's --storage")
    storage = open_storage(storage_url)
    names = [s.study_name for s in storage.get_all_studies()]
    if sweep_id not in names:
        raise UsageError(f"no sweep {sweep_id!r} in the storage {mask_credentials(storage_url)}; check the id and "
                         "--storage")
    meta = optuna.load_study(study_name=sweep_id, storage=storage)
    config = yaml.safe_load(meta.user_attrs.get(META_CONFIG, "")) or {}
    budget = int((config.get("search") or {}).get("n_trials", 0))
    now = now or dt.datetime.now()
    units: list[dict[str, Any]] = []
    workers: dict[str, dict[str, Any]] = {}
    for name in sorted((n for n in names if n.startswith(f"{sweep_id}/")), key=_unit_order):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        state = {s: 0 for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
        errors = []
        for t in trials:
            if t.state == TrialState.FAIL and t.user_attrs.get(SURPLUS):
                continue
            state[t.state.name] += 1
            if t.state == TrialState.FAIL and t.user_attrs.get(ERROR):
                errors.append(str(t.user_attrs[ERROR]))
            _see_worker(workers, t, name.split("/", 1)[1], WORKER_ATTR)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        result = study.user_attrs.get(RESULT)
        done = state["COMPLETE"] + state["PRUNED"]
        units.append({
            "unit": name.split("/", 1)[1], "budget": budget, "complete": state["COMPLETE"], "pruned": state["PRUNED"],
            "failed": state["FAIL"], "running": state["RUNNING"], "waiting": state["WAITING"],
            "best": max((t.value for t in complete if t.value is not None), default=None),  # all, being complete
            "outer": result.get("outer_score") if result else None,
            "state": "done" if result else ("running" if state["RUNNING"] or done < budget else "finishing"),
            "last_error": errors[-1] if errors else None,
        })
    recent = {w: v for w, v in workers.items() if now - v["last_seen"] <= RECENT or v["running"]}
    return {"sweep_id": sweep_id, "storage": mask_credentials(storage_url), "budget": budget, "units": units,
            "workers": [{"worker": w, **v, "last_seen": v["last_seen"].isoformat(timespec="seconds")}
                        for w, v in sorted(recent.items(), key=lambda kv: kv[1]["last_seen"], reverse=True)],
            "workers_total": len(workers), "finished": bool(units) and all(u["state"] == "done" for u in units)}


def _unit_order(name: str) -> tuple[int, str]:
    unit = name.split("/", 1)[1]
    return (1, unit) if unit == "final" else (0, unit.rjust(12))


def _see_worker(workers: dict[str, dict[str, Any]], t: FrozenTrial, unit: str, attr: str) -> None:
    worker = t.user_attrs.get(attr)
    if not worker:
        return
    seen = t.datetime_complete or t.datetime_start
    w = workers.setdefault(worker, {"trials": 0, "running": [], "last_seen": seen})
    w["trials"] += 1
    if t.state.name == "RUNNING":
        w["running"].append(f"{unit} trial {t.number}")
    if seen and seen > w["last_seen"]:
        w["last_seen"] = seen


def print_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"sweep {status['sweep_id']} · budget {status['budget']} trials per study")
    for col in ("study", "done/budget (complete)", "pruned", "failed", "running", "best inner", "outer", "state"):
        table.add_column(col, justify="left" if col in ("study", "state") else "right")
    for u in status["units"]:
        table.add_row(u["unit"], f"{u['complete'] + u['pruned']}/{u['budget']} ({u['complete']})", str(u["pruned"]),
                      str(u["failed"]), str(u["running"]), _num(u["best"]), _num(u["outer"]), u["state"])
    console.print(table)
    console.print(f"storage     {status['storage']}")
    if status["workers"]:
        console.print(f"workers seen in the last {int(RECENT.total_seconds() // 60)} min "
                      f"({len(status['workers'])} of {status['workers_total']}):")
        for w in status["workers"]:
            doing = f"running {', '.join(w['running'])}" if w["running"] else "idle"
            console.print(f"  {w['worker']:<28} {w['trials']:>4} trials  last seen {w['last_seen']}  {doing}")
    else:
        console.print(f"no worker seen in the last {int(RECENT.total_seconds() // 60)} min "
                      f"({status['workers_total']} in all)")
    failing = [u for u in status["units"] if u["last_error"]]
    for u in failing[:3]:
        console.print(f"last error in {u['unit']}: {u['last_error'][:200]}")
    if not status["finished"] and not status["workers"]:
        console.print(f"continue it with: expt sweep --resume {status['sweep_id']} --storage {status['storage']}")


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
