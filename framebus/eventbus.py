"""EventBus: the control plane on a FrameBus (``bus.events``).

Small msgpack messages on topics, with NATS-style subscriptions and request/reply::

    ev = bus.events
    seq = ev.publish("ctl.reload", {"k": 1})    # any msgpack-serializable value; the seq
    sub = ev.subscribe("ctl.*", handler)        # handler(message) on the subscription's thread
    it = ev.subscribe("ctl.>")                  # no handler: an iterator subscription
    event = it.recv(timeout=1.0)                # an Event, or None on timeout
    for event in it: ...                        # ends when the subscription is closed
    event.topic, event.message, event.corr_id, event.is_request
    event.respond(value)                        # answers a request (FrameBusError otherwise)
    reply = ev.request("svc.echo", {"x": 1}, timeout=1.0)   # the reply's message
    sub.close(); ev.close(); ev.stats()

Messages
    Each message is one :class:`~framebus.Envelope` with content type
    ``application/msgpack`` (never pickle): dicts, lists (tuples come back as lists),
    int, float, str, bytes, bool, None, nested. Map keys must be str or bytes: the
    Envelope decoder refuses other keys, so such a message reaches subscribers as a
    bad message. An unserializable message raises TypeError from publish/request.

Topics
    User topic ``a.b`` is ring topic ``_ev.a.b``; pattern ``a.*`` subscribes ring
    filter ``_ev.a.*`` (``>`` is ``_ev.>``), so events never mix with plain frames.
    Topics are checked with ``validate_topic`` (wildcards and ``""`` refused) and
    patterns with ``TopicFilter``: ValueError. Replies go to a per-EventBus inbox,
    ring topic ``_evr.<pid>.<n>``, outside ``_ev.`` so ``>`` subscribers never see them.

Handlers
    One daemon thread per handler subscription calls ``handler(message)`` for every
    event. For a request, a return value that is not None is the reply; None means "not
    mine" (listeners and responders can share a topic). A handler that raises is logged
    and counted (``handler_errors``); a request then gets an error reply, which the
    requester raises as HandlerError carrying ``"<ExcType>: <message>"``. The thread
    keeps going. Iterator subscriptions answer with ``event.respond(value)``. Like any
    ring subscription, an iterator subscription nobody reads holds back the ring: close
    what you no longer read.

Requests
    ``request(topic, message, timeout=5.0)`` raises NoResponders at once when no open
    subscription on the bus (in any process) matches the topic, RequestTimeout when no
    reply comes within ``timeout`` seconds (a positive finite number), HandlerError when
    the responder's handler raised, and BusClosed when the EventBus closes meanwhile. The
    first reply wins; later ones (several responders) are dropped. Any number of threads
    may request at once: one inbox subscription and one dispatcher thread per EventBus
    (started by the first request) hand each reply to its waiter by corr_id.

Responders across processes
    Every subscription (handler or iterator) counts itself in the ring's shared topic
    table under the name ``_evs.<pattern>`` while it is open, so a requester in any
    process sees it. A process killed with SIGKILL never decrements its counts: requests
    matching its patterns then find a "responder" and end in RequestTimeout, not
    NoResponders. Every EventBus that makes requests interns its inbox topic and every
    pattern takes a name in the table, whose size is the bus's ``max_topics``.

Bad frames
    Frames on ``_ev.`` topics (or an inbox) that are not Envelopes, or whose content
    type is not msgpack, are counted (``bad_messages``) and skipped with one warning
    each; they never stop a thread.

Closing
    ``sub.close()`` unregisters the subscription, wakes and joins its thread (bounded;
    fine from inside its own handler). ``ev.close()`` (also run by ``bus.close()``)
    closes every subscription and the inbox; pending requests raise BusClosed, and
    publish/request/subscribe raise BusClosed afterwards.

``stats()`` counts, for this handle: ``published`` (publish calls), ``requests`` (sent),
``replies`` (replies this handle's subscriptions sent, error replies included),
``timeouts``, ``no_responders``, ``handler_errors``, ``bad_messages`` and
``subscriptions`` (open now).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._internal import TopicCounter, topic_table
from ._reserved import EVENT_REPLIES, EVENT_RESPONDERS, EVENTS
from .envelope import MSGPACK, Envelope
from .errors import (
    BusClosed,
    FrameBusError,
    HandlerError,
    NoResponders,
    RequestTimeout,
)
from .topics import TopicFilter, validate_topic

if TYPE_CHECKING:
    from .bus import Frame, FrameBus, Subscription

__all__ = ["Event", "EventBus", "EventSubscription"]

log = logging.getLogger("framebus")

DEFAULT_TIMEOUT = 5.0
_BATCH = 64  # frames per recv_batch on a handler or dispatcher thread
_JOIN = 5.0  # seconds close waits for a thread (a handler may be busy)
_MATCH_CACHE_MAX = 4096  # topics whose matching responder ids are cached

_CONTENT_TYPES = (MSGPACK,)
_inbox_numbers = itertools.count(1)  # unique inbox per EventBus in this process


def _ring_topic(topic: object) -> str:
    """The ring topic of a user topic to publish on (TypeError/ValueError if invalid)."""
    validate_topic(topic)
    assert isinstance(topic, str)
    if topic == "":
        raise ValueError("event topic '' is empty: use a topic such as 'ctl.reload'")
    ring = EVENTS + topic
    try:
        validate_topic(ring)
    except ValueError:
        raise ValueError(
            f"event topic {topic!r} is too long: with the {EVENTS!r} prefix it "
            "exceeds the ring's topic size"
        ) from None
    return ring


def _timeout_value(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(f"timeout must be a positive finite number of seconds, got {timeout!r}")
    return float(timeout)


class Event:
    """One received event: ``topic``, ``message``, ``corr_id``, ``is_request``."""

    __slots__ = ("topic", "message", "corr_id", "reply_to", "_events")

    def __init__(
        self, events: EventBus, topic: str, message: Any, corr_id: int, reply_to: str
    ) -> None:
        self._events = events
        self.topic = topic
        self.message = message
        self.corr_id = corr_id
        self.reply_to = reply_to  # the requester's inbox ("" unless a request)

    @property
    def is_request(self) -> bool:
        return bool(self.reply_to)

    def respond(self, value: Any) -> None:
        """Answer this request with ``value`` (FrameBusError if it is not a request)."""
        if not self.reply_to:
            raise FrameBusError(f"event on {self.topic!r} is not a request: nothing to respond")
        self._events._reply(self, value, None)

    def __repr__(self) -> str:
        kind = f" request corr_id={self.corr_id}" if self.reply_to else ""
        return f"<Event {self.topic!r}{kind} {self.message!r}>"


class _Waiter:
    """One pending request: the dispatcher fills ``reply`` (under the bus lock)."""

    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Envelope | None = None  # stays None when the EventBus closes


class EventSubscription:
    """An event subscription: with a handler (its own thread) or an iterator."""

    def __init__(
        self,
        events: EventBus,
        pattern: str,
        handler: Callable[[Any], object] | None,
    ) -> None:
        TopicFilter(pattern)  # ValueError/TypeError before anything is opened
        self._events = events
        self._pattern = pattern
        self._handler = handler
        self._closed = False
        self._close_lock = threading.Lock()
        bus = events._bus
        # intern first: a full topic table fails before the ring subscription exists
        self._responders = TopicCounter(bus, EVENT_RESPONDERS + pattern)
        self._sub: Subscription = bus.subscribe(EVENTS + pattern)
        self._thread: threading.Thread | None = None
        try:
            # counted only now: a requester seeing the count is sure this cursor gets it
            self._responders.add(1)
        except BaseException:
            self._closed = True
            self._sub.close()
            raise
        if handler is not None:
            self._thread = threading.Thread(
                target=self._run, name=f"framebus-event-{pattern}", daemon=True
            )
            self._thread.start()

    @property
    def pattern(self) -> str:
        return self._pattern

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------- iterator

    def recv(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to ``timeout`` s (None: until one comes or close);
        None on timeout. Raises BusClosed once closed."""
        if self._handler is not None:
            raise FrameBusError("a handler subscription delivers to its handler: no recv")
        if self._closed:
            raise BusClosed("the event subscription is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                frame = self._sub.recv(left)  # a close wakes it with BusClosed
            except BusClosed:
                raise BusClosed("the event subscription is closed") from None
            if frame is None:
                return None
            event = self._events._event(frame)
            if event is not None:
                return event  # else a bad frame, counted and skipped: read on

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            event = self.recv()
        except BusClosed:
            raise StopIteration from None
        assert event is not None
        return event

    # -------------------------------------------------------------- handler

    def _run(self) -> None:
        handler = self._handler
        assert handler is not None
        events = self._events
        sub = self._sub
        while not self._closed:
            try:
                frames = sub.recv_batch(_BATCH)  # a close wakes it with BusClosed
            except BusClosed:
                return
            for frame in frames:
                if self._closed:
                    return
                event = events._event(frame)
                if event is not None:
                    events._handle(handler, event)

    # ---------------------------------------------------------------- close

    def close(self) -> None:
        """Unregister, wake and join the handler thread (bounded). Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._responders.take(1)
        except BusClosed:
            pass  # the ring is gone: so is the count, for this process
        self._sub.close()  # wakes a blocked recv with BusClosed
        self._events._forget(self)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN)
            if thread.is_alive():
                log.warning(
                    "framebus: handler thread of event subscription %r still busy after %.0f s",
                    self._pattern,
                    _JOIN,
                )

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "handler" if self._handler is not None else "iterator"
        state = "closed" if self._closed else "open"
        return f"<EventSubscription {self._pattern!r} {kind} {state}>"


class EventBus:
    """Publish / subscribe / request on a FrameBus; made by ``bus.events``."""

    def __init__(self, bus: FrameBus) -> None:
        self._bus = bus
        self._lock = threading.Lock()  # waiters, subscriptions, counters, inbox
        self._closed = False
        self._subs: set[EventSubscription] = set()
        self._stats = dict.fromkeys(
            (
                "published",
                "requests",
                "replies",
                "timeouts",
                "no_responders",
                "handler_errors",
                "bad_messages",
            ),
            0,
        )
        # requests
        self._inbox = f"{EVENT_REPLIES}{os.getpid()}.{next(_inbox_numbers)}"
        self._inbox_sub: Subscription | None = None
        self._dispatcher: threading.Thread | None = None
        self._waiters: dict[int, _Waiter] = {}
        self._corr_ids = itertools.count(1)
        # responder patterns seen in the topic table: (id, filter), next id to ask about
        self._names_lock = threading.Lock()
        self._patterns: list[tuple[TopicCounter, TopicFilter]] = []
        self._next_name_id = 1
        self._matches: dict[str, list[TopicCounter]] = {}

    @property
    def bus(self) -> FrameBus:
        return self._bus

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the EventBus is closed")

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:  # += is not atomic across threads
            self._stats[key] += n

    # -------------------------------------------------------------- publish

    def publish(self, topic: str, message: Any = None) -> int:
        """Publish ``message`` on ``topic`` (no wildcards); returns the frame's seq."""
        self._check_open()
        env = Envelope(_ring_topic(topic), message, content_type=MSGPACK)
        seq: int = self._bus.publish(env)
        self._count("published")
        return seq

    # ------------------------------------------------------------ subscribe

    def subscribe(
        self, pattern: str, handler: Callable[[Any], object] | None = None
    ) -> EventSubscription:
        """Subscribe to topics matching ``pattern`` (``a.b``, ``a.*``, ``a.>``, ``>``).

        With ``handler``, ``handler(message)`` runs on the subscription's own thread;
        without, read the returned subscription with ``recv`` or iteration.
        """
        self._check_open()
        if handler is not None and not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        sub = EventSubscription(self, pattern, handler)
        with self._lock:
            if not self._closed:
                self._subs.add(sub)
                return sub
        sub.close()  # the EventBus closed meanwhile
        raise BusClosed("the EventBus is closed")

    def _forget(self, sub: EventSubscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    # -------------------------------------------------------------- request

    def request(self, topic: str, message: Any = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Send a request and return the reply's message (see the module docstring)."""
        self._check_open()
        wait = _timeout_value(timeout)
        ring_topic = _ring_topic(topic)
        corr_id = next(self._corr_ids)
        # encoded before the responder check: an unserializable message is a TypeError
        # whatever the bus holds; the bytes are the same frame as publish(envelope) makes
        data = Envelope(
            ring_topic, message, src=self._inbox, corr_id=corr_id, content_type=MSGPACK
        ).encode()
        if not self._has_responder(topic):
            self._count("no_responders")
            raise NoResponders(f"no subscription on the bus matches topic {topic!r}")
        self._ensure_inbox()
        waiter = _Waiter()
        with self._lock:
            if self._closed:
                raise BusClosed("the EventBus is closed")
            self._waiters[corr_id] = waiter
            self._stats["requests"] += 1
        try:
            self._bus.publish(data, ring_topic)
        except BaseException:
            with self._lock:
                self._waiters.pop(corr_id, None)
                self._stats["requests"] -= 1
            raise
        if not waiter.done.wait(wait):
            with self._lock:
                mine = self._waiters.pop(corr_id, None)
                if mine is not None:
                    self._stats["timeouts"] += 1
            if mine is not None:
                raise RequestTimeout(f"no reply to request on {topic!r} within {wait:g} s")
            # else the dispatcher took it under the lock just now: reply or closed is set
        reply = waiter.reply
        if reply is None:
            raise BusClosed("the EventBus closed while waiting for a reply")
        error = reply.headers.get("error") if reply.headers else None
        if error is not None:
            raise HandlerError(f"handler for {topic!r} raised {error}")
        return reply.payload

    def _has_responder(self, topic: str) -> bool:
        table = self._bus
        with self._names_lock:
            new = topic_table(table, self._next_name_id)
            if new:
                self._next_name_id = new[-1][0] + 1
                added = False
                for tid, name in new:
                    if name.startswith(EVENT_RESPONDERS):
                        try:
                            tf = TopicFilter(name[len(EVENT_RESPONDERS) :])
                        except (ValueError, TypeError):
                            continue  # not ours
                        self._patterns.append((TopicCounter(table, tid=tid), tf))
                        added = True
                if added:
                    self._matches.clear()
            ids = self._matches.get(topic)
            if ids is None:
                ids = [count for count, tf in self._patterns if tf.matches(topic)]
                if len(self._matches) >= _MATCH_CACHE_MAX:
                    self._matches.clear()
                self._matches[topic] = ids
        return any(count.get() > 0 for count in ids)

    def _ensure_inbox(self) -> None:
        if self._dispatcher is not None:
            return
        with self._lock:
            if self._closed:
                raise BusClosed("the EventBus is closed")
            if self._dispatcher is not None:
                return
            # opened before any request goes out, so no reply can pass it by
            self._inbox_sub = self._bus.subscribe(self._inbox)
            thread = threading.Thread(
                target=self._dispatch,
                args=(self._inbox_sub,),
                name="framebus-event-replies",
                daemon=True,
            )
            thread.start()
            self._dispatcher = thread

    def _dispatch(self, sub: Subscription) -> None:
        while not self._closed:
            try:
                frames = sub.recv_batch(_BATCH)  # a close wakes it with BusClosed
            except BusClosed:
                return
            for frame in frames:
                env = self._decode(frame)
                if env is None:
                    continue
                with self._lock:
                    waiter = self._waiters.pop(env.corr_id, None)
                    if waiter is not None:
                        waiter.reply = env
                if waiter is not None:  # else late (timed out) or a second reply: dropped
                    waiter.done.set()

    # ------------------------------------------------------- incoming events

    def _decode(self, frame: Frame) -> Envelope | None:
        try:
            return Envelope.decode(frame.payload, content_types=_CONTENT_TYPES)
        except Exception as exc:  # DecodeError; anything else must not kill a thread either
            self._count("bad_messages")
            log.warning(
                "framebus: skipped bad event frame %d on %r: %s", frame.seq, frame.topic, exc
            )
            return None

    def _event(self, frame: Frame) -> Event | None:
        env = self._decode(frame)
        if env is None:
            return None
        src = env.src
        # only our inboxes are reply addresses: a forged src never turns a reply into an event
        reply_to = src if env.corr_id and src.startswith(EVENT_REPLIES) else ""
        return Event(self, frame.topic[len(EVENTS) :], env.payload, env.corr_id, reply_to)

    def _handle(self, handler: Callable[[Any], object], event: Event) -> None:
        try:
            result = handler(event.message)
        except Exception as exc:
            self._handler_failed(handler, event, exc)
            return
        if event.reply_to and result is not None:
            try:
                self._reply(event, result, None)
            except BusClosed:
                pass
            except Exception as exc:  # e.g. a result msgpack cannot carry
                self._handler_failed(handler, event, exc)

    def _handler_failed(
        self, handler: Callable[[Any], object], event: Event, exc: Exception
    ) -> None:
        self._count("handler_errors")
        log.exception("framebus: event handler %r failed on %r", handler, event.topic)
        if event.reply_to:
            try:
                self._reply(event, None, f"{type(exc).__name__}: {exc}")
            except Exception:
                log.exception("framebus: could not send the error reply on %r", event.topic)

    def _reply(self, event: Event, value: Any, error: str | None) -> None:
        env = Envelope(
            event.reply_to,
            value,
            corr_id=event.corr_id,
            content_type=MSGPACK,
            headers=None if error is None else {"error": error},
        )
        # counted first: a requester woken by this reply already sees it in stats()
        self._count("replies")
        try:
            self._bus.publish(env)
        except BaseException:
            self._count("replies", -1)
            raise

    # ---------------------------------------------------------- stats, close

    def stats(self) -> dict[str, int]:
        """Counters of this handle (see the module docstring)."""
        with self._lock:
            s = dict(self._stats)
            s["subscriptions"] = len(self._subs)
        return s

    def close(self) -> None:
        """Close every subscription and the inbox; pending requests raise BusClosed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subs)
            waiters, self._waiters = self._waiters, {}
            inbox, dispatcher = self._inbox_sub, self._dispatcher
        for waiter in waiters.values():
            waiter.done.set()  # no reply: the requester raises BusClosed
        for sub in subs:
            sub.close()
        if inbox is not None:
            inbox.close()
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join(_JOIN)

    def __enter__(self) -> EventBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventBus {state} subscriptions={len(self._subs)}>"
