"""The commands the docs show are run, page by page, so that a page cannot drift from what expt does (issue 27).

The convention (shared by everyone who writes a page): a fenced block whose info string is ``console`` is
runnable. In it a line starting with ``$ `` is a command (a trailing `` \\`` continues it on the next line), and the
other non-blank lines up to the next command are output shown to the reader; each must occur, whitespace
collapsed, in the command's combined stdout and stderr, in the order shown (a line that is exactly ``...`` stands
for elided output). Every command must exit 0. A block preceded, on the line just above its opening fence, by
``<!-- not-run: REASON -->`` is not run; blocks in other languages never are.

All runnable blocks of one page run in order in one bash session (a later command may use a variable an earlier
one set), in a fresh temporary folder, so against a fresh store (MLFLOW_TRACKING_URI unset: sqlite:///mlruns.db
there), with the checkout as ``$EXPT_REPO``. The pages are README.md and every docs/**/*.md (the reference pages
are generated at build time and are not files). One test per page with runnable blocks, named by its path.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE_TIMEOUT = 600  # seconds for all of one page's commands
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Command:
    line: int  # of its `$ ` line in the page, from 1
    text: str  # as bash gets it: continuation lines kept, each after its backslash-newline
    shown: list[str] = field(default_factory=list)  # the output lines the page shows after it


@dataclass
class Block:
    page: str
    line: int  # of the opening fence
    language: str
    not_run: str | None  # the reason, when marked not-run
    commands: list[Command] = field(default_factory=list)


@dataclass
class Page:
    path: str
    blocks: list[Block]
    problems: list[str]  # what breaks the convention: output before any command, a marker with no block under it

    @property
    def runnable(self) -> list[Command]:
        return [c for b in self.blocks if b.language == "console" and b.not_run is None for c in b.commands]


def parse(markdown: str, page: str) -> Page:
    """The fenced blocks of a Markdown page, console blocks split into commands and the output they show."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        marker = NOT_RUN.match(lines[i])
        if marker and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
            problems.append(f"{page}:{i + 1}: a not-run marker must be on the line just above a block's opening fence")
        if marker and not marker["reason"]:
            problems.append(f"{page}:{i + 1}: a not-run marker without a reason")
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        above = NOT_RUN.match(lines[i - 1]) if i > 0 else None
        block = Block(page, i + 1, opening["info"].lower(), above["reason"] if above else None)
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            text = lines[i]
            body.append((i + 1, text[indent:] if text[:indent].strip() == "" else text.lstrip()))
            i += 1
        i += 1  # the closing fence
        if block.language == "console":
            problems += _commands(block, body)
        blocks.append(block)
    return Page(page, blocks, problems)


def _commands(block: Block, body: list[tuple[int, str]]) -> list[str]:
    problems = []
    continued = False
    for number, text in body:
        if continued:
            block.commands[-1].text += "\n" + text
        elif text.startswith("$ ") or text.rstrip() == "$":
            block.commands.append(Command(number, text[2:]))
        elif text.strip():
            if not block.commands:
                problems.append(f"{block.page}:{number}: output shown before any `$ ` command in a console block")
                continue
            block.commands[-1].shown.append(text)
            continue
        else:
            continue
        continued = text.rstrip().endswith("\\")
    return problems


def missing_line(shown: list[str], output: str) -> str | None:
    """The first shown line that the output lacks, each looked for after the previous one; None if all are there."""
    haystack = " ".join(ANSI.sub("", output).split())
    at = 0
    for line in shown:
        if line.strip() == "...":
            continue
        needle = " ".join(line.split())
        found = haystack.find(needle, at)
        if found < 0:
            return line
        at = found + len(needle)
    return None


