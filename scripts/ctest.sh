#!/usr/bin/env bash
# Builds tests/c/test_ring.c + _native/fb_ring.c with ASan/UBSan and runs it.
# Usage: scripts/ctest.sh [SCALE [FILTER]]   (arguments go to the test binary)
# Exit status: the test binary's (non-zero on any failed check or a build error).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CC="${CC:-gcc}"
OUT_DIR="build/ctest"
BIN="$OUT_DIR/test_ring_asan"
mkdir -p "$OUT_DIR"

CFLAGS=(-std=c11 -g -O1 -fno-omit-frame-pointer
        -fsanitize=address,undefined -fno-sanitize-recover=undefined
        -Wall -Wextra -Werror -pthread -I_native)
if [[ "$(uname -m)" == "x86_64" ]]; then
    CFLAGS+=(-mcx16)
fi

echo "+ $CC ${CFLAGS[*]} -o $BIN tests/c/test_ring.c _native/fb_ring.c -lm"
"$CC" "${CFLAGS[@]}" -o "$BIN" tests/c/test_ring.c _native/fb_ring.c -lm

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

set +e
"$BIN" "$@"
rc=$?
set -e
echo "test_ring exit code: $rc"
exit "$rc"
