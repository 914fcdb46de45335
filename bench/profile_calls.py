"""Instruction counts per frame of the hot calls, for valgrind's callgrind.

    valgrind --tool=callgrind --callgrind-out-file=cg.out python bench/profile_calls.py single
    callgrind_annotate --inclusive=yes cg.out | grep -E "pyx_pw|fb_ring_|PyBytes_From|Frame"

Divide each inclusive count by the frames run (300 000 by default).
"""

from __future__ import annotations

import argparse

import framebus as fb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("single", "batch"))
    ap.add_argument("--count", type=int, default=300_000, help="frames (default 300000)")
    ap.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    args = ap.parse_args()
    with fb.FrameBus(preset="memory_optimized") as bus:
        sub = bus.subscribe()
        payload = b"x" * args.size
        if args.mode == "batch":
            batch = [payload] * 100
            for _ in range(args.count // 100):
                bus.publish_batch(batch)
                for f in sub.recv_batch(100):
                    len(f.payload)
        else:
            publish, recv = bus.publish, sub.recv
            for _ in range(args.count):
                publish(payload)
                len(recv().payload)


if __name__ == "__main__":
    main()
