#!/usr/bin/env bash
# Build the extension in place (optimised). FRAMEBUS_DEBUG=1 for -O0 -g and an annotated .html.
set -euo pipefail
cd "$(dirname "$0")/.."
python setup.py build_ext --inplace "$@"
