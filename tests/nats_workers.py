"""Child processes of the NATS tests (run as scripts: ``python nats_workers.py ...``)."""

from __future__ import annotations

import sys
import time


def export_from_wal_bus(wal_dir: str, url: str, total: int, durable: str) -> None:
    """Open the bus on ``wal_dir`` (in this process), bridge ``load.>`` out, and publish
    frames whose payload is their own seq until ``total`` exist (the ring numbers on from
    the WAL, so a restarted child carries on where the killed one stopped); print
    ``done`` once every frame is acknowledged and committed, then wait to be stopped."""
    import framebus as fb
    from framebus.bridge.nats import NatsBridge

    bus = fb.FrameBus(preset="memory_optimized", wal_dir=wal_dir, wal_sync=True)
    bridge = NatsBridge(bus, [url], export=["load.>"], durable=durable)
    print("started", bus.stats()["next_seq"], flush=True)
    while True:
        nxt = bus.stats()["next_seq"]
        if nxt >= total:
            break
        n = min(100, total - nxt)
        bus.publish_batch([b"%d" % (nxt + i) for i in range(n)], topic=f"load.{nxt % 3}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if bridge.stats()["exported_through"] == [total - 1]:
            break
        time.sleep(0.02)
    bridge.close()
    bus.close()
    print("done", flush=True)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "export":
        export_from_wal_bus(args[0], args[1], int(args[2]), args[3])
    else:
        raise SystemExit(f"unknown command {cmd!r}")
