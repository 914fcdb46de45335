"""framebus.flow's inproc runtime: the sync engine's outputs through every node kind,
order per path, accumulators, fusion (equivalent, and one thread per fused chain),
the handoff (an idle cheap stage run in its sender's thread, order kept, a slow one
left on its own),
backpressure with a bound from the windows, retries and dead letters (list and topic),
deadlines, async stages, timeout and Ctrl-C, parallelism and overflow, metrics; after
every run no thread, fd or bus is left. Exact behaviour only, no timing assertions."""

from __future__ import annotations

import _thread
import asyncio
import gc
import itertools
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import flow_fns
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import framebus as fb
from framebus import flow
from framebus._reserved import FLOW
from framebus.envelope import Envelope
from framebus.flow import FlowError
from framebus.flow.inproc import _RECV_FRAMES, dead_topic

MS = 1_000_000


def _open_buses() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, fb.FrameBus) and not o.closed)


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    """After every test: no new thread alive, no fd leaked, no bus of a run open."""
    threads = set(threading.enumerate())
    fds = len(os.listdir("/proc/self/fd"))
    buses = _open_buses()
    yield
    assert set(threading.enumerate()) <= threads
    assert len(os.listdir("/proc/self/fd")) <= fds
    assert _open_buses() <= buses


def run(g: flow.Graph, fuse: bool = True, **kwargs: Any) -> flow.Report:
    kwargs.setdefault("timeout", 30)
    return flow.compile(g, fuse=fuse).run(runtime="inproc", **kwargs)


linear = flow_fns.linear


def counts(report: flow.Report) -> dict[str, tuple[int, int]]:
    return {n: (s.items_in, s.items_out) for n, s in report.nodes.items()}


# -- exact delivery -----------------------------------------------------------------


@pytest.mark.parametrize("codec", ["ref", "msgpack"])
def test_every_node_kind_exactly_and_in_order(codec: str) -> None:
    g, out = linear(
        lambda: range(10),
        ("map", "sq", lambda x: x * x, {}),
        ("filter", "even", lambda x: x % 2 == 0, {}),
        ("accumulate", "batch", None, {"count": 2}),
    )
    report = run(g, codec=codec)
    assert report.runtime == "inproc"
    assert out == [[0, 4], [16, 36], [64]]
    n = report.nodes
    assert (n["src"].items_out, n["sq"].items_in, n["sq"].items_out) == (10, 10, 10)
    assert (n["even"].items_in, n["even"].items_out) == (10, 5)
    assert (n["batch"].items_in, n["batch"].items_out) == (5, 3)
    assert n["batch"].flushes == {"count": 2, "end": 1}
    assert (report.items_emitted, report.items_delivered) == (10, 3)
    assert report.dead_letters == [] and not report.timed_out
    lat = report.latency_ns()
    assert lat["count"] == 3 and 0 < lat["min"] <= lat["p50"] <= lat["max"]


def test_a_long_linear_chain_keeps_order_across_batches() -> None:
    # parallelism 1 on every stage: the order of the source, whatever the batching
    g, out = linear(
        lambda: range(20_000),
        ("map", "a", lambda x: x + 1, {"pure": False}),
        ("filter", "b", lambda x: x % 3 != 0, {"pure": False}),
        ("map", "c", lambda x: -x, {"window": 2}),
    )
    report = run(g, max_batch=64)
    assert out == [-(x + 1) for x in range(20_000) if (x + 1) % 3 != 0]
    assert report.nodes["out"].items_in == len(out)


def sync_and_inproc(
    make: Callable[[], tuple[flow.Graph, list[Any]]], codec: str = "ref"
) -> tuple[list[Any], ...]:
    g, out = make()
    flow.compile(g).run(runtime="sync")
    sync_out = list(out)
    out.clear()
    fused = run(g, codec=codec)
    fused_out = list(out)
    out.clear()
    unfused = run(g, fuse=False, codec=codec)
    assert counts(fused) == counts(unfused)
    return sync_out, fused_out, list(out)


def fusion_graph() -> tuple[flow.Graph, list[Any]]:
    out: list[Any] = []
    g = flow.Graph("g")
    s = g.source("s", lambda: range(300))
    a = s >> g.map("a", lambda x: x + 1) >> g.filter("b", lambda x: x % 3 != 0)
    c = a >> g.map("c", lambda x: x * 2) >> g.map("d", lambda x: [x, x % 5])
    e = c >> g.filter("e", lambda t: t[1] != 0) >> g.accumulate("acc", count=4)
    e >> g.map("f", len) >> g.sink("k", out.append)
    s >> g.map("g2", lambda x: -x) >> g.filter("h", lambda x: x % 7 == 0) >> "k"
    return g, out


