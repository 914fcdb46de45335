"""framebus.cluster against a real nats-server: events and request-reply across two
buses, the node registry's joins and leaves (TTL expiry after a SIGKILL), the lock's
exclusivity under contention from several processes and its expiry after a holder's
SIGKILL. The single-node defaults, which need no server: tests/test_cluster_local.py."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_support import NatsServer, free_port, serve, wait_for

import framebus as fb
from framebus import cluster
from framebus.cluster import (
    ClusterEventBus,
    DistributedLock,
    LockLost,
    NodeRegistry,
)

WORKERS = Path(__file__).resolve().parent / "nats_workers.py"

# every test here starts a nats-server process
pytestmark = pytest.mark.xproc


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from serve(tmp_path)


def _ours(t: threading.Thread) -> bool:
    return t.name.startswith(("framebus-nats", "framebus-cluster"))


@pytest.fixture(autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    yield
    assert wait_for(lambda: not [t for t in threading.enumerate() if _ours(t)], 10)


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKERS), *args], stdout=subprocess.PIPE, text=True
    )


def reap(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        if p.stdout is not None:
            p.stdout.close()


def test_events_and_requests_across_two_buses(nats_server: NatsServer) -> None:
    url = [nats_server.url]
    with fb.FrameBus(preset="memory_optimized") as a, fb.FrameBus(preset="memory_optimized") as b:
        with ClusterEventBus(a, url, node="a") as ca, ClusterEventBus(b, url, node="b") as cb:
            at_b: queue.Queue[Any] = queue.Queue()
            local_a: queue.Queue[Any] = queue.Queue()
            cb.subscribe_cluster("ctl.*", at_b.put)
            ca.subscribe_local("ctl.*", local_a.put)
            ca.publish_local("ctl.only-a", {"n": 1})
            ca.publish_cluster("ctl.reload", {"k": [1, 2], "b": b"\x00"})
            assert at_b.get(timeout=10) == {"k": [1, 2], "b": b"\x00"}
            assert local_a.get(timeout=10) == {"n": 1}

            cb.subscribe_cluster("svc.echo", lambda m: {"echo": m})
            cb.subscribe_cluster("svc.silent", lambda m: None)

            def fail(m: Any) -> Any:
                raise RuntimeError("no way")

            cb.subscribe_cluster("svc.fail", fail)
            assert ca.request("svc.echo", {"x": 1}, timeout=5) == {"echo": {"x": 1}}
            with pytest.raises(fb.NoResponders):
                ca.request("svc.nobody", 1, timeout=5)
            with pytest.raises(fb.RequestTimeout):
                ca.request("svc.silent", 1, timeout=0.3)
            with pytest.raises(fb.HandlerError, match="RuntimeError: no way"):
                ca.request("svc.fail", 1, timeout=5)
            # the responder counts a reply once it is sent: maybe after it arrived
            assert wait_for(lambda: cb.statistics()["replies"] == 2, 10)
            sa, sb = ca.statistics(), cb.statistics()
    assert at_b.empty()  # publish_local stayed on bus a
    assert (sa["published_local"], sa["published_cluster"], sa["requests"]) == (1, 1, 4)
    assert (sa["no_responders"], sa["timeouts"], sa["node"], sa["connected"]) == (1, 1, "a", True)
    assert (sb["replies"], sb["handler_errors"], sb["subscriptions_cluster"]) == (2, 1, 4)
    assert sa["local"]["published"] == 1


@pytest.mark.crash
def test_registry_join_and_leave_on_ttl_expiry(nats_server: NatsServer) -> None:
    events: queue.Queue[Any] = queue.Queue()
    procs: list[subprocess.Popen[str]] = []
    with NodeRegistry(servers=[nats_server.url], ttl=2) as reg:
        watch = reg.watch(lambda *e: events.put(e), interval=0.05)
        me = reg.register("here", {"role": "test"})
        assert events.get(timeout=10) == ("join", "here", {"role": "test"})
        try:
            p = child("register", nats_server.url, "there")
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline() == "registered\n"
            assert events.get(timeout=10) == ("join", "there", {"role": "child", "n": 7})
            assert reg.nodes() == {"here": {"role": "test"}, "there": {"role": "child", "n": 7}}
            there = reg.describe()["there"]
            assert (there["pid"], there["host"]) == (p.pid, socket.gethostname())
            # the child keeps it alive past several TTLs while it lives
            assert not wait_for(lambda: "there" not in reg.nodes(), 4.5, 0.1)
            p.send_signal(signal.SIGKILL)
            assert events.get(timeout=15) == ("leave", "there", None)  # its key expired
            assert "here" in reg.nodes()  # ours is kept alive by heartbeats
            reg.deregister(me)
            assert events.get(timeout=10) == ("leave", "here", None)
            assert reg.nodes() == {}
        finally:
            watch.close()
            reap(procs)
    assert watch.errors == 0


def test_lock_is_exclusive_under_contention(nats_server: NatsServer, tmp_path: Path) -> None:
    (tmp_path / "count").write_text("0")
    workers, rounds = 4, 15
    procs = [
        child("contend", nats_server.url, "shared", str(rounds), str(tmp_path))
        for _ in range(workers)
    ]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        reap(procs)
    assert [p.returncode for p in procs] == [0] * workers, outs
    assert all(o.endswith("done\n") for o in outs)
    assert (tmp_path / "count").read_text() == str(workers * rounds)


@pytest.mark.crash
def test_lock_expires_after_holder_sigkill(nats_server: NatsServer) -> None:
    url = [nats_server.url]
    p = child("hold", nats_server.url, "crashy")
    try:
        assert p.stdout is not None and p.stdout.readline() == "held\n"
        lock = DistributedLock("crashy", ttl=5, servers=url)
        try:
            assert lock.try_acquire() is False  # held by the child
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            assert lock.acquire(timeout=20) is True  # the child's TTL ran out
            assert lock.held
            lock.renew()
            lock.release()
            with pytest.raises(LockLost):
                lock.release()
        finally:
            lock.close()
    finally:
        reap([p])


def test_lost_lock_cannot_be_renewed_or_released(nats_server: NatsServer) -> None:
    url = [nats_server.url]
    a = DistributedLock("brief", ttl=1, servers=url)
    b = DistributedLock("brief", ttl=5, servers=url)
    try:
        assert a.try_acquire()
        assert b.acquire(timeout=20)  # a never renewed: its TTL expired
        with pytest.raises(LockLost):
            a.renew()
        with pytest.raises(LockLost):
            a.release()
        assert not a.try_acquire()
        b.release()
        with a:
            assert not b.try_acquire()
        assert b.try_acquire()
    finally:
        a.close()
        b.close()


def test_bad_server_address_fails_clearly() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with fb.FrameBus(preset="memory_optimized") as bus:
        with pytest.raises(cluster.ClusterError, match="cannot connect to NATS at"):
            ClusterEventBus(bus, [url], connect_timeout=1)
    with pytest.raises(cluster.ClusterError, match="Connect call failed"):
        NodeRegistry(servers=[url], connect_timeout=1)
    with pytest.raises(cluster.ClusterError):
        DistributedLock("x", servers=[url], connect_timeout=1)


@pytest.mark.crash
def test_cluster_event_bus_reconnects_after_a_server_restart(nats_server: NatsServer) -> None:
    url = [nats_server.url]
    with fb.FrameBus(preset="memory_optimized") as a, fb.FrameBus(preset="memory_optimized") as b:
        with ClusterEventBus(a, url, node="a") as ca, ClusterEventBus(b, url, node="b") as cb:
            cb.subscribe_cluster("svc.echo", lambda m: m)
            assert ca.request("svc.echo", 1, timeout=5) == 1
            nats_server.restart()
            assert wait_for(
                lambda: ca.statistics()["connected"] and cb.statistics()["connected"], 20
            )

            def answered() -> bool:
                try:
                    return bool(ca.request("svc.echo", 2, timeout=0.5) == 2)
                except (fb.NoResponders, fb.RequestTimeout):
                    return False  # b's subscription not yet back on the new server

            assert wait_for(answered, 20, 0.1)
