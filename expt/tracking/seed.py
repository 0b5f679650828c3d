"""A new SQLite tracking store, copied from an empty one that MLflow migrated once.

MLflow creates a SQLite store by running every schema migration it ships (about 70 alembic scripts) on the new
file, in the first command of every new folder and for each store the test suite makes:
``benchmarks/bench_new_store.py`` measures what that costs a command against a copy. One MLflow version always migrates to the same empty schema, so expt builds that schema once per
MLflow version in its cache (``$EXPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/expt``, else ``~/.cache/expt``) and
copies it into place for each new store. MLflow then opens the copy as any store of its version: it checks the
schema's revision and adds its Default experiment with this store's artifact location, as on a file it migrated.

A store created this way is never migrated by expt, so a foreign MLflow process that opens the same new file at
the same moment (``mlflow ui``, a notebook) cannot join an expt migration half-way (issue 26): the copy appears
whole, by a hard link that never replaces a file another process has created. Where anything about the cache
fails (no home, a read-only disk, a file that is not a clean template), MLflow creates the store as it would
without expt, so the cache can speed a command up but never stop one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import sqlite3
from pathlib import Path

CACHE_ENV = "EXPT_CACHE_DIR"
SQLITE_HEADER = b"SQLite format 3\x00"


def cache_dir() -> Path | None:
    """Where expt keeps what it can rebuild: ``$EXPT_CACHE_DIR``, ``$XDG_CACHE_HOME/expt`` or ``~/.cache/expt``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "expt"
    try:
        return Path.home() / ".cache" / "expt"
    except RuntimeError:  # no home directory to find
        return None


def schema_key() -> str:
    """The installed MLflow's version and migration scripts: a template is used only by the MLflow that built it."""
    import mlflow
    import mlflow.store.db_migrations as migrations

    versions = Path(migrations.__file__).parent / "versions"
    names = sorted(p.name for p in versions.glob("*.py"))
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    return f"mlflow-{mlflow.__version__}-{digest}"


def sound_template(path: Path) -> bool:
    """Whether ``path`` is a template expt could have built: a plain file of this user's that no one else may
    write, holding a SQLite database that passes SQLite's own check, with one schema revision on record and not a
    single experiment or run yet.

    The cache is trusted as the user's own files are (like the virtual environment expt runs from), as long as
    only the user can write it, as ssh treats its keys: these checks turn away a damaged or stray file, a used
    store put there, and a file others could have changed; a file found wanting is built again."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            return False
        with path.open("rb") as fh:
            if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return False
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
                return False
            if len(db.execute("SELECT version_num FROM alembic_version").fetchall()) != 1:
                return False
            return all(db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)  # noqa: S608 - fixed names
                       for table in ("experiments", "runs"))
    except (OSError, sqlite3.Error):
        return False


def build_template(path: Path) -> None:
    """Migrate an empty database at a temporary name beside ``path`` as MLflow would a new store, then move it to
    ``path`` whole (two processes building at once each move a complete file)."""
    from mlflow.store.db.utils import _initialize_tables, _verify_schema, create_sqlalchemy_engine

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)  # what SqlAlchemyStore runs on a new file, before its Default experiment
            _verify_schema(engine)
        finally:
            engine.dispose()
        with contextlib.closing(sqlite3.connect(tmp)) as db:  # one file, no journal beside it
            db.execute("PRAGMA journal_mode=DELETE")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def seed_store(uri: str) -> bool:
    """Create the SQLite store at ``uri`` from the cached template if no file is there yet; build the template
    first if the cache has none. Returns whether this call created the store; on False, MLflow creates it."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri or "?" in uri:
        return False
    db = Path(uri[len(prefix):])
    folder = cache_dir()
    if folder is None or os.path.lexists(db):
        return False
    try:
        template = folder / f"{schema_key()}.db"
        if not sound_template(template):
            build_template(template)
            if not sound_template(template):
                return False
        db.parent.mkdir(parents=True, exist_ok=True)
        tmp = db.with_name(f".{db.name}.{secrets.token_hex(4)}.seed")
        try:
            with template.open("rb") as src, tmp.open("xb") as dst:
                shutil.copyfileobj(src, dst)
            os.link(tmp, db)  # appears whole, and never over a store another process created meanwhile
        finally:
            tmp.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - a cache that fails leaves the store to MLflow, as without expt
        return False
    return True