@pytest.mark.parametrize("codec", ["ref", "msgpack"])
def test_fused_and_unfused_give_the_sync_output(codec: str) -> None:
    sync_out, fused_out, unfused_out = sync_and_inproc(fusion_graph, codec)
    assert len(sync_out) > 20
    assert Counter(fused_out) == Counter(sync_out) == Counter(unfused_out)


def flatten(items: list[Any]) -> Iterator[Any]:
    for x in items:
        if isinstance(x, list):
            yield from flatten(x)
        else:
            yield x


_STEPS = flow_fns.chain_steps(max_size=6)


@settings(max_examples=25, deadline=None)
@given(
    steps=_STEPS,
    n=st.integers(0, 300),
    max_batch=st.sampled_from([1, 7, 1024]),
    handoff=st.sampled_from(["auto", "thread"]),
)
def test_random_chains_give_the_sync_output(
    steps: list[tuple[str, int, bool, int]], n: int, max_batch: int, handoff: str
) -> None:
    out: list[Any] = []
    g = flow.Graph("g")
    node = g.source("s", lambda: range(n))
    for i, (kind, c, pure, par) in enumerate(steps):
        node = node >> flow_fns.chain_step(g, i, kind, c, pure, par)
    node >> g.sink("k", out.append)
    flow.compile(g).run(runtime="sync")
    want = list(out)
    out.clear()
    report = run(g, max_batch=max_batch, handoff=handoff)
    if any(par > 1 for *_, par in steps):
        # no order promised: an accumulator after a parallel node may group differently
        assert Counter(flatten(out)) == Counter(flatten(want))
    else:
        assert out == want  # parallelism 1 all along: the sync order
    assert report.items_delivered == len(want)


@pytest.mark.parametrize("codec", ["ref", "msgpack"])
def test_fan_out_and_fan_in_deliver_the_sync_multiset(codec: str) -> None:
    def make() -> tuple[flow.Graph, list[Any]]:
        out: list[Any] = []
        g = flow.Graph("g")
        s = g.source("s", lambda: range(500))
        a = s >> g.map("a", lambda x: x * 10)
        b = s >> g.map("b", lambda x: x * 100)
        j = a >> g.map("j", lambda x: x + 1)
        b >> j
        j >> g.sink("k1", lambda x: out.append(("k1", x)))
        a >> g.sink("k2", lambda x: out.append(("k2", x)))
        g.source("t", lambda: ["t1", "t2"]) >> "k2"
        return g, out

    sync_out, fused_out, unfused_out = sync_and_inproc(make, codec)
    assert Counter(fused_out) == Counter(sync_out) == Counter(unfused_out)
    # per path the order holds: k2 gets a's items in the source's order
    assert [x for k, x in fused_out if k == "k2" and isinstance(x, int)] == [
        x * 10 for x in range(500)
    ]


def test_string_callables_from_flow_fns() -> None:
    g = flow.Graph("g")
    (
        g.source("s", "flow_fns:ten")
        >> g.map("m", "flow_fns:double")
        >> g.filter("f", "flow_fns:odd")
        >> g.map("i", "flow_fns:Ns.inc")
        >> g.sink("k", "flow_fns:store")
    )
    flow_fns.STORED.clear()
    report = run(g)
    assert flow_fns.STORED == [] and report.nodes["f"].items_out == 0  # doubles are even
    g2 = flow.Graph("g2")
    (
        g2.source("s", "flow_fns:ten")
        >> g2.map("i", "flow_fns:Ns.inc")
        >> g2.sink("k", "flow_fns:store")
    )
    run(g2)
    assert flow_fns.STORED == list(range(1, 11))


def test_codec_is_checked() -> None:
    g, _ = linear(lambda: [1])
    expected = "codec='json' is invalid: expected one of 'ref', 'msgpack'"
    with pytest.raises(flow.FlowError, match=expected):
        run(g, codec="json")
    with pytest.raises(flow.FlowError, match="only the inproc runtime takes codec"):
        flow.compile(g).run(runtime="sync", codec="msgpack")


