"""Measure the memory each preset really uses: resident set growth of this process
when a bus is created, and after a full lap of 64-byte frames through it.

    python scripts/preset_memory.py
"""

from __future__ import annotations

import gc

import framebus as fb


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure(preset: str) -> tuple[int, int, int]:
    gc.collect()
    before = rss_bytes()
    bus = fb.FrameBus(preset=preset)
    created = rss_bytes() - before
    sub = bus.subscribe()
    payload = b"x" * 64
    batch = [payload] * 1000
    rounds = bus.config.frame_capacity // 1000 + 1
    for _ in range(rounds):
        bus.publish_batch(batch)
        while sub.recv_batch(1000, timeout=0):
            pass
    used = rss_bytes() - before
    mapped = bus.mapped_bytes
    bus.close()
    return mapped, created, used


def main() -> None:
    heads = ("ring_bytes", "frames", "mapped", "RSS new", "RSS lap")
    print(f"{'preset':18} " + " ".join(f"{h:>12}" for h in heads))
    for name in fb.BusConfig.presets():
        cfg = fb.BusConfig.preset(name)
        mapped, created, used = measure(name)
        mib = 1 << 20
        cols = (
            f"{cfg.ring_bytes // mib} MiB",
            str(cfg.frame_capacity),
            f"{mapped / mib:.1f} MiB",
            f"{created / mib:.1f} MiB",
            f"{used / mib:.1f} MiB",
        )
        print(f"{name:18} " + " ".join(f"{c:>12}" for c in cols))


if __name__ == "__main__":
    main()
