#!/usr/bin/env bash
# Installs hwnas and everything its tests need into the current Python (idempotent, quick when done).
# torch/torchvision are pinned to the CPU-capable builds this project is tested with on its machines;
# on a GPU machine install the CUDA build of torch you want first and set HWNAS_KEEP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"

if [ -z "${HWNAS_KEEP_TORCH:-}" ]; then
  case "$(uname -m)" in
    aarch64|arm64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;
    *)             TORCH="torch==2.14.1 torchvision==0.29.1" ;;
  esac
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet --disable-pip-version-check $TORCH
fi
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
"$PY" -c "import hwnas, torch, onnxruntime; print('hwnas', hwnas.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
