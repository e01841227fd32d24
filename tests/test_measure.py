"""The fidelity report: its own-noise figure (the measurement compared with itself) and its reading
of the networks through the speed correction."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import fast_settings
from scipy import stats

from hwnas.errors import HwnasError
from hwnas.lut import LUT
from hwnas.measure import (
    Earlier,
    agreement,
    archs_sha256,
    combine,
    earlier_measurement,
    measurement_target,
    reference_nets,
    repeatability,
    settings_from_lut,
    validation_archs,
)
from hwnas.space import load_space


def test_repeatability_compares_even_with_odd_rounds() -> None:
    # even rounds read 1, 2, 3 ms; odd rounds 10 % slower: every net differs by 1 - 1/1.1
    r = repeatability([[1.0, 1.1, 1.0, 1.1], [2.0, 2.2, 2.0, 2.2], [3.0, 3.3, 3.0, 3.3]])
    assert r is not None
    assert r["mean_diff_pct"] == pytest.approx(100 / 11) and r["max_diff_pct"] == pytest.approx(100 / 11)
    assert r["spearman"] == pytest.approx(1.0) and r["spearman_ceiling"] == pytest.approx(1.0)
    # halves that rank the nets in reverse: no ceiling to speak of
    r = repeatability([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert r is not None and r["spearman"] == pytest.approx(-1.0) and r["max_diff_pct"] == pytest.approx(200.0)
    assert r["spearman_ceiling"] is None


@pytest.mark.parametrize("noise", [0.02, 0.05, 0.15])
def test_the_rank_ceiling_is_what_a_perfect_predictor_reads(noise: float) -> None:
    """200 networks with known true times, each timed in 9 rounds with independent log-normal
    noise: the ceiling estimated from the halves' agreement alone is the rank correlation the
    true times (a perfect predictor) read against the whole measurement, within 0.01 from a
    measurement that agrees with itself closely (noise 2 %) to one that does not (15 %), and
    above the halves' own Spearman (each half has half the rounds)."""
    rng = np.random.default_rng(0)
    true = np.exp(rng.uniform(0.0, 0.5, 200))
    rounds = true[:, None] * np.exp(rng.normal(0.0, noise, (200, 9)))
    r = repeatability(rounds.tolist())
    assert r is not None and r["spearman"] is not None and r["spearman_ceiling"] is not None
    perfect = float(stats.spearmanr(true, np.median(rounds, axis=1)).statistic)
    assert r["spearman_ceiling"] == pytest.approx(perfect, abs=0.01)
    assert r["spearman_ceiling"] > r["spearman"]


@pytest.mark.parametrize("k", [2, 4])
def test_occasions_combined_and_their_ceilings(k: int) -> None:
    """300 networks with known true times, measured on ``k`` occasions that each run at their own
    speed (up to 20 % apart) and add their own 3 % noise per network: the combination comes back
    at the first occasion's level, its error is about ``1 / sqrt(k)`` of one occasion's, and
    the ceilings read from the occasions' agreement alone are what the true times read against
    one occasion and against the combination, within 0.01."""
    rng = np.random.default_rng(1)
    true = np.exp(rng.uniform(0.0, 0.5, 300))
    speeds = [1.0, 1.2, 0.9, 1.1][:k]
    occasions = [(true * v * np.exp(rng.normal(0.0, 0.03, 300))).tolist() for v in speeds]
    both = np.array(combine(occasions))
    assert np.median(both / occasions[0]) == pytest.approx(1.0, abs=0.01)  # the first one's level
    err = np.std(np.log(both / true))
    assert err == pytest.approx(0.03 / np.sqrt(k), rel=0.15)
    ag = agreement(occasions)
    assert ag["measurements"] == k and ag["spearman_min"] <= ag["spearman_mean"] <= ag["spearman_max"]
    one = np.mean([stats.spearmanr(true, o).statistic for o in occasions])
    assert ag["ceiling_one"] == pytest.approx(one, abs=0.01)
    assert ag["ceiling_combined"] == pytest.approx(stats.spearmanr(true, both).statistic, abs=0.01)
    assert ag["ceiling_combined"] > ag["ceiling_one"]


