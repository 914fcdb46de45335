"""framebus.flow's sync engine: exact outputs through every node kind, its order,
accumulators, fusion equivalence, retries and dead letters, deadlines, async stages,
timeouts and the report's numbers, all with a stepped clock (no timing)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import flow_fns
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framebus import flow

MS = 1_000_000


def run(g: flow.Graph, **kwargs: Any) -> flow.Report:
    return flow.compile(g).run(runtime="sync", **kwargs)


linear = flow_fns.linear


def test_every_node_kind_exactly() -> None:
    g, out = linear(
        lambda: range(10),
        ("map", "sq", lambda x: x * x, {}),
        ("filter", "even", lambda x: x % 2 == 0, {}),
        ("accumulate", "batch", None, {"count": 2}),
    )
    report = run(g)
    assert out == [[0, 4], [16, 36], [64]]
    n = report.nodes
    assert (n["src"].items_out, n["sq"].items_in, n["sq"].items_out) == (10, 10, 10)
    assert (n["even"].items_in, n["even"].items_out) == (10, 5)
    assert (n["batch"].items_in, n["batch"].items_out) == (5, 3)
    assert n["batch"].flushes == {"count": 2, "end": 1}
    assert (n["out"].items_in, n["out"].items_out) == (3, 3)
    assert (report.items_emitted, report.items_delivered) == (10, 3)
    assert report.dead_letters == [] and not report.timed_out


def test_depth_first_in_edge_declaration_order_with_fan_out_and_fan_in() -> None:
    seen: list[tuple[str, Any]] = []
    g = flow.Graph("g")
    s = g.source("s", lambda: [1, 2])
    a = s >> g.map("a", lambda x: x * 10)
    b = s >> g.map("b", lambda x: x * 100)
    j = a >> g.map("j", lambda x: x + 1)
    b >> j
    j >> g.sink("k1", lambda x: seen.append(("k1", x)))
    a >> g.sink("k2", lambda x: seen.append(("k2", x)))
    report = run(g)
    # item 1: s->a->j->k1, a->k2, then s->b->j->k1; then item 2 the same way
    assert seen == [("k1", 11), ("k2", 10), ("k1", 101), ("k1", 21), ("k2", 20), ("k1", 201)]
    assert report.nodes["j"].items_in == 4
    # the same input gives the same output in the same order
    first = list(seen)
    seen.clear()
    run(g)
    assert seen == first


def test_sources_take_turns_in_declaration_order() -> None:
    out: list[Any] = []
    g = flow.Graph("g")
    k = g.sink("k", out.append)
    g.source("a", lambda: ["a1", "a2", "a3"]) >> k
    g.source("b", lambda: ["b1"]) >> k
    g.source("c", lambda: ["c1", "c2"]) >> k
    run(g)
    assert out == ["a1", "b1", "c1", "a2", "c2", "a3"]


# -- accumulators -------------------------------------------------------------------


def test_accumulate_by_size_of_bytes_and_lists() -> None:
    g, out = linear(
        lambda: [b"ab", b"cde", b"f", b"ghij", b"k"], ("accumulate", "a", None, {"size": 5})
    )
    report = run(g)
    assert out == [[b"ab", b"cde"], [b"f", b"ghij"], [b"k"]]
    assert report.nodes["a"].flushes == {"size": 2, "end": 1}
    g, out = linear(lambda: [[1], [2, 3], 7, [4]], ("accumulate", "a", None, {"size": 3}))
    run(g)
    assert out == [[[1], [2, 3]], [7, [4]]]  # an item without len() counts 1


def test_accumulate_until_predicate_and_partial_flush_at_end() -> None:
    g, out = linear(
        lambda: [1, 5, 2, 9, 3, 4],
        ("accumulate", "a", None, {"until": lambda held: sum(held) >= 8}),
    )
    report = run(g)
    assert out == [[1, 5, 2], [9], [3, 4]]
    assert report.nodes["a"].flushes == {"until": 2, "end": 1}


def test_accumulate_count_with_nothing_left_has_no_end_flush() -> None:
    g, out = linear(lambda: range(4), ("accumulate", "a", None, {"count": 2}))
    report = run(g)
    assert out == [[0, 1], [2, 3]]
    assert report.nodes["a"].flushes == {"count": 2}


def test_accumulate_without_policy_flushes_everything_at_end() -> None:
    g, out = linear(lambda: range(4), ("accumulate", "a", None, {}))
    run(g)
    assert out == [[0, 1, 2, 3]]


def test_accumulate_ttl_with_a_stepped_clock() -> None:
    clock = flow.ManualClock()
    # item i arrives at t[i] ms; ttl 50 ms: the held list flushes once its first item
    # has been held longer than 50 ms, before the next item goes in
    times = [0, 10, 40, 61, 100, 111, 300, 301]

    def items() -> Iterator[int]:
        for i, t in enumerate(times):
            clock.now_ns = t * MS
            yield i

    g, out = linear(items, ("accumulate", "a", None, {"ttl": 0.05, "count": 3}))
    report = run(g, clock=clock)
    # [0,1,2] by count at 40; 3 held from 61, 4 at 100 (39 ms), 5 at 111 (50 ms: not
    # older than 50) -> count; 6 at 300 held, 7 at 301 -> end flush
    assert out == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert report.nodes["a"].flushes == {"count": 2, "end": 1}
    times[:] = [0, 10, 61, 62, 200, 250, 251]
    report = run(g, clock=clock)
    # 61 ms: [0, 1] held 61 ms; 200: [2, 3]; 250: 4 held 50 ms, not older; 251: [4, 5]
    assert out[3:] == [[0, 1], [2, 3], [4, 5], [6]]
    assert report.nodes["a"].flushes == {"ttl": 3, "end": 1}


def test_ttl_flushes_on_a_branch_the_item_does_not_take() -> None:
    clock = flow.ManualClock()

    def items() -> Iterator[int]:
        for i in range(4):
            clock.now_ns = i * 100 * MS
            yield i

    out: list[Any] = []
    g = flow.Graph("g")
    s = g.source("s", items)
    (
        s
        >> g.filter("small", lambda x: x < 1)
        >> g.accumulate("a", ttl=0.05)
        >> g.sink("k", lambda b: out.append((clock() // MS, b)))
    )
    run(g, clock=clock)
    assert out == [(100, [0])]  # flushed when item 1 came from the source, not at the end


# -- fusion -------------------------------------------------------------------------


def fusion_graph() -> tuple[flow.Graph, list[Any]]:
    out: list[Any] = []
    g = flow.Graph("g")
    s = g.source("s", lambda: range(30))
    a = s >> g.map("a", lambda x: x + 1) >> g.filter("b", lambda x: x % 3 != 0)
    c = a >> g.map("c", lambda x: x * 2) >> g.map("d", lambda x: (x, x % 5))
    e = c >> g.filter("e", lambda t: t[1] != 0) >> g.accumulate("acc", count=4)
    e >> g.map("f", len) >> g.sink("k", out.append)
    s >> g.map("g2", lambda x: -x) >> g.filter("h", lambda x: x % 7 == 0) >> "k"
    return g, out


def test_fusion_gives_the_same_results_as_no_fusion() -> None:
    g, out = fusion_graph()
    fused = flow.compile(g)
    unfused = flow.compile(g, fuse=False)
    assert fused.stages == ["s", "a+b+c+d+e", "acc", "f", "g2+h", "k"]
    assert len(unfused.stages) == len(g.nodes)
    r1 = fused.run()
    first = list(out)
    out.clear()
    r2 = unfused.run()
    assert out == first and len(first) > 0
    counts = {n: (s.items_in, s.items_out) for n, s in r1.nodes.items()}
    assert counts == {n: (s.items_in, s.items_out) for n, s in r2.nodes.items()}


_STEPS = flow_fns.chain_steps(max_size=8)


@settings(max_examples=150, deadline=None)
@given(steps=_STEPS, branch=st.booleans(), n=st.integers(0, 30))
def test_fusion_equivalence_on_random_graphs(
    steps: list[tuple[str, int, bool, int]], branch: bool, n: int
) -> None:
    out: list[Any] = []
    g = flow.Graph("g")
    node = g.source("s", lambda: range(n))
    for i, (kind, c, pure, par) in enumerate(steps):
        node = node >> flow_fns.chain_step(g, i, kind, c, pure, par)
        if branch and i == 0:
            node >> g.map("side", lambda x: ("side", x)) >> g.sink("k2", out.append)
    node >> g.sink("k", out.append)
    fused, unfused = flow.compile(g), flow.compile(g, fuse=False)
    assert len(fused.stages) <= len(unfused.stages) == len(g.nodes)
    fused.run()
    first = list(out)
    out.clear()
    unfused.run()
    assert out == first


# -- retries and dead letters -------------------------------------------------------


def test_retries_then_dead_letter_and_the_run_goes_on() -> None:
    calls: dict[int, int] = {}

    def flaky(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        if x == 3:
            raise ValueError(f"bad {x}")
        if x == 5 and calls[x] < 3:
            raise RuntimeError("transient")
        return x

    clock = flow.ManualClock()
    g, out = linear(lambda: range(7), ("map", "m", flaky, {"retries": 2, "backoff": 0.1}))
    report = run(g, clock=clock)
    assert out == [0, 1, 2, 4, 5, 6]
    m = report.nodes["m"]
    # 3: three failed calls (2 retries), then a dead letter; 5: two failures, then fine
    assert (m.errors, m.retries, m.dead_letters) == (5, 4, 1)
    assert (m.items_in, m.items_out) == (7, 6)
    assert report.dead_letters == [flow.DeadLetter("m", 3, "ValueError('bad 3')")]
    # backoff through the clock's companion sleep: 0.1 + 0.2 for 3, 0.1 + 0.2 for 5
    assert clock() == 600 * MS


def test_sink_and_filter_failures_without_retries() -> None:
    def sink(x: int) -> None:
        if x == 1:
            raise KeyError(x)

    g = flow.Graph("g")
    g.source("s", lambda: range(3)) >> g.filter("f", lambda x: 1 / (x - 2)) >> g.sink("k", sink)
    report = run(g)
    assert [(d.node, d.item, d.error) for d in report.dead_letters] == [
        ("k", 1, "KeyError(1)"),
        ("f", 2, "ZeroDivisionError('division by zero')"),
    ]
    assert (report.nodes["k"].items_in, report.nodes["k"].items_out) == (2, 1)
    assert report.nodes["f"].errors == 1 and report.nodes["k"].dead_letters == 1


def test_a_failing_source_ends_with_a_dead_letter() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    g, out = linear(items)
    report = run(g)
    assert out == [1, 2]
    assert report.dead_letters == [flow.DeadLetter("src", None, "OSError('disk gone')")]
    assert report.nodes["src"].errors == 1


def test_a_source_returning_no_iterable_is_a_flow_error() -> None:
    g, _ = linear(lambda: 5)
    with pytest.raises(flow.FlowError, match="source 'src': .* returned int, not an iterable"):
        run(g)


# -- deadlines ----------------------------------------------------------------------


def test_deadline_misses_counted_exactly_with_a_stepped_clock() -> None:
    clock = flow.ManualClock()

    def slow(x: int) -> int:  # item x takes x * 10 ms
        clock.advance(x * 0.010)
        return x

    g, out = linear(
        lambda: range(6),
        ("map", "slow", slow, {}),
        ("map", "late", lambda x: x, {"deadline": 0.025}),
        ("map", "strict", lambda x: x, {"deadline": 0.035, "on_deadline": "drop"}),
    )
    report = run(g, clock=clock)
    # at "late" item x is x*10 ms old: 3, 4, 5 are over 25 ms; "strict" drops 4 and 5
    assert report.nodes["late"].deadline_misses == 3
    assert report.nodes["late"].dropped == 0 and report.nodes["late"].items_out == 6
    assert (report.nodes["strict"].deadline_misses, report.nodes["strict"].dropped) == (2, 2)
    assert out == [0, 1, 2, 3]


def test_end_to_end_deadline_from_the_source() -> None:
    clock = flow.ManualClock()

    def slow(x: int) -> int:
        clock.advance(x * 0.010)
        return x

    g = flow.Graph("g")
    (
        g.source("s", lambda: range(5), deadline=0.02)
        >> g.map("m", slow)
        >> g.sink("k", lambda x: None)
    )
    report = run(g, clock=clock)
    assert report.e2e_deadline_misses == 2  # 30 and 40 ms old at the sink
    assert report.nodes["k"].deadline_misses == 0  # the sink itself has no deadline


# -- async --------------------------------------------------------------------------


def test_async_source_map_filter_and_sink() -> None:
    out: list[Any] = []

    async def items() -> AsyncIterator[int]:
        for i in range(5):
            await asyncio.sleep(0)
            yield i

    async def amap(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    async def afilter(x: int) -> bool:
        return x != 6

    async def asink(x: int) -> None:
        await asyncio.sleep(0)
        out.append(x)

    g = flow.Graph("g")
    g.source("s", items) >> g.map("m", amap) >> g.filter("f", afilter) >> g.sink("k", asink)
    report = run(g)
    assert out == [0, 3, 9, 12]
    assert report.nodes["k"].items_out == 4


def test_async_def_source_returning_a_list_and_async_retries() -> None:
    tries: list[int] = []

    async def items() -> list[int]:
        return [1, 2]

    async def flaky(x: int) -> int:
        tries.append(x)
        if len(tries) == 1:
            raise ValueError("first")
        return x

    g, out = linear(items, ("map", "m", flaky, {"retries": 1}))
    report = run(g)
    assert out == [1, 2] and tries == [1, 1, 2]
    assert report.nodes["m"].retries == 1 and report.dead_letters == []


# -- rate, timeout ------------------------------------------------------------------


def test_rate_paces_a_source_by_the_clock() -> None:
    clock = flow.ManualClock()
    stamps: list[int] = []
    g = flow.Graph("g")
    g.source("s", lambda: range(5), rate=10.0) >> g.sink("k", lambda x: stamps.append(clock()))
    report = run(g, clock=clock)
    assert stamps == [0, 100 * MS, 200 * MS, 300 * MS, 400 * MS]
    assert report.nodes["s"].throttled_ns == 400 * MS


def test_timeout_stops_the_source_and_flushes() -> None:
    clock = flow.ManualClock()
    closed: list[bool] = []

    def forever() -> Iterator[int]:
        i = 0
        try:
            while True:
                clock.advance(1.0)
                yield i
                i += 1
        finally:
            closed.append(True)

    g, out = linear(forever, ("accumulate", "a", None, {"count": 2}))
    report = run(g, clock=clock, timeout=5)
    assert out == [[0, 1], [2, 3], [4]]
    assert report.timed_out and report.items_emitted == 5 and closed == [True]
    assert report.nodes["a"].flushes == {"count": 2, "end": 1}


# -- the report ---------------------------------------------------------------------


def test_report_numbers_with_a_stepped_clock() -> None:
    clock = flow.ManualClock(start_ns=1_000)

    def work(x: int) -> int:  # item k (1..100) takes 10*k ns: its latency
        clock.advance_ns(10 * x)
        return x

    g, out = linear(lambda: range(1, 101), ("map", "work", work, {}))
    report = run(g, clock=clock)
    assert out == list(range(1, 101))
    assert report.latency_ns() == {
        "count": 100,
        "min": 10,
        "max": 1000,
        "p50": 500,
        "p95": 950,
        "p99": 990,
        "p99.9": 1000,
    }
    assert report.nodes["work"].busy_ns == 10 * sum(range(1, 101))
    assert report.nodes["out"].busy_ns == 0 and report.nodes["out"].blocked_ns == 0
    assert report.duration_ns == 50_500
    data = json.loads(report.to_json())
    assert data["latency_ns"]["p99"] == 990
    assert data["nodes"]["work"]["items_in"] == 100
    assert data["nodes"]["work"]["busy_ns"] == 50_500
    assert (data["items_emitted"], data["items_delivered"], data["runtime"]) == (100, 100, "sync")
    text = str(report)
    assert text.splitlines()[0] == "flow 'g' (sync): 100 emitted, 100 delivered in 0.051 ms"
    assert text.splitlines()[1].split() == [
        "node",
        "kind",
        "in",
        "out",
        "errors",
        "retries",
        "dead",
        "missed",
        "dropped",
        "busy_ms",
        "blocked_ms",
    ]
    assert text.splitlines()[3].split()[:4] == ["work", "map", "100", "100"]
    assert "p50 0.500  p95 0.950  p99 0.990  p99.9 1.000" in text


def test_report_of_dead_letters_in_json_and_latency_of_an_empty_run() -> None:
    g, out = linear(lambda: [b"x"], ("map", "m", lambda x: 1 / 0, {}))
    report = run(g)
    data = json.loads(report.to_json())
    assert data["dead_letters"] == [
        {"node": "m", "item": "b'x'", "error": "ZeroDivisionError('division by zero')"}
    ]
    assert data["latency_ns"] == {
        "count": 0,
        "min": 0,
        "max": 0,
        "p50": 0,
        "p95": 0,
        "p99": 0,
        "p99.9": 0,
    }
    assert out == []


def test_until_that_raises_is_counted_and_the_item_stays_held() -> None:
    def until(held: list[int]) -> bool:
        if held[-1] == 2:
            raise ValueError("no")
        return len(held) >= 3

    g, out = linear(lambda: range(5), ("accumulate", "a", None, {"until": until}))
    report = run(g)
    assert out == [[0, 1, 2, 3], [4]]  # 2 stayed held; 3 made the list due
    assert report.nodes["a"].errors == 1
    assert report.dead_letters == [flow.DeadLetter("a", 2, "ValueError('no')")]


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Flow layer (`framebus.flow`)", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert len(scope["stored"]) == 7  # 666 valid items in lists of 100
    assert sum(len(batch) for batch in scope["stored"]) == 666
    assert "['gen', 'parse+valid', 'batch', 'store']" in capsys.readouterr().out


def test_an_interrupt_propagates_after_the_sources_and_the_loop_are_closed() -> None:
    closed: list[str] = []

    def items() -> Iterator[int]:
        try:
            yield from range(10)
        finally:
            closed.append("sync")

    async def aitems() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            closed.append("async")

    def stop(x: int) -> int:
        if x == 2:
            raise KeyboardInterrupt
        return x

    import threading

    threads = threading.active_count()
    g = flow.Graph("g")
    k = g.sink("k", lambda x: None)
    g.source("a", items) >> g.map("m", stop) >> k
    g.source("b", aitems) >> k
    with pytest.raises(KeyboardInterrupt):
        run(g)
    assert sorted(closed) == ["async", "sync"]
    assert threading.active_count() == threads
