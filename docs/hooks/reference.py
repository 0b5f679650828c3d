"""The mkdocs hook that generates the reference pages from the code at every build (mkdocs.yml's ``hooks:``).

docs/reference/cli.md, config.md, records.md and python-api.md exist only in the build: they are added to the
site's files here, from the typer app, conf/ and the schema, the record-writing code, and ``expt.models.__all__``
(refgen_*.py beside this file). They are never written to docs/, so they cannot go stale in the repository.

They are made in a fresh Python process (this file run as a script) at each build: ``mkdocs serve`` rebuilds on a
change under expt/ or conf/, and a process that had imported expt once would keep documenting the old code. It
costs about a second a build. The vendored iframe-worker shim (see mkdocs.yml's ``extra.polyfills``) is added
here too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import refgen_api
import refgen_cli
import refgen_config
import refgen_records

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.livereload import LiveReloadServer
    from mkdocs.structure.files import Files

HERE = Path(__file__).resolve().parent
SHIM = "assets/javascripts/iframe-worker-shim.js"


def _root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def pages(root: Path) -> dict[str, str]:
    """The generated pages of the checkout at ``root``: {path under docs/: Markdown}."""
    from expt.cli import app

    return {"reference/cli.md": refgen_cli.render(app),
            "reference/config.md": refgen_config.render(root / "conf"),
            "reference/records.md": refgen_records.render(root),
            "reference/python-api.md": refgen_api.render(root)}


def generated(root: Path) -> dict[str, str]:
    """:func:`pages` of ``root``, made in a new process (with this interpreter: the one that runs mkdocs)."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(root)], cwd=root, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"generating the reference pages failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    from mkdocs.structure.files import File

    for path, content in generated(_root(config)).items():
        if files.get_file_from_path(path) is not None:
            raise RuntimeError(f"docs/{path} is generated at build time (docs/hooks/reference.py): remove the file")
        files.append(File.generated(config, path, content=content))
    files.append(File.generated(config, SHIM, abs_src_path=str(HERE / "assets" / "iframe-worker-shim.js")))
    return files


def on_serve(server: LiveReloadServer, config: MkDocsConfig, builder: object) -> LiveReloadServer:
    root = _root(config)
    for watched in ("expt", "conf"):
        server.watch(str(root / watched))
    return server


if __name__ == "__main__":
    checkout = Path(sys.argv[1])
    sys.path.insert(1, str(checkout))  # the expt of the checkout being built, whichever one is installed
    print(json.dumps(pages(checkout)))
