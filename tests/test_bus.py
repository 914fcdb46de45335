"""The in-process FrameBus API: construction, publishing, payload types, errors
(types and messages), topic filters, groups, stats and ring capacity."""

from __future__ import annotations

import array
import queue
import re
import time

import numpy as np
import pytest
from conftest import SMALL, record_size

import framebus as fb
from framebus.config import BusConfig

pytestmark = pytest.mark.timeout(60)

PAYLOAD_TYPE_MSG = (
    "payload must be a bytes-like object (bytes, bytearray, memoryview, numpy array), not {!r}"
)


def drain(sub: fb.Subscription) -> list[fb.Frame]:
    out: list[fb.Frame] = []
    while True:
        got = sub.recv_batch(1000, timeout=0)
        if not got:
            return out
        out.extend(got)


# ----------------------------------------------------------------- construction


def test_default_bus_uses_default_preset() -> None:
    bus = fb.FrameBus()
    try:
        assert bus.config == BusConfig.preset("default")
        assert bus.closed is False
        assert bus.paused is False
    finally:
        bus.close()
    assert bus.closed is True
    bus.close()  # idempotent
    assert bus.closed is True


def test_preset_with_overrides() -> None:
    with fb.FrameBus(preset="low_latency", overflow="error", max_frame=4096) as bus:
        assert bus.config == BusConfig.preset("low_latency", overflow="error", max_frame=4096)
        assert bus.config.ring_pow == 19
        assert bus.config.overflow == "error"


def test_overrides_without_preset_apply_to_default() -> None:
    with fb.FrameBus(overflow="drop") as bus:
        assert bus.config == BusConfig.preset("default", overflow="drop")


def test_config_object_and_overrides() -> None:
    cfg = BusConfig.preset("memory_optimized")
    with fb.FrameBus(cfg) as bus:
        assert bus.config is cfg
    with fb.FrameBus(cfg, overflow="overwrite") as bus:
        assert bus.config == cfg.replace(overflow="overwrite")
        assert bus.config.ring_pow == 17


def test_context_manager_closes_even_on_error() -> None:
    with pytest.raises(RuntimeError, match="^boom$"):
        with fb.FrameBus(**SMALL) as bus:
            assert isinstance(bus, fb.FrameBus)
            assert not bus.closed
            raise RuntimeError("boom")
    assert bus.closed


def test_config_and_preset_together() -> None:
    with pytest.raises(fb.ConfigError, match="^pass either config or preset, not both$"):
        fb.FrameBus(BusConfig(), preset="default")


def test_config_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="^config must be a BusConfig, not dict$"):
        fb.FrameBus({"ring_pow": 10})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"foo": 1},
            "unknown BusConfig field 'foo': valid fields are ring_pow, frame_limit, ring_bytes,",
        ),
        (
            {"overflow": "bogus"},
            "overflow='bogus' invalid: expected one of 'block', 'error', 'drop', 'overwrite'",
        ),
        ({"ring_pow": 5}, "ring_pow=5 out of range: expected an int in 10..30"),
        (
            {"ring_bytes": 5000},
            "ring_bytes=5000 is not a power of two: expected a power of two in 2**12..2**40",
        ),
        (
            {"pause_hi": 0.5, "resume_lo": 0.6},
            "resume_lo=0.6, pause_hi=0.5 violate resume_lo < pause_hi",
        ),
        ({"preset": "nope"}, "unknown preset 'nope': expected one of 'high_throughput',"),
    ],
)
def test_bad_config_raises_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(fb.ConfigError) as info:
        fb.FrameBus(**kwargs)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


def test_bad_override_on_config_object() -> None:
    with pytest.raises(
        fb.ConfigError, match=r"^max_readers=0 out of range: expected an int in 1\.\.1024$"
    ):
        fb.FrameBus(BusConfig(), max_readers=0)


def test_preset_classmethod_and_names() -> None:
    assert BusConfig.presets() == ("high_throughput", "low_latency", "memory_optimized", "default")
    assert BusConfig.preset("high_throughput", overflow="drop").overflow == "drop"
    with pytest.raises(fb.ConfigError, match="^unknown BusConfig field 'bogus'"):
        BusConfig.preset("default", bogus=3)


def test_repr(small_bus) -> None:
    bus = small_bus()
    assert repr(bus) == "<FrameBus open ring_bytes=65536 capacity=1024 overflow='block'>"
    sub = bus.subscribe("a.>", group="g")
    assert repr(sub) == "<Subscription 'a.>' group='g' open>"
    bus.close()
    assert repr(bus) == "<FrameBus closed ring_bytes=65536 capacity=1024 overflow='block'>"