def page_env() -> dict[str, str]:
    """The environment the page's commands run in: this interpreter's bin/ first (expt, python, mlflow), no store
    named by the environment, the checkout as $EXPT_REPO, a terminal width left to the default."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "COLUMNS", "LINES")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["EXPT_REPO"] = str(ROOT)
    # A train run's writes from its own process, as expt chooses when no core is idle (always so under `make
    # test`): a second process importing MLflow per command cost the docs run ~20% more CPU. Both ways are
    # tested by the writer_mode fixture's tests.
    env["EXPT_EVALUATION"] = "inline"
    return env


def run_page(page: Page, workdir: Path, timeout: float = PAGE_TIMEOUT) -> str | None:
    """Run the page's runnable commands in order in one bash session in ``workdir``; what failed first, or None."""
    commands = page.runnable
    logs = workdir.parent / f"{workdir.name}-logs"
    logs.mkdir()
    # A command that calls `exit` ends the session: the trap still writes its status as the command's.
    # pipefail: `expt train ... | tee log` fails when expt does, as a reader would expect of a pasted pipeline.
    script = ["set +e", "set -o pipefail", "__expt_docs_n=", f"trap '__rc=$?; [ -n \"$__expt_docs_n\" ] && "
              f"echo $__rc >\"{logs}/$__expt_docs_n.rc\"' EXIT"]
    for n, command in enumerate(commands):
        # A group, not a subshell: variables and cd persist into the next command.
        script += [f"__expt_docs_n={n}", "{", command.text, f'}} >"{logs}/{n}.out" 2>&1 </dev/null',
                   f'echo $? >"{logs}/{n}.rc"; __expt_docs_n=', f'[ "$(cat "{logs}/{n}.rc")" = 0 ] || exit 0']
    (logs / "page.sh").write_text("\n".join(script) + "\n")
    process = subprocess.Popen(["bash", str(logs / "page.sh")], cwd=workdir, env=page_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        session_output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        session_output, _ = process.communicate()
        ran = len(list(logs.glob("*.rc")))
        if ran < len(commands):
            return _failure(page, commands[ran], f"still running after {timeout:.0f} s (the page's limit)",
                            (logs / f"{ran}.out").read_text(errors="replace") if (logs / f"{ran}.out").exists() else "")
        return f"{page.path}: bash did not exit within {timeout:.0f} s after its last command"
    for n, command in enumerate(commands):
        rc_file, out_file = logs / f"{n}.rc", logs / f"{n}.out"
        if not rc_file.exists() or not out_file.exists():  # bash could not parse it, or one above it
            return _failure(page, command, "never ran: bash stopped before it (a syntax error?); bash said",
                            session_output)
        output = out_file.read_text(errors="replace")
        rc = int(rc_file.read_text().strip() or -1)
        if rc != 0:
            return _failure(page, command, f"exited {rc}", output)
        lacking = missing_line(command.shown, output)
        if lacking is not None:
            return _failure(page, command, f"its output lacks the shown line {lacking.strip()!r} (or has it out of "
                            "the order shown)", output)
    return None


def _failure(page: Page, command: Command, what: str, output: str, tail: int = 40) -> str:
    lines = ANSI.sub("", output).rstrip().splitlines()
    shown = "\n".join(lines[-tail:]) if lines else "(no output)"
    return (f"{page.path}:{command.line}: the command\n    $ {command.text}\n{what}. The last {min(tail, len(lines))} "
            f"lines of its output:\n{textwrap.indent(shown, '    ')}")


def page_paths() -> list[str]:
    """README.md and every Markdown page under docs/ (not its hooks), as paths from the checkout's root."""
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "hooks" not in p.relative_to(ROOT / "docs").parts)
    return [p.relative_to(ROOT).as_posix() for p in [ROOT / "README.md", *docs] if p.exists()]


PAGES = {path: parse((ROOT / path).read_text(), path) for path in page_paths()}
RUNNABLE = [path for path, page in PAGES.items() if page.runnable]


