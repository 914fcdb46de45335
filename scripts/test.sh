#!/usr/bin/env bash
# Build in place, then run the Python tests and the ring's C tests (ASan + UBSan).
# FRAMEBUS_STRESS_SCALE / FRAMEBUS_STRESS_FRAMES raise the stress sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
python setup.py build_ext --inplace -q
python -m pytest "$@"
