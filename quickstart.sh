#!/usr/bin/env bash
# The main job on defaults, about 5-9 minutes on a 2-core machine (more when a shared VM is busy):
#  1. install hwnas, its dependencies and Debian's Fashion-MNIST (install.sh);
#  2. measure this CPU's latency table for the ProxylessNAS space at 224 px with ONNX Runtime,
#     1 thread, for Fashion-MNIST's shape (1 input channel, 10 classes);
#  3. search that space (strategy binary, ProxylessNAS's, the default; 3 epochs, the first a
#     weight-only warm-up) on Fashion-MNIST under a budget of p50 = the median predicted latency of
#     random networks of the space on this CPU: a 20 ms budget binds on a phone CPU but nothing
#     here (the whole space runs in about 2-10 ms), while the median always cuts the space in half;
#  4. train the derived network briefly (2 epochs on 10,000 images) and print its test accuracy;
#  5. export it to ONNX, verified against torch, and print measured vs predicted latency vs the
#     budget and ONNX Runtime vs torch eager;
#  6. print the LUT's fidelity report;
#  7. write the run's report (runs/quickstart/report/report.html, PNGs beside it).
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
LUT=latency_tables/cpu-onnxruntime-t1__proxyless-224-1ch-10cls.csv
RUN=runs/quickstart
hwnas profile --space proxyless --in-channels 1 --num-classes 10 --device cpu --backend onnxruntime --threads 1 \
  --out "$LUT" --force
hwnas search --space proxyless --latency-budget p50 --lut "$LUT" --epochs 3 --limit 4000 --out "$RUN" --force
hwnas predict "$RUN/arch.json" --lut "$LUT"
hwnas train "$RUN/arch.json" --epochs 2 --limit 10000 --test-limit 5000 --force
hwnas export "$RUN/arch.json" --weights "$RUN/train/best.pt" -o "$RUN/model.onnx" --lut "$LUT" --rounds 5 --force
hwnas measure "$RUN/arch.json" --lut "$LUT" --json > "$RUN/measure.json"
hwnas validate-lut --lut "$LUT" --nets 20 --json "$RUN/fidelity.json" --force
hwnas report "$RUN"