# ------------------------------------------------------------------ publishing


def test_publish_returns_consecutive_seqs_without_subscribers(small_bus) -> None:
    bus = small_bus()
    seqs = [bus.publish(b"x") for _ in range(5000)]  # > capacity: nobody holds space
    assert seqs == list(range(5000))
    assert all(type(s) is int for s in seqs)
    st = bus.stats()
    assert st["published"] == 5000
    assert st["published_bytes"] == 5000
    assert st["ring_used"] == 0
    assert st["ring_used_bytes"] == 0
    assert st["dropped"] == 0


def test_publish_batch_and_try_publish_share_the_sequence(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    assert bus.publish(b"a") == 0
    assert bus.publish_batch([b"b", b"c", b"d"]) == 1
    assert bus.try_publish(b"e") == 4
    assert bus.publish_batch((b"f",)) == 5
    assert bus.publish(b"g", topic="t") == 6
    got = drain(sub)
    assert [(f.seq, f.payload, f.topic) for f in got] == [
        (0, b"a", ""),
        (1, b"b", ""),
        (2, b"c", ""),
        (3, b"d", ""),
        (4, b"e", ""),
        (5, b"f", ""),
        (6, b"g", "t"),
    ]


def test_batch_seqs_are_consecutive_and_frames_in_order(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    payloads = [bytes([i]) * i for i in range(50)]
    assert bus.publish_batch(payloads, topic="x.y") == 0
    assert bus.publish_batch(payloads[:3], topic="x.z") == 50
    got = drain(sub)
    assert [f.seq for f in got] == list(range(53))
    assert [f.payload for f in got] == payloads + payloads[:3]
    assert [f.topic for f in got] == ["x.y"] * 50 + ["x.z"] * 3


def test_frame_fields(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    before = time.time_ns()
    seq = bus.publish(b"hello", topic="sensors.t1")
    after = time.time_ns()
    f = sub.recv(timeout=5)
    assert isinstance(f, fb.Frame)
    assert f.seq == seq == 0
    assert f.topic == "sensors.t1"
    assert type(f.payload) is bytes
    assert f.payload == b"hello"
    # generous slack: CLOCK_REALTIME read in C vs time.time_ns()
    assert before - 10**9 <= f.ts_ns <= after + 10**9


def _payload_cases() -> list:
    arr2d = np.arange(12, dtype=np.float64).reshape(3, 4)
    return [
        pytest.param(b"bytes", b"bytes", id="bytes"),
        pytest.param(bytearray(b"bytearray"), b"bytearray", id="bytearray"),
        pytest.param(memoryview(b"memoryview"), b"memoryview", id="memoryview"),
        pytest.param(memoryview(b"0123456789")[2:5], b"234", id="memoryview-slice"),
        pytest.param(np.arange(5, dtype=np.uint8), bytes(range(5)), id="numpy-u1"),
        pytest.param(arr2d, arr2d.tobytes(), id="numpy-2d-f8"),
        pytest.param(
            np.arange(10, dtype=np.int32)[2:6],
            np.arange(2, 6, dtype=np.int32).tobytes(),
            id="numpy-contiguous-slice",
        ),
        pytest.param(
            array.array("i", [1, 2, 3]), array.array("i", [1, 2, 3]).tobytes(), id="array"
        ),
        pytest.param(b"", b"", id="empty-bytes"),
        pytest.param(bytearray(), b"", id="empty-bytearray"),
        pytest.param(np.zeros(0, dtype=np.uint8), b"", id="empty-numpy"),
    ]


@pytest.mark.parametrize(("data", "expected"), _payload_cases())
@pytest.mark.parametrize("method", ["publish", "try_publish", "publish_batch"])
def test_payload_types(small_bus, method: str, data: object, expected: bytes) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    if method == "publish_batch":
        assert bus.publish_batch([data, b"tail"]) == 0
    else:
        assert getattr(bus, method)(data) == 0
    f = sub.recv(timeout=5)
    assert f.seq == 0
    assert f.payload == expected
    assert bus.stats()["published_bytes"] == len(expected) + (4 if method == "publish_batch" else 0)


def test_payload_is_copied_at_publish(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    buf = bytearray(b"before")
    bus.publish(buf)
    buf[:] = b"AFTER!"
    assert sub.recv(timeout=5).payload == b"before"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.arange(10, dtype=np.uint8)[::2], id="numpy-strided"),
        pytest.param(
            np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(3, 4)), id="numpy-fortran"
        ),
        pytest.param(memoryview(b"0123456789")[::2], id="memoryview-strided"),
    ],
)
@pytest.mark.parametrize("method", ["publish", "try_publish", "publish_batch"])
def test_non_contiguous_payload_is_type_error(small_bus, method: str, data: object) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    name = type(data).__name__
    with pytest.raises(TypeError) as info:
        if method == "publish_batch":
            bus.publish_batch([b"ok", data])
        else:
            getattr(bus, method)(data)
    assert str(info.value).startswith(f"payload of type {name!r} is not C-contiguous")
    # nothing was published, no sequence number used
    assert bus.publish(b"next") == 0
    assert [f.payload for f in drain(sub)] == [b"next"]


