"""EventBus (bus.events): publish/subscribe, request/reply, responders, closing, stats,
and the same across processes on a shared bus.

Functions the child processes run live in tests/eventbus_workers.py. Waits for
deliveries use generous timeouts (they only bound a failing test); nothing asserts
timing. Frames published by this thread are in the ring when publish returns, so
``recv(timeout=0)`` drains exactly what a subscription matched.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import eventbus_workers as w
import pytest

import framebus as fb
from framebus._internal import TopicCounter
from framebus._reserved import EVENT_RESPONDERS
from framebus.envelope import MSGPACK, OCTET_STREAM
from framebus.eventbus import Event, EventBus, EventSubscription

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # bound on waits that succeed at once when the code is right


def event_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("framebus-event")]


@pytest.fixture
def bus() -> Iterator[fb.FrameBus]:
    b = fb.FrameBus()
    yield b
    b.close()
    assert event_threads() == []


@pytest.fixture
def ev(bus: fb.FrameBus) -> EventBus:
    return bus.events


def collector() -> tuple[queue.Queue[Any], Callable[[Any], None]]:
    q: queue.Queue[Any] = queue.Queue()
    return q, q.put


def drain(sub: EventSubscription) -> list[tuple[str, Any]]:
    out = []
    while (event := sub.recv(timeout=0)) is not None:
        out.append((event.topic, event.message))
    return out


def counter(bus: fb.FrameBus, pattern: str) -> int:
    return TopicCounter(bus, EVENT_RESPONDERS + pattern).get()


def wait_for(cond: Callable[[], bool], limit: float = WAIT) -> bool:
    """Poll cond until true (bounded): for effects that happen on other threads."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, queue.Queue[Any]]:
    """Run fn on a thread; its result or exception arrives on the queue."""
    out: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            out.put(fn())
        except BaseException as exc:  # noqa: B036 - handed to the test
            out.put(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# ------------------------------------------------------------ publish / subscribe


def test_bus_events_is_one_eventbus(bus: fb.FrameBus) -> None:
    assert isinstance(bus.events, EventBus)
    assert bus.events is bus.events
    assert bus.events.bus is bus


def test_publish_to_handler(ev: EventBus) -> None:
    q, handler = collector()
    sub = ev.subscribe("ctl.reload", handler)
    seqs = [ev.publish("ctl.reload", {"k": i}) for i in range(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [q.get(timeout=WAIT) for _ in range(3)] == [{"k": 0}, {"k": 1}, {"k": 2}]
    assert sub.pattern == "ctl.reload" and not sub.closed


def test_iterator_recv(ev: EventBus) -> None:
    it = ev.subscribe("ctl.>")
    assert it.recv(timeout=0) is None
    assert it.recv(timeout=0.01) is None
    ev.publish("ctl.a", [1, 2])
    event = it.recv(timeout=WAIT)
    assert isinstance(event, Event)
    assert event.topic == "ctl.a"
    assert event.message == [1, 2]
    assert event.corr_id == 0
    assert event.is_request is False
    with pytest.raises(fb.FrameBusError, match="not a request"):
        event.respond(1)


def test_iteration_ends_when_closed(ev: EventBus) -> None:
    it = ev.subscribe("ctl.*")
    got: list[Any] = []
    ev.publish("ctl.a", 1)
    ev.publish("ctl.b", 2)

    def consume() -> None:
        for event in it:
            got.append((event.topic, event.message))

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    assert wait_for(lambda: len(got) == 2)
    it.close()  # wakes the blocked recv: the for loop ends
    t.join(WAIT)
    assert not t.is_alive()
    assert got == [("ctl.a", 1), ("ctl.b", 2)]
    assert it.closed
    with pytest.raises(fb.BusClosed):
        it.recv(timeout=0)


def test_wildcards(ev: EventBus) -> None:
    subs = {p: ev.subscribe(p) for p in ["a.b", "a.*", "a.>", "*.b", ">"]}
    topics = ["a.b", "a.b.c", "a", "x.b", "x.y"]
    for i, topic in enumerate(topics):
        ev.publish(topic, i)
    got = {p: drain(s) for p, s in subs.items()}
    assert got == {
        "a.b": [("a.b", 0)],
        "a.*": [("a.b", 0)],
        "a.>": [("a.b", 0), ("a.b.c", 1)],
        "*.b": [("a.b", 0), ("x.b", 3)],
        ">": [("a.b", 0), ("a.b.c", 1), ("a", 2), ("x.b", 3), ("x.y", 4)],
    }


def test_handler_gets_only_matching_topics(ev: EventBus) -> None:
    q, handler = collector()
    ev.subscribe("s.*.x", handler)
    for topic in ["s.1.x", "s.1.y", "s.1.2.x", "s.x", "s.2.x"]:
        ev.publish(topic, topic)
    ev.publish("s.end.x", "end")
    got = []
    while (m := q.get(timeout=WAIT)) != "end":
        got.append(m)
    assert got == ["s.1.x", "s.2.x"]


def test_namespacing_on_the_ring(bus: fb.FrameBus, ev: EventBus) -> None:
    raw = bus.subscribe(">")
    bus.publish(b"plain", "a.b")  # a plain frame is no event
    it = ev.subscribe(">")
    ev.publish("a.b", {"v": 1})
    frames = raw.recv_batch(10, timeout=0)
    assert [f.topic for f in frames] == ["a.b", "_ev.a.b"]
    env = fb.Envelope.decode(frames[1].payload)
    assert env.topic == "_ev.a.b"
    assert env.content_type == MSGPACK
    assert env.payload == {"v": 1}
    assert env.corr_id == 0
    assert drain(it) == [("a.b", {"v": 1})]


def test_responders_are_registered_in_the_topic_table(bus: fb.FrameBus, ev: EventBus) -> None:
    a = ev.subscribe("svc.*", lambda m: None)
    b = ev.subscribe("svc.*")
    assert counter(bus, "svc.*") == 2
    a.close()
    a.close()  # idempotent: unregisters once
    assert counter(bus, "svc.*") == 1
    b.close()
    assert counter(bus, "svc.*") == 0


# ---------------------------------------------------------------------- messages

VALUES = [
    {"a": 1, "b": [1, 2, {"c": None}]},
    [1, "two", b"\x00three", None, True, 1.5],
    0,
    -(2**63),
    2**64 - 1,
    "",
    "text ü",
    b"",
    b"\xff" * 1000,
    None,
    False,
    {"nested": {"deeper": {"list": [[], {}, [b"x"]]}}},
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_msgpack_values_round_trip(ev: EventBus, value: Any) -> None:
    it = ev.subscribe("rt.x")
    ev.publish("rt.x", value)
    event = it.recv(timeout=WAIT)
    assert event is not None
    assert event.message == value and type(event.message) is type(value)
    it.close()
    ev.subscribe("rt.echo", lambda m: [m])
    assert ev.request("rt.echo", value, timeout=WAIT) == [value]


def test_tuple_comes_back_as_list(ev: EventBus) -> None:
    it = ev.subscribe("rt.x")
    ev.publish("rt.x", (1, (2, 3)))
    event = it.recv(timeout=WAIT)
    assert event is not None and event.message == [1, [2, 3]]


def test_unserializable_message_is_type_error(ev: EventBus) -> None:
    it = ev.subscribe("x.y")
    with pytest.raises(TypeError, match="msgpack"):
        ev.publish("x.y", object())
    with pytest.raises(TypeError, match="msgpack"):
        ev.publish("x.y", {"k": {1, 2}})
    with pytest.raises(TypeError, match="msgpack"):
        ev.request("x.y", object(), timeout=WAIT)
    with pytest.raises(TypeError, match="msgpack"):
        ev.request("nobody.here", object(), timeout=WAIT)  # before the responder check
    assert it.recv(timeout=0) is None
    assert ev.stats()["published"] == 0 and ev.stats()["requests"] == 0


@pytest.mark.parametrize("topic", ["", "a.*", "a.>", ">", "a..b", ".a", "a.", "a b", "x" * 250])
def test_invalid_topics(ev: EventBus, topic: str) -> None:
    with pytest.raises(ValueError):
        ev.publish(topic, 1)
    with pytest.raises(ValueError):
        ev.request(topic, 1, timeout=WAIT)


def test_topic_must_be_str(ev: EventBus) -> None:
    with pytest.raises(TypeError):
        ev.publish(5, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", ["", "a.>.b", "a.b*", "a..b", "a b", ">.a"])
def test_invalid_patterns(ev: EventBus, pattern: str) -> None:
    with pytest.raises(ValueError):
        ev.subscribe(pattern)
    with pytest.raises(ValueError):
        ev.subscribe(pattern, lambda m: None)
    assert ev.stats()["subscriptions"] == 0
    assert event_threads() == []


def test_handler_must_be_callable(ev: EventBus) -> None:
    with pytest.raises(TypeError, match="callable"):
        ev.subscribe("a", 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "1", True, None])
def test_request_timeout_must_be_positive(ev: EventBus, timeout: Any) -> None:
    ev.subscribe("svc.echo", lambda m: m)
    with pytest.raises(ValueError, match="timeout"):
        ev.request("svc.echo", 1, timeout=timeout)


# --------------------------------------------------------------- request / reply


def test_request_reply(ev: EventBus) -> None:
    ev.subscribe("svc.echo", lambda m: {"echo": m})
    assert ev.request("svc.echo", {"x": 1}, timeout=WAIT) == {"echo": {"x": 1}}
    assert ev.request("svc.echo", None, timeout=WAIT) == {"echo": None}
    assert ev.request("svc.echo") == {"echo": None}  # default message and timeout


def test_wildcard_responder(ev: EventBus) -> None:
    ev.subscribe("svc.>", lambda m: m * 2)
    assert ev.request("svc.a.b", 21, timeout=WAIT) == 42


def test_concurrent_requests_get_their_own_replies(ev: EventBus) -> None:
    ev.subscribe("svc.id", lambda m: {"echo": m})
    threads, per_thread = 8, 40

    def client(t: int) -> list[Any]:
        return [ev.request("svc.id", [t, i], timeout=WAIT) for i in range(per_thread)]

    runs = [in_thread(lambda t=t: client(t)) for t in range(threads)]  # type: ignore[misc]
    for t, (thread, out) in enumerate(runs):
        thread.join(WAIT * 3)
        assert out.get(timeout=0) == [{"echo": [t, i]} for i in range(per_thread)]
    s = ev.stats()
    assert s["requests"] == s["replies"] == threads * per_thread
    assert s["timeouts"] == 0


def test_no_responders(bus: fb.FrameBus, ev: EventBus) -> None:
    ev.subscribe("svc.other", lambda m: m)
    ev.subscribe("svc.a.>")  # needs at least 3 tokens
    with pytest.raises(fb.NoResponders, match="'svc.a'"):
        ev.request("svc.a", 1, timeout=30)  # raised at once, not after 30 s
    assert ev.stats()["no_responders"] == 1
    assert ev.stats()["requests"] == 0


def test_no_responders_seen_from_another_handle(bus: fb.FrameBus) -> None:
    # a second EventBus on the same ring sees the first one's responders through the table
    other = EventBus(bus)
    try:
        with pytest.raises(fb.NoResponders):
            other.request("svc.x", 1, timeout=30)
        sub = bus.events.subscribe("svc.x", lambda m: m + 1)
        assert other.request("svc.x", 1, timeout=WAIT) == 2
        sub.close()
        with pytest.raises(fb.NoResponders):
            other.request("svc.x", 1, timeout=30)
    finally:
        other.close()


def test_handler_returning_none_times_out(ev: EventBus) -> None:
    q, handler = collector()
    ev.subscribe("svc.quiet", handler)
    with pytest.raises(fb.RequestTimeout, match="svc.quiet") as info:
        ev.request("svc.quiet", "hello", timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert q.get(timeout=WAIT) == "hello"  # the handler saw it; it just did not answer
    assert ev.stats()["timeouts"] == 1


def test_listener_and_responder_share_a_topic(ev: EventBus) -> None:
    q, listener = collector()
    ev.subscribe("svc.shared", listener)
    ev.subscribe("svc.shared", lambda m: "answer")
    assert ev.request("svc.shared", "q", timeout=WAIT) == "answer"
    assert q.get(timeout=WAIT) == "q"


def test_first_reply_wins(ev: EventBus) -> None:
    ev.subscribe("svc.two", lambda m: "first")
    ev.subscribe("svc.two", lambda m: "second")
    answers = {ev.request("svc.two", i, timeout=WAIT) for i in range(20)}
    assert answers <= {"first", "second"}
    # both answer every request; the slower reply may still be on its way: wait for it
    assert wait_for(lambda: ev.stats()["replies"] == 40)
    assert ev.stats()["requests"] == 20
    assert ev._waiters == {}  # the late replies found no waiter: dropped
    assert ev.request("svc.two", 20, timeout=WAIT) in {"first", "second"}


def test_handler_error(ev: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    def handler(m: Any) -> Any:
        if m == "bad":
            raise KeyError("no such key")
        return m.upper()

    ev.subscribe("svc.upper", handler)
    with caplog.at_level(logging.ERROR, logger="framebus"):
        with pytest.raises(fb.HandlerError, match="KeyError: 'no such key'"):
            ev.request("svc.upper", "bad", timeout=WAIT)
    # the thread survived and keeps answering
    assert ev.request("svc.upper", "ok", timeout=WAIT) == "OK"
    assert ev.stats()["handler_errors"] == 1
    assert ev.stats()["replies"] == 2  # the error reply and the answer
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is KeyError]
    assert len(errors) == 1


def test_listener_error_is_counted_and_survived(ev: EventBus) -> None:
    q, collect = collector()

    def handler(m: Any) -> None:
        if m == 0:
            raise RuntimeError("zero")
        collect(m)

    ev.subscribe("n", handler)
    for i in range(3):
        ev.publish("n", i)
    assert [q.get(timeout=WAIT) for _ in range(2)] == [1, 2]
    assert ev.stats()["handler_errors"] == 1
    assert ev.stats()["replies"] == 0


def test_unserializable_reply_is_a_handler_error(ev: EventBus) -> None:
    ev.subscribe("svc.obj", lambda m: object())
    with pytest.raises(fb.HandlerError, match="TypeError: .*msgpack"):
        ev.request("svc.obj", 1, timeout=WAIT)
    assert ev.stats()["handler_errors"] == 1


def test_closed_subscription_means_no_responders(ev: EventBus) -> None:
    sub = ev.subscribe("svc.gone", lambda m: "here")
    assert ev.request("svc.gone", 1, timeout=WAIT) == "here"
    assert ev.stats()["subscriptions"] == 1
    sub.close()
    assert sub.closed
    assert ev.stats()["subscriptions"] == 0
    assert event_threads() == ["framebus-event-replies"]  # the handler's thread is joined
    with pytest.raises(fb.NoResponders):
        ev.request("svc.gone", 1, timeout=30)


def test_close_from_inside_the_handler(ev: EventBus) -> None:
    holder: list[EventSubscription] = []

    def handler(m: Any) -> str:
        holder[0].close()  # must not deadlock joining its own thread
        return "bye"

    holder.append(ev.subscribe("svc.once", handler))
    assert ev.request("svc.once", 1, timeout=WAIT) == "bye"
    assert wait_for(lambda: event_threads() == ["framebus-event-replies"])
    with pytest.raises(fb.NoResponders):
        ev.request("svc.once", 1, timeout=30)


def test_respond_on_an_iterator_event(ev: EventBus) -> None:
    it = ev.subscribe("svc.it")
    thread, out = in_thread(lambda: ev.request("svc.it", {"q": 1}, timeout=30))
    event = it.recv(timeout=WAIT)
    assert event is not None
    assert event.topic == "svc.it" and event.message == {"q": 1}
    assert event.is_request and event.corr_id > 0
    event.respond({"a": 2})
    thread.join(WAIT)
    assert out.get(timeout=0) == {"a": 2}
    assert ev.stats()["replies"] == 1
    event.respond({"a": 3})  # a late second answer is dropped
    thread2, out2 = in_thread(lambda: ev.request("svc.it", "next", timeout=30))
    event2 = it.recv(timeout=WAIT)
    assert event2 is not None and event2.corr_id != event.corr_id
    event2.respond("second")
    thread2.join(WAIT)
    assert out2.get(timeout=0) == "second"


def test_recv_on_a_handler_subscription_is_refused(ev: EventBus) -> None:
    sub = ev.subscribe("x", lambda m: None)
    with pytest.raises(fb.FrameBusError, match="handler"):
        sub.recv(timeout=0)


# --------------------------------------------------------------------- bad frames


def test_bad_frames_are_counted_and_skipped(
    bus: fb.FrameBus, ev: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    q, handler = collector()
    ev.subscribe("in.*", handler)
    it = ev.subscribe("in.*")
    with caplog.at_level(logging.WARNING, logger="framebus"):
        bus.publish(b"not an envelope", "_ev.in.x")
        bus.publish(fb.Envelope("_ev.in.x", b"raw", content_type=OCTET_STREAM))
        ev.publish("in.x", "good")
        assert q.get(timeout=WAIT) == "good"
        event = it.recv(timeout=WAIT)
        assert event is not None and event.message == "good"
    assert ev.stats()["bad_messages"] == 4  # two frames, seen by two subscriptions
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4


def test_bad_frame_in_the_inbox(bus: fb.FrameBus, ev: EventBus) -> None:
    ev.subscribe("svc.e", lambda m: m)
    assert ev.request("svc.e", 1, timeout=WAIT) == 1  # the inbox now exists
    bus.publish(b"junk", ev._inbox)
    assert ev.request("svc.e", 2, timeout=WAIT) == 2
    assert ev.stats()["bad_messages"] == 1


# ------------------------------------------------------------------------ closing


def test_eventbus_close(bus: fb.FrameBus, ev: EventBus) -> None:
    ev.subscribe("a.*", lambda m: None)
    it = ev.subscribe("svc.wait")
    thread, out = in_thread(lambda: ev.request("svc.wait", 1, timeout=30))
    assert it.recv(timeout=WAIT) is not None  # the request is pending now
    ev.close()
    thread.join(WAIT)
    assert isinstance(out.get(timeout=0), fb.BusClosed)
    assert ev.closed and it.closed
    assert event_threads() == []
    assert ev.stats()["subscriptions"] == 0
    assert counter(bus, "a.*") == 0 and counter(bus, "svc.wait") == 0
    with pytest.raises(fb.BusClosed):
        ev.publish("a.b", 1)
    with pytest.raises(fb.BusClosed):
        ev.request("a.b", 1, timeout=1)
    with pytest.raises(fb.BusClosed):
        ev.subscribe("a.b")
    with pytest.raises(fb.BusClosed):
        it.recv(timeout=0)
    assert list(it) == []
    ev.close()  # idempotent
    assert bus.events is ev
    bus.publish(b"the ring is still open")


def test_bus_close_closes_events() -> None:
    bus = fb.FrameBus()
    ev = bus.events
    ev.subscribe("a", lambda m: m)
    it = ev.subscribe("b")
    assert ev.request("a", 1, timeout=WAIT) == 1
    assert len(event_threads()) == 2  # the handler and the reply dispatcher
    blocked, out = in_thread(lambda: list(it))
    bus.close()
    blocked.join(WAIT)
    assert out.get(timeout=0) == []
    assert ev.closed
    assert event_threads() == []
    with pytest.raises(fb.BusClosed):
        ev.publish("a", 1)
    with pytest.raises(fb.BusClosed):
        ev.request("a", 1, timeout=1)
    with pytest.raises(fb.BusClosed):
        ev.subscribe("a")


def test_events_of_a_closed_bus() -> None:
    bus = fb.FrameBus()
    bus.close()
    with pytest.raises(fb.BusClosed):
        bus.events  # noqa: B018


# -------------------------------------------------------------------------- stats


def test_stats_counters(bus: fb.FrameBus) -> None:
    ev = bus.events
    assert ev.stats() == {
        "published": 0,
        "requests": 0,
        "replies": 0,
        "timeouts": 0,
        "no_responders": 0,
        "handler_errors": 0,
        "bad_messages": 0,
        "subscriptions": 0,
    }

    def handler(m: Any) -> Any:
        if m == "raise":
            raise ValueError("no")
        if m == "silent":
            return None
        return m

    ev.subscribe("svc.h", handler)
    it = ev.subscribe("ctl.>")
    ev.publish("ctl.a", 1)
    ev.publish("ctl.b", 2)
    assert ev.request("svc.h", "hi", timeout=WAIT) == "hi"
    with pytest.raises(fb.HandlerError):
        ev.request("svc.h", "raise", timeout=WAIT)
    with pytest.raises(fb.RequestTimeout):
        ev.request("svc.h", "silent", timeout=0.2)
    with pytest.raises(fb.NoResponders):
        ev.request("svc.none", 1, timeout=30)
    bus.publish(b"junk", "_ev.ctl.c")
    assert len(drain(it)) == 2
    assert ev.stats() == {
        "published": 2,
        "requests": 3,
        "replies": 2,
        "timeouts": 1,
        "no_responders": 1,
        "handler_errors": 1,
        "bad_messages": 1,
        "subscriptions": 2,
    }


# ------------------------------------------------------------ across processes


@pytest.mark.timeout(120)
@pytest.mark.xproc
def test_across_processes(name: str) -> None:
    ctx = mp.get_context("spawn")
    bus = fb.FrameBus.create_shared(name, preset="default")
    try:
        ev = bus.events
        with pytest.raises(fb.NoResponders):
            ev.request("svc.echo", 1, timeout=30)
        ready, stop = ctx.Event(), ctx.Event()
        child = ctx.Process(target=w.responder, args=(name, ready, stop))
        child.start()
        try:
            assert ready.wait(60)
            # request/reply: the child answers
            reply = ev.request("svc.echo", {"x": [1, b"2"]}, timeout=WAIT)
            assert reply == {"pid": child.pid, "echo": {"x": [1, b"2"]}}
            with pytest.raises(fb.HandlerError, match="ValueError: child refuses 'bad'"):
                ev.request("svc.fail", "bad", timeout=WAIT)
            # publish/subscribe both ways: the child republishes ctl.> on ack.child
            acks = ev.subscribe("ack.>")
            ev.publish("ctl.go", {"n": 1})
            ev.publish("ctl.go.now", {"n": 2})
            got = [acks.recv(timeout=WAIT) for _ in range(2)]
            assert [(e.topic, e.message) for e in got if e is not None] == [
                ("ack.child", {"n": 1}),
                ("ack.child", {"n": 2}),
            ]
        finally:
            stop.set()
            child.join(WAIT * 3)
            if child.is_alive():
                child.kill()
                child.join()
        assert child.exitcode == 0
        # the child closed its subscriptions: no responders any more
        with pytest.raises(fb.NoResponders):
            ev.request("svc.echo", 1, timeout=30)
        assert counter(bus, "svc.echo") == 0 and counter(bus, "ctl.>") == 0
    finally:
        bus.close()
    assert event_threads() == []


@pytest.mark.timeout(120)
@pytest.mark.xproc
@pytest.mark.crash
def test_killed_responder_leaves_its_count(name: str) -> None:
    # documented limitation: SIGKILL skips the unregistering, so requests time out
    ctx = mp.get_context("spawn")
    bus = fb.FrameBus.create_shared(name, preset="default")
    try:
        ready = ctx.Event()
        child = ctx.Process(target=w.subscribe_and_hang, args=(name, ready))
        child.start()
        try:
            assert ready.wait(60)
        finally:
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
            child.join(WAIT)
        assert child.exitcode == -signal.SIGKILL
        assert counter(bus, "svc.kill") == 1
        with pytest.raises(fb.RequestTimeout):
            bus.events.request("svc.kill", 1, timeout=0.2)
    finally:
        bus.close()
