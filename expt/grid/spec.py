"""A grid's cells: the command line's sweep overrides expanded as Hydra's ``--multirun`` expands them.

Hydra's own override parser reads them (``a,b``, ``range()``, ``choice()``, ``glob()``, quoting, lists), so a
grid means on ``expt`` what it means under ``hydra -m``; the cells are the cartesian product of the swept values
in the order given, the last key varying fastest (Hydra's basic sweeper). Each cell is a plain override list that
``expt train`` would take as is. Hydra composes each cell separately later; nothing here reads a config value.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from expt.core.errors import UsageError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

DATA_KEY = "data"


@dataclass(frozen=True)
class Cell:
    """One combination: the overrides ``expt train`` runs it with, and the swept part that names it."""

    index: int
    overrides: tuple[str, ...]
    swept: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        """How the cell is named everywhere (tags, resume, messages): its swept values, ``data=wine model=svm``."""
        return " ".join(f"{k}={v}" for k, v in self.swept) or "(the one cell)"

    @property
    def column(self) -> tuple[tuple[str, str], ...]:
        """The swept values that are not about the data: what the cell compares (a model, its settings)."""
        return tuple((k, v) for k, v in self.swept if not is_data_key(k))


def is_data_key(key: str) -> bool:
    name = key.lstrip("+~")
    return name == DATA_KEY or name.startswith(DATA_KEY + ".")


class GroupOptions:
    """What ``glob()`` sweeps over: the options of a config group, in the user's config dir and the packaged one.

    Hydra's parser asks its config loader for them; building Hydra's whole loader for a list of file names would
    cost a compose. Names starting with ``_`` are building blocks (``search/_base``), not options.
    """

    def __init__(self, config_dir: str | Path | None) -> None:
        from expt.core.config import conf_dir

        self.dirs = [Path(config_dir).expanduser()] if config_dir else []
        self.dirs.append(conf_dir())

    def get_group_options(self, group_name: str, results_filter: object = None, **_: object) -> list[str]:
        names = {p.stem for d in self.dirs for p in (d / group_name).glob("*.yaml") if not p.stem.startswith("_")}
        return sorted(names)


def expand(overrides: Iterable[str], config_dir: str | Path | None = None) -> list[Cell]:
    """Every cell of the grid, in Hydra's order; a malformed or empty sweep is a one-line error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    given = list(overrides)
    # GroupOptions is not a ConfigLoader: the parser asks it for group options only, its one method
    parser = OverridesParser.create(config_loader=GroupOptions(config_dir))  # type: ignore[arg-type]
    try:
        parsed = parser.parse_overrides(given)
    except OverrideParseException as exc:
        first = str(exc).splitlines()[0]
        raise UsageError(f"cannot parse override {exc.override!r} ({first}); write key=value or a sweep like "
                         "key=a,b, key=range(1,4), key=choice(a,b), group=glob(*)") from None
    axes: list[list[tuple[str, str, bool]]] = []  # (key, value, swept); a fixed override keeps its text
    seen: set[str] = set()
    for override in parsed:
        key = override.get_key_element()
        name = key.lstrip("+~")
        if name in seen:
            raise UsageError(f"{name} is given twice in the grid; give it once, with every value (e.g. {name}=a,b)")
        seen.add(name)
        if not override.is_sweep_override():
            axes.append([(key, _text(override), False)])
            continue
        if not override.is_discrete_sweep():
            raise UsageError(f"{override.input_line!r} is a continuous interval; a grid needs values to list: "
                             f"use {key}=a,b, range(...) or choice(...)")
        try:
            values = list(override.sweep_string_iterator())
        except HydraException as exc:
            raise UsageError(f"cannot expand {override.input_line!r}: {str(exc).splitlines()[0]}") from None
        if not values:
            raise UsageError(f"{override.input_line!r} sweeps over no values; give at least one "
                             f"(glob() lists the options of a config group: {name}=glob(*))")
        axes.append([(key, value, True) for value in values])
    return [_cell(i, combo) for i, combo in enumerate(itertools.product(*axes))]


def _text(override: Override) -> str:
    """An override as typed (what Hydra's parser keeps of every override it parses)."""
    assert override.input_line is not None
    return override.input_line


def _cell(index: int, combo: tuple[tuple[str, str, bool], ...]) -> Cell:
    """A fixed override keeps its text as typed (``~key`` has no value); a swept one becomes ``key=value``."""
    overrides, swept = [], []
    for key, value, is_swept in combo:
        overrides.append(f"{key}={value}" if is_swept else value)
        if is_swept:
            swept.append((key, value))
    return Cell(index, tuple(overrides), tuple(swept))


def column_labels(columns: list[tuple[tuple[str, str], ...]], models: list[str]) -> list[str]:
    """Short names for the compared columns: ``svm``, ``svm C=0.1``; the full ``key=value`` where short ones clash.

    ``models``: each column's model name, which heads a column whose swept values do not name the model.
    """
    def short(column: tuple[tuple[str, str], ...], model: str, full: bool) -> str:
        parts = [] if any(k.lstrip("+~") in ("model", "conf") for k, _ in column) else [model]
        for key, value in column:
            name = key.lstrip("+~")
            if name in ("model", "learner", "search", "tracking"):
                parts.append(value)
            elif name == "conf":
                parts.append(Path(value).stem)
            else:
                parts.append(f"{key if full else name.rsplit('.', 1)[-1]}={value}")
        return " ".join(parts)

    labels = [short(c, m, full=False) for c, m in zip(columns, models, strict=True)]
    if len(set(labels)) < len(set(columns)):
        labels = [short(c, m, full=True) for c, m in zip(columns, models, strict=True)]
    return labels


def sweep_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides that list several values (what only a grid, ``-m``, runs); none if they do not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return []
    return [_text(o) for o in parsed if o.is_sweep_override()]
