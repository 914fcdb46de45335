#!/usr/bin/env bash
# Instructions per frame of the in-process hot paths under callgrind (repeatable,
# whatever else the machine does): each loop of bench/hot_loop.py is counted at two
# lengths and the difference divided by the extra frames, so start-up cancels out.
#   bench/instructions_per_frame.sh [PYTHON]      (default: python)
set -euo pipefail
py=${1:-python}
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONHASHSEED=0  # dict layouts, hence instruction counts, depend on the seed
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" "$here/hot_loop.py" "$@" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a=$(count single 2000); b=$(count single 22000)
c=$(count batch 20); d=$(count batch 220)
e=$(count payloads 20); f=$(count payloads 220)
g=$(count framebatch 20); h=$(count framebatch 220)
echo "publish + recv (64 B):                    $(( (b - a) / 20000 )) instructions per frame"
echo "publish_batch + recv_batch (100 x 64 B):  $(( (d - c) / 20000 )) instructions per frame"
echo "publish_batch + recv_payloads (100 x 64 B): $(( (f - e) / 20000 )) instructions per frame"
echo "publish_batch + recv_frames (100 x 64 B):   $(( (h - g) / 20000 )) instructions per frame"