@pytest.mark.parametrize("data", ["text", 42, None, [1, 2], {"a": 1}, 3.5])
@pytest.mark.parametrize("method", ["publish", "try_publish", "publish_batch"])
def test_non_bytes_payload_is_type_error(small_bus, method: str, data: object) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    with pytest.raises(TypeError) as info:
        if method == "publish_batch":
            bus.publish_batch([b"ok", data])
        else:
            getattr(bus, method)(data)
    assert str(info.value) == PAYLOAD_TYPE_MSG.format(type(data).__name__)
    assert bus.publish(b"next") == 0
    assert [(f.seq, f.payload) for f in drain(sub)] == [(0, b"next")]
    assert bus.stats()["published"] == 1


def test_publish_batch_needs_a_sequence(small_bus) -> None:
    bus = small_bus()
    with pytest.raises(TypeError, match="^publish_batch needs a sequence of bytes-like frames$"):
        bus.publish_batch(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["publish", "try_publish", "publish_batch"])
def test_frame_too_large(small_bus, method: str) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    big = b"x" * 1025
    with pytest.raises(fb.FrameTooLarge) as info:
        if method == "publish_batch":
            bus.publish_batch([b"small", big])
        else:
            getattr(bus, method)(big)
    err = info.value
    assert err.size == 1025
    assert err.max_frame == 1024
    assert str(err) == "frame of 1025 bytes exceeds max_frame=1024 bytes"
    assert isinstance(err, ValueError) and isinstance(err, fb.FrameBusError)
    # exactly max_frame is fine; the refused frame took no sequence number
    assert getattr(bus, method)([b"y" * 1024] if method == "publish_batch" else b"y" * 1024) == 0
    got = drain(sub)
    assert [(f.seq, len(f.payload)) for f in got] == [(0, 1024)]
    assert bus.stats()["published"] == 1


def test_frame_too_large_numpy(small_bus) -> None:
    bus = small_bus()
    with pytest.raises(fb.FrameTooLarge) as info:
        bus.publish(np.zeros(300, dtype=np.float32))
    assert (info.value.size, info.value.max_frame) == (1200, 1024)


def test_empty_batch(small_bus) -> None:
    bus = small_bus()
    for empty in ([], (), b""):
        with pytest.raises(
            ValueError, match="^publish_batch needs at least one frame, got an empty sequence$"
        ):
            bus.publish_batch(empty)
    assert bus.stats()["published"] == 0


@pytest.mark.parametrize("with_sub", [False, True])
def test_batch_that_can_never_fit_bytes(small_bus, with_sub: bool) -> None:
    bus = small_bus()
    sub = bus.subscribe() if with_sub else None
    frames = [b"z" * 1000] * 100  # 100 * 1032 record bytes > 64 KiB
    with pytest.raises(ValueError) as info:
        bus.publish_batch(frames)
    assert not isinstance(info.value, fb.WouldBlock)
    assert str(info.value) == (
        "publish_batch: 100 frames (100000 payload bytes) can never fit in this ring at once; "
        "split the batch"
    )
    assert bus.stats()["published"] == 0
    assert bus.publish_batch(frames[:63]) == 0  # 63 * 1032 = 65016 <= 65536
    if sub is not None:
        assert len(drain(sub)) == 63


def test_batch_that_can_never_fit_frames(small_bus) -> None:
    bus = small_bus(backpressure_threshold=0.9, pause_hi=0.85, resume_lo=0.7)
    sub = bus.subscribe()
    with pytest.raises(
        ValueError, match=r"^publish_batch: 922 frames \(0 payload bytes\) can never fit"
    ):
        bus.publish_batch([b""] * 922)  # floor(0.9 * 1024) = 921 frames at most
    assert bus.publish_batch([b""] * 921) == 0
    assert len(drain(sub)) == 921