def test_items_pass_as_the_same_objects_by_default() -> None:
    env = Envelope("t.x", {"a": 1}, content_type="application/msgpack", corr_id=7)
    items = [b"\x00raw", env, (1, 2), {"k": [1, None]}, {3}, object(), 1.5, None]
    fan: list[Any] = []
    g, out = linear(lambda: items, ("map", "id", lambda x: x, {"pure": False}))
    g.connect("id", g.sink("also", fan.append))
    report = run(g)
    assert all(a is b for a, b in zip(out, items, strict=True))
    assert all(a is b for a, b in zip(fan, items, strict=True))
    assert report.dead_letters == []


def test_items_travel_msgpack_encoded_bytes_and_envelopes_as_they_are() -> None:
    env = Envelope("t.x", {"a": 1}, content_type="application/msgpack", corr_id=7)
    items = [b"\x00raw", env, (1, 2), {"k": [1, None]}, {3: "int key"}, 1.5, "s", None]
    g, out = linear(lambda: items, ("map", "id", lambda x: x, {"pure": False}))
    run(g, codec="msgpack")
    assert out[0] == b"\x00raw" and type(out[0]) is bytes
    assert isinstance(out[1], Envelope) and out[1] == env
    assert out[2] == [1, 2]  # a tuple comes back a list, as on any msgpack channel
    assert out[3:] == items[3:]


def test_an_item_msgpack_cannot_encode_is_a_dead_letter() -> None:
    g, out = linear(
        lambda: [1, 2, 3],
        ("map", "m", lambda x: {x} if x == 2 else x, {"pure": False}),
        ("map", "n", lambda x: x, {}),
    )
    report = run(g, codec="msgpack")
    assert out == [1, 3]
    assert [(d.node, d.item) for d in report.dead_letters] == [("m", {2})]
    assert "TypeError" in report.dead_letters[0].error
    assert (report.nodes["m"].items_out, report.nodes["m"].dead_letters) == (2, 1)


def test_frames_split_to_the_bus_max_frame_and_an_item_too_large_is_a_dead_letter() -> None:
    items = [bytes([i]) * 1000 for i in range(200)]
    items.insert(50, b"x" * 10_000)
    with fb.FrameBus(wal_dir=None, max_frame=4096) as bus:
        g, out = linear(lambda: items, ("map", "m", lambda b: b, {"pure": False}))
        report = run(g, bus=bus, codec="msgpack")
    assert out == items[:50] + items[51:]
    assert [(d.node, len(d.item)) for d in report.dead_letters] == [("src", 10_000)]
    assert "over the frame limit" in report.dead_letters[0].error


# -- accumulators -------------------------------------------------------------------


def test_accumulate_policies_and_partial_flush_at_end() -> None:
    g, out = linear(
        lambda: [b"ab", b"cde", b"f", b"ghij", b"k"], ("accumulate", "a", None, {"size": 5})
    )
    report = run(g)
    assert out == [[b"ab", b"cde"], [b"f", b"ghij"], [b"k"]]
    assert report.nodes["a"].flushes == {"size": 2, "end": 1}
    g, out = linear(
        lambda: [1, 5, 2, 9, 3, 4],
        ("accumulate", "a", None, {"until": lambda held: sum(held) >= 8}),
    )
    report = run(g)
    assert out == [[1, 5, 2], [9], [3, 4]]
    assert report.nodes["a"].flushes == {"until": 2, "end": 1}
    g, out = linear(lambda: range(7), ("accumulate", "a", None, {}))
    run(g)
    assert out == [list(range(7))]


def test_accumulate_ttl_flushes_without_a_new_item() -> None:
    flushed = threading.Event()
    got: list[Any] = []

    def sink(batch: list[int]) -> None:
        got.append(batch)
        flushed.set()

    def items() -> Iterator[int]:
        yield 0
        yield 1
        # nothing more comes until the accumulator has flushed on its own, by its TTL
        assert flushed.wait(10)
        yield 2

    g = flow.Graph("g")
    g.source("s", items) >> g.accumulate("a", ttl=0.05) >> g.sink("k", sink)
    report = run(g, max_batch=1)  # one item a frame: 1 is not held back with 2
    assert [x for batch in got for x in batch] == [0, 1, 2]
    assert got[-1] == [2] and report.nodes["a"].flushes["end"] == 1
    assert report.nodes["a"].flushes["ttl"] == len(got) - 1 >= 1


# -- fusion as a run-time effect ----------------------------------------------------


