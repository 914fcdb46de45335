"""The seed's cluster interfaces: an event bus across machines, a registry of live
nodes and a distributed lock, on NATS (framebus never implements consensus itself).

On NATS (needs the ``nats`` extra: ``pip install 'framebus[nats]'``)::

    from framebus.cluster import ClusterEventBus, NodeRegistry, DistributedLock

    ceb = ClusterEventBus(bus, servers=["nats://10.0.0.5:4222"])
    ceb.publish_local("ctl.reload", {"k": 1})       # this bus only (bus.events)
    ceb.publish_cluster("ctl.reload", {"k": 1})     # every node's subscribe_cluster
    ceb.subscribe_cluster("svc.echo", lambda m: m)  # a return value answers a request
    ceb.request("svc.echo", {"x": 1}, timeout=1.0)  # NoResponders / RequestTimeout
    ceb.statistics(); ceb.close()

    reg = NodeRegistry(servers=[...], ttl=10)       # JetStream KV, per-key TTL
    reg.register("cam-host-1", {"role": "camera"})  # heartbeats keep it alive
    reg.nodes()                                     # {node_id: metadata} of live nodes
    w = reg.watch(lambda kind, node, meta: ...)     # kind "join" or "leave"; w.close()

    with DistributedLock("reindex", ttl=30, servers=[...]) as lock:   # acquire()
        lock.renew()                                # before the ttl runs out

Single node, no server: :class:`LocalClusterEventBus`, :class:`LocalNodeRegistry` and
:class:`LocalLock` have the same methods; :func:`event_bus`, :func:`node_registry` and
:func:`lock` give the NATS one when ``servers`` is given and the local one otherwise, so
one program runs on one machine and on many.

Details (NATS classes: ``framebus.cluster.nats``; local ones: ``framebus.cluster.local``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .local import LocalClusterEventBus, LocalLock, LocalNodeRegistry, LockLost

if TYPE_CHECKING:
    from ..bus import FrameBus
    from .nats import ClusterEventBus, DistributedLock, NodeRegistry

__all__ = [
    "ClusterEventBus",
    "DistributedLock",
    "LocalClusterEventBus",
    "LocalLock",
    "LocalNodeRegistry",
    "LockLost",
    "NodeRegistry",
    "event_bus",
    "lock",
    "node_registry",
]

_ON_NATS = ("ClusterEventBus", "DistributedLock", "NodeRegistry", "ClusterError")


def __getattr__(name: str) -> Any:
    # the NATS classes load nats-py: imported on first use, so the local ones need nothing
    if name in _ON_NATS:
        from . import nats

        return getattr(nats, name)
    raise AttributeError(f"module 'framebus.cluster' has no attribute {name!r}")


def event_bus(
    bus: FrameBus, servers: Sequence[str] | str | None = None, **options: Any
) -> ClusterEventBus | LocalClusterEventBus:
    """A ClusterEventBus on ``servers``, or a LocalClusterEventBus when None."""
    if servers is None:
        return LocalClusterEventBus(bus)
    from .nats import ClusterEventBus

    return ClusterEventBus(bus, servers=servers, **options)


def node_registry(
    servers: Sequence[str] | str | None = None, **options: Any
) -> NodeRegistry | LocalNodeRegistry:
    """A NodeRegistry on ``servers``, or a LocalNodeRegistry when None."""
    if servers is None:
        return LocalNodeRegistry(**options)
    from .nats import NodeRegistry

    return NodeRegistry(servers=servers, **options)


def lock(
    name: str, ttl: float = 10.0, servers: Sequence[str] | str | None = None, **options: Any
) -> DistributedLock | LocalLock:
    """A DistributedLock on ``servers``, or a LocalLock (this process) when None."""
    if servers is None:
        return LocalLock(name, ttl)
    from .nats import DistributedLock

    return DistributedLock(name, ttl, servers=servers, **options)
