#!/usr/bin/env bash
# The in-process benchmark with its peers; extra arguments go to `framebus bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m framebus bench "$@"
