#!/usr/bin/env bash
# The main job on defaults: install, measure this CPU's latency table for the ProxylessNAS space at
# 224 px with ONNX Runtime (1 thread), sample networks, predict them, and print the fidelity report
# (predicted vs measured end to end). About 3 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
LUT=latency_tables/cpu-onnxruntime-t1__proxyless-224.csv
hwnas profile --space proxyless --device cpu --backend onnxruntime --threads 1 --out "$LUT" --force
hwnas sample --space proxyless --n 3 --seed 0 --out runs/quickstart/samples --force
for a in runs/quickstart/samples/arch_*.json; do
  hwnas predict "$a" --lut "$LUT"
done
hwnas measure runs/quickstart/samples/arch_000.json --lut "$LUT"
hwnas validate-lut --lut "$LUT" --nets 20 --json runs/quickstart/fidelity.json
