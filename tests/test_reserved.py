"""One registry of what the layers on the ring reserve in it (framebus._reserved): no
two users share a counter or a topic prefix, and no module spells one out itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import framebus as fb
from framebus import _reserved
from framebus._internal import HeaderCounter, TopicCounter
from framebus._reserved import PREFIXES, USER_COUNTERS, Counter

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(
    p
    for p in [*ROOT.joinpath("framebus").rglob("*.py"), *ROOT.joinpath("wal").rglob("*.py")]
    if p.name != "_reserved.py"
)


def test_every_header_counter_has_one_owner() -> None:
    values = [c.value for c in Counter]
    assert len(set(values)) == len(values)
    assert sorted(values) == list(range(USER_COUNTERS))  # all four, each once


def test_header_counter_count_matches_the_ring() -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        HeaderCounter(bus, Counter(USER_COUNTERS - 1)).get()
        try:
            bus._user_get(USER_COUNTERS)
        except ValueError as exc:
            assert f"0..{USER_COUNTERS - 1}" in str(exc)
        else:
            raise AssertionError("the ring has more user counters than the registry knows")


def test_prefixes_are_distinct_and_none_contains_another() -> None:
    prefixes = list(PREFIXES.values())
    assert len(set(prefixes)) == len(prefixes)
    for p in prefixes:
        assert p.startswith("_") and p.endswith("."), p
        for q in prefixes:
            assert p == q or not q.startswith(p), f"{q!r} lies under {p!r}"
    assert PREFIXES == {
        name: getattr(_reserved, name) for name in PREFIXES
    }  # the table lists the module's names


def test_port_topics_lie_under_the_port_prefix() -> None:
    b, e, group = _reserved.port_topics("cam0")
    assert (b, e, group) == ("_port.cam0.b", "_port.cam0.e", "_port.cam0")
    assert all(t.startswith(_reserved.PORT) for t in (b, e, group))


def test_no_module_spells_out_a_reserved_prefix() -> None:
    # docstrings may name them; code takes them from the registry
    pattern = re.compile("|".join(re.escape(p) for p in PREFIXES.values()))
    offenders = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and pattern.match(node.value)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_no_module_calls_the_binding_counters_directly() -> None:
    # the header and topic counters are reached through framebus._internal only
    direct = re.compile(r"\._(user|counter)_(add|get|dec|wait|wake|sub|exchange|max)\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in SOURCES
        if path.name != "_internal.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if direct.search(line)
    ]
    assert offenders == []


def test_topic_counter_round_trip() -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        c = TopicCounter(bus, _reserved.EVENT_RESPONDERS + "x.y")
        assert c.get() == 0
        assert c.add(3) == 3
        assert c.take(5) == 3
        assert c.exchange(7) == 0
        assert c.raise_to(4) == 7
        assert c.raise_to(9) == 9
        assert c.wait(9, 0) is True
        assert c.wait(10, 0) is False
        assert TopicCounter(bus, tid=c.id).get() == 9
        h = HeaderCounter(bus, Counter.QUEUE_UNFINISHED)
        h.set(2)
        assert (h.decrement(), h.decrement(), h.decrement()) == (1, 0, -1)
        assert h.wait(0, 0) is True
