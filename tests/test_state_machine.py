"""A Hypothesis state machine: FrameBus against an exact model.

The model keeps every published record with its ring position (32-byte header,
8-byte alignment, padding at the wrap, implicit skip of a tail shorter than a
header) and one cursor per subscription, and from them derives when the ring
is full (bytes and frames limits against the slowest open subscription),
what each recv returns, the stats, and the pause/resume transitions.

In overwrite mode only invariants are checked: increasing seqs, exact content,
and for ``>`` subscriptions lagged + received + backlog == published since
subscribing (so lagged + received == published once drained).

The four receive paths are checked alike: ``recv``, ``recv_batch`` (the reference),
``recv_payloads`` (only payloads: against the model's, and in overwrite mode matched
to the records the cursor passed) and ``recv_frames`` (every field of the FrameBatch:
seqs, topics, topic ids, payloads, lengths, offsets into ``data``, ts_ns). Every
ts_ns lies between the clock readings taken around its publish and never goes back
for one cursor.

Examples: the Hypothesis profile's max_examples (see conftest.py); the
environment variable FRAMEBUS_SM_EXAMPLES overrides it.
"""

from __future__ import annotations

import itertools
import math
import os
import time
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
RECEIVE_PATHS = ["recv", "recv_batch", "recv_payloads", "recv_frames"]

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
    t0: int = 0  # time.time_ns() before and after the publish call
    t1: int = 0


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
    last_ts: int = 0
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

    def stamped(self, first: int, call) -> int:
        """call() (the publish of records first..), with the clock read around it."""
        t0 = time.time_ns()
        got = call()
        t1 = time.time_ns()
        for r in self.records[first:]:
            r.t0, r.t1 = t0, t1
        return got

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
            assert self.stamped(expected, lambda: call(payload, topic=topic)) == expected
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
        published = self.stamped(expected, lambda: self.bus.publish_batch(payloads, topic=topic))
        assert published == expected

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
    @rule(i=st.integers(0, 5), n=st.integers(1, 60), how=st.sampled_from(RECEIVE_PATHS))
    def receive(self, i: int, n: int, how: str) -> None:
        pairs = self.handles()
        sm, h = pairs[i % len(pairs)]
        lagged = h.lagged
        if how == "recv_payloads":
            payloads = h.recv_payloads(n, timeout=0)
            assert type(payloads) is list and len(payloads) <= n
            assert all(type(p) is bytes for p in payloads)
            if self.overwrite:
                if h.lagged > lagged:
                    event("overwrite: recv_payloads read past a lap")
                self.check_overwrite_payloads(sm, h, payloads)
            else:
                assert payloads == [r.payload for r in self.model_read(sm, n)]
            return
        if how == "recv":
            n = 1
            f = h.recv(0)
            got = [] if f is None else [f]
        elif how == "recv_batch":
            got = h.recv_batch(n, timeout=0)
        else:
            got = self.frames_of(h.recv_frames(n, timeout=0))
        assert len(got) <= n
        if self.overwrite:
            if h.lagged > lagged:
                event(f"overwrite: {how} read past a lap")
            self.check_overwrite_read(sm, h, [(f.seq, f.topic, f.payload) for f in got])
        else:
            want = self.model_read(sm, n)
            assert [(f.seq, f.topic, f.payload) for f in got] == [
                (r.seq, r.topic, r.payload) for r in want
            ]
        for f in got:
            r = self.records[f.seq]
            assert r.t0 <= f.ts_ns <= r.t1, f"frame {f.seq}: ts_ns outside its publish call"
            assert f.ts_ns >= sm.last_ts, f"frame {f.seq}: ts_ns went back for this cursor"
            sm.last_ts = f.ts_ns

    def frames_of(self, batch: fb.FrameBatch) -> list[fb.Frame]:
        """The Frames of a FrameBatch, once every field it exposes agrees with them."""
        assert type(batch) is fb.FrameBatch
        k = len(batch)
        assert bool(batch) == (k > 0)
        frames = list(batch)
        assert len(frames) == k
        assert [batch[j] for j in range(k)] == frames == batch[:]
        if k:
            assert batch[-1] == frames[-1] and batch.topic(-1) == frames[-1].topic
        payloads = batch.payloads()
        topics = [batch.topic(j) for j in range(k)]
        assert payloads == [f.payload for f in frames]
        assert topics == [f.topic for f in frames]
        assert batch.seqs.tolist() == [f.seq for f in frames]
        assert batch.ts_ns.tolist() == [f.ts_ns for f in frames]
        assert batch.topic_ids.tolist() == [self.bus.topic_id(t) for t in topics]
        lengths = batch.lengths.tolist()
        offsets = batch.offsets.tolist()
        assert lengths == [len(p) for p in payloads]
        assert offsets == list(itertools.accumulate(lengths[:-1], initial=0))[:k]
        assert batch.nbytes == len(batch.data) == sum(lengths)
        assert [batch.data[o : o + m] for o, m in zip(offsets, lengths, strict=True)] == payloads
        if k and len(set(lengths)) == 1:
            event("recv_frames: a batch of one size")
            arr = batch.array()
            assert arr.shape == (k, lengths[0]) and arr.tobytes() == batch.data
        return frames

    def check_overwrite_read(
        self, sm: SubModel, h: fb.Subscription, got: list[tuple[int, str, bytes]]
    ) -> None:
        for seq, topic, payload in got:
            assert seq > sm.last_seq, "seqs must increase"
            assert sm.start_seq <= seq < self.tail_seq
            r = self.records[seq]
            assert (topic, payload) == (r.topic, r.payload), f"frame {seq} corrupted"
            assert matches(sm.flt, topic)
            sm.last_seq = seq
        sm.received += len(got)
        if h.lagged:
            event("overwrite: lapped")
        if sm.flt == ">":
            cursor = self.tail_seq - h.backlog
            # what a ">" reader keeps of a read is the intact run up to its cursor
            assert [seq for seq, _, _ in got] == list(range(cursor - len(got), cursor))
            if not got:
                # no spurious empty read: nothing was there
                assert h.backlog == 0

    def check_overwrite_payloads(
        self, sm: SubModel, h: fb.Subscription, payloads: list[bytes]
    ) -> None:
        """Payloads carry no seq: a ">" reader's are the run up to its cursor; for a
        filter, they must be, in order, payloads of matching records after the last
        one seen and before the cursor (matched to the earliest such records)."""
        cursor = self.tail_seq - h.backlog
        if sm.flt == ">":
            seqs = range(cursor - len(payloads), cursor)
        else:
            candidates = (
                r
                for r in self.records[max(sm.last_seq + 1, sm.start_seq) : cursor]
                if matches(sm.flt, r.topic)
            )
            seqs = []
            for p in payloads:
                r = next((r for r in candidates if r.payload == p), None)
                assert r is not None, f"payload {p[:16]!r} is no record this cursor passed"
                seqs.append(r.seq)
        got = [(seq, self.records[seq].topic, p) for seq, p in zip(seqs, payloads, strict=True)]
        self.check_overwrite_read(sm, h, got)

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