def test_a_fused_chain_runs_on_one_thread() -> None:
    seen: dict[str, set[str]] = {"a": set(), "b": set(), "c": set()}
    each: dict[str, dict[int, str]] = {"a": {}, "b": {}, "c": {}}

    def tag(name: str) -> Callable[[int], int]:
        def fn(x: int) -> int:
            seen[name].add(threading.current_thread().name)
            each[name][x] = threading.current_thread().name
            return x

        return fn

    def make() -> flow.Graph:
        g = flow.Graph("g")
        (
            g.source("s", lambda: range(100))
            >> g.map("a", tag("a"))
            >> g.map("b", tag("b"))
            >> g.map("c", tag("c"))
            >> g.sink("k", lambda x: None)
        )
        return g

    run(make(), handoff="thread")
    assert len(seen["a"]) == 1 and seen["a"] == seen["b"] == seen["c"]
    assert next(iter(seen["a"])).startswith("framebus-flow-g-a+b+c-")
    # handoff="auto": a frame may run in the source's thread, the whole chain still
    run(make())
    assert each["a"] == each["b"] == each["c"] and len(each["a"]) == 100
    for s in seen.values():
        s.clear()
    run(make(), fuse=False, handoff="thread")
    names = [next(iter(seen[n])) for n in "abc"]
    assert len(set(names)) == 3  # a thread per node


# -- handoff ------------------------------------------------------------------------


def test_handoff_is_checked() -> None:
    g, _out = linear(lambda: range(3))
    with pytest.raises(FlowError, match=r"handoff='inline' is invalid: expected one of 'auto', "):
        run(g, handoff="inline")
    for runtime in ("sync", "ipc"):
        with pytest.raises(FlowError, match="only the inproc runtime takes handoff"):
            flow.compile(g).run(runtime=runtime, handoff="auto")


def threads_of(handoff: str, sink_sleep: float = 0.0) -> tuple[list[Any], list[str], list[str]]:
    """A paced source -> map -> sink (not fused): the output and, per item, the threads
    the map and the sink ran it on."""
    mapped: list[str] = []
    sunk: list[str] = []

    def m(x: int) -> int:
        mapped.append(threading.current_thread().name)
        return x

    out: list[int] = []

    def k(x: int) -> None:
        sunk.append(threading.current_thread().name)
        if sink_sleep:
            threading.Event().wait(sink_sleep)
        out.append(x)

    g = flow.Graph("g")
    g.source("s", lambda: range(120), rate=2000.0) >> g.map("m", m) >> g.sink("k", k)
    report = run(g, fuse=False, handoff=handoff)
    assert report.items_delivered == 120
    return out, mapped, sunk


def test_an_idle_cheap_stage_runs_in_its_senders_thread() -> None:
    # handoff="auto": once a stage's own thread has timed 8 frames as cheap, a frame
    # sent while it is idle runs in the sender's thread (here the source's, for the
    # map and, from the map, the sink)
    out, mapped, sunk = threads_of("auto")
    assert out == list(range(120))
    assert set(mapped) <= {"framebus-flow-g-s-0", "framebus-flow-g-m-0"}
    assert set(mapped[:8]) == {"framebus-flow-g-m-0"}  # timed first on its own thread
    assert "framebus-flow-g-s-0" in mapped[8:]
    assert "framebus-flow-g-s-0" in sunk
    out, mapped, sunk = threads_of("thread")
    assert out == list(range(120))
    assert set(mapped) == {"framebus-flow-g-m-0"} and set(sunk) == {"framebus-flow-g-k-0"}


def test_a_slow_stage_keeps_its_own_thread() -> None:
    # a sink taking 1 ms an item is over the 50 us a frame: never run by a sender
    out, mapped, sunk = threads_of("auto", sink_sleep=0.001)
    assert out == list(range(120))
    assert set(sunk) == {"framebus-flow-g-k-0"}


def test_order_holds_while_a_stage_moves_between_its_thread_and_its_senders() -> None:
    # a run of slow items makes the map too dear to run inline (its frames queue on its
    # port for its thread), then cheap again: the sink still gets the source's order
    threads: list[str] = []

    def m(x: int) -> int:
        threads.append(threading.current_thread().name)
        if 500 <= x < 540:
            threading.Event().wait(0.001)
        return x * 2

    out: list[int] = []
    g = flow.Graph("g")
    (
        g.source("s", lambda: range(3000), rate=20000.0)
        >> g.map("m", m, window=4)
        >> g.filter("f", lambda x: x % 3 != 0, pure=False)
        >> g.sink("k", out.append)
    )
    run(g, fuse=False)
    assert out == [2 * x for x in range(3000) if 2 * x % 3 != 0]
    assert set(threads) == {"framebus-flow-g-s-0", "framebus-flow-g-m-0"}


