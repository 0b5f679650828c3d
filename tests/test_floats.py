"""The float rule (expt/core/floats.py): last-bit differences between CPUs are tolerated, real ones are not."""

from __future__ import annotations

from expt.core.floats import close, differences


def test_last_bit_differences_between_cpus_are_tolerated_and_named_otherwise() -> None:
    shipped = {"land.linear": 0.5168778251299566, "scores": [0.9, 0.8], "name": "iris", "n": 3}
    other_cpu = {"land.linear": 0.5168778251299565, "scores": [0.9, 0.8000000000000002], "name": "iris", "n": 3}
    assert close(shipped, other_cpu)
    flipped = {**other_cpu, "scores": [0.9, 0.8 - 1 / 150]}  # one row of 150 predicted differently
    assert differences(shipped, flipped) == [f".scores[1]: 0.8 != {0.8 - 1 / 150!r}"]
    assert not close(shipped, {**shipped, "name": "wine"}) and not close(shipped, {**shipped, "n": 4})
    assert differences({"a": 1}, {"b": 1}) == [".a: only in the first", ".b: only in the second"]
    assert not close([1.0], [1.0, 2.0]) and not close(True, 1) and close(float("nan"), float("nan"))
