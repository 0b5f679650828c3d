"""A new SQLite store is a copy of an empty store that MLflow migrated once per version (expt.tracking.seed): the
same schema MLflow makes, opened as any store of its version, and a cache that can speed a command up but never
stop one or put anything into a store."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from helpers import EXPT

from expt.tracking.seed import CACHE_ENV, seed_store, sound_template

TRAIN = ["train", "data=iris", "model=knn", "learner=quick", "tracking.log_model=false", "tracking.plots=false"]


def schema(db: Path) -> dict[str, object]:
    """What a store's schema is, order aside (alembic's batch rebuilds order a table's constraints as they come):
    each table's columns, each index's columns, the triggers and the revision."""
    with closing(sqlite3.connect(db)) as con:
        master = con.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        found: dict[str, object] = {}
        for kind, name, table in master.fetchall():
            if kind == "table":
                found[name] = sorted(con.execute(f"PRAGMA table_info('{name}')").fetchall())
            elif kind == "index":
                found[f"index {name}"] = (table, con.execute(f"PRAGMA index_info('{name}')").fetchall())
            else:
                found[f"{kind} {name}"] = table
        found["revision"] = con.execute("SELECT version_num FROM alembic_version").fetchall()
        return found


def rows(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


def test_a_new_store_has_the_schema_mlflow_makes_and_the_template_is_built_once(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    cache = tmp_path / "cache"
    env = {**os.environ, CACHE_ENV: str(cache)}
    first = subprocess.run([EXPT, *TRAIN], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    (template,) = cache.iterdir()  # the one template, named by the MLflow version
    assert template.name.startswith("mlflow-") and sound_template(template)

    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow-made.db'}").search_experiments()
    assert schema(tmp_path / "mlruns.db") == schema(tmp_path / "mlflow-made.db")
    experiments = rows(tmp_path / "mlruns.db", "SELECT experiment_id, name, artifact_location FROM experiments")
    assert experiments[0] == (0, "Default", str(tmp_path / "mlruns" / "0"))  # this store's, as MLflow makes it
    assert [name for _, name, _ in experiments] == ["Default", "expt"]
    assert rows(tmp_path / "mlruns.db", "SELECT DISTINCT status FROM runs") == [("FINISHED",)]

    built = template.stat().st_mtime_ns
    second = subprocess.run([EXPT, *TRAIN, "tracking.uri=sqlite:///second.db"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert list(cache.iterdir()) == [template] and template.stat().st_mtime_ns == built  # copied, not rebuilt
    assert rows(tmp_path / "second.db", "SELECT DISTINCT status FROM runs") == [("FINISHED",)]


def plant(kind: str, template: Path, used_store: Path) -> None:
    """What might sit where the template goes: damage, a stray file, someone's used store, a file others can
    write, a link to a used store."""
    if kind == "link":
        template.symlink_to(used_store)
        return
    if kind == "garbage":
        template.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    elif kind == "used store":
        template.write_bytes(used_store.read_bytes())
    elif kind == "writable by others":
        template.write_bytes(used_store.read_bytes())
        with closing(sqlite3.connect(template)) as con, con:
            con.execute("DELETE FROM runs")
            con.execute("DELETE FROM experiments")
        template.chmod(0o666)


@pytest.mark.parametrize("kind", ["garbage", "used store", "writable by others", "link"])
def test_a_template_that_expt_did_not_build_is_built_again_and_puts_nothing_into_a_store(
        kind: str, tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store with a planted run, copied in as the template, would show that run in every new store."""
    from expt.tracking.client import Tracker
    from expt.tracking.seed import schema_key

    used = Path(store.removeprefix("sqlite:///"))
    planted = Tracker(store, "planted")
    planted.client.create_run(planted.experiment_id, run_name="planted")
    with closing(sqlite3.connect(used)) as con:  # the store is in WAL mode: fold the run into the file copied
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(cache))
    template = cache / f"{schema_key()}.db"
    plant(kind, template, used)
    assert not sound_template(template)

    tracker = Tracker(f"sqlite:///{tmp_path / 'new.db'}", "mine")
    assert sound_template(template) and not template.is_symlink()  # built again, in place of what was there
    names = [e.name for e in tracker.client.search_experiments()]
    assert sorted(names) == ["Default", "mine"]
    assert rows(tmp_path / "new.db", "SELECT count(*) FROM runs") == [(0,)]
    assert rows(used, "SELECT name FROM runs") == [("planted",)]  # what the link pointed to is untouched


def test_a_cache_that_cannot_be_written_leaves_the_store_to_mlflow(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    env = {**os.environ, CACHE_ENV: str(blocked / "cache")}
    done = subprocess.run([EXPT, *TRAIN], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "error" not in done.stderr
    assert rows(tmp_path / "mlruns.db", "SELECT DISTINCT status FROM runs") == [("FINISHED",)]
    assert blocked.read_text() == "not a folder"


def test_an_existing_store_is_never_replaced(tmp_path: Path, store: str) -> None:
    db = Path(store.removeprefix("sqlite:///"))
    before = db.read_bytes()
    assert seed_store(store) is False
    assert db.read_bytes() == before
    for other in ("sqlite:///:memory:", "postgresql://u@localhost/db", f"sqlite:///{tmp_path / 'x.db'}?mode=ro",
                  "file:./mlruns"):
        assert seed_store(other) is False
    assert not (tmp_path / "x.db").exists()