def test_an_accumulator_taking_items_inline_still_flushes_by_its_ttl() -> None:
    flushed = threading.Event()
    got: list[Any] = []
    adders: list[str] = []

    def until(held: list[int]) -> bool:
        adders.append(threading.current_thread().name)
        return False

    def sink(batch: list[int]) -> None:
        got.append(batch)
        flushed.set()

    def items() -> Iterator[int]:
        yield from range(30)
        # nothing more until the accumulator has flushed on its own, by its TTL
        assert flushed.wait(10)
        yield 30

    g = flow.Graph("g")
    g.source("s", items) >> g.accumulate("a", ttl=0.2, until=until) >> g.sink("k", sink)
    report = run(g, max_batch=1)
    assert [x for batch in got for x in batch] == list(range(31))
    assert "framebus-flow-g-s-0" in adders  # some items went in from the source's thread
    assert got[-1] == [30] and report.nodes["a"].flushes["ttl"] == len(got) - 1 >= 1


# -- backpressure -------------------------------------------------------------------


def test_a_slow_sink_holds_a_fast_source_back_within_the_windows() -> None:
    # in flight between source and sink: at most window frames on each port, the
    # frames a stage took in one receive (<= min(window, _RECV_FRAMES)), the batch
    # the source is sending, each frame max_batch items at most
    produced = 0
    in_flight: list[int] = []
    release = threading.Event()

    def items() -> Iterator[int]:
        nonlocal produced
        for i in range(3000):
            produced += 1
            yield i

    consumed = 0

    def sink(x: int) -> None:
        nonlocal consumed
        if consumed == 0:
            release.wait(0.3)  # stall: the source runs ahead as far as credits let it
        consumed += 1
        in_flight.append(produced - consumed)

    window, max_batch = 2, 4
    g = flow.Graph("g")
    (
        g.source("s", items)
        >> g.map("m", lambda x: x, window=window)
        >> g.sink("k", sink, window=window)
    )
    report = run(g, max_batch=max_batch)
    per_port = window + min(window, _RECV_FRAMES)
    bound = (2 * per_port + 2) * max_batch
    assert consumed == 3000 and report.items_delivered == 3000
    assert 0 < max(in_flight) <= bound
    assert report.nodes["m"].blocked_ns > 0 or report.nodes["s"].blocked_ns > 0


def run_engine(g: flow.Graph, **kwargs: Any) -> tuple[flow.Report, Any]:
    from framebus.flow.inproc import InprocEngine

    timeout = kwargs.pop("timeout", 30)
    engine = InprocEngine(flow.compile(g), **kwargs)
    return engine.run(timeout=timeout), engine


@pytest.mark.parametrize("codec", ["ref", "msgpack"])
def test_overflow_drop_counts_what_it_drops(codec: str) -> None:
    release = threading.Event()
    got: list[int] = []

    def sink(x: int) -> None:
        if not got:
            release.wait(0.2)
        got.append(x)

    g = flow.Graph("g")
    g.source("s", lambda: range(5000)) >> g.sink("k", sink, window=1, overflow="drop")
    report, engine = run_engine(g, max_batch=8, codec=codec)
    k = report.nodes["k"]
    assert k.dropped > 0
    assert k.items_in == len(got) and len(got) + k.dropped == 5000
    assert got == sorted(got)
    assert engine.run_state.refs == {}  # the dropped frames' items were let go


@pytest.mark.parametrize("codec", ["ref", "msgpack"])
def test_overflow_drop_oldest_keeps_the_newest(codec: str) -> None:
    got: list[int] = []

    def sink(x: int) -> None:
        if not got:
            threading.Event().wait(0.2)
        got.append(x)

    g = flow.Graph("g")
    g.source("s", lambda: range(5000)) >> g.sink("k", sink, window=2, overflow="drop_oldest")
    report, engine = run_engine(g, max_batch=8, codec=codec)
    k = report.nodes["k"]
    assert k.dropped > 0 and len(got) + k.dropped == 5000
    assert got[-1] == 4999 and got == sorted(got)
    assert engine.run_state.refs == {}


# -- failures -----------------------------------------------------------------------


