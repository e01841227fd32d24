#!/usr/bin/env bash
# The test command: installs what the tests need (install.sh), then runs the whole suite on the CPU.
# GPU-only tests skip with a reason where no GPU is present. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
exec "${PYTHON:-python3}" -m pytest -q "$@"
