"""Envelopes on the bus: publish / publish_batch take Envelopes, subscriptions hand
them back, deadline misses are counted (dropped or flagged), readers refuse what
they do not understand."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import framebus as fb
from framebus.envelope import MSGPACK


def test_publish_sets_seq_and_ts(make_bus: Callable[..., fb.FrameBus]) -> None:
    bus = make_bus()
    raw = bus.subscribe("a.>")
    envs = bus.subscribe("a.>", envelopes=True)
    env = fb.Envelope("a.b", b"payload", src="s", dst="d", corr_id=7, priority=-2)
    assert env.seq is None and env.ts_ns is None
    seq = bus.publish(env)
    assert env.seq == seq == 0
    frame = raw.recv(timeout=1)
    assert frame.topic == "a.b"  # the envelope's own topic
    assert frame.ts_ns == env.ts_ns  # the timestamp the ring recorded
    assert fb.Envelope.decode(frame.payload) == env
    got = envs.recv(timeout=1)
    assert got == env and got.seq == 0 and got.ts_ns == frame.ts_ns
    assert got.deadline_missed is False
    assert bus.try_publish(env.replace(corr_id=8)) == 1


def test_topic_argument_must_agree(make_bus: Callable[..., fb.FrameBus]) -> None:
    bus = make_bus()
    env = fb.Envelope("a.b", b"x")
    assert bus.publish(env, topic="a.b") == 0
    with pytest.raises(ValueError, match="on its own topic"):
        bus.publish(env, topic="other")
    with pytest.raises(ValueError, match="on its own topic"):
        bus.publish_batch([env], topic="other")
    with pytest.raises(ValueError, match="wildcard"):
        bus.publish(fb.Envelope("a.*", b"x"))  # the envelope's topic is checked too
    assert bus.stats()["published"] == 1


def test_publish_batch_mixed_topics_and_bytes(make_bus: Callable[..., fb.FrameBus]) -> None:
    bus = make_bus()
    sub = bus.subscribe(">")
    a = fb.Envelope("t.a", b"1")
    b = fb.Envelope("t.b", {"k": 1}, content_type=MSGPACK)
    first = bus.publish_batch([a, b"plain", b])  # bytes-like frames: the topic argument
    assert (a.seq, b.seq) == (first, first + 2)
    assert a.ts_ns == b.ts_ns is not None
    frames = sub.recv_batch(10, timeout=1)
    assert [(f.topic, f.seq) for f in frames] == [("t.a", 0), ("", 1), ("t.b", 2)]
    assert fb.Envelope.decode(frames[2].payload).payload == {"k": 1}


def test_deadline_deliver_flagged_or_drop(make_bus: Callable[..., fb.FrameBus]) -> None:
    bus = make_bus()
    flagged = bus.subscribe("d", envelopes=True)
    dropping = bus.subscribe("d", envelopes=True, on_deadline="drop")
    now = time.time_ns()
    bus.publish(fb.Envelope("d", b"no deadline"))
    bus.publish(fb.Envelope("d", b"late", deadline_ns=now - 1))
    bus.publish(fb.Envelope("d", b"in time", deadline_ns=now + 3600 * 10**9))
    got = flagged.recv_batch(10, timeout=1)
    assert [(e.payload, e.deadline_missed) for e in got] == [
        (b"no deadline", False),
        (b"late", True),
        (b"in time", False),
    ]
    assert [e.payload for e in dropping.recv_batch(10, timeout=1)] == [b"no deadline", b"in time"]
    assert (flagged.deadline_misses, dropping.deadline_misses) == (1, 1)
    assert bus.stats()["deadline_misses"] == 2  # bus-wide: both subscriptions' misses
    # a dropped frame does not end a recv early: the next good one comes back
    bus.publish(fb.Envelope("d", b"late again", deadline_ns=1))
    bus.publish(fb.Envelope("d", b"fine"))
    assert dropping.recv(timeout=0).payload == b"fine"


def test_undecodable_and_refused_frames_are_skipped(
    make_bus: Callable[..., fb.FrameBus], caplog: pytest.LogCaptureFixture
) -> None:
    bus = make_bus()
    sub = bus.subscribe("r", envelopes=True, schema_versions={2}, content_types={MSGPACK})
    bus.publish(b"not an envelope", topic="r")
    bus.publish(fb.Envelope("r", b"v1 bytes", schema_ver=1))
    bus.publish(fb.Envelope("r", {"v": 2}, schema_ver=2, content_type=MSGPACK))
    bus.publish(fb.Envelope("r", b"v2 bytes", schema_ver=2))
    got = sub.recv_batch(10, timeout=1)
    assert [e.payload for e in got] == [{"v": 2}]
    assert sub.decode_errors == 3
    text = caplog.text
    assert "skipped frame 0: not an envelope" in text
    assert "schema_ver 1 is not supported" in text
    assert "content_type 'application/octet-stream' is not supported" in text
    assert sub.recv(timeout=0) is None


def test_subscribe_option_errors(make_bus: Callable[..., fb.FrameBus]) -> None:
    bus = make_bus()
    with pytest.raises(ValueError, match="on_deadline"):
        bus.subscribe("x", envelopes=True, on_deadline="skip")
    with pytest.raises(ValueError, match="apply to envelopes=True"):
        bus.subscribe("x", on_deadline="drop")
    with pytest.raises(ValueError, match="apply to envelopes=True"):
        bus.subscribe("x", schema_versions={1})


def test_iteration_async_and_groups(make_bus: Callable[..., fb.FrameBus]) -> None:
    import asyncio

    bus = make_bus()
    a = bus.subscribe("g", group="workers", envelopes=True)
    b = bus.subscribe("g", group="workers", envelopes=True)
    for i in range(6):
        bus.publish(fb.Envelope("g", b"%d" % i))
    got = a.recv_batch(3, timeout=1) + b.recv_batch(10, timeout=1)
    assert sorted(e.payload for e in got) == [b"%d" % i for i in range(6)]

    async def main() -> bytes:
        bus.publish(fb.Envelope("g", b"async"))
        env = await a.arecv(timeout=5)
        return bytes(env.payload)

    assert asyncio.run(main()) == b"async"
    bus.publish(fb.Envelope("g", b"iter"))
    assert next(iter(b)).payload == b"iter"


def test_durable_group_gets_envelopes_back_after_restart(tmp_path) -> None:
    wal = str(tmp_path / "wal")
    with fb.FrameBus(preset="memory_optimized", wal_dir=wal) as bus:
        sub = bus.subscribe("e", group="ingest", envelopes=True)
        for i in range(5):
            bus.publish(fb.Envelope("e", b"%d" % i, corr_id=i))
        got = sub.recv_batch(2, timeout=1)
        assert [e.corr_id for e in got] == [0, 1]
        sub.commit(got[-1].seq)
        assert bus.flush(timeout=10)
    with fb.FrameBus(preset="memory_optimized", wal_dir=wal) as bus:
        sub = bus.subscribe("e", group="ingest", envelopes=True)
        bus.publish(fb.Envelope("e", b"live", corr_id=99))
        got = []
        while len(got) < 4:
            batch = sub.recv_batch(10, timeout=5)
            assert batch, f"stalled after {got}"
            got += batch
        # redelivered from the WAL (as Envelopes, with their seqs), then the live one
        assert [e.corr_id for e in got] == [2, 3, 4, 99]
        assert [e.seq for e in got] == [2, 3, 4, 5]
