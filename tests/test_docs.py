"""The docs site builds with ``--strict`` and without the network, and its reference pages are generated from the
code (issue 27): mkdocs.yml, the hook in docs/hooks/ and its generators. The pages' commands are run by
tests/test_docs_pages.py."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"
GENERATED = ("reference/cli.md", "reference/config.md", "reference/records.md", "reference/python-api.md")
REMOTE = re.compile(r"fonts\.googleapis|fonts\.gstatic|unpkg\.com|jsdelivr|cdnjs|cloudflare|polyfill\.io")
# A <link href> or <script src> that leaves the site (a page's own links to the web are not assets).
REMOTE_ASSET = re.compile(r"<(?:link|script)\b[^>]*\b(?:href|src)=[\"']?(?:https?:)?//", re.IGNORECASE)


def offline() -> list[str]:
    """A prefix that runs a command with no network at all where this machine allows it (a new network namespace:
    not even loopback), else nothing; the environment below also points every proxy at a closed port."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once for this file as ``make docs`` builds it, into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    dead = "http://127.0.0.1:9"  # the discard port: a fetch through it fails at once
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead,
           "https_proxy": dead, "NO_PROXY": "", "no_proxy": ""}
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([*offline(), str(mkdocs), "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return out


def page_text(site: Path, page: str) -> str:
    """A built page's text as a reader sees it: tags dropped, entities decoded, whitespace collapsed."""
    markup = (site / page).read_text()
    markup = re.sub(r"<(script|style)\b.*?</\1>", " ", markup, flags=re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def collapsed(value: str) -> str:
    return " ".join(value.split())


def test_site_has_no_remote_assets(site):
    """No font, script or stylesheet is fetched when the site is read: nothing from a CDN, no Google Fonts."""
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(GENERATED)
    offending = [f"{p.relative_to(site)}: {m.group(0)}" for p in pages for m in REMOTE_ASSET.finditer(p.read_text())]
    assert not offending, "\n".join(offending)
    # Material's bundle names two CDN scripts it loads only on demand: a ResizeObserver polyfill (for browsers
    # without one: none current) and Mermaid (for a page with a mermaid diagram: none here, and none can be, as
    # no mermaid fence is configured). Every other file, and each page, names no CDN.
    assets = [p for p in site.rglob("*") if p.suffix in (".html", ".css", ".js") and not p.name.startswith("bundle.")]
    mentions = [f"{p.relative_to(site)}: {m.group(0)}" for p in assets for m in REMOTE.finditer(p.read_text())]
    assert not mentions, "\n".join(mentions)
    assert not [p for p in pages if 'class="mermaid"' in p.read_text()]
    shim = site / "assets" / "javascripts" / "iframe-worker-shim.js"
    assert shim.exists() and 'src="assets/javascripts/iframe-worker-shim.js"' in (site / "index.html").read_text()


def test_generated_pages_are_not_committed():
    """The reference pages exist only in the build: a copy in docs/ would go stale (the hook refuses one too)."""
    present = [p for p in GENERATED if (ROOT / "docs" / p).exists()]
    assert not present, f"generated at build time, remove: {present}"


def _visible(group, ctx):
    return [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)
            if not group.get_command(ctx, name).hidden]


def test_readme_links_resolve(site):
    """README.md is outside the site, so mkdocs does not check its links: each relative one names a file of the
    checkout, or a page of the built site (the reference pages exist only there) with the anchor it names."""
    readme = (ROOT / "README.md").read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if re.match(r"[a-z]+:|#", target):
            continue
        path, _, anchor = target.partition("#")
        if path.startswith("docs/") and path.endswith(".md"):
            page = site / f"{path.removeprefix('docs/').removesuffix('.md')}.html"
            if not page.exists() or (anchor and f'id="{anchor}"' not in page.read_text()):
                broken.append(target)
        elif not (ROOT / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to what is not there: {broken}"


def test_cli_reference_is_the_app(site):
    """Every visible command has its section, and every visible option's help, as the app has it now, is on the
    page: a changed help text changes the page."""
    import typer.main

    from expt.cli import app

    text = page_text(site, "reference/cli.html")
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="expt")
    commands = _visible(root, ctx)
    assert len(commands) >= 10
    checked = 0
    for name, command in commands:
        assert f'id="expt-{name}"' in (site / "reference" / "cli.html").read_text(), name
        sub = command.context_class(command, info_name=name, parent=ctx)
        assert collapsed(command.get_usage(sub)) in text
        for param in command.get_params(sub):
            record = param.get_help_record(sub)
            if getattr(param, "hidden", False) or record is None:
                continue
            decl, help_text = record
            assert collapsed(f"{decl} {help_text}") in text, f"expt {name}: {decl}"
            checked += 1
    assert checked > 50


def test_cli_reference_follows_help_and_hides_hidden(monkeypatch):
    """The generator on a small app: help texts as given, hidden commands and options left out."""
    import typer

    monkeypatch.syspath_prepend(str(HOOKS))
    import refgen_cli

    app = typer.Typer(add_completion=False, rich_markup_mode=None)

    @app.command()
    def fit(size: int = typer.Option(3, help="How big the _thing_ is, in | units."),
            secret: bool = typer.Option(False, hidden=True, help="Nobody sees this.")) -> None:
        """Fit a thing."""

    @app.command(hidden=True)
    def internal() -> None:
        """Never listed."""

    page = refgen_cli.render(app, prog="tool")
    assert "## tool fit {#tool-fit}" in page
    assert r"How big the \_thing\_ is, in \| units. \[default: 3\]" in page
    assert "secret" not in page and "Nobody" not in page
    assert "internal" not in page and "Never listed" not in page


def test_config_reference_lists_every_group_option_and_key(site):
    from expt.core.schema import SCHEMA

    markup = (site / "reference" / "config.html").read_text()
    text = page_text(site, "reference/config.html")
    conf = ROOT / "conf"
    for group in sorted(p for p in conf.iterdir() if p.is_dir()):
        assert f'id="{group.name}"' in markup
        for option in group.glob("[!_]*.yaml"):
            assert f'id="{group.name}-{option.stem}"' in markup, option

    def leaves(spec, prefix=""):
        for key, sub in spec.items():
            yield from leaves(sub, f"{prefix}{key}.") if isinstance(sub, dict) else [f"{prefix}{key}"]

    missing = [key for key in leaves(SCHEMA) if f" {key} " not in text]
    assert not missing
    # a default and the comment beside it, read from the YAML file
    assert "sqlite_wal true SQLite stores: write-ahead log" in text


def test_records_and_api_reference(site):
    import ast

    from expt.meta import records

    text = page_text(site, "reference/records.html")
    assert f"Schema version: {records.SCHEMA}" in text
    for key in records.REQUIRED:
        assert f" {key} yes " in text, key
    assert "land.one_nn" in text and "general.log_rows" in text  # meta-features, computed by the code
    api = page_text(site, "reference/python-api.html")
    init = ast.parse((ROOT / "expt" / "models" / "__init__.py").read_text())
    exported = next(ast.literal_eval(n.value) for n in init.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in n.targets))
    for name in exported:
        assert f" {name} ¶ " in api, name  # its heading
    assert "MLPClassifier ¶ MLPClassifier ( * , hidden_sizes" in api  # with the constructor's signature
