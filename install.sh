#!/usr/bin/env bash
# Installs hwnas and everything its tests need into the current Python (idempotent, quick when done).
# torch/torchvision are pinned to the CPU-capable builds this project is tested with on its machines;
# on a GPU machine install the CUDA build of torch you want first and set HWNAS_KEEP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"

# Debian packages, when apt-get is here and we are root: the package index is updated at most
# once (tried once, even if that fails), and only if something is missing.
apt_update=""
apt_install() {
  if [ -z "$apt_update" ]; then
    apt_update=failed
    apt-get update -qq && apt_update=done
  fi
  [ "$apt_update" = done ] || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
missing_debs() {
  local pkg out=""
  for pkg in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] || out="$out $pkg"
  done
  echo "$out"
}

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Fashion-MNIST, the default data set, comes offline from Debian's package (see hwnas/data.py);
  # elsewhere it is optional: --data-dir points at the files instead.
  if [ -n "$(missing_debs dataset-fashion-mnist)" ]; then
    apt_install dataset-fashion-mnist \
      || echo "install.sh: warning: could not install dataset-fashion-mnist; pass --data-dir to hwnas for Fashion-MNIST" >&2
  fi
  # hwnas report draws DARTS cells with graphviz's dot (without it: a plainer matplotlib drawing);
  # its test opens a report in headless Chromium (skipped without it). Both optional.
  missing="$(missing_debs graphviz chromium)"
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt_install $missing \
      || echo "install.sh: warning: could not install Debian's$missing; hwnas report draws DARTS cells without dot, the browser test skips" >&2
  fi
fi

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
