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


def test_rerun_check_tolerates_last_bits_and_says_so_but_not_a_changed_prediction() -> None:
    """Issue 22: rerun --check on another CPU. Scores and probabilities equal but for last bits pass, marked as
    within the tolerance; a flipped label or a score moved by one row does not."""
    import numpy as np

    from expt.reproduce.rerun import Match, _within_tolerance

    assert Match("accuracy_fold_0", 0.8, 0.8).exact
    last_bits = Match("land.linear", 0.5168778251299566, 0.5168778251299565)
    assert last_bits.same and not last_bits.exact
    assert not Match("accuracy_fold_1", 0.8, 0.8 - 1 / 150).same
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert _within_tolerance(proba, proba + 1e-16) and not _within_tolerance(proba, proba[::-1])
    assert not _within_tolerance(np.array([0, 1]), np.array([0, 1]))  # labels: only exact equality, by hash
    assert Match("model probabilities", "aaa", "bbb", tolerated=True).same
