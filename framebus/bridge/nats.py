"""NatsBridge: framebus topics to and from NATS JetStream.

framebus stays the shared-memory hop on each machine; topics cross machines through
JetStream, with one bridge at the edge of each bus::

    from framebus.bridge.nats import NatsBridge

    with NatsBridge(bus, servers=["nats://10.0.0.5:4222"], export=["sensors.>"],
                    import_=["cmd.>"], stream="FRAMEBUS", durable="cam-host-1") as br:
        ...                              # frames flow both ways until the with ends
        br.stats()

It needs the ``nats`` extra (``pip install 'framebus[nats]'``: nats-py). The bridge runs
its own asyncio loop on a daemon thread, so synchronous programs just create it;
``start()`` (run by ``with`` and by the constructor unless ``start=False``) connects,
creates or extends the stream and returns, or raises :class:`BridgeError` within
``connect_timeout`` seconds.

What crosses
    Out: every frame published on the bus on a topic matching an ``export`` filter,
    from the bridge's first start on (see Guarantees for restarts), goes to the
    JetStream subject of the same name (topics under framebus's reserved
    prefixes, such as EventBus internals, never do). The message data is an Envelope
    (``Envelope.encode``): a frame that is an Envelope goes as it is, so topic, payload,
    src, dst, corr_id, deadline_ns, priority, content_type, schema_ver and headers all
    survive; a plain bytes frame goes as ``Envelope(topic=topic, payload=payload)``.
    In: every message on a subject matching an ``import_`` filter is published on the
    local bus as an Envelope (read it with ``bus.subscribe(..., envelopes=True)``), on
    the topic named by its subject. Data that is not an Envelope (a message from a
    plain NATS publisher) arrives as ``Envelope(topic=subject, payload=data)``. An
    imported Envelope carries one added header, ``framebus-origin``: the ``durable``
    name of the bridge that exported it (``"nats"`` for plain NATS messages).

Loops
    A bridge never exports a frame that carries a ``framebus-origin`` header (it came
    from JetStream) and never imports a message it exported itself (the NATS header
    ``Framebus-Origin`` names the exporting bridge). So export and import may overlap,
    on one bus or across machines, without a frame circling; a frame makes one hop:
    bridges do not relay between JetStream and a third bus.

Guarantees, as built
    Out: the bridge reads through a consumer group of the bus (``nats-bridge.<durable>
    .<n>``, one per export filter) and publishes with the NATS header ``Nats-Msg-Id:
    <durable>:<seq>`` (bus sequence number). It sends a window of up to 1000 frames
    without waiting, then waits for JetStream's acknowledgements in order, and only
    then moves on. On a bus with a WAL
    (``wal_dir``) the group is durable: its offset is committed after JetStream
    acknowledged every frame up to it, so a bridge process that dies, or a bus
    restarted from its WAL, resends what was not acknowledged (at-least-once), and
    JetStream's deduplication makes that resend exactly-once within the stream's
    ``duplicate_window`` (2 minutes by default). On a bus without a WAL, unacknowledged
    frames are held in the bridge's memory: a NATS outage or restart loses nothing; a
    bridge process that dies loses what was not yet acknowledged, frames published while
    no bridge runs are not exported (its group starts at the live end), and message ids
    carry a per-start token (``<durable>:<token>:<seq>``) so a new bus's sequence numbers
    never collide with an old one's. Frames of one topic reach JetStream in bus order:
    after a failure the bridge reconnects and resends from the first unacknowledged
    frame, in order, on a fresh connection (the client's own reconnect, which could
    flush a buffer past a lost write, is off). While JetStream is unreachable the
    group stops reading, so the ring's backpressure reaches publishers.
    In: a durable pull consumer named ``durable`` on the stream (created at the first
    start with deliver policy "new", so it starts at the stream's end, and kept by the
    server after that), explicit acknowledgement after the local publish: at-least-once
    (a bridge that dies between publishing locally and acknowledging gets the messages
    again).

Faults
    After ``start()``, any failure (connection lost, server restart, timeouts) closes
    the connection and reconnects with exponential back-off (``backoff`` seconds,
    doubling up to ``max_backoff``). Errors are counted by class in ``stats()["errors"]``
    and the metrics: ``transient`` (connection and timeout failures: retried),
    ``permanent`` (a frame NATS refuses for itself, e.g. larger than the server's
    max_payload or the stream's max_msg_size, a topic that is not a valid subject; or an
    imported message the bus refuses, e.g. larger than its max_frame: logged and
    skipped, counted in ``frames_skipped``), ``configuration`` (authorization, a
    stream that cannot be created or extended, e.g. subjects overlapping another
    stream's: raised by ``start()``, retried with back-off afterwards).
    ``stats()["last_error"]`` says what happened last. A bridge whose bus is closed
    stops (``state`` "bus closed").

Stream
    ``stream`` is created with ``export + import_`` as subjects when missing; an
    existing stream is extended with the filters it does not cover yet.

Metrics
    ``register(bridge)`` adds the bridge to a prometheus_client registry (default
    ``REGISTRY``): ``framebus_bridge_frames_out_total``, ``framebus_bridge_frames_in_total``,
    ``framebus_bridge_duplicates_total``, ``framebus_bridge_frames_skipped_total``,
    ``framebus_bridge_loops_prevented_total``, ``framebus_bridge_acks_pending``,
    ``framebus_bridge_connected``, ``framebus_bridge_reconnects_total`` and
    ``framebus_bridge_errors_total{class=...}``, each with a ``bridge`` label (its
    durable name). ``framebus.metrics.serve`` serves them with the bus's metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._reserved import PREFIXES
from ..envelope import Envelope
from ..errors import BusClosed, DecodeError, FrameBusError, FrameTooLarge
from ..topics import TopicFilter
from ._aio import LoopThread

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.js import api as js_api
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("framebus.bridge.nats needs nats-py: pip install 'framebus[nats]'") from exc

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from ..bus import Frame, FrameBus, Subscription

__all__ = [
    "ORIGIN_HEADER",
    "BridgeError",
    "NatsBridge",
    "classify",
    "register",
]

log = logging.getLogger("framebus.bridge")

ORIGIN_HEADER = "framebus-origin"  # Envelope header on imported envelopes
NATS_ORIGIN = "Framebus-Origin"  # NATS header on exported messages
MSG_ID = "Nats-Msg-Id"
PLAIN_ORIGIN = "nats"  # origin of a message that did not come from a bridge

TRANSIENT, PERMANENT, CONFIGURATION = "transient", "permanent", "configuration"
ERROR_CLASSES = (TRANSIENT, PERMANENT, CONFIGURATION)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RESERVED = tuple(PREFIXES.values())
_WINDOW = 1000  # frames in flight per export filter
_FETCH = 256  # messages per inbound fetch


class BridgeError(FrameBusError, ConnectionError):
    """The bridge could not start; ``error_class`` is "transient", "permanent" or
    "configuration"."""

    def __init__(self, message: str, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


def classify(exc: BaseException) -> str:
    """The class of a failure: "permanent" (this message can never go: too large for
    the server or the bus, a subject or header NATS refuses, data that does not
    decode), "configuration" (fix the setup: authorization, TLS, stream or consumer
    settings the server refuses) or "transient" (retry: connection, timeout, server
    unavailable)."""
    if isinstance(
        exc,
        (
            nats.errors.MaxPayloadError,
            nats.errors.BadSubjectError,
            nats.errors.BadHeaderError,
            DecodeError,
            FrameTooLarge,
        ),
    ):
        return PERMANENT
    if isinstance(
        exc,
        (
            nats.errors.AuthorizationError,
            nats.errors.SecureConnRequiredError,
            nats.errors.SecureConnWantedError,
            nats.errors.SecureConnFailedError,
            nats.errors.InvalidUserCredentialsError,
            nats.js.errors.BadRequestError,
            nats.js.errors.NotFoundError,
            SetupRefused,
            ValueError,
            TypeError,
        ),
    ):
        return CONFIGURATION
    return TRANSIENT


def _refused(exc: BaseException) -> bool:
    """JetStream answered one message with an error other than "unavailable" (e.g. the
    stream's max_msg_size): that message can never be stored as it is."""
    return (
        isinstance(exc, nats.js.errors.APIError)
        and not isinstance(exc, nats.js.errors.ServiceUnavailableError)
        and exc.code != 503
    )


def covers(general: str, specific: str) -> bool:
    """True when every subject matching ``specific`` matches ``general`` (NATS wildcards)."""
    g, s = general.split("."), specific.split(".")
    for i, tok in enumerate(g):
        if tok == ">":
            return i < len(s)
        if i >= len(s):
            return False
        if s[i] == ">":
            return False
        if tok != "*" and tok != s[i]:
            return False
        if tok == "*" and s[i] == "*":
            continue
    return len(g) == len(s)


class SetupRefused(Exception):
    """The server refused the stream or consumer the bridge needs (a configuration error)."""


class _Lost(Exception):
    """The connection went away while frames were in flight."""


class _Out:
    """One export filter: its group subscription and the frames not yet acknowledged."""

    def __init__(self, sub: Subscription, pattern: str) -> None:
        self.sub = sub
        self.pattern = pattern
        # (seq, subject, data, headers) in bus order; last_seq: the highest seq read
        self.pending: list[tuple[int, str, bytes, dict[str, str]]] = []
        self.last_seq = -1
        self.committed = -1
        self.done_seq = -1  # every frame read up to this seq is acknowledged (or skipped)


class _Acks:
    """Pipelined JetStream publishing: each message goes with a reply subject under one
    inbox of this connection, and its future gets the PubAck (a dict) or the error.
    (nats-py's publish_async leaves the future pending when JetStream answers with an
    error, such as a message over the stream's max_msg_size.)"""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._n = 0

    async def start(self) -> None:
        await self._nc.subscribe(self._prefix + ".*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._futures.pop(msg.subject[len(self._prefix) + 1 :], None)
        if fut is None or fut.done():
            return
        if not msg.data and (msg.headers or {}).get(js_api.Header.STATUS) == "503":
            fut.set_exception(nats.js.errors.NoStreamResponseError())  # no stream there
            return
        data = msg.data
        if data.startswith(b'{"stream":') and b'"error"' not in data and b'"duplicate"' not in data:
            # a plain PubAck (json.loads of every ack was a tenth of the loop's time)
            fut.set_result({"duplicate": False})
            return
        try:
            resp = json.loads(data)
            if "error" in resp:
                nats.js.errors.APIError.from_error(resp["error"])  # raises the right class
                raise nats.js.errors.APIError(description=str(resp["error"]))
        except Exception as exc:
            fut.set_exception(exc)
            return
        fut.set_result(resp)

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str]
    ) -> asyncio.Future[dict[str, Any]]:
        self._n += 1
        token = str(self._n)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._futures[token] = fut
        try:
            await self._nc.publish(subject, data, reply=f"{self._prefix}.{token}", headers=headers)
        except BaseException:
            self._futures.pop(token, None)
            raise
        return fut


