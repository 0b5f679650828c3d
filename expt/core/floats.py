"""How expt compares floats that BLAS kernels, thread counts or the CPU may change in the last bits.

The rule (issue 24, applied everywhere by issue 22): floats in records, meta-features and scores are written as
computed and compared with a stated tolerance, |a - b| <= ATOL + RTOL x |b| (``math.isclose``'s rule, both
bounds), never for exact equality. Rounding at write time was the other choice; it was not taken because it only
moves the problem to values near a rounding boundary (two CPUs can still round 0.12345678905 apart) and throws
away digits a reader may want. A last-bit difference (1e-16 relative, seen between two CPUs on the linear
landmarkers and the first PCA component) is far inside RTOL; a difference that changes a prediction (one row's
class flipped changes an accuracy by 1/rows) is far outside it, and is reported as the real difference it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeGuard

RTOL = 1e-9
ATOL = 1e-12


def differences(a: object, b: object, path: str = "", *, rtol: float = RTOL, atol: float = ATOL) -> list[str]:
    """Where two JSON-like values differ beyond the tolerance: one ``path: a != b`` per difference."""
    if isinstance(a, bool) != isinstance(b, bool):  # True == 1 in Python; not in a record
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, bool) or not _number(a) or not _number(b):
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out: list[str] = []
            for key in sorted(set(a) | set(b), key=str):
                if key not in a or key not in b:
                    out.append(f"{path}.{key}: only in {'the first' if key in a else 'the second'}")
                else:
                    out += differences(a[key], b[key], f"{path}.{key}", rtol=rtol, atol=atol)
            return out
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            if len(a) != len(b):
                return [f"{path}: {len(a)} items != {len(b)}"]
            return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                    for d in differences(x, y, f"{path}[{i}]", rtol=rtol, atol=atol)]
        return [] if a == b else [f"{path}: {a!r} != {b!r}"]
    if math.isnan(a) and math.isnan(b):
        return []
    return [] if math.isclose(a, b, rel_tol=rtol, abs_tol=atol) else [f"{path}: {a!r} != {b!r}"]


def close(a: object, b: object, *, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Equal but for floats within the tolerance (nested dicts and lists compared item by item)."""
    return not differences(a, b, rtol=rtol, atol=atol)


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float)