def test_retries_then_dead_letters_in_the_list_and_on_the_dead_topic() -> None:
    calls: Counter[int] = Counter()

    def flaky(x: int) -> int:
        calls[x] += 1
        if x == 3 or (x == 5 and calls[x] < 2):
            raise ValueError(f"bad {x}")
        return x

    with fb.FrameBus(wal_dir=None) as bus:
        sub = bus.subscribe(dead_topic("g"))
        g, out = linear(
            lambda: range(8), ("map", "m", flaky, {"retries": 2}), ("filter", "f", bool, {})
        )
        report = run(g, bus=bus)
        frames = sub.recv_batch(10, 0.5)
    assert out == [1, 2, 4, 5, 6, 7]
    assert calls[3] == 3 and calls[5] == 2 and calls[4] == 1
    m = report.nodes["m"]
    assert (m.errors, m.retries, m.dead_letters, m.items_out) == (4, 3, 1, 7)
    assert report.dead_letters == [flow.DeadLetter("m", 3, "ValueError('bad 3')")]
    assert [msgpack.unpackb(f.payload) for f in frames] == [
        {"node": "m", "item": 3, "error": "ValueError('bad 3')"}
    ]


def test_backoff_sleeps_by_the_clock_between_retries() -> None:
    clock = flow.ManualClock()

    def always(x: int) -> int:
        raise ValueError(x)

    g, out = linear(lambda: [1], ("map", "m", always, {"retries": 3, "backoff": 0.01}))
    report = run(g, clock=clock)
    assert out == [] and clock() == 70 * MS  # 10 + 20 + 40 ms
    m = report.nodes["m"]
    assert (m.errors, m.retries, m.dead_letters) == (4, 3, 1)
    assert m.busy_ns == 0  # the backoff waits are not busy time


def test_dead_topic_cannot_meet_an_edge_topic() -> None:
    assert dead_topic("g") == FLOW + "dead.g"
    with pytest.raises(FlowError, match="graph name 'a.b' is invalid"):
        flow.Graph("a.b")
    with pytest.raises(FlowError, match="node name 'x.y' is invalid"):
        flow.Graph("g").map("x.y", abs)
    # a graph named "dead" with nodes named like graphs: its edge topics have one more
    # segment than any dead topic
    g = flow.Graph("dead")
    g.source("g", lambda: []) >> g.sink("h", print)
    topics = {r["topic"] for r in flow.compile(g).routes}
    assert topics == {FLOW + "dead.g.h"}
    assert all(t.count(".") == dead_topic("x").count(".") + 1 for t in topics)


def test_sink_failure_and_a_failing_source() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("gone")

    g = flow.Graph("g")
    g.source("s", items) >> g.sink("k", lambda x: 1 / (x - 2))
    report = run(g)
    dead = sorted((d.node, repr(d.item)) for d in report.dead_letters)  # threads: any order
    assert dead == [("k", "2"), ("s", "None")]
    assert report.nodes["k"].items_out == 1 and report.nodes["s"].items_out == 2


def test_a_source_returning_no_iterable_is_a_flow_error() -> None:
    g = flow.Graph("g")
    g.source("s", lambda: 42) >> g.sink("k", print)
    with pytest.raises(FlowError, match="source 's'.*returned int, not an iterable"):
        run(g)


# -- deadlines ----------------------------------------------------------------------


def test_deadline_misses_per_node_and_end_to_end_with_a_stepped_clock() -> None:
    clock = flow.ManualClock()
    ack = threading.Semaphore(0)
    delays = [0, 60, 10, 100, 30]  # ms a map makes the clock move

    def items() -> Iterator[int]:
        for i, d in enumerate(delays):
            yield d
            if i < len(delays) - 1:
                assert ack.acquire(timeout=10)  # one item at a time: no race on the clock

    def work(d: int) -> int:
        clock.advance(d / 1000)
        return d

    out: list[int] = []
    g = flow.Graph("g")
    (
        g.source("s", items, deadline=0.05)
        >> g.map("work", work, pure=False)
        >> g.map("check", lambda d: d, deadline=0.05, on_deadline="drop", pure=False)
        >> g.sink("k", lambda d: (out.append(d), ack.release()))
    )
    done = threading.Event()

    def nudge(d: int) -> None:  # a dropped item never reaches the sink: release here
        if d > 50:
            ack.release()
        done.set()

    g.nodes["work"].fn = lambda d: (work(d), nudge(d))[0]
    report = run(g, clock=clock, max_batch=1)  # stamped as produced, one at a time
    assert out == [0, 10, 30]
    check = report.nodes["check"]
    assert (check.deadline_misses, check.dropped, check.items_out) == (2, 2, 3)
    assert report.e2e_deadline_misses == 0
    # end to end: the sink itself makes the clock move (one thread: no race)
    g2 = flow.Graph("g2")
    g2.source("s", items, deadline=0.05) >> g2.sink(
        "k", lambda d: (work(d), out.append(d), ack.release())
    )
    out.clear()
    report = run(g2, clock=clock, max_batch=1)
    assert out == delays and report.e2e_deadline_misses == 2


