"""docs/reference/python-api.md: mkdocstrings directives for every name in ``expt.models.__all__``.

The names and the modules that define them are read from the source (``__all__`` in expt/models/__init__.py and the
``class`` statements beside it), not imported: the package loads its classes lazily, which static analysis
(griffe, what mkdocstrings reads) cannot follow from ``expt.models`` itself, so each class is named where it is
defined. A class added to ``__all__`` appears on the page without an edit here.
"""

from __future__ import annotations

import ast
from pathlib import Path

from refgen_md import GENERATED


def exported(package: Path) -> list[str]:
    """``module.Class`` of each name in the package's ``__all__``, in its order."""
    names: list[str] = []
    for node in ast.parse((package / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            names = list(ast.literal_eval(node.value))
    defined = {}
    for path in sorted(package.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                defined.setdefault(node.name, f"{path.stem}.{node.name}")
    missing = [n for n in names if n not in defined]
    if missing:
        raise LookupError(f"{package}/__init__.py exports {missing}, defined in none of its modules")
    return [defined[n] for n in names]


def render(root: Path) -> str:
    """The Python API page of ``expt.models`` as Markdown (mkdocstrings renders the directives)."""
    out = ["# Python API: `expt.models`", "",
           GENERATED.format(module="refgen_api", source="the docstrings and signatures in `expt/models/`"),
           "The estimators a config names as `_target_: expt.models.NAME`: torch networks and early-stopping "
           "gradient-boosting boosters, each a scikit-learn estimator. Rendered from the source by mkdocstrings "
           "(static analysis: building this page imports nothing).", "",
           "::: expt.models", "    options:", "      members: false", "      show_root_heading: false", ""]
    for target in exported(root / "expt" / "models"):
        out += [f"::: expt.models.{target}", ""]
    return "\n".join(out)
