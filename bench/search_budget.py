#!/usr/bin/env python3
"""Budget hit and search quality on the ProxylessNAS space, printed as tables.

Budget hit: budgets at the 25th, 50th and 75th percentile of the space's latency range on a LUT
(random networks, predicted), 3 seeds each; every derived arch should be predicted <= budget and
>= 0.9 x budget.

Quality (``--quality``): at the median budget, the searched net and 5 random nets that also fit
the budget are trained from scratch for the same epochs on Fashion-MNIST; prints each one's
predicted latency and test accuracy, and the searched net's rank.

    python bench/search_budget.py --lut latency_tables/cpu-onnxruntime-t1__proxyless-224-1ch-10cls.csv
    python bench/search_budget.py --lut ... --quality --train-epochs 5 --train-limit 20000

The LUT must match Fashion-MNIST's shape (hwnas profile --space proxyless --in-channels 1
--num-classes 10). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from hwnas.lut import LUT
from hwnas.search import SearchConfig, latency_percentile, run_search
from hwnas.space import load_space
from hwnas.train import train_arch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lut", type=Path, required=True)
    ap.add_argument("--space", default="proxyless")
    ap.add_argument("--strategy", default="binary")
    ap.add_argument("--hard", action="store_true", help="gumbel: GDAS's straight-through hard samples")
    ap.add_argument("--epochs", type=int, default=2, help="search epochs")
    ap.add_argument("--limit", type=int, default=2000, help="training images used by the search")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quality", action="store_true", help="also train searched vs random nets")
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--random-nets", type=int, default=5)
    ap.add_argument("--quality-only", action="store_true", help="skip the budget-hit table (one search at p50)")
    ap.add_argument("--json", type=Path, help="write the quality table here (random_nets.json for hwnas report)")
    a = ap.parse_args()
    lut = LUT.load(a.lut)
    m = lut.meta
    space = load_space(a.space, int(m["input_size"])).with_params(
        in_channels=m.get("in_channels"), num_classes=m.get("num_classes")
    )
    base = SearchConfig(
        space=a.space, strategy=a.strategy, hard=a.hard, epochs=a.epochs, limit=a.limit, input_size=space.input_size
    )
    tmp = Path(tempfile.mkdtemp(prefix="hwnas-bench-"))

    print(
        f"budget hit: {space.describe()} on {lut.describe()}, strategy {a.strategy}{' --hard' if a.hard else ''}, "
        f"{a.epochs} epochs x {a.limit} images"
    )
    print(
        f"{'pct':>4} {'budget ms':>10} {'seed':>5} {'derived ms':>11} {'final ms':>9} {'final/budget':>13} {'swaps':>6} {'ok':>4} {'s':>6}"
    )
    hits, searched = [], {}
    for pct in (50,) if a.quality_only else (25, 50, 75):
        budget = latency_percentile(space, lut, pct)
        for seed in range(1 if a.quality_only else a.seeds):
            t0 = time.perf_counter()
            arch = run_search(replace(base, budget_ms=budget, seed=seed), lut, tmp / f"p{pct}-s{seed}")
            i = arch.info
            ratio = i["predicted_ms"] / budget
            ok = 0.9 <= ratio <= 1.0
            hits.append(ok)
            searched.setdefault(pct, arch)
            print(
                f"{pct:>4} {budget:>10.3f} {seed:>5} {i['derived_ms']:>11.3f} {i['predicted_ms']:>9.3f} {ratio:>13.3f} "
                f"{i['budget_swaps']:>6} {'yes' if ok else 'NO':>4} {time.perf_counter() - t0:>6.1f}"
            )
    print(f"within [0.9, 1.0] x budget: {sum(hits)}/{len(hits)}")

    if not a.quality:
        return
    budget = latency_percentile(space, lut, 50)
    rng = random.Random(12345)
    randoms = []
    while len(randoms) < a.random_nets:
        cand = space.sample(rng)
        if 0.9 * budget <= lut.predict(cand).total_ms <= budget:  # the band the searched net is fitted into
            randoms.append(cand)
    print(f"random nets drawn uniformly from the space, kept if predicted within [0.9, 1] x {budget:.3f} ms")
    rows = [("searched (p50, seed 0)", searched[50])] + [(f"random {k}", r) for k, r in enumerate(randoms)]
    print(
        f"\nquality at the median budget {budget:.3f} ms: {a.train_epochs} epochs on {a.train_limit} Fashion-MNIST images"
    )
    print(f"{'net':<24} {'predicted ms':>13} {'test acc':>9} {'params':>9}")
    accs, table = [], []
    for name, arch in rows:
        res = train_arch(arch, epochs=a.train_epochs, limit=a.train_limit, seed=0)
        accs.append(res.test_acc)
        table.append({"name": name, "searched": name.startswith("searched"), "predicted_ms": lut.predict(arch).total_ms,
                      "test_acc": res.test_acc, "params": res.params, "arch": arch.to_dict()})  # fmt: skip
        print(f"{name:<24} {lut.predict(arch).total_ms:>13.3f} {res.test_acc:>9.4f} {res.params:>9}")
    if a.json:
        doc = {"budget_ms": budget, "train_epochs": a.train_epochs, "train_limit": a.train_limit,
               "strategy": a.strategy, "lut_sha256": lut.sha256, "nets": table}  # fmt: skip
        a.json.write_text(json.dumps(doc, indent=2) + "\n")
    rand = accs[1:]
    if not rand:
        return
    print(
        f"searched {accs[0]:.4f} vs random median {statistics.median(rand):.4f}, best {max(rand):.4f}: "
        f"{'beats the median' if accs[0] > statistics.median(rand) else 'does NOT beat the median'}"
        f"{' and the best' if accs[0] > max(rand) else ''}"
    )


if __name__ == "__main__":
    main()