def test_an_earlier_report_is_taken_only_for_the_same_networks_and_settings(tmp_path: Path) -> None:
    """``validate-lut --also``: a report of other networks, under other settings, without the
    record of which networks, damaged or not JSON is refused with one line naming the fix."""
    space = load_space("tiny")
    digest = archs_sha256(validation_archs(space, 3, 1000))
    target = measurement_target(fast_settings())
    good = {"archs_sha256": digest, "target": target, "seed": 1000, "measured_ms": [1.0, 2.0, 3.0]}

    def read(doc: object) -> Earlier:
        path = tmp_path / "earlier.json"
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return earlier_measurement(path, digest, 1000, 3, target)

    assert read(good) == Earlier([1.0, 2.0, 3.0])
    _, probe = space.probe_archs()[0]
    timed = read({**good, "references": [{"arch": probe.to_dict(), "ms": 0.5}]})
    assert timed.references == ((probe, 0.5),)
    # networks of another arch schema: the report keeps its measurement and loses only its level
    other = read({**good, "references": [{"arch": {**probe.to_dict(), "schema": "hwnas.arch/0"}, "ms": 0.5}]})
    assert other == Earlier([1.0, 2.0, 3.0])
    assert archs_sha256(validation_archs(space, 3, 1001)) != digest  # another seed: other networks
    cases = {
        "not JSON": ("{", "not JSON"),
        "no times": ({"seed": 1000}, "no measured_ms"),
        "older": ({k: v for k, v in good.items() if k != "archs_sha256"}, "measure again with validate-lut --json"),
        "other nets": ({**good, "archs_sha256": "0" * 64}, "give --seed and --nets as it had"),
        "other threads": ({**good, "target": {**target, "threads": 2}}, "threads 2, not 1: judge a LUT profiled"),
        "no settings": ({k: v for k, v in good.items() if k != "target"}, "does not record the settings"),
        "damaged": ({**good, "measured_ms": [1.0, "x", 3.0]}, "is not 3 positive numbers"),
        "short": ({**good, "measured_ms": [1.0, 2.0]}, "is not 3 positive numbers"),
        "references not a list": ({**good, "references": {}}, "references is not a list"),
        "reference without time": ({**good, "references": [{"arch": probe.to_dict()}]}, "with a positive ms"),
        "reference not an arch": ({**good, "references": ["x"]}, "references[0] is not an arch with a positive ms"),
    }
    for case, (doc, says) in cases.items():
        with pytest.raises(HwnasError, match="--also") as e:
            read(doc)
        assert says in str(e.value) and "\n" not in str(e.value), case
    with pytest.raises(HwnasError, match="cannot read it"):
        earlier_measurement(tmp_path / "missing.json", digest, 1000, 3, target)


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


