"""The single-node defaults of framebus.cluster: the same methods as the NATS classes,
no server."""

from __future__ import annotations

import queue
from typing import Any

import pytest

import framebus as fb
from framebus import cluster
from framebus.cluster import LocalClusterEventBus, LocalLock, LocalNodeRegistry, LockLost


def test_single_node_defaults_need_no_server() -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        ceb = cluster.event_bus(bus)
        assert isinstance(ceb, LocalClusterEventBus)
        ceb.subscribe_cluster("svc.echo", lambda m: {"echo": m})
        assert ceb.request("svc.echo", 5, timeout=5) == {"echo": 5}
        with pytest.raises(fb.NoResponders):
            ceb.request("svc.nobody", 1, timeout=5)
        got: queue.Queue[Any] = queue.Queue()
        ceb.subscribe_local("ctl.>", got.put)
        ceb.publish_cluster("ctl.x", 1)
        assert got.get(timeout=5) == 1
        assert ceb.statistics()["published_cluster"] == 1
        ceb.close()

    reg = cluster.node_registry(ttl=1)
    assert isinstance(reg, LocalNodeRegistry)
    events: queue.Queue[Any] = queue.Queue()
    watch = reg.watch(lambda *e: events.put(e), interval=0.02)
    reg.register("n1", {"a": 1})
    assert events.get(timeout=5) == ("join", "n1", {"a": 1})
    assert reg.nodes() == {"n1": {"a": 1}}
    assert events.get(timeout=5) == ("leave", "n1", None)  # no heartbeat: expired
    watch.close()
    reg.close()

    one, two = cluster.lock("job", ttl=1), LocalLock("job", ttl=1)
    assert isinstance(one, LocalLock)
    assert one.try_acquire() and not two.try_acquire()
    assert two.acquire(timeout=10)  # one's ttl ran out
    with pytest.raises(LockLost):
        one.renew()
    two.release()
    with one:
        assert one.held and not two.try_acquire()


def test_local_defaults_import_without_nats(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    for mod in [m for m in sys.modules if m.startswith("framebus.cluster")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    local = importlib.import_module("framebus.cluster")
    assert local.LocalLock("solo", ttl=1).try_acquire()
    with pytest.raises(ImportError, match=r"framebus\[nats\]"):
        local.ClusterEventBus  # noqa: B018 - the NATS classes need the extra
