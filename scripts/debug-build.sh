#!/usr/bin/env bash
# Build the extension with -O0 -g and write Cython's annotated HTML next to the .pyx.
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMEBUS_DEBUG=1 python setup.py build_ext --inplace --force "$@"
echo "annotated source: _native/_ring.html"
