"""A bare publish/recv loop for instruction counting (bench/instructions_per_frame.sh).

python bench/hot_loop.py single N   # N x (publish 64 B, recv)
python bench/hot_loop.py batch N    # N x (publish_batch of 100 x 64 B, recv_batch 100)
python bench/hot_loop.py payloads N # N x (publish_batch of 100 x 64 B, recv_payloads 100)
python bench/hot_loop.py framebatch N  # N x (publish_batch of 100 x 64 B, recv_frames 100)
"""

from __future__ import annotations

import sys

import framebus as fb


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    bus = fb.FrameBus(preset="default")
    sub = bus.subscribe()
    payload = b"x" * 64
    if mode == "single":
        for _ in range(n):
            bus.publish(payload, "t")
            sub.recv(0)
    elif mode == "batch":
        frames = [payload] * 100
        for _ in range(n):
            bus.publish_batch(frames, "t")
            sub.recv_batch(100, 0)
    elif mode == "payloads":
        frames = [payload] * 100
        for _ in range(n):
            bus.publish_batch(frames, "t")
            sub.recv_payloads(100, 0)
    elif mode == "framebatch":
        frames = [payload] * 100
        for _ in range(n):
            bus.publish_batch(frames, "t")
            sub.recv_frames(100, 0)
    else:
        raise SystemExit(f"mode must be single, batch, payloads or framebatch, got {mode!r}")
    bus.close()


if __name__ == "__main__":
    main()