def test_inventory(summary_line: Callable[[str], None]) -> None:
    """Every page keeps the convention, the docs run at least one command, and what is not run is listed, with why
    (under `make test`'s summary: tests/fixtures/summary.py)."""
    problems = [p for page in PAGES.values() for p in page.problems]
    assert not problems, "\n".join(problems)
    commands = sum(len(page.runnable) for page in PAGES.values())
    not_run = [f"{b.page}:{b.line}: {b.not_run}" for page in PAGES.values() for b in page.blocks
               if b.not_run is not None]
    summary_line(f"docs: {commands} runnable commands on {len(RUNNABLE)} pages, run by test_docs_pages.py; "
                 f"{len(not_run)} blocks not run:\n" + "\n".join(not_run))
    assert commands > 0, f"no runnable command on {', '.join(PAGES)}"


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_page_commands(page, tmp_path):
    failure = run_page(PAGES[page], tmp_path)
    assert failure is None, failure


# The parser and the runner, on a page written here.
SAMPLE = textwrap.dedent("""\
    # A page

    ```console
    $ printf 'a   b\\nnoise\\nc d\\n' && \\
      echo tail
    a b
    ...
    c    d
    $ x=41; mkdir sub && cd sub
    ```

    Text between blocks.

    1. In a list:

        ```console
        $ echo "$((x + 1)) [${MLFLOW_TRACKING_URI-unset}]"
        42 [unset]
        $ ls "$EXPT_REPO/recipes"
        wine_svm.yaml
        ```

    <!-- not-run: needs a browser -->
    ```console
    $ false
    ```

    ```bash
    $ false
    ```
    """)


def test_parse_sample():
    page = parse(SAMPLE, "sample.md")
    assert page.problems == []
    assert [b.language for b in page.blocks] == ["console", "console", "console", "bash"]
    assert [b.not_run for b in page.blocks] == [None, None, "needs a browser", None]
    first, second, *others = page.runnable
    assert first.text == "printf 'a   b\\nnoise\\nc d\\n' && \\\n  echo tail"
    assert first.shown == ["a b", "...", "c    d"]
    assert first.line == 4 and second.shown == []
    assert [c.text for c in others] == ['echo "$((x + 1)) [${MLFLOW_TRACKING_URI-unset}]"', 'ls "$EXPT_REPO/recipes"']
    assert others[0].shown == ["42 [unset]"]


def test_run_sample(tmp_path, monkeypatch):
    """Variables persist from block to block, in a fresh folder, with no store from the environment."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nowhere/mlruns.db")
    work = tmp_path / "work"
    work.mkdir()
    assert run_page(parse(SAMPLE, "sample.md"), work) is None


@pytest.mark.parametrize(("body", "expected"), [
    ("$ echo hello\ngoodbye\n", ["sample.md:2", "$ echo hello", "lacks the shown line 'goodbye'", "    hello"]),
    ("$ echo one two\ntwo\none\n", ["lacks the shown line 'one'"]),  # in the order shown
    ("$ echo fine\n$ echo oops >&2; exit 3\n", ["sample.md:3", "exited 3", "    oops"]),
    ("$ echo 'unclosed\n", ["never ran"]),
    ("$ echo fine\n$ exit 4\n$ echo never\n", ["sample.md:3", "exited 4"]),  # exit ends the session
])
def test_run_sample_fails(tmp_path, body, expected):
    """A mismatch fails, and the message names the page and line, the command and the tail of its output."""
    work = tmp_path / "work"
    work.mkdir()
    failure = run_page(parse(f"```console\n{body}```\n", "sample.md"), work)
    assert failure is not None
    for part in expected:
        assert part in failure, failure


def test_parse_problems():
    page = parse("<!-- not-run: x -->\n\n```console\nstray\n$ true\n```\n<!-- not-run: -->\n```console\n```\n",
                 "p.md")
    assert page.problems == ["p.md:1: a not-run marker must be on the line just above a block's opening fence",
                             "p.md:4: output shown before any `$ ` command in a console block",
                             "p.md:7: a not-run marker without a reason"]
