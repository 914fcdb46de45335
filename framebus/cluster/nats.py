"""The cluster interfaces on NATS: ClusterEventBus (core NATS publish / subscribe /
request-reply), NodeRegistry (a JetStream KV bucket with per-key TTL and heartbeats) and
DistributedLock (a KV create-if-absent with revision checks). Each object holds one NATS
connection on an asyncio loop of its own thread; ``close()`` ends both. The registry and
the lock use per-message TTLs: nats-server 2.11 or later.

ClusterEventBus
    ``publish_local`` / ``subscribe_local`` are the bus's EventBus (``bus.events``).
    ``publish_cluster(topic, message)`` publishes ``message`` on the NATS
    subject ``<prefix><topic>`` (``prefix`` default ``"framebus.ev."``);
    ``subscribe_cluster(pattern, handler, queue=None)`` calls ``handler(message)`` on a
    thread of its own for every message on ``<prefix><pattern>`` (from every node,
    this one included); with ``queue``, the members of that NATS queue group share the
    messages. A request's reply is the handler's return value when not None (None:
    "not mine"); a handler that raises is logged and counted and the requester gets
    HandlerError. ``request(topic, message, timeout=5.0)`` raises NoResponders at once
    when no subscription anywhere matches, RequestTimeout when no reply comes in time,
    as the local EventBus does. Messages travel as Envelopes with a msgpack payload
    (never pickle), as on the EventBus; one that does not decode is counted in
    ``bad_messages`` and skipped.

NodeRegistry
    ``register(node_id=None, metadata=None)`` writes ``{metadata, host, pid, started}``
    under the key ``node_id`` (default ``<host>-<pid>``) of the bucket (default
    ``framebus_nodes``) with a per-message TTL of ``ttl`` seconds (whole seconds, at
    least 1: NATS's TTL unit) and rewrites it every ``heartbeat`` seconds (default
    ttl/3). A node whose process dies stops heartbeating and its key expires: it
    leaves. ``deregister`` deletes the key at once (``close`` does it for the nodes this
    object registered). ``nodes()`` lists the live ones; ``watch(callback, interval)``
    polls and calls ``callback("join" | "leave", node_id, metadata)``.

DistributedLock
    ``try_acquire()`` creates the key ``name`` in the bucket (default
    ``framebus_locks``) only if it is absent (JetStream's expected-last-subject-sequence
    check, atomic on the server: two holders are impossible) with a per-message TTL of
    ``ttl`` seconds, so a crashed holder's lock expires. ``acquire(timeout=None)`` retries
    until it gets it (True) or the timeout passes (False). ``renew()`` rewrites it with
    a fresh TTL, ``release()`` deletes it, both only if the revision is still the one
    this holder wrote; otherwise they raise LockLost (it expired and maybe someone else
    holds it). The context manager acquires and releases.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..bridge._aio import LoopThread
from ..envelope import MSGPACK, Envelope
from ..errors import FrameBusError, HandlerError, NoResponders, RequestTimeout
from ..topics import TopicFilter, validate_topic
from .local import LockLost, Watch, WatchCallback, check_ttl, default_node_id

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.js import api as js_api
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "framebus.cluster on NATS needs nats-py: pip install 'framebus[nats]'"
    ) from exc

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription
    from nats.js.kv import KeyValue

    from ..bus import FrameBus
    from ..eventbus import EventSubscription

__all__ = [
    "ClusterError",
    "ClusterEventBus",
    "ClusterSubscription",
    "DistributedLock",
    "NodeRegistry",
]

log = logging.getLogger("framebus.cluster")

T = TypeVar("T")

ERROR_HEADER = "Framebus-Error"
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST = (10071, 10164)  # JetStream: wrong last sequence
_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=/")


class ClusterError(FrameBusError, ConnectionError):
    """NATS could not be reached or refused what the cluster interface needs."""


def _check_key(kind: str, key: object) -> str:
    if not isinstance(key, str) or not key or not set(key) <= _KEY_CHARS:
        raise ValueError(
            f"{kind} must be a non-empty str of letters, digits, '-', '_', '=' or '/', got {key!r}"
        )
    return key


class _Connection:
    """A NATS connection on a LoopThread. The first connection fails fast (one attempt
    per server); once connected, the client reconnects by itself, without end."""

    def __init__(self, servers: Sequence[str] | str, name: str, connect_timeout: float) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers or not all(isinstance(s, str) and s for s in self.servers):
            raise ValueError(f"servers must be NATS URLs, got {servers!r}")
        self.timeout = float(connect_timeout)
        self.loop = LoopThread(f"framebus-nats-{name}")
        self._error: Exception | None = None
        try:
            self.nc: NatsClient = self.loop.run(self._connect(name), self.timeout + 2.0)
        except BaseException as exc:
            self.loop.stop()
            cause = self._error if isinstance(exc, nats.errors.NoServersError) else exc
            cause = cause or exc
            raise ClusterError(
                f"cannot connect to NATS at {', '.join(self.servers)}: "
                f"{type(cause).__name__}: {cause}"
            ) from exc

    async def _connect(self, name: str) -> NatsClient:
        async def on_error(exc: Exception) -> None:
            self._error = exc
            log.debug("framebus: NATS client error: %s", exc)

        nc = await nats.connect(
            self.servers,
            name=f"framebus-{name}",
            connect_timeout=self.timeout,  # type: ignore[arg-type]
            allow_reconnect=False,  # the first connection: one attempt per server
            max_reconnect_attempts=1,
            reconnect_time_wait=0.05,  # type: ignore[arg-type]
            error_cb=on_error,
        )
        # connected: from now on the client reconnects by itself, with a pause
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 0.25
        return nc

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.loop.run(coro, self.timeout + 5.0 if timeout is None else timeout)

    def close(self) -> None:
        if not self.loop.alive:
            return
        try:
            self.loop.run(asyncio.wait_for(self.nc.close(), 5.0), 7.0)
        except Exception:
            pass
        self.loop.stop()


# ------------------------------------------------------------------ event bus


def _encode(topic: str, message: Any) -> bytes:
    """A cluster message: an Envelope with a msgpack payload, as the EventBus sends."""
    return Envelope(topic=topic, payload=message, content_type=MSGPACK).encode()


def _decode(data: bytes) -> Any:
    return Envelope.decode(data, content_types=(MSGPACK,)).payload


class ClusterSubscription:
    """A cluster subscription: its handler runs on a thread of its own; ``close()``."""

    def __init__(
        self, owner: ClusterEventBus, pattern: str, handler: Callable[[Any], object]
    ) -> None:
        self.pattern = pattern
        self._owner = owner
        self._handler = handler
        self._queue: queue.SimpleQueue[Msg | None] = queue.SimpleQueue()
        self._sub: NatsSubscription | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"framebus-cluster-{pattern}", daemon=True
        )
        self._thread.start()

    async def _deliver(self, msg: Msg) -> None:
        self._queue.put(msg)

    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            self._owner._handle(self._handler, msg)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        sub = self._sub
        if sub is not None and self._owner._conn.loop.alive:
            try:
                self._owner._conn.run(sub.unsubscribe(), 5.0)
            except Exception:
                pass
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(10.0)
        self._owner._forget(self)

    def __enter__(self) -> ClusterSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClusterEventBus:
    """Events and request-reply across machines on NATS, beside the bus's own EventBus
    (see the module docstring)."""

    def __init__(
        self,
        bus: FrameBus,
        servers: Sequence[str] | str = ("nats://127.0.0.1:4222",),
        *,
        node: str | None = None,
        prefix: str = "framebus.ev.",
        connect_timeout: float = 5.0,
    ) -> None:
        self._bus = bus
        self._node = node or default_node_id()
        if not prefix.endswith(".") or prefix.startswith("."):
            raise ValueError(f"prefix must end with '.', got {prefix!r}")
        self._prefix = prefix
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            (
                "published_local",
                "published_cluster",
                "requests",
                "replies",
                "timeouts",
                "no_responders",
                "handler_errors",
                "bad_messages",
            ),
            0,
        )
        self._subs: list[ClusterSubscription] = []
        self._local_subs: list[EventSubscription] = []
        self._conn = _Connection(servers, f"events-{self._node}", connect_timeout)
        self._closed = False

    @property
    def node(self) -> str:
        return self._node

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _check_open(self) -> None:
        if self._closed:
            raise FrameBusError("the ClusterEventBus is closed")

    def _subject(self, topic: str) -> str:
        validate_topic(topic)
        if topic == "":
            raise ValueError("event topic '' is empty: use a topic such as 'ctl.reload'")
        return self._prefix + topic

    # local: the bus's own EventBus

    def publish_local(self, topic: str, message: Any = None) -> None:
        self._check_open()
        self._bus.events.publish(topic, message)
        self._count("published_local")

    def subscribe_local(
        self, pattern: str, handler: Callable[[Any], object] | None = None
    ) -> EventSubscription:
        self._check_open()
        sub = self._bus.events.subscribe(pattern, handler)
        self._local_subs.append(sub)
        return sub

    # cluster: NATS

    def publish_cluster(self, topic: str, message: Any = None) -> None:
        self._check_open()
        subject = self._subject(topic)
        data = _encode(topic, message)
        self._conn.run(self._conn.nc.publish(subject, data))
        self._count("published_cluster")

    def subscribe_cluster(
        self, pattern: str, handler: Callable[[Any], object], *, queue: str | None = None
    ) -> ClusterSubscription:
        self._check_open()
        TopicFilter(pattern)
        if not callable(handler):
            raise TypeError("handler must be callable")
        sub = ClusterSubscription(self, pattern, handler)
        try:
            sub._sub = self._conn.run(
                self._conn.nc.subscribe(self._prefix + pattern, queue=queue or "", cb=sub._deliver)
            )
            self._conn.run(self._conn.nc.flush())  # the server knows it before we return
        except BaseException:
            sub.close()
            raise
        with self._lock:
            self._subs.append(sub)
        return sub

    def _forget(self, sub: ClusterSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def request(self, topic: str, message: Any = None, timeout: float = 5.0) -> Any:
        self._check_open()
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (0 < timeout < math.inf)
        ):
            raise ValueError(
                f"timeout must be a positive finite number of seconds, got {timeout!r}"
            )
        subject = self._subject(topic)
        data = _encode(topic, message)
        self._count("requests")
        try:
            reply = self._conn.run(
                self._conn.nc.request(subject, data, timeout=timeout), timeout + 5.0
            )
        except nats.errors.NoRespondersError:
            self._count("no_responders")
            raise NoResponders(f"no responder in the cluster for {topic!r}") from None
        except (nats.errors.TimeoutError, asyncio.TimeoutError, TimeoutError):
            self._count("timeouts")
            raise RequestTimeout(f"no reply to {topic!r} within {timeout} s") from None
        error = (reply.headers or {}).get(ERROR_HEADER)
        if error is not None:
            raise HandlerError(error)
        return _decode(reply.data)

    def _handle(self, handler: Callable[[Any], object], msg: Msg) -> None:
        try:
            message = _decode(msg.data)
        except Exception as exc:
            self._count("bad_messages")
            log.warning("framebus: cluster message on %r did not decode: %s", msg.subject, exc)
            return
        error: str | None = None
        try:
            result = handler(message)
        except Exception as exc:
            self._count("handler_errors")
            log.exception("framebus: cluster handler for %r raised", msg.subject)
            result, error = None, f"{type(exc).__name__}: {exc}"
        if not msg.reply or (result is None and error is None):
            return
        try:
            if error is not None:
                coro = self._conn.nc.publish(msg.reply, b"", headers={ERROR_HEADER: error})
            else:
                data = _encode(msg.subject, result)
                coro = self._conn.nc.publish(msg.reply, data)
            self._conn.run(coro)
            self._count("replies")
        except Exception as exc:
            self._count("handler_errors")
            log.warning("framebus: cluster reply on %r failed: %s", msg.subject, exc)

    def statistics(self) -> dict[str, Any]:
        """Counters of this object (``published_local``, ``published_cluster``,
        ``requests``, ``replies``, ``timeouts``, ``no_responders``, ``handler_errors``,
        ``bad_messages``), ``subscriptions_cluster``, ``node``, ``connected`` and
        ``local`` (the bus's EventBus stats)."""
        with self._lock:
            s: dict[str, Any] = dict(self._counts)
            s["subscriptions_cluster"] = len(self._subs)
        s["node"] = self._node
        s["connected"] = not self._closed and self._conn.connected
        s["local"] = self._bus.events.stats()
        return s

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            sub.close()
        for lsub in self._local_subs:
            lsub.close()
        self._conn.close()

    def __enter__(self) -> ClusterEventBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ KV helpers


async def _bucket(nc: NatsClient, name: str) -> KeyValue:
    js = nc.jetstream()
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(js_api.KeyValueConfig(bucket=name, history=1))
    except nats.js.errors.BadRequestError:
        return await js.key_value(name)  # created meanwhile by another node


async def _put_ttl(
    nc: NatsClient, bucket: str, key: str, value: bytes, ttl: float, last: int | None
) -> int:
    """Write ``key`` with a per-message TTL; with ``last``, only if the key's revision is
    still ``last`` (0: absent). Returns the new revision."""
    headers = {} if last is None else {EXPECTED_LAST: str(last)}
    ack = await nc.jetstream().publish(
        f"$KV.{bucket}.{key}", value, headers=headers or None, msg_ttl=math.ceil(ttl)
    )
    return int(ack.seq)


def _wrong_last(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in WRONG_LAST


# ------------------------------------------------------------------ registry


class NodeRegistry:
    """Live nodes in a JetStream KV bucket (see the module docstring)."""

    def __init__(
        self,
        servers: Sequence[str] | str = ("nats://127.0.0.1:4222",),
        *,
        bucket: str = "framebus_nodes",
        ttl: float = 10.0,
        heartbeat: float | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self._ttl = float(math.ceil(check_ttl(ttl)))
        self._heartbeat = self._ttl / 3 if heartbeat is None else float(heartbeat)
        if not 0 < self._heartbeat < self._ttl:
            raise ValueError(f"heartbeat must be between 0 and ttl={self._ttl}, got {heartbeat!r}")
        self._bucket_name = _check_key("bucket", bucket)
        self._conn = _Connection(servers, f"registry-{uuid.uuid4().hex[:6]}", connect_timeout)
        try:
            self._kv = self._conn.run(_bucket(self._conn.nc, self._bucket_name))
        except BaseException as exc:
            self._conn.close()
            raise ClusterError(f"cannot open the KV bucket {bucket!r}: {exc}") from exc
        self._mine: dict[str, asyncio.Task[None]] = {}
        self._watches: list[Watch] = []
        self.heartbeat_errors = 0

    @property
    def ttl(self) -> float:
        return self._ttl

    def register(self, node_id: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        """Register ``node_id`` with ``metadata`` (JSON-serializable) and keep it alive
        with heartbeats until ``deregister`` or ``close``."""
        node = _check_key("node_id", node_id or default_node_id())
        value = json.dumps(
            {
                "metadata": metadata or {},
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.time(),
            }
        ).encode()
        self._conn.run(_put_ttl(self._conn.nc, self._bucket_name, node, value, self._ttl, None))

        async def beat() -> None:
            while True:
                await asyncio.sleep(self._heartbeat)
                try:
                    await _put_ttl(self._conn.nc, self._bucket_name, node, value, self._ttl, None)
                except Exception as exc:
                    self.heartbeat_errors += 1
                    log.warning("framebus: heartbeat of node %r failed: %s", node, exc)

        async def start() -> asyncio.Task[None]:
            return asyncio.ensure_future(beat())

        old = self._mine.pop(node, None)
        if old is not None:
            self._conn.loop.loop.call_soon_threadsafe(old.cancel)
        self._mine[node] = self._conn.run(start())
        return node

    def deregister(self, node_id: str) -> None:
        """Stop heartbeating ``node_id`` and delete its key (it leaves at once)."""
        task = self._mine.pop(node_id, None)
        if task is not None:
            self._conn.loop.loop.call_soon_threadsafe(task.cancel)
        self._conn.run(self._kv.delete(_check_key("node_id", node_id)))

    def nodes(self) -> dict[str, dict[str, Any]]:
        """The live nodes: node id -> metadata."""
        return {k: v["metadata"] for k, v in self.describe().items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        """The live nodes with what they registered: metadata, host, pid, started."""

        async def read() -> dict[str, dict[str, Any]]:
            # the stream's subject list is one snapshot on the server (a KV watcher can
            # miss a key whose heartbeat replaces its message meanwhile)
            prefix = f"$KV.{self._bucket_name}."
            info = await self._conn.nc.jetstream().stream_info(
                f"KV_{self._bucket_name}", subjects_filter=prefix + ">"
            )
            out: dict[str, dict[str, Any]] = {}
            for subject in sorted(info.state.subjects or {}):
                key = subject[len(prefix) :]
                try:
                    entry = await self._kv.get(key)
                except nats.js.errors.NotFoundError:
                    continue  # deregistered (a delete marker) or expired meanwhile
                if entry.value:
                    try:
                        out[key] = json.loads(entry.value)
                    except ValueError:
                        continue
            return out

        return self._conn.run(read())

    def watch(self, callback: WatchCallback, interval: float = 0.2) -> Watch:
        """Call ``callback(kind, node_id, metadata)`` ("join" with the metadata, "leave"
        with None) on a thread of its own, polling every ``interval`` seconds; the first
        poll reports every live node as a join. ``close()`` on the result stops it."""
        w = Watch(self.nodes, callback, interval)
        self._watches.append(w)
        return w

    def close(self) -> None:
        """Stop the watches, deregister this object's nodes and disconnect."""
        for w in self._watches:
            w.close()
        for node in list(self._mine):
            try:
                self.deregister(node)
            except Exception as exc:
                log.warning("framebus: could not deregister node %r: %s", node, exc)
        self._conn.close()

    def __enter__(self) -> NodeRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ lock


class DistributedLock:
    """A lock across machines with a TTL (see the module docstring)."""

    def __init__(
        self,
        name: str,
        ttl: float = 10.0,
        *,
        servers: Sequence[str] | str = ("nats://127.0.0.1:4222",),
        bucket: str = "framebus_locks",
        connect_timeout: float = 5.0,
    ) -> None:
        self.name = _check_key("lock name", name)
        self._ttl = float(math.ceil(check_ttl(ttl)))
        self._bucket_name = _check_key("bucket", bucket)
        self._token = f"{default_node_id()}-{uuid.uuid4().hex[:8]}"
        self._revision: int | None = None
        self._conn = _Connection(servers, f"lock-{name}", connect_timeout)
        try:
            self._kv = self._conn.run(_bucket(self._conn.nc, self._bucket_name))
        except BaseException as exc:
            self._conn.close()
            raise ClusterError(f"cannot open the KV bucket {bucket!r}: {exc}") from exc

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def held(self) -> bool:
        """True after a successful acquire until release (or a renew/release that found
        the lock lost). It does not ask the server: the lock may have expired."""
        return self._revision is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it: True, else False at once."""
        if self._revision is not None:
            raise FrameBusError(f"lock {self.name!r} is already held by this holder")

        async def create() -> int | None:
            subject_value = self._token.encode()
            try:
                return await _put_ttl(
                    self._conn.nc, self._bucket_name, self.name, subject_value, self._ttl, 0
                )
            except nats.js.errors.APIError as exc:
                if not _wrong_last(exc):
                    raise
            # the key exists: free only if its last entry is a delete marker (a release)
            try:
                await self._kv.get(self.name)
                return None  # held
            except (nats.js.errors.KeyDeletedError, nats.js.errors.KeyNotFoundError) as gone:
                entry = getattr(gone, "entry", None)
                last = entry.revision if entry is not None and entry.revision else 0
            try:
                # only if nobody wrote since the marker (or since it expired: 0)
                return await _put_ttl(
                    self._conn.nc, self._bucket_name, self.name, subject_value, self._ttl, last
                )
            except nats.js.errors.APIError as exc:
                if _wrong_last(exc):
                    return None  # someone else was quicker
                raise

        self._revision = self._conn.run(create())
        return self._revision is not None

    def acquire(self, timeout: float | None = None, poll: float = 0.05) -> bool:
        """Wait for the lock: True once held, False if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.try_acquire():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def renew(self) -> None:
        """Give the lock a fresh TTL; LockLost if it is no longer ours."""
        rev = self._revision
        if rev is None:
            raise LockLost(f"lock {self.name!r} is not held by this holder")
        try:
            self._revision = self._conn.run(
                _put_ttl(
                    self._conn.nc,
                    self._bucket_name,
                    self.name,
                    self._token.encode(),
                    self._ttl,
                    rev,
                )
            )
        except nats.js.errors.APIError as exc:
            if _wrong_last(exc):
                self._revision = None
                raise LockLost(f"lock {self.name!r} expired and was lost") from None
            raise

    def release(self) -> None:
        """Let the lock go; LockLost if it was no longer ours (it expired)."""
        rev = self._revision
        if rev is None:
            raise LockLost(f"lock {self.name!r} is not held by this holder")
        self._revision = None
        try:
            self._conn.run(self._kv.delete(self.name, last=rev))
        except nats.js.errors.APIError as exc:
            if _wrong_last(exc):
                raise LockLost(f"lock {self.name!r} expired before its release") from None
            raise

    def close(self) -> None:
        """Release the lock if held (ignoring a lost one) and disconnect."""
        if self._revision is not None:
            try:
                self.release()
            except Exception:
                pass
        self._conn.close()

    def __enter__(self) -> DistributedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