@pytest.mark.parametrize(
    ("topic", "exc", "message"),
    [
        ("a..b", ValueError, "topic 'a..b' has an empty token between '..' at index 1"),
        (".a", ValueError, "topic '.a' starts with '.' (empty token)"),
        ("a.", ValueError, "topic 'a.' ends with '.' (empty token)"),
        (
            "a.*",
            ValueError,
            "topic 'a.*' contains wildcard '*' (wildcards are only allowed in filters) at index 2",
        ),
        (
            "a.>",
            ValueError,
            "topic 'a.>' contains wildcard '>' (wildcards are only allowed in filters) at index 2",
        ),
        ("a b", ValueError, "topic 'a b' contains whitespace ' ' at index 1"),
        (
            "x" * 249,
            ValueError,
            f"topic {'x' * 249!r} is 249 UTF-8 bytes long: at most 248 allowed",
        ),
        (5, TypeError, "topic must be a str, not int"),
        (b"a", TypeError, "topic must be a str, not bytes"),
        (None, TypeError, "topic must be a str, not NoneType"),
    ],
)
@pytest.mark.parametrize("method", ["publish", "try_publish", "publish_batch"])
def test_bad_topic(small_bus, method: str, topic: object, exc: type, message: str) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    with pytest.raises(exc) as info:
        if method == "publish_batch":
            bus.publish_batch([b"p"], topic=topic)
        else:
            getattr(bus, method)(b"p", topic=topic)
    assert str(info.value) == message
    assert bus.publish(b"q", topic="ok") == 0
    assert [(f.seq, f.topic) for f in drain(sub)] == [(0, "ok")]


