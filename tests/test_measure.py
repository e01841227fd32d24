"""The fidelity report's own-noise figure: the measurement compared with itself."""

from __future__ import annotations

import pytest

from hwnas.measure import repeatability


def test_repeatability_compares_even_with_odd_rounds() -> None:
    # even rounds read 1, 2, 3 ms; odd rounds 10 % slower: every net differs by 1 - 1/1.1
    r = repeatability([[1.0, 1.1, 1.0, 1.1], [2.0, 2.2, 2.0, 2.2], [3.0, 3.3, 3.0, 3.3]])
    assert r is not None
    assert r["mean_diff_pct"] == pytest.approx(100 / 11) and r["max_diff_pct"] == pytest.approx(100 / 11)
    assert r["spearman"] == pytest.approx(1.0)
    # halves that rank the nets in reverse
    r = repeatability([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert r is not None and r["spearman"] == pytest.approx(-1.0) and r["max_diff_pct"] == pytest.approx(200.0)


def test_repeatability_needs_two_rounds() -> None:
    assert repeatability([[1.0], [2.0], [3.0]]) is None
    assert repeatability([]) is None


def test_repeatability_with_an_odd_number_of_rounds_and_constant_halves() -> None:
    # 3 rounds: the even half (rounds 0 and 2) is summarised by its median, the odd half is round 1
    r = repeatability([[1.0, 1.0, 1.2], [2.0, 2.0, 2.4], [3.0, 3.0, 3.6]])
    assert r is not None and r["mean_diff_pct"] == pytest.approx(10.0)
    # every net the same in a half: no rank correlation to report (None, not NaN, in the JSON)
    r = repeatability([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    assert r is not None and r["spearman"] is None and r["mean_diff_pct"] == 0.0
