"""Single-node defaults of the cluster interfaces: no server, one process.

- :class:`LocalClusterEventBus`: the cluster methods are the bus's own EventBus (on one
  node, "the cluster" is this bus: ``subscribe_local`` also sees ``publish_cluster``).
- :class:`LocalNodeRegistry`: nodes registered in this process, with the same TTL rule
  (a node not renewed within ``ttl`` seconds leaves) and ``watch``.
- :class:`LocalLock`: a lock by name among the threads of this process, with a TTL.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import FrameBusError

if TYPE_CHECKING:
    from ..bus import FrameBus
    from ..eventbus import EventSubscription

__all__ = ["LocalClusterEventBus", "LocalLock", "LocalNodeRegistry", "LockLost", "Watch"]

WatchCallback = Callable[[str, str, Any], object]


class LockLost(FrameBusError):
    """The lock is no longer held by this holder (it expired or was never acquired)."""


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}".replace(".", "-")


def check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl >= 1:
        raise ValueError(f"ttl must be a number of seconds >= 1, got {ttl!r}")
    return float(ttl)


class LocalClusterEventBus:
    """The ClusterEventBus interface on one bus: every method goes to ``bus.events``."""

    def __init__(self, bus: FrameBus) -> None:
        self._bus = bus
        self._counts = {"published_local": 0, "published_cluster": 0}
        self._closed = False

    @property
    def node(self) -> str:
        return default_node_id()

    def publish_local(self, topic: str, message: Any = None) -> None:
        self._bus.events.publish(topic, message)
        self._counts["published_local"] += 1

    def publish_cluster(self, topic: str, message: Any = None) -> None:
        self._bus.events.publish(topic, message)
        self._counts["published_cluster"] += 1

    def subscribe_local(
        self, pattern: str, handler: Callable[[Any], object] | None = None
    ) -> EventSubscription:
        return self._bus.events.subscribe(pattern, handler)

    def subscribe_cluster(
        self, pattern: str, handler: Callable[[Any], object], *, queue: str | None = None
    ) -> EventSubscription:
        return self._bus.events.subscribe(pattern, handler)

    def request(self, topic: str, message: Any = None, timeout: float = 5.0) -> Any:
        return self._bus.events.request(topic, message, timeout)

    def statistics(self) -> dict[str, Any]:
        s: dict[str, Any] = dict(self._counts)
        s["node"] = self.node
        s["connected"] = not self._closed
        s["local"] = self._bus.events.stats()
        return s

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> LocalClusterEventBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Watch:
    """A polling watcher: calls ``callback(kind, node_id, metadata)`` with kind
    ``"join"`` or ``"leave"`` (metadata None) on its own thread; ``close()`` stops it."""

    def __init__(
        self, list_nodes: Callable[[], dict[str, Any]], callback: WatchCallback, interval: float
    ) -> None:
        self._list = list_nodes
        self._callback = callback
        self._interval = interval
        self._stop = threading.Event()
        self.errors = 0  # callbacks or listings that raised
        self._seen: dict[str, Any] = {}
        self._thread = threading.Thread(
            target=self._run, name="framebus-cluster-watch", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = self._list()
            except Exception:
                self.errors += 1
                now = None
            if now is not None:
                events = [("join", k, v) for k, v in now.items() if k not in self._seen]
                events += [("leave", k, None) for k in self._seen if k not in now]
                self._seen = now
                for kind, node, meta in events:
                    try:
                        self._callback(kind, node, meta)
                    except Exception:
                        self.errors += 1
            self._stop.wait(self._interval)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(10.0)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalNodeRegistry:
    """Nodes of this process: ``register`` / ``heartbeat`` / ``deregister`` / ``nodes``
    / ``watch``; a node whose last registration or heartbeat is older than ``ttl``
    seconds is gone."""

    def __init__(self, ttl: float = 10.0) -> None:
        self._ttl = check_ttl(ttl)
        self._lock = threading.Lock()
        self._nodes: dict[str, tuple[dict[str, Any], float]] = {}
        self._mine: set[str] = set()
        self._watches: list[Watch] = []

    def register(self, node_id: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        node = node_id or default_node_id()
        with self._lock:
            self._nodes[node] = (dict(metadata or {}), time.monotonic() + self._ttl)
            self._mine.add(node)
        return node

    def heartbeat(self, node_id: str) -> None:
        with self._lock:
            meta, _ = self._nodes[node_id]
            self._nodes[node_id] = (meta, time.monotonic() + self._ttl)

    def deregister(self, node_id: str) -> None:
        with self._lock:
            self._nodes.pop(node_id, None)
            self._mine.discard(node_id)

    def nodes(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            for k in [k for k, (_, exp) in self._nodes.items() if exp <= now]:
                del self._nodes[k]
            return {k: dict(meta) for k, (meta, _) in self._nodes.items()}

    def watch(self, callback: WatchCallback, interval: float = 0.2) -> Watch:
        w = Watch(self.nodes, callback, interval)
        self._watches.append(w)
        return w

    def close(self) -> None:
        for w in self._watches:
            w.close()
        for node in list(self._mine):
            self.deregister(node)

    def __enter__(self) -> LocalNodeRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_local_locks: dict[str, tuple[str, float]] = {}  # name -> (holder token, expiry)
_local_cond = threading.Condition()


class LocalLock:
    """A named lock among the threads of this process with the DistributedLock methods;
    a holder that does not renew within ``ttl`` seconds loses it."""

    def __init__(self, name: str, ttl: float = 10.0) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"lock name must be a non-empty str, got {name!r}")
        self.name = name
        self._ttl = check_ttl(ttl)
        self._token = uuid.uuid4().hex

    def _free(self, now: float) -> bool:
        entry = _local_locks.get(self.name)
        return entry is None or entry[1] <= now

    def try_acquire(self) -> bool:
        with _local_cond:
            now = time.monotonic()
            if not self._free(now):
                return False
            _local_locks[self.name] = (self._token, now + self._ttl)
            return True

    def acquire(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with _local_cond:
            while True:
                if self.try_acquire():
                    return True
                now = time.monotonic()
                entry = _local_locks.get(self.name)
                wait = entry[1] - now if entry else 0.05
                if deadline is not None:
                    if now >= deadline:
                        return False
                    wait = min(wait, deadline - now)
                _local_cond.wait(max(wait, 0.001))

    @property
    def held(self) -> bool:
        with _local_cond:
            entry = _local_locks.get(self.name)
            return entry is not None and entry[0] == self._token and entry[1] > time.monotonic()

    def renew(self) -> None:
        with _local_cond:
            if not self.held:
                raise LockLost(f"lock {self.name!r} is not held by this holder")
            _local_locks[self.name] = (self._token, time.monotonic() + self._ttl)

    def release(self) -> None:
        with _local_cond:
            if not self.held:
                raise LockLost(f"lock {self.name!r} is not held by this holder")
            del _local_locks[self.name]
            _local_cond.notify_all()

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