# -- async --------------------------------------------------------------------------


def test_async_source_map_filter_and_sink_with_retries() -> None:
    out: list[Any] = []
    tries: Counter[int] = Counter()

    async def gen() -> AsyncIterator[int]:
        for i in range(50):
            await asyncio.sleep(0)
            yield i

    async def amap(x: int) -> int:
        await asyncio.sleep(0)
        tries[x] += 1
        if x == 7 and tries[x] == 1:
            raise ValueError("once")
        return x * 2

    async def afilter(x: int) -> bool:
        return x % 4 == 0

    async def asink(x: int) -> None:
        await asyncio.sleep(0)
        out.append(x)

    g = flow.Graph("g")
    (
        g.source("s", gen)
        >> g.map("m", amap, retries=1)
        >> g.filter("f", afilter)
        >> g.sink("k", asink)
    )
    report = run(g)
    assert out == [x * 2 for x in range(50) if x * 2 % 4 == 0]
    assert (report.nodes["m"].errors, report.nodes["m"].retries) == (1, 1)
    assert report.dead_letters == []


def test_async_def_source_returning_a_list_and_awaitables_from_a_plain_function() -> None:
    async def make() -> list[int]:
        return [1, 2, 3]

    async def inc(x: int) -> int:
        return x + 1

    g, out = linear(make, ("map", "m", lambda x: inc(x), {}))
    run(g)
    assert out == [2, 3, 4]


# -- stopping -----------------------------------------------------------------------


def test_timeout_stops_an_endless_source_and_drains() -> None:
    got: list[Any] = []
    g = flow.Graph("g")
    (
        g.source("s", itertools.count)
        >> g.map("m", lambda x: x)
        >> g.accumulate("a", count=1000)
        >> g.sink("k", got.append)
    )
    report = run(g, timeout=0.3)
    assert report.timed_out
    emitted = report.nodes["s"].items_out
    assert emitted > 0
    assert [x for batch in got for x in batch] == list(range(emitted))  # all drained
    assert report.nodes["a"].flushes.get("end") == (1 if emitted % 1000 else None)


def test_ctrl_c_drains_and_reraises_with_the_report() -> None:
    got: list[int] = []

    def items() -> Iterator[int]:
        for i in itertools.count():
            if i == 100:
                _thread.interrupt_main()
            yield i

    g = flow.Graph("g")
    g.source("s", items) >> g.map("m", lambda x: x, pure=False) >> g.sink("k", got.append)
    with pytest.raises(KeyboardInterrupt) as info:
        run(g)
    report = info.value.report  # type: ignore[attr-defined]
    assert isinstance(report, flow.Report)
    emitted = report.nodes["s"].items_out
    assert emitted >= 100 and got == list(range(emitted))
    assert report.items_delivered == emitted


def test_a_keyboard_interrupt_in_a_node_stops_the_run() -> None:
    def stop(x: int) -> int:
        if x == 2:
            raise KeyboardInterrupt
        return x

    g, out = linear(itertools.count, ("map", "m", stop, {}))
    with pytest.raises(KeyboardInterrupt):
        run(g)


