"""An in-process ring hands a reader the bytes object its publisher passed (no copy)
while it remembers it; everything else still comes out of the ring as a copy."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import framebus as fb

KEPT = 4096  # objects an in-process ring remembers (framebus/_ring: _OBJS_KEPT)


@pytest.mark.parametrize("how", ["recv", "recv_batch", "recv_payloads"])
def test_reader_gets_the_published_object(make_bus: Any, how: str) -> None:
    bus = make_bus(preset="default")
    sub = bus.subscribe()
    small = [b"frame %d" % i for i in range(5)]
    big = b"b" * 2048  # over the remembered size: copied out of the ring
    bus.publish(small[0], "t")
    bus.publish_batch(small[1:], "t")
    bus.publish(big, "t")
    if how == "recv":
        got = [sub.recv(timeout=1).payload for _ in range(6)]
    elif how == "recv_batch":
        got = [f.payload for f in sub.recv_batch(10, timeout=1)]
    else:
        got = sub.recv_payloads(10, timeout=1)
    assert got == [*small, big]
    assert all(g is p for g, p in zip(got, small, strict=False))
    assert got[5] is not big


def test_other_payload_types_arrive_as_new_bytes(make_bus: Any) -> None:
    bus = make_bus(preset="default")
    sub = bus.subscribe()

    class Tagged(bytes):
        pass

    sent: list[Any] = [bytearray(b"ba"), memoryview(b"mv"), np.arange(3, dtype="u1"), Tagged(b"tg")]
    bus.publish_batch(sent, "t")
    got = sub.recv_payloads(10, timeout=1)
    assert got == [b"ba", b"mv", b"\x00\x01\x02", b"tg"]
    assert all(type(g) is bytes for g in got)


def test_a_reader_far_behind_gets_copies_with_the_same_contents(make_bus: Any) -> None:
    bus = make_bus(preset="default")
    sub = bus.subscribe()
    sent = [b"%06d" % i for i in range(KEPT + 1000)]
    for i in range(0, len(sent), 100):
        bus.publish_batch(sent[i : i + 100], "t")
    got = []
    while len(got) < len(sent):
        got += sub.recv_payloads(1000, timeout=1)
    assert got == sent
    # the first 1000 were forgotten (their entries taken by later frames): copies
    assert not any(g is s for g, s in zip(got[:1000], sent[:1000], strict=True))
    assert all(g is s for g, s in zip(got[1000:], sent[1000:], strict=True))


def test_remembered_objects_are_bounded_and_let_go_at_close() -> None:
    bus = fb.FrameBus(preset="default")
    sub = bus.subscribe()
    first = b"first-" + bytes(8)
    before = sys.getrefcount(first)
    bus.publish(first, "t")
    assert sys.getrefcount(first) == before + 1
    for i in range(KEPT):  # every entry taken by a later frame
        bus.publish(b"later %d" % i, "t")
    assert sys.getrefcount(first) == before
    last = b"last-" + bytes(8)
    bus.publish(last, "t")
    held = sys.getrefcount(last)
    sub.close()
    bus.close()
    assert sys.getrefcount(last) == held - 1


@pytest.mark.xproc
def test_a_shared_ring_copies(name: str) -> None:
    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    try:
        sub = bus.subscribe()
        payload = b"shared " + bytes(4)
        bus.publish(payload, "t")
        got = sub.recv(timeout=1).payload
        assert got == payload and got is not payload
    finally:
        bus.close()