class NatsBridge:
    """Carries ``export`` topics of ``bus`` to JetStream and ``import_`` subjects back
    (see the module docstring for what crosses and the guarantees).

    ``durable`` names the bridge: its inbound consumer, its groups on the bus, its
    message ids and the origin of what it exports. Give each bus its own on a stream
    (default: the shared bus's name with "." as "_", or "framebus" for an in-process
    bus). ``start=False`` leaves connecting to ``start()`` (or ``with``)."""

    def __init__(
        self,
        bus: FrameBus,
        servers: Sequence[str] | str = ("nats://127.0.0.1:4222",),
        export: Iterable[str] = (),
        import_: Iterable[str] = (),
        stream: str = "FRAMEBUS",
        durable: str | None = None,
        *,
        connect_timeout: float = 5.0,
        ack_timeout: float = 5.0,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        start: bool = True,
    ) -> None:
        self._bus = bus
        self._servers = [servers] if isinstance(servers, str) else list(servers)
        if not self._servers or not all(isinstance(s, str) and s for s in self._servers):
            raise ValueError(f"servers must be NATS URLs, got {servers!r}")
        self._export = [TopicFilter(p).pattern for p in export]
        self._import = [TopicFilter(p).pattern for p in import_]
        if not self._export and not self._import:
            raise ValueError("nothing to bridge: give export and/or import_ filters")
        if durable is None:
            # a shared bus's name, with the "." NATS does not take in a durable name as "_"
            durable = (bus.name or "framebus").replace(".", "_")
        if not isinstance(durable, str) or not _NAME.fullmatch(durable):
            raise ValueError(f"durable must be 1-64 letters, digits, '_' or '-', got {durable!r}")
        if not isinstance(stream, str) or not _NAME.fullmatch(stream):
            raise ValueError(f"stream must be 1-64 letters, digits, '_' or '-', got {stream!r}")
        for name, v in (
            ("connect_timeout", connect_timeout),
            ("ack_timeout", ack_timeout),
            ("backoff", backoff),
            ("max_backoff", max_backoff),
        ):
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        self._stream = stream
        self._durable = durable
        self._connect_timeout = float(connect_timeout)
        self._ack_timeout = float(ack_timeout)
        self._backoff = float(backoff)
        self._max_backoff = max(float(max_backoff), float(backoff))
        self._durable_offsets = bus.config.wal_dir is not None
        # message ids: <durable>:<seq> with a WAL (stable across restarts), else with a
        # token of this start so that a new bus's seqs never look like an old one's
        self._id_prefix = (
            durable + ":" if self._durable_offsets else f"{durable}:{os.urandom(4).hex()}:"
        )
        self._lock = threading.Lock()
        self._counts = {
            "frames_out": 0,
            "frames_in": 0,
            "duplicates": 0,
            "frames_skipped": 0,
            "loops_prevented": 0,
            "reconnects": 0,
        }
        self._errors = dict.fromkeys(ERROR_CLASSES, 0)
        self._last_error: str | None = None
        self._state = "new"
        self._outs: list[_Out] = []
        self._loop: LoopThread | None = None
        self._main: concurrent.futures.Future[None] | None = None
        self._nc: NatsClient | None = None
        self._stopping: asyncio.Event | None = None
        self._lost: asyncio.Event | None = None
        self._client_error: Exception | None = None
        self._publisher: concurrent.futures.ThreadPoolExecutor | None = None
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None
        if start:
            self.start()

    # ------------------------------------------------------------------ public

    @property
    def durable(self) -> str:
        return self._durable

    @property
    def stream(self) -> str:
        return self._stream

    def start(self) -> NatsBridge:
        """Connect, set up the stream and consumer, and start moving frames. Raises
        BridgeError (with ``error_class``) within ``connect_timeout`` (plus the setup's
        own ``ack_timeout``) when that fails; the bridge is then closed."""
        if self._state != "new":
            if self._state == "closed":
                raise FrameBusError("the bridge is closed")
            return self
        self._state = "connecting"
        self._loop = LoopThread(f"framebus-nats-{self._durable}")
        # local publishes of imports, and group commits, each on a thread of its own: a
        # publish waiting for room in the ring must not hold up the commits that free it
        self._publisher = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="framebus-nats-publish"
        )
        self._committer = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="framebus-nats-commit"
        )
        try:
            nc = self._loop.run(
                self._connect_and_setup(), self._connect_timeout + self._ack_timeout + 1.0
            )
        except BaseException as exc:
            cause = self._client_error
            if isinstance(exc, nats.errors.NoServersError) and cause is not None:
                exc = cause  # what went wrong with the servers
            cls = classify(exc)
            self._count_error(cls, exc)
            self._shutdown_threads()
            self._state = "closed"
            raise BridgeError(
                f"NATS bridge {self._durable!r} could not start on {', '.join(self._servers)} "
                f"({cls}): {_describe(exc)}",
                cls,
            ) from exc
        try:
            for i, pattern in enumerate(self._export):
                sub = self._bus.subscribe(pattern, group=f"nats-bridge.{self._durable}.{i}")
                self._outs.append(_Out(sub, pattern))
        except BaseException:
            self._loop.run(_close_nc(nc), 5.0)
            self._close_subs()
            self._shutdown_threads()
            self._state = "closed"
            raise
        self._state = "connected"
        self._main = self._loop.submit(self._run(nc))
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the bridge: it stops reading the bus, frames already read get one more
        wait for their acknowledgements (``ack_timeout`` at most; on a WAL bus what is
        not acknowledged comes again at the next start), then the connection, the group
        subscriptions and the loop's thread end. Waits at most ``timeout`` seconds more
        than that."""
        if self._state in ("closed", "new"):
            self._state = "closed"
            return
        loop = self._loop
        assert loop is not None
        if self._stopping is not None:
            stopping = self._stopping
            loop.loop.call_soon_threadsafe(stopping.set)
        main = self._main
        if main is not None:
            try:
                main.result(timeout + self._ack_timeout + 2.0)
            except concurrent.futures.TimeoutError:
                main.cancel()
            except BaseException as exc:  # noqa: B036 - logged; close goes on
                log.warning("framebus: NATS bridge %r stopped with %s", self._durable, exc)
        self._close_subs()
        self._shutdown_threads()
        self._state = "closed"

    def _close_subs(self) -> None:
        for out in self._outs:
            out.sub.close()

    def _shutdown_threads(self) -> None:
        if self._loop is not None:
            self._loop.stop()
        for pool in (self._publisher, self._committer):
            if pool is not None:
                pool.shutdown(wait=True)

    def stats(self) -> dict[str, Any]:
        """Counters of this bridge: ``frames_out`` (acknowledged by JetStream, duplicates
        included), ``frames_in`` (published locally), ``duplicates`` (acknowledged as
        already stored), ``frames_skipped`` (permanent errors), ``loops_prevented``,
        ``acks_pending`` (read from the bus, not yet acknowledged), ``exported_through``
        (per export filter, the seq up to which every frame its group read is acknowledged
        or skipped, and on a WAL bus committed; -1 before the first), ``reconnects``,
        ``errors`` (by class), ``last_error``, ``state`` and ``connected``."""
        with self._lock:
            s: dict[str, Any] = dict(self._counts)
            s["errors"] = dict(self._errors)
            s["last_error"] = self._last_error
        s["acks_pending"] = sum(len(o.pending) for o in self._outs)
        s["exported_through"] = [o.done_seq for o in self._outs]
        s["state"] = self._state
        s["connected"] = self._state == "connected"
        s["durable"] = self._durable
        s["stream"] = self._stream
        s["export"] = list(self._export)
        s["import"] = list(self._import)
        s["servers"] = list(self._servers)
        return s

    def __enter__(self) -> NatsBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<NatsBridge {self._durable!r} {self._state} export={self._export} "
            f"import={self._import}>"
        )

    # --------------------------------------------------------------- counting

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _count_error(self, cls: str, exc: BaseException) -> None:
        with self._lock:
            self._errors[cls] += 1
            self._last_error = f"{cls}: {_describe(exc)}"

    # ------------------------------------------------------------ connection

    async def _connect_and_setup(self) -> NatsClient:
        self._stopping = self._stopping or asyncio.Event()
        self._lost = asyncio.Event()
        lost = self._lost

        async def on_gone() -> None:
            lost.set()

        async def on_error(exc: Exception) -> None:
            self._client_error = exc  # the cause behind a NoServersError
            log.debug("framebus: NATS bridge client error: %s", exc)

        nc = await nats.connect(
            self._servers,
            name=f"framebus-bridge-{self._durable}",
            allow_reconnect=False,
            connect_timeout=self._connect_timeout,  # type: ignore[arg-type]
            # one attempt per server, then NoServersError (reconnecting is ours)
            max_reconnect_attempts=1,
            reconnect_time_wait=0.05,  # type: ignore[arg-type]
            disconnected_cb=on_gone,
            closed_cb=on_gone,
            error_cb=on_error,
        )
        try:
            js = nc.jetstream(timeout=self._ack_timeout)
            try:
                await self._setup(js)
            except nats.js.errors.ServiceUnavailableError:
                raise
            except nats.js.errors.APIError as exc:
                raise SetupRefused(
                    f"stream {self._stream!r} / consumer {self._durable!r}: {exc}"
                ) from exc
        except BaseException:
            await _close_nc(nc)
            raise
        self._nc = nc
        return nc

    async def _setup(self, js: JetStreamContext) -> None:
        await self._ensure_stream(js)
        if self._import:
            await js.add_consumer(
                self._stream,
                js_api.ConsumerConfig(
                    durable_name=self._durable,
                    filter_subjects=list(self._import),
                    ack_policy=js_api.AckPolicy.EXPLICIT,
                    deliver_policy=js_api.DeliverPolicy.NEW,
                    ack_wait=max(30.0, 2 * self._ack_timeout),
                    max_ack_pending=4 * _FETCH,
                ),
            )

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        wanted: list[str] = []
        for p in [*self._export, *self._import]:  # the stream refuses overlapping subjects
            if not any(covers(w, p) for w in wanted):
                wanted = [w for w in wanted if not covers(p, w)] + [p]
        try:
            info = await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self._stream, subjects=wanted)
            return
        have = list(info.config.subjects or [])
        missing = [p for p in wanted if not any(covers(h, p) for h in have)]
        if missing:
            have = [h for h in have if not any(covers(p, h) for p in missing)] + missing
            await js.update_stream(info.config.evolve(subjects=have))

    async def _run(self, nc: NatsClient) -> None:
        """The bridge's life after start(): move frames until told to stop, reconnecting
        with back-off after every failure."""
        assert self._stopping is not None
        stopping = self._stopping
        delay = self._backoff
        current: NatsClient | None = nc
        try:
            while not stopping.is_set():
                if current is None:
                    self._state = "reconnecting"
                    try:
                        current = await asyncio.wait_for(
                            self._connect_and_setup(), self._connect_timeout + self._ack_timeout
                        )
                    except Exception as exc:
                        self._count_error(classify(exc), exc)
                        await _sleep_unless(stopping, delay)
                        delay = min(delay * 2, self._max_backoff)
                        continue
                    self._count("reconnects")
                    log.info("framebus: NATS bridge %r reconnected", self._durable)
                self._state = "connected"
                try:
                    await self._session(current)
                    delay = self._backoff
                except BusClosed:
                    log.warning("framebus: NATS bridge %r stops: its bus was closed", self._durable)
                    self._state = "bus closed"
                    return
                except Exception as exc:
                    cls = classify(exc)
                    self._count_error(cls, exc)
                    log.warning(
                        "framebus: NATS bridge %r lost its connection (%s): %s",
                        self._durable,
                        cls,
                        _describe(exc),
                    )
                    if isinstance(exc, _Lost):
                        delay = self._backoff  # a restart: try again soon
                    await _close_nc(current)
                    current = None
                    self._nc = None
                    await _sleep_unless(stopping, delay)
                    delay = min(delay * 2, self._max_backoff)
        finally:
            if current is not None:
                await _close_nc(current)
            self._nc = None

    async def _session(self, nc: NatsClient) -> None:
        """One connection's work: a task per export filter and one for imports; returns
        when stopping (after the pending frames are acknowledged or time runs out), raises
        when the connection fails."""
        assert self._stopping is not None and self._lost is not None
        js = nc.jetstream(timeout=self._ack_timeout)
        acks = _Acks(nc)
        await acks.start()
        tasks = [asyncio.ensure_future(self._export_loop(acks, out)) for out in self._outs]
        if self._import:
            tasks.append(asyncio.ensure_future(self._import_loop(nc, js)))
        lost: asyncio.Future[Any] = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait([*tasks, lost], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t in done and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if lost in done and not self._stopping.is_set():
                raise _Lost("the connection to NATS closed")
            # stopping: the export loops finish their windows, imports end
            await asyncio.gather(*tasks)
        finally:
            everything: list[asyncio.Future[Any]] = [*tasks, lost]
            for f in everything:
                f.cancel()
            await asyncio.gather(*tasks, lost, return_exceptions=True)

    # ------------------------------------------------------------------ out

    async def _export_loop(self, acks: _Acks, out: _Out) -> None:
        assert self._stopping is not None
        stopping = self._stopping
        while True:
            if not out.pending:
                if stopping.is_set():
                    return
                await self._read(out)
                if not out.pending:
                    await self._commit(out)  # skipped frames only
                    continue
            await self._send_window(acks, out)
            await self._commit(out)

    async def _read(self, out: _Out) -> None:
        frame = await out.sub.arecv(timeout=0.2)
        if frame is None:
            return
        frames = [frame, *out.sub.recv_batch(_WINDOW - 1, timeout=0)]
        pending = out.pending
        for f in frames:
            item = self._outbound(f)
            out.last_seq = f.seq
            if item is not None:
                pending.append(item)

    def _outbound(self, f: Frame) -> tuple[int, str, bytes, dict[str, str]] | None:
        topic = f.topic
        if topic.startswith(_RESERVED):
            return None
        data = f.payload
        try:
            env = Envelope.decode(data)
        except DecodeError:
            data = Envelope(topic=topic, payload=data).encode()
        else:
            if ORIGIN_HEADER in env.headers:
                self._count("loops_prevented")  # imported from JetStream: not sent back
                return None
        headers = {MSG_ID: f"{self._id_prefix}{f.seq}", NATS_ORIGIN: self._durable}
        return (f.seq, topic, bytes(data), headers)

    async def _send_window(self, acks: _Acks, out: _Out) -> None:
        assert self._lost is not None
        lost = self._lost
        futures: list[tuple[int, asyncio.Future[Any] | None]] = []
        sent: asyncio.Future[Any]
        for i, (_seq, subject, data, headers) in enumerate(out.pending):
            if lost.is_set():
                break
            try:
                sent = await acks.publish(subject, data, headers)
            except Exception as exc:
                if classify(exc) != PERMANENT:
                    raise
                self._skip(out.pending[i], exc)
                futures.append((i, None))
                continue
            futures.append((i, sent))
        acked = 0  # leading entries of pending that are done with
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_timeout
        waiter: asyncio.Future[Any] = asyncio.ensure_future(lost.wait())
        sent_ok = duplicates = 0
        try:
            in_flight = [f for _, f in futures if f is not None and not f.done()]
            if in_flight:  # acks come in order: once the last is in, most are
                await asyncio.wait(
                    [in_flight[-1], waiter],
                    timeout=self._ack_timeout,
                    return_when="FIRST_COMPLETED",
                )
            for _i, fut in futures:
                if fut is not None:
                    if not fut.done():
                        left = deadline - loop.time()
                        await asyncio.wait(
                            [fut, waiter], timeout=max(left, 0), return_when="FIRST_COMPLETED"
                        )
                    if not fut.done():
                        if lost.is_set():
                            raise _Lost("the connection to NATS closed with frames in flight")
                        raise TimeoutError(
                            f"JetStream acknowledged no frame within {self._ack_timeout} s"
                        )
                    try:
                        ack = fut.result()
                    except Exception as exc:
                        if classify(exc) != PERMANENT and not _refused(exc):
                            raise
                        self._skip(out.pending[acked], exc)
                    else:
                        sent_ok += 1
                        if ack.get("duplicate"):
                            duplicates += 1
                acked += 1
        finally:
            waiter.cancel()
            with self._lock:
                self._counts["frames_out"] += sent_ok
                self._counts["duplicates"] += duplicates
            for _i, left_over in futures[acked:]:
                if left_over is not None and not left_over.done():
                    left_over.cancel()
            del out.pending[:acked]
        if out.pending:
            raise _Lost("the connection to NATS closed with frames in flight")

    def _skip(self, item: tuple[int, str, bytes, dict[str, str]], exc: BaseException) -> None:
        self._count_error(PERMANENT, exc)
        self._count("frames_skipped")
        log.error(
            "framebus: NATS bridge %r skipped frame %d on %r: %s",
            self._durable,
            item[0],
            item[1],
            _describe(exc),
        )

    async def _commit(self, out: _Out) -> None:
        if out.pending:
            return
        seq = out.last_seq
        out.done_seq = seq
        if not self._durable_offsets:
            return
        if seq <= out.committed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._committer, out.sub.commit, seq)
        out.committed = seq

    # ------------------------------------------------------------------- in

    async def _import_loop(self, nc: NatsClient, js: JetStreamContext) -> None:
        assert self._stopping is not None
        stopping = self._stopping
        psub = await js.pull_subscribe_bind(durable=self._durable, stream=self._stream)
        loop = asyncio.get_running_loop()
        try:
            while not stopping.is_set():
                try:
                    msgs = await psub.fetch(_FETCH, timeout=0.25)
                except (nats.errors.TimeoutError, asyncio.TimeoutError, TimeoutError):
                    continue  # nothing to import now (nats-py raises either kind)
                envs = []
                for msg in msgs:
                    env = self._inbound(msg)
                    if env is not None:
                        envs.append(env)
                published = 0
                if envs:
                    published = await loop.run_in_executor(
                        self._publisher, self._publish_local, envs
                    )
                for msg in msgs:
                    await msg.ack()
                await nc.flush(math.ceil(self._ack_timeout))
                self._count("frames_in", published)
        finally:
            try:
                await psub.unsubscribe()
            except Exception:
                pass

    def _publish_local(self, envs: list[Envelope]) -> int:
        """Publish on the bus; returns how many went (the others are counted skipped)."""
        try:
            self._bus.publish_batch(envs)
            return len(envs)
        except (FrameTooLarge, ValueError, TypeError):
            pass  # one of them cannot go on this bus: the others still do
        published = 0
        for env in envs:
            try:
                self._bus.publish(env)
                published += 1
            except (FrameTooLarge, ValueError, TypeError) as exc:
                self._count_error(PERMANENT, exc)
                self._count("frames_skipped")
                log.error(
                    "framebus: NATS bridge %r could not publish %r locally: %s",
                    self._durable,
                    env.topic,
                    _describe(exc),
                )
        return published

    def _inbound(self, msg: Msg) -> Envelope | None:
        headers = msg.headers or {}
        origin = headers.get(NATS_ORIGIN)
        if origin == self._durable:
            self._count("loops_prevented")  # exported by this bridge
            return None
        subject = msg.subject
        try:
            env = Envelope.decode(msg.data)
        except DecodeError:
            return Envelope(topic=subject, payload=msg.data, headers={ORIGIN_HEADER: PLAIN_ORIGIN})
        return env.replace(
            topic=subject, headers={**env.headers, ORIGIN_HEADER: origin or PLAIN_ORIGIN}
        )


async def _close_nc(nc: NatsClient) -> None:
    try:
        await asyncio.wait_for(nc.close(), 2.0)
    except Exception:
        pass


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "(no message)"
    return f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------- metrics

_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("frames_out", "framebus_bridge_frames_out", "Frames JetStream acknowledged.", "counter"),
    ("frames_in", "framebus_bridge_frames_in", "Messages published on the bus.", "counter"),
    (
        "duplicates",
        "framebus_bridge_duplicates",
        "Frames JetStream acknowledged as already stored (resends).",
        "counter",
    ),
    (
        "frames_skipped",
        "framebus_bridge_frames_skipped",
        "Frames NATS refused for good (permanent errors).",
        "counter",
    ),
    (
        "loops_prevented",
        "framebus_bridge_loops_prevented",
        "Frames not sent back where they came from.",
        "counter",
    ),
    ("reconnects", "framebus_bridge_reconnects", "Reconnections to NATS.", "counter"),
    ("acks_pending", "framebus_bridge_acks_pending", "Frames awaiting JetStream acks.", "gauge"),
    ("connected", "framebus_bridge_connected", "1 while connected to NATS.", "gauge"),
)


class BridgeCollector:
    """A prometheus_client collector of the bridges registered with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bridges: dict[int, weakref.ref[NatsBridge]] = {}

    def add(self, bridge: NatsBridge) -> None:
        with self._lock:
            self._bridges[id(bridge)] = weakref.ref(bridge)

    def remove(self, bridge: NatsBridge) -> None:
        with self._lock:
            self._bridges.pop(id(bridge), None)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            bridges = [b for b in (r() for r in self._bridges.values()) if b is not None]
        stats = [(b.durable, b.stats()) for b in bridges if b._state != "closed"]
        for key, name, doc, kind in _METRICS:
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            fam = cls(name, doc, labels=["bridge"])
            for label, s in stats:
                fam.add_metric([label], float(s[key]))
            yield fam
        errors = CounterMetricFamily(
            "framebus_bridge_errors", "Bridge errors by class.", labels=["bridge", "class"]
        )
        for label, s in stats:
            for cls_name in ERROR_CLASSES:
                errors.add_metric([label, cls_name], float(s["errors"][cls_name]))
        yield errors


_collectors: dict[int, BridgeCollector] = {}
_collectors_lock = threading.Lock()


def register(bridge: NatsBridge, registry: Any = None) -> BridgeCollector:
    """Expose ``bridge``'s counters in ``registry`` (default prometheus_client's
    ``REGISTRY``), labelled with its durable name; a closed bridge leaves the scrape."""
    from prometheus_client import REGISTRY

    reg = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(id(reg))
        if collector is None:
            collector = BridgeCollector()
            reg.register(collector)
            _collectors[id(reg)] = collector
    collector.add(bridge)
    return collector