def test_a_stage_stuck_in_a_call_is_left_after_the_grace(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from framebus.flow import inproc

    monkeypatch.setattr(inproc, "_GRACE", 0.2)
    release = threading.Event()
    in_sink = threading.Event()

    def stop(x: int) -> int:
        if x == 5:
            assert in_sink.wait(10)
            raise SystemExit(3)
        return x

    def hang(x: int) -> None:
        in_sink.set()
        release.wait(20)

    g = flow.Graph("g")
    g.source("s", itertools.count) >> g.map("m", stop) >> g.sink("k", hang)
    try:
        with caplog.at_level("WARNING", logger="framebus"), pytest.raises(SystemExit):
            run(g)
        assert "stages did not stop within 0.2 s" in caplog.text
        assert "framebus-flow-g-k-0" in caplog.text
    finally:
        release.set()
        for t in threading.enumerate():
            if t.name.startswith("framebus-flow-g-"):
                t.join(10)


# -- node options -------------------------------------------------------------------


def test_parallelism_shares_the_input_and_delivers_every_item() -> None:
    workers: set[str] = set()

    def slow_square(x: int) -> int:
        workers.add(threading.current_thread().name)
        return x * x

    g, out = linear(
        lambda: range(3000),
        ("map", "m", slow_square, {"parallelism": 3}),
        ("filter", "f", lambda x: x % 2 == 0, {"parallelism": 2}),
    )
    report = run(g, max_batch=16)
    assert Counter(out) == Counter(x * x for x in range(3000) if x % 2 == 0)
    assert report.nodes["m"].items_in == 3000
    assert workers <= {f"framebus-flow-g-m-{i}" for i in range(3)}


def test_rate_paces_by_the_clock() -> None:
    clock = flow.ManualClock()
    g, out = linear(lambda: range(5), ("map", "m", lambda x: x, {"rate": 10.0}))
    report = run(g, clock=clock)
    assert out == list(range(5))
    assert clock() >= 400 * MS  # 5 items at 10/s: 4 waits of 100 ms
    assert report.nodes["m"].throttled_ns > 0


def test_bad_options_for_this_runtime_name_the_node() -> None:
    g = flow.Graph("g")
    g.source("s", lambda: []) >> g.accumulate("a", count=2, parallelism=2) >> g.sink("k", print)
    with pytest.raises(FlowError, match=r"node 'a': option parallelism=2 is invalid"):
        run(g)
    g2, _ = linear(lambda: [])
    with pytest.raises(FlowError, match="max_batch=0 is invalid"):
        run(g2, max_batch=0)
    with pytest.raises(FlowError, match=r"bus='nope' is invalid: expected a framebus.FrameBus"):
        run(g2, bus="nope")
    with pytest.raises(FlowError, match=r"metrics='yes' is invalid"):
        run(g2, metrics="yes")
    g3, _ = linear(lambda: [], ("map", "m", abs, {"window": 1 << 31}))
    with pytest.raises(FlowError, match=r"node 'm': cannot open its input port 'g.m' \(window="):
        run(g3)
    with pytest.raises(FlowError, match="only the inproc runtime takes bus"):
        flow.compile(g2).run(runtime="sync", bus=object())  # type: ignore[arg-type]


def test_two_runs_of_one_graph_on_one_bus_at_once_is_a_flow_error() -> None:
    with fb.FrameBus(wal_dir=None) as bus:
        port = bus.data_port("g.out")
        port.recv_payloads(1, 0)  # someone else receives on the sink's port
        g, _ = linear(lambda: [1])
        with pytest.raises(FlowError, match="node 'out': cannot open its input port 'g.out'"):
            run(g, bus=bus)
        port.close()


# -- metrics ------------------------------------------------------------------------


def test_report_latency_buckets_are_powers_of_four_microseconds() -> None:
    r = flow.Report("g", "inproc", {})
    for ns, n in [(1, 1), (1000, 2), (1001, 3), (4000, 1), (4001, 1), (10**13, 5)]:
        r.record_latency_n(ns, n)
    bounds, counts, total = r.buckets()
    assert bounds[:3] == [1000, 4000, 16000] and len(counts) == len(bounds) + 1
    assert counts[:3] == [3, 4, 1] and counts[-1] == 5 and sum(counts) == 13
    assert r.latency.get_total_count() == 13
    assert total == 1 + 2000 + 3003 + 4000 + 4001 + 5 * 3_600_000_000_000  # clamped


def test_metrics_while_the_run_is_live() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    scraped: list[str] = []

    def sink(x: int) -> None:
        if x == 150:
            scraped.append(generate_latest(registry).decode())

    g, _ = linear(lambda: range(200), ("map", "m", lambda x: 1 // (x - 3) * 0 + x, {}))
    g.nodes["out"].fn = sink
    report = run(g, metrics=registry)
    text = scraped[0]
    assert 'framebus_flow_items_total{direction="in",graph="g",node="m"}' in text
    assert 'framebus_flow_errors_total{graph="g",node="m"} 1.0' in text
    assert 'framebus_flow_deadline_misses_total{graph="g",node=""} 0.0' in text
    assert 'framebus_flow_latency_seconds_count{graph="g",node="out"}' in text
    assert report.nodes["m"].errors == 1
    assert "framebus_flow_items_total{" not in generate_latest(registry).decode()
