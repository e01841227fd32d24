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
