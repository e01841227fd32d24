#!/usr/bin/env python3
"""LUT fidelity benchmark: how well ``hwnas predict`` matches whole networks measured here.

For each (space, input size, threads) it builds a LUT with ``hwnas profile`` settings, then
measures N random networks end to end (ONNX Runtime CPU, batch 1) and prints MAPE, max error,
share within ±5% / ±10%, Spearman and Kendall, the profile time, and how far the measurement
disagrees with itself (``self-diff``: even vs odd rounds; figures near it are the machine's
noise, not the LUT's error; ``Sp. ceiling``: about the Spearman a perfect predictor would read
against this measurement), and the same figures as timed, without the correction for the
machine's changing speed. With ``--repeat`` it builds
a second, independent LUT, judges it against the same measurement (its drift read from the same
reference networks) and prints how far the two predict the same networks apart, as they are and
each brought to the validation's speed. Each network's figures go to ``<out>/<config>.validation.json``,
which ``hwnas validate-lut --also`` takes as an earlier measurement of the same networks.

    python bench/fidelity.py                        # proxyless@224 and darts@32, 1 and 2 threads
    python bench/fidelity.py --configs proxyless:224:1 --nets 50 --repeat

Takes about 3-5 minutes per configuration on a 2-core machine (4-8 with --repeat; a noisy machine
makes the profiles take more rounds). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from hwnas.measure import (
    VALIDATION_ROUNDS,
    Fidelity,
    apart_pct,
    fidelity,
    report_fields,
    validation_archs,
)
from hwnas.profiling.profile import ProfileSettings, profile
from hwnas.space import load_space

DEFAULT = ["proxyless:224:1", "darts:32:1", "proxyless:224:2", "darts:32:2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=DEFAULT, help="space:input_size:threads ...")
    ap.add_argument("--nets", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks")
    ap.add_argument("--repeat", action="store_true", help="build a second LUT and compare predictions")
    ap.add_argument("--measure-rounds", type=int, default=VALIDATION_ROUNDS, help="rounds for each validation network")
    ap.add_argument("--rounds", type=int, default=None, help="profile rounds (default: hwnas profile's)")
    ap.add_argument("--calib-nets", type=int, default=None, help="profile calibration nets (default: hwnas profile's)")
    ap.add_argument("--refit-nets", type=int, default=None, help="profile refit nets (default: hwnas profile's)")
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cfg in a.configs:
        name, size, threads = cfg.split(":")
        sp = load_space(name, input_size=int(size))
        s = ProfileSettings(threads=int(threads))
        s = replace(s, rounds=a.rounds or s.rounds, calib_nets=s.calib_nets if a.calib_nets is None else a.calib_nets)
        s = replace(s, refit_nets=s.refit_nets if a.refit_nets is None else a.refit_nets)
        path = a.out / f"{name}-{size}-t{threads}.csv"
        for p in (path, path.with_name(path.stem + ".meta.json")):
            p.unlink(missing_ok=True)
        t0 = time.perf_counter()
        lut = profile(sp, s, path)
        secs = time.perf_counter() - t0
        archs = validation_archs(sp, a.nets, a.seed)
        f = fidelity(sp, lut, archs, replace(s, rounds=a.measure_rounds))
        r = f.summary()
        r.update(config=cfg, profile_seconds=round(secs, 1), keys=len(lut.table))
        # each network's figures, for re-reading later without timing again, and for `hwnas
        # validate-lut --also` (archs_sha256 and target: which networks, measured how)
        nets = {"seed": a.seed, **report_fields(sp, archs, s), **f.record()}
        path.with_name(path.stem + ".validation.json").write_text(json.dumps(nets))
        if a.repeat:
            path2 = a.out / f"{name}-{size}-t{threads}-repeat.csv"
            for p in (path2, path2.with_name(path2.stem + ".meta.json")):
                p.unlink(missing_ok=True)
            lut2 = profile(sp, s, path2)
            p1 = np.array(f.predicted)
            p2 = np.array([lut2.predict(x).total_ms for x in archs])
            mean, most = apart_pct(p2, p1)
            r.update(repeat_mean_diff_pct=mean, repeat_max_diff_pct=most)
            # the second LUT judged against the same measurement, its drift read from the same
            # reference networks (the same probe and calibration networks: the same seed)
            d2 = f.drift_for(lut2, sp)
            r["repeat"] = Fidelity(list(p2), f.measured, d2, None).summary()
            if d2 is not None and f.drift is not None:
                mean, most = apart_pct(p2 * d2, p1 * f.drift)
                r.update(repeat_corrected_mean_diff_pct=mean, repeat_corrected_max_diff_pct=most)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print()
    head = (
        f"{'config':<18}{'keys':>5}{'profile s':>10}{'MAPE %':>8}{'max %':>7}{'±5%':>6}{'±10%':>6}{'Spearman':>9}"
        f"{'Kendall':>8}{'drift %':>8}{'corr. MAPE %':>13}{'corr. max %':>12}{'corr. ±5%':>10}{'self-diff %':>12}"
    )
    head += f"{'Sp. ceiling':>12}{'as-timed MAPE %':>16}{'as-timed self-diff %':>21}"
    if a.repeat:
        head += f"{'2nd LUT max diff %':>20}"
    print(head)
    for r in rows:
        line = (
            f"{r['config']:<18}{r['keys']:>5}{r['profile_seconds']:>10.1f}{r['mape_pct']:>8.2f}{r['max_error_pct']:>7.2f}"
            f"{r['within_5pct'] * 100:>5.0f}%{r['within_10pct'] * 100:>5.0f}%{r['spearman']:>9.4f}{r['kendall']:>8.4f}"
            f"{(r['drift'] - 1) * 100:>+8.2f}{r['corrected']['mape_pct']:>13.2f}{r['corrected']['max_error_pct']:>12.2f}"
            f"{r['corrected']['within_5pct'] * 100:>9.0f}%"
            + (f"{r['repeatability']['mean_diff_pct']:>12.2f}" if r.get("repeatability") else f"{'n/a':>12}")
        )
        ceiling = (r.get("repeatability") or {}).get("spearman_ceiling")
        line += f"{ceiling:>12.4f}" if ceiling is not None else f"{'n/a':>12}"
        raw = r.get("as_timed") or {}
        raw_rep = raw.get("repeatability") or {}
        line += f"{raw.get('mape_pct', float('nan')):>16.2f}{raw_rep.get('mean_diff_pct', float('nan')):>21.2f}"
        if a.repeat:
            line += f"{r['repeat_max_diff_pct']:>20.2f}"
        print(line)
    if a.repeat:
        print(
            "\nthe 2nd LUT against the same measurement; the two LUTs' predictions apart as printed (raw) and each"
            " brought to the validation's speed by its own drift (corrected), mean / max %:"
        )
        print(f"{'config':<18}{'MAPE %':>8}{'drift %':>8}{'corr. MAPE %':>13}{'corr. max %':>12}{'corr. ±5%':>10}"
              f"{'Spearman':>9}{'apart raw':>14}{'apart corr.':>14}")  # fmt: skip
        for r in rows:
            q, c = r["repeat"], r["repeat"].get("corrected")
            line = f"{r['config']:<18}{q['mape_pct']:>8.2f}"
            line += (
                f"{(q['drift'] - 1) * 100:>+8.2f}{c['mape_pct']:>13.2f}{c['max_error_pct']:>12.2f}{c['within_5pct'] * 100:>9.0f}%"
                if c
                else f"{'n/a':>8}{'':>35}"
            )
            line += f"{q['spearman']:>9.4f}{r['repeat_mean_diff_pct']:>7.2f} /{r['repeat_max_diff_pct']:>5.1f}"
            if "repeat_corrected_mean_diff_pct" in r:
                line += f"{r['repeat_corrected_mean_diff_pct']:>7.2f} /{r['repeat_corrected_max_diff_pct']:>5.1f}"
            print(line)


if __name__ == "__main__":
    main()
