"""A Hypothesis state machine: FrameBus against an exact model.

The model keeps every published record with its ring position (32-byte header,
8-byte alignment, padding at the wrap, implicit skip of a tail shorter than a
header) and one cursor per subscription, and from them derives when the ring
is full (bytes and frames limits against the slowest open subscription),
what each recv returns, the stats, and the pause/resume transitions.

In overwrite mode only invariants are checked: increasing seqs, exact content,
and for ``>`` subscriptions lagged + received + backlog == published since
subscribing (so lagged + received == published once drained).

Examples: the Hypothesis profile's max_examples (see conftest.py); the
environment variable FRAMEBUS_SM_EXAMPLES overrides it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import framebus as fb

HEADER = 32
TOPICS = ["", "a", "a.b", "a.x", "b.x", "a.b.c"]
FILTERS = [">", ">", "a", "a.>", "a.*", "*.x", "b.x"]

# Two geometries: one where the byte limit binds (with wrap padding), one where
# the frame limit binds for small payloads.
GEOMETRIES = {
    "bytes-1.0": dict(
        ring_pow=10,
        ring_bytes=4096,
        max_frame=200,
        backpressure_threshold=1.0,
        pause_hi=0.6,
        resume_lo=0.3,
    ),
    "bytes-0.8": dict(
        ring_pow=10,
        ring_bytes=4096,
        max_frame=200,
        backpressure_threshold=0.8,
        pause_hi=0.6,
        resume_lo=0.3,
    ),
    "frames": dict(
        ring_pow=10,
        ring_bytes=1 << 16,
        max_frame=40,
        backpressure_threshold=0.1,
        pause_hi=0.08,
        resume_lo=0.04,
    ),
}


def rec_size(n: int) -> int:
    return (HEADER + n + 7) & ~7


def matches(flt: str, topic: str) -> bool:
    """NATS matching, written independently of framebus.topics."""
    if flt == ">":
        return True
    if topic == "":
        return False
    fs, ts = flt.split("."), topic.split(".")
    for i, f in enumerate(fs):
        if f == ">":
            return len(ts) > i
        if i >= len(ts) or (f != "*" and f != ts[i]):
            return False
    return len(ts) == len(fs)


@dataclass
class Rec:
    seq: int
    topic: str
    payload: bytes
    pos: int
    end: int


@dataclass
class SubModel:
    """One cursor: a subscription, or a group whose member handles share it."""

    handles: list
    flt: str
    seq: int  # next record index (== seq) the cursor is at
    pos: int  # cursor position in bytes
    start_seq: int
    received: int = 0
    last_seq: int = -1
    group: str | None = None

    @property
    def handle(self) -> fb.Subscription:
        return self.handles[0]


class BusMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bus: fb.FrameBus | None = None

    # ------------------------------------------------------------------ setup

    @initialize(
        mode=st.sampled_from(["block", "error", "drop", "overwrite"]),
        geometry=st.sampled_from(sorted(GEOMETRIES)),
    )
    def setup(self, mode: str, geometry: str) -> None:
        g = GEOMETRIES[geometry]
        self.mode = mode
        self.overwrite = mode == "overwrite"
        self.max_frame = g["max_frame"]
        self.D = g["ring_bytes"]
        cap = 1 << g["ring_pow"]
        t = g["backpressure_threshold"]
        self.LB, self.LF = int(t * self.D), int(t * cap)
        self.PB, self.PF = math.ceil(g["pause_hi"] * self.D), math.ceil(g["pause_hi"] * cap)
        self.RB, self.RF = int(g["resume_lo"] * self.D), int(g["resume_lo"] * cap)
        self.bus = fb.FrameBus(**g, overflow=mode, publish_timeout=0, spin=0)
        self.records: list[Rec] = []
        self.tail_pos = 0
        self.published_bytes = 0
        self.dropped = 0
        self.paused = False
        self.pause_events = 0
        self.pause_calls = 0
        self.subs: list[SubModel] = []
        self.group_filters: dict[str, str] = {}

        def on_pause() -> None:
            self.pause_calls += 1

        self.bus.on_pause(on_pause)
        self.subscribe(">")

    def teardown(self) -> None:
        if self.bus is not None:
            self.bus.close()

    # ------------------------------------------------------------------ model

    @property
    def tail_seq(self) -> int:
        return len(self.records)

    def min_cursor(self) -> tuple[int, int]:
        pos, seq = self.tail_pos, self.tail_seq
        for s in self.subs:
            pos, seq = min(pos, s.pos), min(seq, s.seq)
        return pos, seq

    def usage(self) -> tuple[int, int]:
        mpos, mseq = self.min_cursor()
        return self.tail_pos - mpos, self.tail_seq - mseq

    def place(
        self, sizes: list[int], bounded: bool, against: tuple[int, int] | None = None
    ) -> list[tuple[int, int]]:
        """(pos, end) of the longest prefix of records that fits."""
        mpos, mseq = self.min_cursor() if against is None else against
        pos = self.tail_pos
        out = []
        for k, n in enumerate(sizes):
            need = rec_size(n)
            room = self.D - pos % self.D
            pad = room if need > room else 0
            if pad:
                event("padding at the wrap")
            nxt = pos + pad + need
            if bounded:
                if nxt - mpos > self.LB or self.tail_seq + k + 1 - mseq > self.LF:
                    break
            elif nxt - self.tail_pos > self.D:
                break
            out.append((pos + pad, nxt))
            pos = nxt
        return out

    def append(self, topic: str, payloads: list[bytes], placed: list[tuple[int, int]]) -> int:
        first = self.tail_seq
        for p, (pos, end) in zip(payloads, placed, strict=True):
            self.records.append(Rec(self.tail_seq, topic, p, pos, end))
            self.tail_pos = end
            self.published_bytes += len(p)
        if not self.overwrite and not self.paused:
            ub, uf = self.usage()
            if ub >= self.PB or uf >= self.PF:
                event("paused by " + ("bytes" if ub >= self.PB else "frames"))
                self.paused = True
                self.pause_events += 1
        return first

    def maybe_resume(self) -> None:
        if self.overwrite or not self.paused:
            return
        ub, uf = self.usage()
        if ub <= self.RB and uf <= self.RF:
            event("resumed")
            self.paused = False

    def model_read(self, sm: SubModel, n: int) -> list[Rec]:
        out: list[Rec] = []
        pos, seq, start = sm.pos, sm.seq, sm.pos
        while len(out) < n:
            if seq < self.tail_seq:
                r = self.records[seq]
                pos, seq = r.end, seq + 1
                if matches(sm.flt, r.topic):
                    out.append(r)
            else:
                room = self.D - pos % self.D
                if room < HEADER and room:
                    event("reader skipped a short tail")
                    pos += room  # the reader skips a tail too short for a header
                break
        sm.pos, sm.seq = pos, seq
        if pos != start:
            self.maybe_resume()
        return out

    def clip(self, payload: bytes) -> bytes:
        return payload[: self.max_frame]

    # ------------------------------------------------------------------ rules

    def handles(self) -> list[tuple[SubModel, fb.Subscription]]:
        return [(sm, h) for sm in self.subs for h in sm.handles]

    @precondition(lambda self: len(self.handles()) < 6)
    @rule(flt=st.sampled_from(FILTERS))
    def subscribe(self, flt: str) -> None:
        h = self.bus.subscribe(flt)
        self.subs.append(SubModel([h], flt, self.tail_seq, self.tail_pos, self.tail_seq))
        assert h.backlog == 0

    @precondition(lambda self: not self.overwrite and len(self.handles()) < 6)
    @rule(group=st.sampled_from(["g1", "g2"]), flt=st.sampled_from(FILTERS))
    def subscribe_group_member(self, group: str, flt: str) -> None:
        sm = next((s for s in self.subs if s.group == group), None)
        known = self.group_filters.get(group)
        if known is not None and flt != known:
            with pytest.raises(ValueError) as info:
                self.bus.subscribe(flt, group=group)
            assert str(info.value) == (
                f"group {group!r} already subscribes to {known!r}; every member of a group "
                f"must use the same filter, not {flt!r}"
            )
            flt = known
        h = self.bus.subscribe(flt, group=group)
        self.group_filters[group] = flt
        if sm is None:
            self.subs.append(
                SubModel([h], flt, self.tail_seq, self.tail_pos, self.tail_seq, group=group)
            )
        else:
            event("group member joined an open group")
            sm.handles.append(h)
        assert (h.group, h.filter) == (group, flt)

    @precondition(lambda self: len(self.subs) > 0)
    @rule(i=st.integers(0, 5))
    def close_subscription(self, i: int) -> None:
        pairs = self.handles()
        sm, h = pairs[i % len(pairs)]
        h.close()
        assert h.closed
        with pytest.raises(fb.BusClosed, match="^the subscription is closed$"):
            h.recv(0)
        sm.handles.remove(h)
        if not sm.handles:
            self.subs.remove(sm)
        self.maybe_resume()

    def full(self, what: str, call) -> None:
        event(f"{self.mode}: {what} full")
        if self.mode == "block":
            with pytest.raises(fb.WouldBlock, match=f"^{what}: ring still full after 0 s$"):
                call()
        elif self.mode == "error":
            with pytest.raises(
                fb.WouldBlock,
                match=rf"^{what}: the ring is full \(backpressure threshold reached\)$",
            ):
                call()
        else:
            raise AssertionError(self.mode)

    @rule(
        topic=st.sampled_from(TOPICS),
        payload=st.binary(max_size=200),
        how=st.sampled_from(["publish", "publish", "try_publish"]),
    )
    def publish(self, topic: str, payload: bytes, how: str) -> None:
        payload = self.clip(payload)
        if how == "try_publish" and self.mode == "drop":
            how = "publish"  # try_publish's effect on the dropped counter is not specified
        placed = self.place([len(payload)], bounded=not self.overwrite)
        call = getattr(self.bus, how)
        if placed:
            expected = self.append(topic, [payload], placed)
            assert call(payload, topic=topic) == expected
        elif how == "try_publish":
            assert call(payload, topic=topic) == -1
        elif self.mode == "drop":
            event("drop: single frame dropped")
            assert call(payload, topic=topic) == -1
            self.dropped += 1
        else:
            self.full("publish", lambda: call(payload, topic=topic))

    @rule(
        topic=st.sampled_from(TOPICS),
        payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=40),
    )
    def publish_batch(self, topic: str, payloads: list[bytes]) -> None:
        payloads = [self.clip(p) for p in payloads]
        sizes = [len(p) for p in payloads]
        n = len(payloads)
        bounded = not self.overwrite
        placed = self.place(sizes, bounded)
        partial = self.mode == "drop"
        if len(placed) < n and (not partial or not placed):
            want = 1 if partial else n
            if (
                len(self.place(sizes[:want], bounded, against=(self.tail_pos, self.tail_seq)))
                < want
            ):
                event(f"{self.mode}: batch can never fit")
                with pytest.raises(ValueError) as info:
                    self.bus.publish_batch(payloads, topic=topic)
                assert str(info.value) == (
                    f"publish_batch: {n} frames ({sum(sizes)} payload bytes) can never fit in "
                    "this ring at once; split the batch"
                )
                assert not isinstance(info.value, fb.WouldBlock)
                return
            if partial:
                event("drop: whole batch dropped")
                assert self.bus.publish_batch(payloads, topic=topic) == -1
                self.dropped += n
            else:
                self.full("publish_batch", lambda: self.bus.publish_batch(payloads, topic=topic))
            return
        if len(placed) < n:
            event("drop: batch prefix written")
        expected = self.append(topic, payloads[: len(placed)], placed)
        self.dropped += n - len(placed)
        assert self.bus.publish_batch(payloads, topic=topic) == expected

    @rule(
        topic=st.sampled_from(TOPICS),
        k=st.integers(1, 120),
        size=st.integers(0, 200),
        byte=st.integers(0, 255),
    )
    def fill(self, topic: str, k: int, size: int, byte: int) -> None:
        """A batch of k equal frames: reaches the limits in a few steps."""
        self.publish_batch(topic, [bytes([byte]) * size] * k)

    @rule(extra=st.integers(1, 100), batch=st.booleans())
    def publish_too_large(self, extra: int, batch: bool) -> None:
        big = b"L" * (self.max_frame + extra)
        with pytest.raises(fb.FrameTooLarge) as info:
            if batch:
                self.bus.publish_batch([b"ok", big])
            else:
                self.bus.publish(big)
        assert (info.value.size, info.value.max_frame) == (self.max_frame + extra, self.max_frame)

    @precondition(lambda self: len(self.subs) > 0)
    @rule(i=st.integers(0, 5), n=st.integers(1, 60), how=st.sampled_from(["recv", "recv_batch"]))
    def receive(self, i: int, n: int, how: str) -> None:
        pairs = self.handles()
        sm, h = pairs[i % len(pairs)]
        if how == "recv":
            n = 1
            f = h.recv(0)
            got = [] if f is None else [f]
        else:
            got = h.recv_batch(n, timeout=0)
        assert len(got) <= n
        if self.overwrite:
            self.check_overwrite_read(sm, got)
            return
        want = self.model_read(sm, n)
        assert [(f.seq, f.topic, f.payload) for f in got] == [
            (r.seq, r.topic, r.payload) for r in want
        ]

    def check_overwrite_read(self, sm: SubModel, got: list[fb.Frame]) -> None:
        for f in got:
            assert f.seq > sm.last_seq, "seqs must increase"
            assert sm.start_seq <= f.seq < self.tail_seq
            r = self.records[f.seq]
            assert (f.topic, f.payload) == (r.topic, r.payload), f"frame {f.seq} corrupted"
            assert matches(sm.flt, f.topic)
            sm.last_seq = f.seq
        sm.received += len(got)
        if sm.handle.lagged:
            event("overwrite: lapped")
        if sm.flt == ">" and not got:
            # no spurious empty read: nothing was there
            assert sm.handle.backlog == 0

    # ------------------------------------------------------------- invariants

    @invariant()
    def stats_match(self) -> None:
        if self.bus is None:
            return
        st_ = self.bus.stats()
        assert st_["published"] == self.tail_seq
        assert st_["published_bytes"] == self.published_bytes
        assert st_["dropped"] == self.dropped
        assert len(st_["subscriptions"]) == len(self.handles())
        if self.overwrite:
            total_lagged = 0
            for sm in self.subs:
                h = sm.handle
                since = self.tail_seq - sm.start_seq
                total_lagged += h.lagged
                if sm.flt == ">":
                    assert h.lagged + sm.received + h.backlog == since
                else:
                    assert h.lagged + sm.received + h.backlog <= since
            assert sum(d["lagged"] for d in st_["subscriptions"]) == total_lagged
            return
        ub, uf = self.usage()
        assert (st_["ring_used"], st_["ring_used_bytes"]) == (uf, ub)
        assert st_["paused"] == self.paused == self.bus.paused
        assert st_["pause_events"] == self.pause_events == self.pause_calls
        assert st_["callback_errors"] == 0
        for sm, h in self.handles():
            assert h.backlog == self.tail_seq - sm.seq
            assert h.lagged == 0


_examples = int(os.environ.get("FRAMEBUS_SM_EXAMPLES", "0")) or max(
    settings.default.max_examples, 300
)
BusMachine.TestCase.settings = settings(
    settings.default,
    max_examples=_examples,
    stateful_step_count=max(settings.default.stateful_step_count, 100),
)
TestBusMachine = pytest.mark.slow(pytest.mark.timeout(600)(BusMachine.TestCase))
