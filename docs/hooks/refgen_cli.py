"""docs/reference/cli.md: every visible command and option of the typer app, as ``--help`` shows them.

Read from the click command that typer builds (``typer.main.get_command``): each option's line and help are the
ones ``expt COMMAND --help`` prints (``get_help_record``: declaration, metavar, default, range, env var), so a
changed help text changes the page. Hidden commands and options stay hidden.
"""

from __future__ import annotations

from typing import Any

from refgen_md import GENERATED, cell, code, paragraphs, table, text


def anchor(path: str) -> str:
    return path.replace(" ", "-")


def visible_commands(group: Any, ctx: Any) -> list[tuple[str, Any]]:  # noqa: ANN401 - typer's click objects
    """(name, command) of the group's commands that --help lists, in its order."""
    out = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            out.append((name, command))
    return out


def _params(command: Any, ctx: Any) -> tuple[list[list[str]], list[list[str]]]:  # noqa: ANN401
    """(arguments, options) rows: the declaration and the help, as --help has them."""
    arguments, options = [], []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        decl, help_text = record
        row = [code(decl), cell(help_text)]
        (arguments if param.param_type_name == "argument" else options).append(row)
    return arguments, options


def _section(command: Any, ctx: Any, path: str, level: int) -> list[str]:  # noqa: ANN401
    heading = "#" * level
    out = [f"{heading} {path} {{#{anchor(path)}}}", "", "```text", command.get_usage(ctx).strip(), "```", ""]
    if command.help:
        out += [paragraphs(command.help.replace("\b", "")), ""]
    arguments, options = _params(command, ctx)
    if arguments:
        out += [table(["Argument", "Description"], arguments), ""]
    if options:
        out += [table(["Option", "Description"], options), ""]
    if command.epilog:
        out += [paragraphs(command.epilog.replace("\b", "")), ""]
    if hasattr(command, "commands"):
        for name, sub in visible_commands(command, ctx):
            out += _section(sub, command.context_class(sub, info_name=name, parent=ctx), f"{path} {name}", level + 1)
    return out


def render(app: Any, prog: str = "expt") -> str:  # noqa: ANN401 - a typer.Typer
    """The CLI reference of a typer app as Markdown."""
    import typer.main

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name=prog)
    out = ["# CLI reference", "",
           GENERATED.format(module="refgen_cli", source="the help texts in `expt/cli/`"),
           f"`{prog} COMMAND --help` prints the same in a terminal.", ""]
    commands = visible_commands(root, ctx) if hasattr(root, "commands") else []
    if commands:
        rows = [[f"[{code(f'{prog} {name}')}](#{anchor(f'{prog} {name}')})",
                 cell(cmd.get_short_help_str(limit=300))] for name, cmd in commands]
        out += [table(["Command", "What it does"], rows), ""]
    out += _section(root, ctx, prog, 2) if not commands else _root_section(root, ctx, prog)
    for name, command in commands:
        out += _section(command, command.context_class(command, info_name=name, parent=ctx), f"{prog} {name}", 2)
    return "\n".join(out).rstrip() + "\n"


def _root_section(root: Any, ctx: Any, prog: str) -> list[str]:  # noqa: ANN401
    """The program's own usage and options (``--version``), before its commands."""
    out = ["## Global options {#global-options}", "", "```text", root.get_usage(ctx).strip(), "```", ""]
    if root.help:
        out += [text(" ".join(root.help.split())), ""]
    _, options = _params(root, ctx)
    if options:
        out += [table(["Option", "Description"], options), ""]
    return out