def test_fidelity_reads_the_networks_through_the_speed_correction(
    tiny_lut: LUT, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Networks that take exactly what the LUT predicts, measured while the machine runs 1.6x slower
    for a stretch of every round: the report matches them (corrected), and its as-timed reading,
    from the same rounds, keeps the episode."""
    import hwnas.measure
    from hwnas.profiling import runner

    space = load_space("tiny")
    rng = random.Random(7)
    archs = [space.sample(rng) for _ in range(12)]
    truth = [tiny_lut.predict(a).total_ms for a in archs] + [t for _, t in reference_nets(space, tiny_lut)]

    def timed(jobs, rounds, timing, progress=None):  # runner.time_job_rows, without timing anything
        rows = []
        for rnd in range(rounds):
            for k, i in enumerate(random.Random(rnd).sample(range(len(jobs)), len(jobs))):
                slow = 1.6 if 8 <= k < 15 else 1.0  # every round, a stretch of seven models
                ms = str(truth[i] * slow)  # the whole round slow: median and 10th percentile alike
                rows.append({"name": jobs[i].name, "round": str(rnd), "median_ms": ms, "p10_ms": ms, "p90_ms": ms,
                             "runs": "9"})  # fmt: skip
        return rows

    monkeypatch.setattr(runner, "time_job_rows", timed)
    f = hwnas.measure.fidelity(space, tiny_lut, validation_archs(space, 12, 7), fast_settings(rounds=3))
    r = f.summary()
    assert r["mape_pct"] < 1e-6 and r["drift"] == pytest.approx(1.0)
    assert len(f.references) == len(reference_nets(space, tiny_lut)) and f.drift_for(tiny_lut, space) == f.drift
    assert r["repeatability"]["mean_diff_pct"] < 1e-6
    assert r["as_timed"]["mape_pct"] > 5 and r["as_timed"]["repeatability"]["mean_diff_pct"] > 5


def test_a_measurement_takes_the_luts_reading(tiny_lut: LUT) -> None:
    """Measured and predicted figures are one statistic of the runs: ``hwnas measure`` and
    ``validate-lut`` read rounds as the LUT did; a LUT from before the reading was recorded was
    read at the median."""
    assert tiny_lut.meta["reading"] == "p10" and settings_from_lut(tiny_lut).reading == "p10"
    tiny_lut.meta["reading"] = "median"
    assert settings_from_lut(tiny_lut).reading == "median"
    del tiny_lut.meta["reading"]
    assert settings_from_lut(tiny_lut).reading == "median"


def test_the_references_are_every_network_the_profile_timed_whole(tiny_lut: LUT) -> None:
    """The drift since a profile is read from its probe networks and its random calibration networks:
    drawn again from the LUT's seed, they are the networks it timed, with the times it recorded."""
    space = load_space("tiny")
    recorded = tiny_lut.meta["model"]["nets"]
    assert tiny_lut.meta["calib_nets"] == 2 and sum(n["name"].startswith("calib-") for n in recorded) == 2
    refs = reference_nets(space, tiny_lut)
    assert [t for _, t in refs] == [n["measured_ms"] for n in recorded]
    # as the guard reads them: the CSV keeps 6 significant digits of a block's time (%.6g)
    assert [tiny_lut.predict(a).total_ms for a, _ in refs] == pytest.approx(
        [n["predicted_ms"] for n in recorded], rel=1e-4
    )
    probes = reference_nets(space, tiny_lut, calibration=False)
    assert len(probes) == len(space.probe_archs()) == len(refs) - 2


def test_a_calibration_network_drawn_differently_now_is_no_reference(tiny_lut: LUT) -> None:
    """Where the network drawn again is not the one the profile timed (its prediction differs from the
    recorded one: the space file or its sampler changed), it is left out; without a recorded seed
    (a LUT from before it was recorded) the references are the probe networks."""
    space = load_space("tiny")
    n_probes = len(space.probe_archs())
    calib0 = next(n for n in tiny_lut.meta["model"]["nets"] if n["name"] == "calib-0")
    calib0["predicted_ms"] *= 1.001
    refs = reference_nets(space, tiny_lut)
    assert len(refs) == n_probes + 1 and calib0["measured_ms"] not in [t for _, t in refs[n_probes:]]
    del tiny_lut.meta["seed"]
    assert len(reference_nets(space, tiny_lut)) == n_probes


def test_a_second_lut_is_judged_by_the_same_reference_networks(tiny_lut_path: Path) -> None:
    """Two profiles of a space (the same seed: the same probe and calibration networks) are judged
    against one measurement: the second LUT's drift is read from the reference networks the
    measurement timed, against the times its own profile recorded; networks it does not share
    are not read."""
    from hwnas.measure import Fidelity

    space = load_space("tiny")
    first, second = LUT.load(tiny_lut_path), LUT.load(tiny_lut_path)
    for n in second.meta["model"]["nets"]:
        n["measured_ms"] *= 1.1  # the second profile ran on a machine 10 % slower
    refs = reference_nets(space, first)
    f = Fidelity([1.0], [1.0], 1.2, None, references=tuple((a, t * 1.2) for a, t in refs))
    assert f.drift_for(first, space) == pytest.approx(1.2)
    assert f.drift_for(second, space) == pytest.approx(1.2 / 1.1)
    # the measurement timed only some of them, in another order: matched by network, the median
    picked = [refs[i] for i in (4, 0, 2)]
    some = Fidelity(
        [1.0], [1.0], 1.2, None, references=tuple((a, t * k) for (a, t), k in zip(picked, (1, 2, 4), strict=True))
    )
    assert some.drift_for(first, space) == pytest.approx(2.0)
    assert Fidelity([1.0], [1.0], None, None).drift_for(second, space) is None
