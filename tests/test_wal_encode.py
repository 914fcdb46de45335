"""The WAL's one record codec (framebus._walcodec, behind framebus.wal._format's names)
gives exactly the bytes of the documented format, written out here independently
(struct and a table-driven CRC-32C), and WalLog's appends report what it refuses."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import framebus as fb
from framebus._walcodec import crc32c, wal_encode
from framebus.wal import WalLog
from framebus.wal._format import encode_record, key_of


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def reference_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def reference_record(topic: str, ts_ns: int, payload: bytes) -> bytes:
    """framebus.wal._format's layout, from its documentation."""
    tb = topic.encode()
    body = struct.pack("<BBHIQ", 1, 0, len(tb), len(payload), ts_ns) + tb + payload
    return body + struct.pack("<I", reference_crc32c(body))


@given(st.binary(max_size=4096))
@settings(max_examples=300, deadline=None)
def test_crc32c_matches_the_reference(data: bytes) -> None:
    assert crc32c(data) == reference_crc32c(data)


def test_crc32c_check_value_and_buffers() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytearray(b"123456789")) == crc32c(memoryview(b"0123456789")[1:])


frames_st = st.lists(
    st.tuples(
        st.integers(0, 2**16),
        st.text(max_size=40),
        st.binary(max_size=300),
        st.integers(0, 2**64 - 1),
    ),
    max_size=50,
)


@given(frames_st)
@settings(max_examples=200, deadline=None)
def test_wal_encode_matches_the_record_format(rows: list[tuple[int, str, bytes, int]]) -> None:
    seq = 0
    frames = []
    for gap, topic, payload, ts in rows:
        seq += gap + 1
        frames.append(fb.Frame(seq, topic, payload, ts))
    cache: dict[str, bytes] = {}
    out = wal_encode(frames, cache, 0)
    assert out is not None
    keys, values, nbytes = out
    assert keys == [key_of(f.seq) for f in frames]
    assert values == [reference_record(f.topic, f.ts_ns, f.payload) for f in frames]
    assert values == [encode_record(f.topic, f.ts_ns, f.payload) for f in frames]
    # the same records from (seq, topic, ts_ns, payload) tuples
    tuples = [(f.seq, f.topic, f.ts_ns, bytearray(f.payload)) for f in frames]
    assert wal_encode(tuples, {}, 0) == out
    assert nbytes == sum(map(len, values))
    assert all(cache[f.topic] == f.topic.encode() for f in frames)


def test_wal_encode_declines_what_needs_the_checked_path() -> None:
    f = fb.Frame(5, "t", b"x", 1)
    assert wal_encode([f], {}, 5) is None  # not above `after`
    assert wal_encode([f, fb.Frame(5, "t", b"y", 1)], {}, None) is None  # not rising
    assert wal_encode([f, (6, "t", 1, b"y")], {}, None) is not None  # a record tuple
    assert wal_encode([f, (6, "t", 1)], {}, None) is None  # not a record
    assert wal_encode([f, [6, "t", 1, b"y"]], {}, None) is None  # not a tuple
    assert wal_encode([(6, "t", -1, b"y")], {}, None) is None  # ts_ns out of range
    assert wal_encode([(6, "t", 1, "y")], {}, None) is None  # str payload
    assert wal_encode([(6, 7, 1, b"y")], {}, None) is None  # topic not a str
    assert wal_encode([fb.Frame(6, "é" * 40_000, b"", 0)], {}, None) is None  # topic too long


def test_append_frames_reports_order_errors_as_append_batch_does(tmp_path: Path) -> None:
    with WalLog(tmp_path) as wal:
        assert wal.append_frames([fb.Frame(1, "t", b"a", 1), fb.Frame(2, "t", b"b", 2)]) == 2
        with pytest.raises(ValueError, match="seq 2 is not above the last stored seq 2"):
            wal.append_frames([fb.Frame(2, "t", b"c", 3)])
        assert wal.append_frames(iter([fb.Frame(3, "u", b"d", 4)])) == 3  # any iterable
        assert wal.append_frames([]) == 3
        got = [(f.seq, f.topic, f.payload, f.ts_ns) for f in wal.read()]
    assert got == [(1, "t", b"a", 1), (2, "t", b"b", 2), (3, "u", b"d", 4)]
    with WalLog(tmp_path) as wal:  # the counters written with the batch are right
        assert (wal.last_seq, wal.frame_count, wal.corrupt_count) == (3, 3, 0)
        assert wal.byte_count == sum(8 + len(encode_record(t, ts, p)) for _, t, p, ts in got)


pairs_st = st.lists(
    st.one_of(
        # intact records
        st.tuples(st.integers(0, 2**64 - 1), st.text(max_size=20), st.binary(max_size=64)).map(
            lambda t: (key_of(t[0]), encode_record(t[1], 7, t[2]))
        ),
        # garbage of any shape
        st.tuples(st.binary(max_size=12), st.binary(max_size=80)),
        # an intact record with one byte flipped
        st.tuples(st.integers(0, 99), st.binary(min_size=1, max_size=40), st.integers(0, 255)).map(
            lambda t: (
                key_of(t[0]),
                (lambda v, i: v[:i] + bytes([v[i] ^ 1]) + v[i + 1 :])(
                    encode_record("a.b", 9, t[1]), t[2] % (len(t[1]) + 20)
                ),
            )
        ),
    ),
    max_size=40,
)


def _reference_decode(
    pairs: list[tuple[bytes, bytes]], match: object
) -> tuple[list[fb.Frame], list[tuple[bytes, bytes]]]:
    """The documented codec (framebus.wal._format) applied pair by pair."""
    from framebus.errors import DecodeError
    from framebus.wal import decode_record

    frames: list[fb.Frame] = []
    damaged: list[tuple[bytes, bytes]] = []
    for k, v in pairs:
        try:
            if len(k) != 8:
                raise DecodeError("key is not 8 bytes")
            topic, ts_ns, payload = decode_record(v)
        except DecodeError:
            damaged.append((k, v))
            continue
        if match is None or match(topic):  # type: ignore[operator]
            frames.append(fb.Frame(int.from_bytes(k, "big"), topic, payload, ts_ns))
    return frames, damaged


@given(pairs_st, st.booleans())
@settings(max_examples=300, deadline=None)
def test_wal_decode_matches_the_record_format(
    pairs: list[tuple[bytes, bytes]], filtered: bool
) -> None:
    from framebus._walcodec import wal_decode

    match = (lambda t: t.startswith("a")) if filtered else None
    damaged: list[tuple[bytes, bytes]] = []
    got = wal_decode(pairs, {}, match, damaged)
    assert (got, damaged) == _reference_decode(pairs, match)
