"""Helper of tests/test_distributed.py (not a test): run several searches in one torchrun launch.

    torchrun --standalone --nproc-per-node 2 tests/dist_worker.py JOBS.json

``JOBS.json`` is a list of ``{"cfg": {SearchConfig fields}, "lut": path, "out": dir}``. The
process group is initialised once here (so :func:`hwnas.search.run_search` uses it as given) and
every process writes the arch it returned to ``<out>/arch.rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from hwnas.lut import LUT
from hwnas.search import SearchConfig, run_search


def main(jobs_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        for job in json.loads(Path(jobs_file).read_text()):
            out = Path(job["out"])
            arch = run_search(SearchConfig(**job["cfg"]), LUT.load(job["lut"]), out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"arch.rank{dist.get_rank()}.json").write_text(arch.to_json())
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