def test_longest_topic_and_unicode(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    long_topic = "y" * 248
    bus.publish(b"1", topic=long_topic)
    bus.publish(b"2", topic="caf\u00e9.\u6e29\u5ea6")
    assert [f.topic for f in drain(sub)] == [long_topic, "caf\u00e9.\u6e29\u5ea6"]


def test_topic_table_full(small_bus) -> None:
    bus = small_bus(max_topics=2)
    sub = bus.subscribe()
    bus.publish(b"", topic="a")
    bus.publish(b"", topic="b")
    bus.publish(b"", topic="")  # the default topic takes no table entry
    with pytest.raises(fb.FrameBusError) as info:
        bus.publish(b"", topic="c")
    assert str(info.value) == "topic table full: cannot add 'c' (raise max_topics)"
    bus.publish(b"", topic="a")
    assert [(f.seq, f.topic) for f in drain(sub)] == [(0, "a"), (1, "b"), (2, ""), (3, "a")]


# ------------------------------------------------------------------- receiving


def test_broadcast_each_subscription_sees_frames_after_it_subscribed(small_bus) -> None:
    bus = small_bus()
    bus.publish(b"before-any")
    s1 = bus.subscribe()
    bus.publish_batch([b"a", b"b", b"c"])
    s2 = bus.subscribe()
    bus.publish(b"d")
    bus.publish(b"e")
    s3 = bus.subscribe()
    assert [(f.seq, f.payload) for f in drain(s1)] == [
        (1, b"a"),
        (2, b"b"),
        (3, b"c"),
        (4, b"d"),
        (5, b"e"),
    ]
    assert [(f.seq, f.payload) for f in drain(s2)] == [(4, b"d"), (5, b"e")]
    assert drain(s3) == []
    # equal frames for every subscription
    bus.publish(b"f")
    f1, f2, f3 = (s.recv(timeout=5) for s in (s1, s2, s3))
    assert f1 == f2 == f3
    assert (f1.seq, f1.payload) == (6, b"f")


def test_recv_empty_and_timeouts(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    assert sub.recv(0) is None
    assert sub.recv(timeout=0) is None
    assert sub.recv(timeout=0.05) is None
    assert sub.recv_batch(10, 0) == []
    assert sub.recv_batch(10, timeout=0.05) == []
    bus.publish(b"x")
    assert sub.recv(0).payload == b"x"
    assert sub.recv(0) is None


def test_recv_batch_limits_and_order(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    bus.publish_batch([bytes([i]) for i in range(25)])
    first = sub.recv_batch(10, timeout=5)
    assert [f.seq for f in first] == list(range(10))
    assert sub.backlog == 15
    assert sub.recv(timeout=5).seq == 10
    rest = sub.recv_batch(100, timeout=5)
    assert [f.seq for f in rest] == list(range(11, 25))
    assert [f.payload for f in rest] == [bytes([i]) for i in range(11, 25)]
    assert sub.recv_batch(1, 0) == []


@pytest.mark.parametrize("n", [0, -1, -100])
def test_recv_batch_bad_max_frames(small_bus, n: int) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    bus.publish(b"x")
    with pytest.raises(ValueError, match=f"^max_frames must be >= 1, got {n}$"):
        sub.recv_batch(n)
    assert sub.recv(0).payload == b"x"  # nothing consumed


@pytest.mark.parametrize(
    ("timeout", "exc", "message"),
    [
        (-1, ValueError, "timeout must be >= 0 seconds or None, got -1"),
        (-0.5, ValueError, "timeout must be >= 0 seconds or None, got -0.5"),
        (float("nan"), ValueError, "timeout must be >= 0 seconds or None, got nan"),
        ("1", TypeError, "timeout must be a number of seconds or None, not str"),
        (True, TypeError, "timeout must be a number of seconds or None, not bool"),
    ],
)
def test_bad_timeouts(small_bus, timeout: object, exc: type, message: str) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    with pytest.raises(exc) as info:
        sub.recv(timeout=timeout)
    assert str(info.value) == message
    with pytest.raises(exc) as info:
        sub.recv_batch(5, timeout=timeout)
    assert str(info.value) == message


def test_iteration_yields_frames_in_order(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    bus.publish_batch([str(i).encode() for i in range(20)])
    it = iter(sub)
    assert it is sub
    got = [next(it) for _ in range(20)]
    assert [f.seq for f in got] == list(range(20))
    assert [f.payload for f in got] == [str(i).encode() for i in range(20)]
    sub.close()
    assert list(sub) == []


def test_backlog_and_lagged(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe("a")
    assert sub.backlog == 0
    assert sub.lagged == 0
    bus.publish(b"1", topic="a")
    bus.publish(b"2", topic="b")  # backlog counts frames on any topic
    bus.publish(b"3", topic="a")
    assert sub.backlog == 3
    assert sub.recv(0).payload == b"1"
    assert sub.backlog == 2
    assert sub.recv(0).payload == b"3"
    assert sub.backlog == 0
    assert sub.lagged == 0
    sub.close()
    with pytest.raises(fb.BusClosed, match="^the subscription is closed$"):
        _ = sub.backlog


def test_subscription_properties(small_bus) -> None:
    bus = small_bus()
    s = bus.subscribe()
    assert (s.filter, s.group, s.closed) == (">", None, False)
    g = bus.subscribe("a.*", group="workers")
    assert (g.filter, g.group) == ("a.*", "workers")
    with g:
        pass
    assert g.closed
    assert not s.closed


# --------------------------------------------------------------------- filters

TOPICS = ["", "a", "a.b", "a.b.c", "a.x.c", "b.b", "a.b.c.d", "b"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (">", TOPICS),
        ("a", ["a"]),
        ("a.b", ["a.b"]),
        ("*", ["a", "b"]),
        ("*.b", ["a.b", "b.b"]),
        ("a.*", ["a.b"]),
        ("a.*.c", ["a.b.c", "a.x.c"]),
        ("a.>", ["a.b", "a.b.c", "a.x.c", "a.b.c.d"]),
        ("a.b.>", ["a.b.c", "a.b.c.d"]),
        ("*.*", ["a.b", "b.b"]),
        ("*.>", ["a.b", "a.b.c", "a.x.c", "b.b", "a.b.c.d"]),
        ("c", []),
    ],
)
def test_filters(small_bus, flt: str, expected: list[str]) -> None:
    bus = small_bus()
    sub = bus.subscribe(flt)
    everything = bus.subscribe()
    for i, t in enumerate(TOPICS):
        bus.publish(str(i).encode(), topic=t)
    got = drain(sub)
    assert [f.topic for f in got] == expected
    # seqs are the bus's, so a filtered subscription sees gaps
    assert [f.seq for f in got] == [TOPICS.index(t) for t in expected]
    assert [f.payload for f in got] == [str(TOPICS.index(t)).encode() for t in expected]
    assert [f.topic for f in drain(everything)] == TOPICS


@pytest.mark.parametrize(
    ("flt", "exc", "message"),
    [
        ("", ValueError, "topic filter '' is empty: use '>' to match every topic"),
        ("a..b", ValueError, "topic filter 'a..b' has an empty token between '..' at index 1"),
        (".a", ValueError, "topic filter '.a' starts with '.' (empty token)"),
        ("a.", ValueError, "topic filter 'a.' ends with '.' (empty token)"),
        (
            "a.>.b",
            ValueError,
            "topic filter 'a.>.b' has '>' as token 2 of 3: '>' is only allowed as the last token",
        ),
        (
            ">.a",
            ValueError,
            "topic filter '>.a' has '>' as token 1 of 2: '>' is only allowed as the last token",
        ),
        (
            "a.b*",
            ValueError,
            "topic filter 'a.b*' has token 'b*' mixing '*' with other characters: "
            "a wildcard must be a whole token",
        ),
        (
            "a.>x",
            ValueError,
            "topic filter 'a.>x' has token '>x' mixing '>' with other characters: "
            "a wildcard must be a whole token",
        ),
        ("a b", ValueError, "topic filter 'a b' contains whitespace ' ' at index 1"),
        (
            "a\x01",
            ValueError,
            "topic filter 'a\\x01' contains control character '\\x01' at index 1",
        ),
        (
            "x" * 249,
            ValueError,
            f"topic filter {'x' * 249!r} is 249 UTF-8 bytes long: at most 248 allowed",
        ),
        (3, TypeError, "topic filter must be a str, not int"),
        (None, TypeError, "topic filter must be a str, not NoneType"),
    ],
)
def test_bad_filters(small_bus, flt: object, exc: type, message: str) -> None:
    bus = small_bus()
    with pytest.raises(exc) as info:
        bus.subscribe(flt)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert bus.stats()["subscriptions"] == []


def test_filtered_subscription_skips_other_topics_in_batches(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe("keep.*")
    for i in range(100):
        bus.publish(str(i).encode(), topic="keep.x" if i % 3 == 0 else "drop.x")
    got = sub.recv_batch(10, timeout=5)
    assert [f.seq for f in got] == list(range(0, 30, 3))
    got += drain(sub)
    assert [f.seq for f in got] == list(range(0, 100, 3))
    assert all(f.topic == "keep.x" for f in got)


# ---------------------------------------------------------------------- groups


def test_group_members_share_one_cursor(small_bus) -> None:
    bus = small_bus()
    members = [bus.subscribe(group="g") for _ in range(3)]
    other = bus.subscribe()
    bus.publish_batch([str(i).encode() for i in range(30)])
    a = members[0].recv_batch(7, timeout=5)
    b = members[1].recv_batch(10, timeout=5)
    c = [members[2].recv(timeout=5)]
    d = drain(members[0])
    assert [f.seq for f in a] == list(range(0, 7))
    assert [f.seq for f in b] == list(range(7, 17))
    assert [f.seq for f in c] == [17]
    assert [f.seq for f in d] == list(range(18, 30))
    for m in members:
        assert m.recv(0) is None
        assert m.backlog == 0
    # a broadcast subscription still sees everything
    assert [f.seq for f in drain(other)] == list(range(30))


def test_group_member_joining_late_shares_the_backlog(small_bus) -> None:
    bus = small_bus()
    m1 = bus.subscribe("t.>", group="g")
    bus.publish(b"0", topic="t.a")
    bus.publish(b"1", topic="u.a")
    bus.publish(b"2", topic="t.b")
    m2 = bus.subscribe("t.>", group="g")
    assert m2.backlog == 3
    got = drain(m2)
    assert [(f.seq, f.topic) for f in got] == [(0, "t.a"), (2, "t.b")]
    assert m1.recv(0) is None


def test_group_member_with_other_filter(small_bus) -> None:
    bus = small_bus()
    bus.subscribe("a.>", group="g")
    with pytest.raises(ValueError) as info:
        bus.subscribe("a.*", group="g")
    assert str(info.value) == (
        "group 'g' already subscribes to 'a.>'; every member of a group must use the same "
        "filter, not 'a.*'"
    )
    with pytest.raises(ValueError, match="^group 'g' already subscribes to 'a.>'"):
        bus.subscribe(group="g")
    # a different group may use any filter
    assert bus.subscribe("a.*", group="h").filter == "a.*"


@pytest.mark.parametrize("group", ["", 5])
def test_bad_group_name(small_bus, group: object) -> None:
    bus = small_bus()
    with pytest.raises(ValueError) as info:
        bus.subscribe(group=group)  # type: ignore[arg-type]
    assert str(info.value) == f"group must be a non-empty str, got {group!r}"


def test_groups_and_max_readers(small_bus) -> None:
    bus = small_bus(max_readers=2)
    g = [bus.subscribe(group="g") for _ in range(5)]  # one slot for the whole group
    s = bus.subscribe()
    with pytest.raises(fb.FrameBusError) as info:
        bus.subscribe()
    assert str(info.value) == "subscribe: no free reader slot (all max_readers slots are in use)"
    with pytest.raises(fb.FrameBusError):
        bus.subscribe(group="h")
    assert bus.subscribe(group="g").group == "g"  # joins the existing slot
    s.close()
    s2 = bus.subscribe()
    bus.publish(b"x")
    assert s2.recv(timeout=5).payload == b"x"
    assert g[0].recv(timeout=5).payload == b"x"


def test_group_survives_while_one_member_is_open(small_bus) -> None:
    bus = small_bus()
    m1 = bus.subscribe(group="g")
    m2 = bus.subscribe(group="g")
    bus.publish_batch([b"a", b"b"])
    assert m1.recv(0).payload == b"a"
    m1.close()
    assert m2.recv(0).payload == b"b"
    bus.publish(b"c")
    assert m2.recv(0).payload == b"c"
    with pytest.raises(fb.BusClosed, match="^the subscription is closed$"):
        m1.recv(0)


# ----------------------------------------------------------------------- stats

STATS_KEYS = {
    "published",
    "published_bytes",
    "dropped",
    "ring_used",
    "ring_used_bytes",
    "capacity",
    "paused",
    "pause_events",
    "subscriptions",
}


def test_stats_initial(small_bus) -> None:
    bus = small_bus()
    st = bus.stats()
    assert STATS_KEYS <= st.keys()
    assert {k: st[k] for k in STATS_KEYS} == {
        "published": 0,
        "published_bytes": 0,
        "dropped": 0,
        "ring_used": 0,
        "ring_used_bytes": 0,
        "capacity": 1024,
        "paused": False,
        "pause_events": 0,
        "subscriptions": [],
    }
    assert st["callback_errors"] == 0


def test_stats_counts_and_usage(small_bus) -> None:
    bus = small_bus()
    fast = bus.subscribe()
    slow = bus.subscribe("a.*", group="grp")
    bus.publish(b"x", topic="a.b")
    bus.publish(b"y" * 10, topic="a.c")
    bus.publish(b"z" * 100)
    assert len(drain(fast)) == 3
    st = bus.stats()
    assert st["published"] == 3
    assert st["published_bytes"] == 111
    assert st["ring_used"] == 3
    assert st["ring_used_bytes"] == record_size(1) + record_size(10) + record_size(100) == 224
    subs = sorted(st["subscriptions"], key=lambda d: d["filter"])
    assert [{k: d[k] for k in ("filter", "group", "backlog", "lagged")} for d in subs] == [
        {"filter": ">", "group": None, "backlog": 0, "lagged": 0},
        {"filter": "a.*", "group": "grp", "backlog": 3, "lagged": 0},
    ]
    assert slow.recv(0).seq == 0
    st = bus.stats()
    assert (st["ring_used"], st["ring_used_bytes"]) == (2, record_size(10) + record_size(100))
    assert slow.recv(0).seq == 1
    assert slow.recv(0) is None  # passes the frame on the default topic
    st = bus.stats()
    assert (st["ring_used"], st["ring_used_bytes"]) == (0, 0)
    slow.close()
    assert [d["filter"] for d in bus.stats()["subscriptions"]] == [">"]
    fast.close()
    assert bus.stats()["subscriptions"] == []


# -------------------------------------------------------------------- capacity


def test_capacity_in_frames(small_bus) -> None:
    bus = small_bus(overflow="error", backpressure_threshold=0.9, pause_hi=0.85, resume_lo=0.7)
    sub = bus.subscribe()
    for i in range(921):  # floor(0.9 * 1024)
        assert bus.publish(b"") == i
    with pytest.raises(fb.WouldBlock):
        bus.publish(b"")
    assert bus.try_publish(b"") == -1
    st = bus.stats()
    assert (st["ring_used"], st["ring_used_bytes"], st["published"]) == (921, 921 * 32, 921)
    assert sub.recv(0).seq == 0
    assert bus.publish(b"") == 921
    with pytest.raises(fb.WouldBlock):
        bus.publish(b"")
    assert [f.seq for f in drain(sub)] == list(range(1, 922))


def test_capacity_in_bytes_counts_headers(make_bus) -> None:
    bus = make_bus(
        ring_pow=10,
        ring_bytes=4096,
        max_frame=1024,
        backpressure_threshold=1.0,
        pause_hi=0.9,
        resume_lo=0.5,
        overflow="error",
    )
    sub = bus.subscribe()
    # 0-byte payloads: 32-byte records, 4096 / 32 = 128 of them
    for i in range(128):
        assert bus.publish(b"") == i
    assert bus.try_publish(b"") == -1
    assert bus.stats()["ring_used_bytes"] == 4096
    assert len(drain(sub)) == 128


def test_capacity_in_bytes_with_alignment_and_wrap_padding(make_bus) -> None:
    bus = make_bus(
        ring_pow=10,
        ring_bytes=4096,
        max_frame=1024,
        backpressure_threshold=1.0,
        pause_hi=0.9,
        resume_lo=0.5,
        overflow="error",
    )
    sub = bus.subscribe()
    # 85-byte payloads: (32 + 85 + 7) & ~7 = 120-byte records; 34 * 120 = 4080
    for i in range(34):
        assert bus.publish(b"p" * 85) == i
    assert bus.stats()["ring_used_bytes"] == 4080
    # the 35th would need the 16 bytes left at the wrap as padding + 120 > 4096
    with pytest.raises(fb.WouldBlock):
        bus.publish(b"p" * 85)
    assert sub.recv(0).seq == 0
    # 4080 - 120 + 16 (padding) + 120 = 4096: fits exactly
    assert bus.publish(b"q" * 85) == 34
    assert bus.stats()["ring_used_bytes"] == 4096
    assert bus.try_publish(b"") == -1
    got = drain(sub)
    assert [f.seq for f in got] == list(range(1, 35))
    assert got[-1].payload == b"q" * 85


def test_capacity_in_bytes_with_threshold(make_bus) -> None:
    bus = make_bus(
        ring_pow=10,
        ring_bytes=4096,
        max_frame=64,
        backpressure_threshold=0.5,
        pause_hi=0.5,
        resume_lo=0.25,
        overflow="error",
    )
    sub = bus.subscribe()
    for i in range(64):  # 0.5 * 4096 / 32
        assert bus.publish(b"") == i
    with pytest.raises(fb.WouldBlock):
        bus.publish(b"")
    # a 33-byte record (40 bytes) does not fit into the one 32-byte slot freed
    assert sub.recv(0).seq == 0
    assert bus.try_publish(b"x") == -1
    assert bus.try_publish(b"") == 64


def test_max_frame_records(make_bus) -> None:
    bus = make_bus(
        ring_pow=10,
        ring_bytes=4096,
        max_frame=1024,
        backpressure_threshold=1.0,
        pause_hi=0.9,
        resume_lo=0.5,
        overflow="error",
    )
    sub = bus.subscribe()
    big = bytes(range(256)) * 4
    assert [bus.publish(big) for _ in range(3)] == [0, 1, 2]  # 3 * 1056 = 3168
    assert bus.try_publish(big) == -1
    assert [f.payload for f in drain(sub)] == [big] * 3


def test_no_subscription_never_blocks(small_bus) -> None:
    bus = small_bus(publish_timeout=None)  # block mode, wait forever if it ever blocked
    for i in range(3000):
        assert bus.publish(b"x" * 100) == i
    assert bus.publish_batch([b"y" * 1000] * 60) == 3000
    assert bus.try_publish(b"z") == 3060
    sub = bus.subscribe()
    assert sub.backlog == 0
    bus.publish(b"after")
    assert [(f.seq, f.payload) for f in drain(sub)] == [(3061, b"after")]


def test_closing_the_slow_subscription_frees_the_ring(small_bus) -> None:
    bus = small_bus(overflow="error")
    slow = bus.subscribe()
    fast = bus.subscribe()
    for _ in range(1024):
        bus.publish(b"")
    assert len(drain(fast)) == 1024
    with pytest.raises(fb.WouldBlock):
        bus.publish(b"")
    slow.close()
    assert bus.publish(b"") == 1024
    assert bus.stats()["ring_used"] == 1


def test_filtered_subscription_holds_space_until_it_reads(small_bus) -> None:
    bus = small_bus(overflow="error")
    sub = bus.subscribe("wanted")
    for _ in range(1024):
        bus.publish(b"", topic="other")
    with pytest.raises(fb.WouldBlock):
        bus.publish(b"", topic="wanted")
    assert sub.recv(0) is None  # passes over the frames it does not want
    assert bus.stats()["ring_used"] == 0
    assert bus.publish(b"w", topic="wanted") == 1024
    assert sub.recv(0).payload == b"w"


def test_wouldblock_is_queue_full(small_bus) -> None:
    bus = small_bus(overflow="error")
    sub = bus.subscribe()  # noqa: F841 - holds space
    for _ in range(1024):
        bus.publish(b"")
    with pytest.raises(queue.Full):
        bus.publish(b"")
    with pytest.raises(fb.WouldBlock) as info:
        bus.publish(b"")
    assert isinstance(info.value, fb.FrameBusError)
    assert re.fullmatch(
        r"publish: the ring is full \(backpressure threshold reached\)", str(info.value)
    )


@pytest.mark.parametrize("limit", [1, 3, 1000])
def test_frame_limit_holds_exactly(limit: int) -> None:
    cfg = fb.BusConfig.preset("memory_optimized", frame_limit=limit, overflow="error")
    with fb.FrameBus(cfg) as bus:
        sub = bus.subscribe()
        for i in range(limit):
            assert bus.publish(b"x") == i
        with pytest.raises(fb.WouldBlock):
            bus.publish(b"x")
        assert bus.try_publish(b"x") == -1
        assert sub.recv(0).seq == 0
        assert bus.publish(b"x") == limit
        assert bus.try_publish(b"x") == -1
        assert len(sub.recv_batch(limit + 10, timeout=0)) == limit
