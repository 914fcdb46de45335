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


def register_node(url: str, node: str) -> None:
    """Register ``node`` (ttl 2 s, heartbeats), print ``registered`` and wait to be killed."""
    from framebus.cluster import NodeRegistry

    NodeRegistry(servers=[url], ttl=2).register(node, {"role": "child", "n": 7})
    print("registered", flush=True)
    time.sleep(300)


def hold_lock(url: str, name: str) -> None:
    """Take lock ``name`` (ttl 1 s, never renewed), print ``held`` and wait to be killed."""
    from framebus.cluster import DistributedLock

    lock = DistributedLock(name, ttl=1, servers=[url])
    assert lock.acquire(timeout=30)
    print("held", flush=True)
    time.sleep(300)


def contend(url: str, name: str, rounds: int, workdir: str) -> None:
    """``rounds`` times: take lock ``name``, claim the marker file (O_EXCL: fails if
    another holder has it), add one to the counter file, give both back. Exits 3 on a
    second holder."""
    import os

    from framebus.cluster import DistributedLock

    marker = os.path.join(workdir, "holder")
    counter = os.path.join(workdir, "count")
    lock = DistributedLock(name, ttl=30, servers=[url])
    print("ready", flush=True)
    for _ in range(rounds):
        assert lock.acquire(timeout=60)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            print("two holders", flush=True)
            raise SystemExit(3) from None
        os.close(fd)
        with open(counter) as f:
            n = int(f.read() or "0")
        with open(counter, "w") as f:
            f.write(str(n + 1))
        os.unlink(marker)
        lock.release()
    lock.close()
    print("done", flush=True)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "export":
        export_from_wal_bus(args[0], args[1], int(args[2]), args[3])
    elif cmd == "register":
        register_node(args[0], args[1])
    elif cmd == "hold":
        hold_lock(args[0], args[1])
    elif cmd == "contend":
        contend(args[0], args[1], int(args[2]), args[3])
    else:
        raise SystemExit(f"unknown command {cmd!r}")
