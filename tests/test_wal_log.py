"""The WAL storage engine (framebus.wal.WalLog): records, sequence numbers, groups,
retention, damaged records, exclusive opening and I/O errors."""

from __future__ import annotations

import errno
import gc
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict

import framebus as fb
from framebus.wal import (
    LOCK_NAME,
    WalError,
    WalLog,
    decode_record,
    encode_record,
    export,
    inspect,
)
from framebus.wal._format import CRC_RESIDUE, HEADER, OVERHEAD, check_record, crc32c, key_of

U64_MAX = 2**64 - 1
TOPIC = "t"  # 1 UTF-8 byte: a frame of P payload bytes is 8 + 20 + 1 + P logical bytes


def frame_bytes(payload_len: int, topic: str = TOPIC) -> int:
    """Logical bytes of one stored frame, worked out from the documented format."""
    return 8 + OVERHEAD + len(topic.encode()) + payload_len


def rows(seqs: range | list[int], payload: bytes = b"p" * 71, topic: str = TOPIC) -> list[Any]:
    return [(s, topic, 1_000 + s, payload) for s in seqs]


def as_tuples(frames: list[fb.Frame]) -> list[tuple[int, str, int, bytes]]:
    return [(f.seq, f.topic, f.ts_ns, f.payload) for f in frames]


def raw_db(path: Path) -> Rdict:
    """The WAL's RocksDB opened directly (the WalLog must be closed), to damage it."""
    return Rdict(
        str(path),
        Options(raw_mode=True),
        column_families={"meta": Options(raw_mode=True), "groups": Options(raw_mode=True)},
    )


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the record format -----------------------------------------------------


def test_record_layout_is_the_documented_one() -> None:
    value = encode_record("a.b", 7, b"xyz")
    assert len(value) == OVERHEAD + 3 + 3
    assert HEADER.unpack_from(value) == (1, 0, 3, 3, 7)
    assert value[16:19] == b"a.b" and value[19:22] == b"xyz"
    assert int.from_bytes(value[-4:], "little") == crc32c(value[:-4])
    assert crc32c(value) == CRC_RESIDUE
    assert decode_record(value) == ("a.b", 7, b"xyz")


@given(
    topic=st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    ts_ns=st.sampled_from([0, 1, 2**63 - 1, 2**63, U64_MAX]) | st.integers(0, U64_MAX),
    payload=st.binary(max_size=300),
)
def test_record_round_trip(topic: str, ts_ns: int, payload: bytes) -> None:
    value = encode_record(topic, ts_ns, payload)
    assert check_record(value) is None
    assert decode_record(value) == (topic, ts_ns, payload)


def _with_crc(body: bytes) -> bytes:
    return body + crc32c(body).to_bytes(4, "little")


# Garbage: random bytes; random bytes given a valid CRC; and plausible headers
# (some versions and flags, lengths that may or may not match) with a valid CRC,
# so that every check behind the CRC (version, flags, lengths, UTF-8) is reached.
header_garbage = st.builds(
    lambda version, flags, tlen, plen, rest: _with_crc(
        HEADER.pack(version, flags, tlen, plen, 0) + rest
    ),
    st.sampled_from([0, 1, 2, 255]),
    st.sampled_from([0, 0, 1, 0x80]),
    st.integers(0, 40),
    st.integers(0, 40),
    st.binary(max_size=80),
)
garbage = (
    st.binary(max_size=19)
    | st.binary(min_size=20, max_size=120)
    | st.binary(max_size=120).map(_with_crc)
    | header_garbage
)


@given(garbage)
def test_decoding_garbage_raises_only_decode_error(value: bytes) -> None:
    problem = check_record(value)
    if problem is None:
        decode_record(value)
    else:
        with pytest.raises(fb.DecodeError, match="bad WAL record"):
            decode_record(value)


def test_encode_record_rejects_what_the_format_cannot_hold() -> None:
    with pytest.raises(ValueError, match="ts_ns=-1"):
        encode_record("t", -1, b"")
    with pytest.raises(ValueError, match="ts_ns=18446744073709551616"):
        encode_record("t", 2**64, b"")
    with pytest.raises(ValueError, match="65536 UTF-8 bytes"):
        encode_record("x" * 65536, 0, b"")
    with pytest.raises(TypeError, match="topic must be a str"):
        encode_record(b"t", 0, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_record("t", 0, "text")  # type: ignore[arg-type]


# -- appending and reading -------------------------------------------------


def test_new_log_is_empty(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal") as wal:
        assert (wal.first_seq, wal.last_seq, wal.next_seq) == (None, None, 0)
        assert (wal.frame_count, wal.byte_count, wal.retained_from) == (0, 0, 0)
        assert list(wal.read()) == []
        assert wal.read_batch(0, 10) == []
        assert wal.append_batch([]) is None
        stats = wal.stats()
        assert stats["frames"] == 0 and stats["corrupt"] == 0 and stats["groups"] == {}
    assert oct(os.stat(tmp_path / "wal").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "wal" / LOCK_NAME).st_mode & 0o777) == "0o600"


utf8_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
records_strategy = st.lists(
    st.tuples(
        st.integers(1, 1000),  # gap to the previous seq
        utf8_text,
        st.sampled_from([0, 1, 2**63, U64_MAX]) | st.integers(0, U64_MAX),
        st.binary(max_size=200),
    ),
    min_size=1,
    max_size=40,
)


def test_round_trip_of_many_records(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal") as wal:
        stored: list[tuple[int, str, int, bytes]] = []

        @settings(max_examples=60)
        @given(records_strategy)
        def check(batch: list[tuple[int, str, int, bytes]]) -> None:
            seq = wal.next_seq
            new = []
            for gap, topic, ts_ns, payload in batch:
                seq += gap
                new.append((seq, topic, ts_ns, payload))
            before = wal.byte_count
            assert wal.append_batch(new) == new[-1][0]
            stored.extend(new)
            expected_bytes = sum(frame_bytes(len(p), t) for _, t, _, p in new)
            assert wal.byte_count - before == expected_bytes
            assert as_tuples(list(wal.read(new[0][0]))) == new
            assert as_tuples(wal.read_batch(new[0][0], len(new) + 5)) == new

        check()
        everything = list(wal.read(batch=7))
        assert as_tuples(everything) == stored
        assert all(isinstance(f, fb.Frame) for f in everything)
        assert wal.frame_count == len(stored)
        assert wal.verify() == {
            "frames": len(stored),
            "bytes": wal.byte_count,
            "corrupt": 0,
        }


def test_payload_types(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal") as wal:
        wal.append_batch(
            [
                (0, "a", 1, bytearray(b"ba")),
                (1, "a", 2, memoryview(b"xmvx")[1:3]),
                (2, "", 3, b""),
                (3, "wide", 4, memoryview(bytes(range(8))).cast("I")),  # 2 items, 8 bytes
            ]
        )
        assert as_tuples(wal.read_batch(0, 10)) == [
            (0, "a", 1, b"ba"),
            (1, "a", 2, b"mv"),
            (2, "", 3, b""),
            (3, "wide", 4, bytes(range(8))),
        ]


def test_append_frames_takes_frames(tmp_path: Path) -> None:
    with WalLog(tmp_path / "a") as src, WalLog(tmp_path / "b") as dst:
        src.append_batch(rows(range(5)))
        assert dst.append_frames(src.read_batch(0, 100)) == 4
        assert as_tuples(dst.read_batch(0, 100)) == as_tuples(src.read_batch(0, 100))
        dst.append(10, "one", 5, b"single", sync=True)
        assert dst.read_batch(10, 1)[0] == fb.Frame(10, "one", b"single", 5)


def test_reads_with_and_without_gaps_in_the_keys(tmp_path: Path) -> None:
    # A log whose keys run without a gap is read by values alone (a value's seq is
    # its place); one with gaps by (key, value) pairs. Both give the same frames.
    with WalLog(tmp_path / "wal") as wal:
        wal.append_batch(rows(range(0, 50)))
        assert wal._consecutive_from(0) == 0
        assert wal._consecutive_from(30) == 30
        assert [f.seq for f in wal.read()] == list(range(50))
        assert [f.seq for f in wal.read(45, batch=2)] == list(range(45, 50))
        assert [f.seq for f in wal.read(10, 12)] == [10, 11, 12]
        assert [f.seq for f in wal.read_batch(10, 3)] == [10, 11, 12]
        assert [f.seq for f in wal.read_batch(48, 10)] == [48, 49]
        wal.append_batch(rows(range(60, 70)))  # a gap: 50..59 were never stored
        assert [f.seq for f in wal.read_batch(48, 4)] == [48, 49, 60, 61]
        assert wal._consecutive_from(0) is None
        got = as_tuples(list(wal.read(40)))
        assert got == [(s, TOPIC, 1_000 + s, b"p" * 71) for s in [*range(40, 50), *range(60, 70)]]
        # retention takes the head: the rest still has its gap
        wal.enforce_retention(wal.byte_count // 2)
        first = wal.first_seq
        assert first is not None and first > 0
        assert [f.seq for f in wal.read()] == [
            s for s in [*range(0, 50), *range(60, 70)] if s >= first
        ]
    with WalLog(tmp_path / "wal2") as wal:
        wal.append_batch(rows(range(100, 140)))
        wal.enforce_retention(wal.byte_count // 2)  # no gap after the head goes
        first = wal.first_seq
        assert first is not None and wal._consecutive_from(0) == first
        assert [f.seq for f in wal.read()] == list(range(first, 140))
        assert [f.seq for f in wal.read(first - 5, first + 2)] == [first, first + 1, first + 2]


def test_ranges_and_topic_filters(tmp_path: Path) -> None:
    topics = ["sensors.a", "sensors.b", "logs.x", ""]
    with WalLog(tmp_path / "wal") as wal:
        wal.append_batch([(s, topics[s % 4], s, b"%d" % s) for s in range(0, 200)])

        def seqs(frames: Any) -> list[int]:
            return [f.seq for f in frames]

        assert seqs(wal.read(10, 14)) == [10, 11, 12, 13, 14]  # to_seq is inclusive
        assert seqs(wal.read(199)) == [199]
        assert seqs(wal.read(200)) == []
        assert seqs(wal.read(20, 10)) == []
        assert seqs(wal.read(0, 9, topic="sensors.a")) == [0, 4, 8]
        assert seqs(wal.read(0, 9, topic="sensors.*")) == [0, 1, 4, 5, 8, 9]
        assert seqs(wal.read(0, 9, topic="logs.>")) == [2, 6]
        assert seqs(wal.read(0, 9, topic="")) == [3, 7]
        assert seqs(wal.read(0, 9, topic=">")) == list(range(10))
        assert seqs(wal.read(0, 9, topic=fb.TopicFilter("sensors.b"))) == [1, 5, 9]
        assert seqs(wal.read(0, 9, topic="nothing.here")) == []
        # read_batch keeps scanning past filtered frames until it has max_frames
        assert seqs(wal.read_batch(0, 3, topic="logs.x")) == [2, 6, 10]
        assert seqs(wal.read_batch(150, 1000, to_seq=160, topic="sensors.b")) == [153, 157]
        assert seqs(wal.read_batch(190, 1000)) == list(range(190, 200))
        assert seqs(wal.read_batch(0, 1)) == [0]
        assert seqs(wal.read(0, batch=1)) == list(range(200))
        with pytest.raises(ValueError):
            wal.read(0, topic="bad..filter")
        with pytest.raises(ValueError):
            wal.read_batch(0, 0)
        with pytest.raises(ValueError):
            wal.read(-1)
        with pytest.raises(TypeError):
            wal.read("0")  # type: ignore[arg-type]


def test_sequence_numbers_must_increase(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal") as wal:
        wal.append_batch(rows([5, 9]))
        with pytest.raises(ValueError, match=r"seq 9 is not above the last stored seq 9"):
            wal.append_batch(rows([9]))
        with pytest.raises(ValueError, match=r"seq 3 is not above the last stored seq 9"):
            wal.append(3, "t", 0, b"")
        # a bad record anywhere in a batch stores nothing of it
        with pytest.raises(ValueError, match=r"record 2: seq 11 follows seq 12 in the same batch"):
            wal.append_batch(rows([10, 12, 11]))
        with pytest.raises(ValueError, match=r"record 1: seq 12 follows seq 12"):
            wal.append_batch(rows([12, 12]))
        with pytest.raises(ValueError, match=r"record 1 \(seq 13\): ts_ns=-1"):
            wal.append_batch([(12, "t", 0, b""), (13, "t", -1, b"")])
        with pytest.raises(TypeError, match=r"record 1 \(seq 13\): payload must be bytes-like"):
            wal.append_batch([(12, "t", 0, b""), (13, "t", 0, "text")])
        with pytest.raises(TypeError, match=r"record 0 \(seq 12\): topic must be a str"):
            wal.append_batch([(12, 7, 0, b"")])
        with pytest.raises(TypeError, match=r"record 0: seq must be an int"):
            wal.append_batch([(12.5, "t", 0, b"")])
        with pytest.raises(ValueError, match=r"record 0: seq 18446744073709551616 is outside"):
            wal.append_batch([(2**64, "t", 0, b"")])
        with pytest.raises(TypeError, match=r"record 0: expected a \(seq, topic, ts_ns, payload\)"):
            wal.append_batch([(12, "t", 0)])
        assert [f.seq for f in wal.read()] == [5, 9]
        assert (wal.last_seq, wal.frame_count, wal.byte_count) == (9, 2, 2 * frame_bytes(71))
        assert wal.append_batch(rows([10, 11, 1000])) == 1000
        assert wal.append_batch([(U64_MAX, "t", 0, b"")]) == U64_MAX
        with pytest.raises(ValueError, match=f"seq {U64_MAX} is not above"):
            wal.append(U64_MAX, "t", 0, b"")


def test_fresh_log_rejects_negative_seq(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal") as wal:
        with pytest.raises(ValueError, match="record 0: seq -1 is negative"):
            wal.append(-1, "t", 0, b"")
        assert wal.append(0, "t", 0, b"") == 0


def test_reopen_continues_last_seq_and_keeps_counters(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WalLog(path) as wal:
        wal.append_batch(rows(range(100, 150)), sync=True)
        counters = (wal.frame_count, wal.byte_count)
    with WalLog(path, create=False) as wal:
        assert (wal.first_seq, wal.last_seq, wal.next_seq) == (100, 149, 150)
        assert (wal.frame_count, wal.byte_count) == counters
        with pytest.raises(ValueError, match="not above the last stored seq 149"):
            wal.append_batch(rows([149]))
        wal.append_batch(rows([150]))
        assert [f.seq for f in wal.read(148)] == [148, 149, 150]


def test_sync_append_and_sync(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal") as wal:
        assert wal.append_batch(rows(range(3)), sync=True) == 2
        wal.append_batch(rows(range(3, 6)))
        wal.sync()
        assert [f.seq for f in wal.read()] == list(range(6))


# -- consumer groups -------------------------------------------------------


def test_group_offsets_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WalLog(path) as wal:
        wal.append_batch(rows(range(10)))
        assert wal.committed("ingest") is None
        wal.commit("ingest", 4)
        wal.commit("ingest", 7, sync=True)  # the committed value is the next seq wanted
        wal.commit("audit", 0)
        wal.commit("ahead", 1000)  # past the log end: frames not stored yet
        wal.commit("ünïcode", 3)
        assert wal.committed("ingest") == 7
    with WalLog(path) as wal:
        assert wal.groups() == {"ingest": 7, "audit": 0, "ahead": 1000, "ünïcode": 3}
        assert wal.committed("ingest") == 7
        assert [f.seq for f in wal.read(wal.committed("ingest") or 0)] == [7, 8, 9]
        wal.commit("ingest", 2)  # back, to reprocess
        assert wal.committed("ingest") == 2
        assert wal.forget_group("audit") is True
        assert wal.forget_group("audit") is False
        assert wal.stats()["groups"] == {"ingest": 2, "ahead": 1000, "ünïcode": 3}
        with pytest.raises(ValueError, match="empty"):
            wal.commit("", 1)
        with pytest.raises(ValueError, match="next_seq=-1"):
            wal.commit("g", -1)
        with pytest.raises(TypeError):
            wal.commit(b"g", 1)  # type: ignore[arg-type]


# -- retention -------------------------------------------------------------


def test_retention_is_exact(tmp_path: Path) -> None:
    assert frame_bytes(71) == 100  # the numbers below rely on it
    path = tmp_path / "wal"
    with WalLog(path, max_bytes=2_550) as wal:
        wal.append_batch(rows(range(100)))
        assert wal.byte_count == 10_000
        wal.commit("slow", 10)
        wal.commit("fast", 80)
        wal.commit("at_edge", 75)
        assert wal.enforce_retention() == 75  # down to 25 frames = 2 500 bytes <= 2 550
        assert (wal.frame_count, wal.byte_count) == (25, 2_500)
        assert (wal.first_seq, wal.last_seq, wal.retained_from) == (75, 99, 75)
        assert [f.seq for f in wal.read()] == list(range(75, 100))
        assert wal.behind("slow") == 65  # seqs 10..74 are gone
        assert wal.behind("fast") == 0
        assert wal.behind("at_edge") == 0
        assert wal.behind("never_committed") == 0
        assert wal.lost(0) == 75
        assert wal.enforce_retention() == 0  # already within the limit
        assert wal.verify() == {"frames": 25, "bytes": 2_500, "corrupt": 0}
    with WalLog(path) as wal:  # everything above was persisted
        assert (wal.frame_count, wal.byte_count) == (25, 2_500)
        assert (wal.first_seq, wal.retained_from) == (75, 75)
        assert wal.behind("slow") == 65
        assert inspect(path)["behind"] == {"slow": 65}
        # a lower target makes room ahead of time
        assert wal.enforce_retention(target_bytes=1_000) == 15
        assert (wal.first_seq, wal.frame_count, wal.byte_count) == (90, 10, 1_000)
        # down to nothing: numbering still continues after the last seq
        assert wal.enforce_retention(target_bytes=0) == 10
        assert (wal.first_seq, wal.last_seq, wal.frame_count, wal.byte_count) == (
            None,
            99,
            0,
            0,
        )
        assert wal.retained_from == 100
        assert wal.behind("fast") == 20
        with pytest.raises(ValueError, match="not above the last stored seq 99"):
            wal.append_batch(rows([99]))
        wal.append_batch(rows([100]))
        assert wal.first_seq == 100
        assert [f.seq for f in wal.read()] == [100]


def test_retention_deletes_whole_frames_until_within_limit(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal", max_bytes=250) as wal:
        # 100, 1 000 and 100 bytes: the big frame must go, so both first ones do
        wal.append_batch([(0, "t", 0, b"x" * 71), (1, "t", 0, b"x" * 971), (2, "t", 0, b"x" * 71)])
        assert wal.byte_count == 1_200
        wal.max_bytes = 100
        assert wal.enforce_retention() == 2
        assert (wal.first_seq, wal.byte_count, wal.frame_count) == (2, 100, 1)
        assert wal.enforce_retention(compact=False) == 0
        with pytest.raises(ValueError):
            wal.max_bytes = -1


def test_reader_keeps_its_snapshot_while_retention_deletes(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal") as wal:
        wal.append_batch(rows(range(50)))
        reader = wal.read(batch=10)
        assert next(reader).seq == 0
        assert wal.enforce_retention(target_bytes=0) == 50
        wal.append_batch(rows([50]))
        # what retention deleted after the read began is still read, never skipped
        assert [f.seq for f in reader] == list(range(1, 50))
        assert [f.seq for f in wal.read()] == [50]


def test_appends_and_reads_from_threads(tmp_path: Path) -> None:
    with WalLog(tmp_path / "wal") as wal:
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for start in range(0, 5_000, 100):
                    wal.append_batch(rows(range(start, start + 100)))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        seen: list[int] = []
        while thread.is_alive() or len(seen) < 5_000:
            batch = wal.read_batch(len(seen), 700)
            seen.extend(f.seq for f in batch)
            if not batch:
                if not thread.is_alive():
                    break
                time.sleep(0.001)
        thread.join(timeout=60)
        assert not errors
        assert seen == list(range(5_000))
        assert wal.frame_count == 5_000


def test_missing_counters_are_recounted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "wal"
    with WalLog(path) as wal:
        wal.append_batch(rows(range(7)))
    db = raw_db(path)
    meta = db.get_column_family("meta")
    del meta[b"frames"]
    meta[b"bytes"] = b"short"  # damaged: not 8 bytes
    meta.close()
    db.close()
    caplog.set_level(logging.WARNING, logger="framebus.wal")
    with WalLog(path) as wal:
        assert (wal.frame_count, wal.byte_count) == (7, 700)
    assert any("counting the log" in r.getMessage() for r in caplog.records)
    with WalLog(path) as wal:  # the recount was stored
        assert (wal.frame_count, wal.byte_count) == (7, 700)


# -- damaged records -------------------------------------------------------


def test_damaged_records_are_reported_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wal"
    with WalLog(path) as wal:
        wal.append_batch(rows(range(20), payload=b"payload-bytes"))
    db = raw_db(path)
    flipped = bytearray(db[key_of(5)])
    flipped[18] ^= 0x01  # one bit of the payload
    db[key_of(5)] = bytes(flipped)
    db[key_of(7)] = b"\x00garbage"
    db[key_of(8)] = b""
    truncated = encode_record("t", 0, b"abc")[:-1]
    db[key_of(12)] = truncated
    db.close()

    seen: list[tuple[int, str]] = []
    caplog.set_level(logging.ERROR, logger="framebus.wal")
    with WalLog(path, on_corrupt=lambda seq, why: seen.append((seq, why))) as wal:
        good = [s for s in range(20) if s not in (5, 7, 8, 12)]
        assert [f.seq for f in wal.read()] == good
        assert [f.seq for f in wal.read_batch(0, 100)] == good
        assert [f.seq for f in wal.read_batch(4, 2)] == [4, 6]
        stats = wal.stats()
        assert stats["corrupt"] == 4 and stats["corrupt_seqs"] == [5, 7, 8, 12]
        assert [s for s, _ in seen] == [5, 7, 8, 12]  # once each, however often read
        assert all(why for _, why in seen)
        assert dict(seen)[5] == "CRC32C mismatch"
        assert "shorter than" in dict(seen)[8]
        logged = [r.getMessage() for r in caplog.records if r.name == "framebus.wal"]
        assert len(logged) == 4
        assert "record seq 5 is damaged (CRC32C mismatch)" in logged[0]
        assert wal.verify()["corrupt"] == 4
    info = inspect(path)
    assert (info["corrupt"], info["corrupt_seqs"]) == (4, [5, 7, 8, 12])
    assert info["scanned_frames"] == 20


def test_garbage_values_never_raise(tmp_path: Path) -> None:
    reported: list[int] = []
    with WalLog(tmp_path / "wal", on_corrupt=lambda seq, why: reported.append(seq)) as wal:

        @settings(max_examples=40)
        @given(st.lists(garbage, min_size=1, max_size=8))
        def check(values: list[bytes]) -> None:
            base = wal.next_seq
            wal.append_batch(rows(range(base, base + 2 * len(values) + 1), payload=b"ok"))
            db = wal._db  # fault injection: overwrite every other record in place
            assert db is not None
            bad = {}
            for i, value in enumerate(values):
                seq = base + 2 * i + 1
                db[key_of(seq)] = value
                bad[seq] = value
            got = {f.seq: f for f in wal.read(base)}
            for seq in range(base, base + 2 * len(values) + 1):
                if seq not in bad:
                    assert got[seq].payload == b"ok"
                elif check_record(bad[seq]) is None:  # garbage that is a valid record
                    topic, ts_ns, payload = decode_record(bad[seq])
                    assert got[seq] == fb.Frame(seq, topic, payload, ts_ns)
                else:
                    assert seq not in got and seq in reported

        check()
        assert wal.corrupt_count == len(set(reported))


def test_topic_that_is_not_utf8_is_a_damaged_record(tmp_path: Path) -> None:
    reasons: dict[int, str] = {}
    with WalLog(tmp_path / "wal", on_corrupt=reasons.__setitem__) as wal:
        wal.append_batch(rows(range(3)))
        body = HEADER.pack(1, 0, 2, 1, 0) + b"\xff\xfe" + b"p"
        assert wal._db is not None  # fault injection: a valid CRC over a bad topic
        wal._db[key_of(1)] = _with_crc(body)
        assert [f.seq for f in wal.read()] == [0, 2]
        assert reasons == {1: "topic is not valid UTF-8"}


# -- exclusive opening -----------------------------------------------------


def test_second_open_in_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal = WalLog(path)
    try:
        with pytest.raises(WalError) as info:
            WalLog(path)
        message = str(info.value)
        assert str(path) in message
        assert f"already open in this process (pid {os.getpid()})" in message
    finally:
        wal.close()
    with WalLog(path) as again:  # the lock went with close()
        assert again.last_seq is None


def test_dropping_an_unclosed_log_releases_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal = WalLog(path)
    wal.append_batch(rows(range(3)))
    del wal
    gc.collect()
    with WalLog(path) as again:
        assert again.last_seq == 2


@pytest.mark.xproc
def test_second_open_from_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WalLog(path):
        result = run_python(
            """
            import sys
            from framebus.wal import WalLog, WalError
            try:
                WalLog(sys.argv[1])
            except WalError as exc:
                print(exc)
            else:
                print("opened")
            """,
            str(path),
        )
        assert result.returncode == 0, result.stderr
        assert f"already open in process {os.getpid()}" in result.stdout
        assert str(path) in result.stdout


@pytest.mark.xproc
def test_open_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from framebus.wal import WalLog; w = WalLog(sys.argv[1]); "
            "print('ready', flush=True); sys.stdin.read(); w.close()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        with pytest.raises(WalError, match=f"already open in process {holder.pid}"):
            WalLog(path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    with WalLog(path) as wal:
        assert wal.frame_count == 0


@pytest.mark.xproc
def test_forked_child_cannot_use_the_parents_log(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WalLog(path) as wal:
        wal.append_batch(rows(range(3)))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 0
            try:
                try:
                    wal.append_batch(rows([3]))
                    code |= 1
                except WalError as exc:
                    code |= 0 if "forked" in str(exc) else 2
                try:
                    WalLog(path)  # the parent still holds the directory
                    code |= 4
                except WalError as exc:
                    code |= 0 if f"process {os.getppid()}" in str(exc) else 8
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        wal.append_batch(rows([3]))
    with WalLog(path) as wal:
        assert [f.seq for f in wal.read()] == [0, 1, 2, 3]


# -- opening errors and I/O faults -----------------------------------------


def test_opening_errors_are_wal_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_bytes(b"x")
    with pytest.raises(WalError, match="exists and is not a directory"):
        WalLog(a_file)
    with pytest.raises(WalError) as info:
        WalLog(a_file / "wal")
    assert info.value.errno == errno.ENOTDIR and str(a_file) in str(info.value)
    with pytest.raises(WalError, match="create=False"):
        WalLog(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(WalError, match="no WAL here"):
        WalLog(tmp_path / "missing", read_only=True)


def test_foreign_rocksdb_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other"
    db = Rdict(str(path), Options(raw_mode=True))
    db[b"k"] = b"v"
    db.close()
    with pytest.raises(WalError, match="not a framebus WAL"):
        WalLog(path)
    assert Rdict.list_cf(str(path), Options(raw_mode=True)) == ["default"]


def test_other_layout_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    WalLog(path).close()
    db = raw_db(path)
    db.get_column_family("meta")[b"layout"] = key_of(2)
    db.close()
    with pytest.raises(WalError, match="layout version 2; this framebus reads version 1"):
        WalLog(path)


def test_closing_is_idempotent_and_final(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal = WalLog(path)
    wal.append_batch(rows(range(10)))
    reader = wal.read(batch=4)
    assert next(reader).seq == 0
    wal.close()
    wal.close()
    assert wal.closed and "closed" in repr(wal)
    # the reader finishes the chunk it holds, then fails: it never ends silently
    with pytest.raises(WalError, match="closed"):
        list(reader)
    for call in (
        lambda: wal.append_batch(rows([10])),
        lambda: wal.read_batch(0, 1),
        lambda: wal.read(),
        lambda: wal.commit("g", 1),
        lambda: wal.groups(),
        lambda: wal.enforce_retention(0),
    ):
        with pytest.raises(WalError, match="closed"):
            call()
    with WalLog(path) as again:  # RocksDB really closed: the reader held nothing
        assert again.last_seq == 9


def test_read_only_open_sees_a_live_log_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WalLog(path) as wal:
        wal.append_batch(rows(range(5)))
        wal.commit("g", 2)
        with WalLog(path, read_only=True) as view:
            assert [f.seq for f in view.read()] == [0, 1, 2, 3, 4]
            assert view.groups() == {"g": 2}
            for call in (
                lambda: view.append_batch(rows([5])),
                lambda: view.commit("g", 3),
                lambda: view.enforce_retention(0),
            ):
                with pytest.raises(WalError, match="read_only"):
                    call()
        info = inspect(path)
        assert (info["first_seq"], info["last_seq"], info["frames"]) == (0, 4, 5)


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="running as root: permission bits do not stop root from writing, so a "
    "read-only directory cannot be made; test_write_failure_is_a_wal_error covers "
    "a failing write with a file-size limit instead",
)
def test_read_only_directory(tmp_path: Path) -> None:
    path = tmp_path / "ro"
    path.mkdir(mode=0o500)
    try:
        with pytest.raises(WalError) as info:
            WalLog(path)
        assert info.value.errno == errno.EACCES and str(path) in str(info.value)
    finally:
        path.chmod(0o700)


@pytest.mark.xproc
def test_write_failure_is_a_wal_error(tmp_path: Path) -> None:
    """A failing write (here: RLIMIT_FSIZE, "File too large", the way a full disk
    fails a write) raises WalError naming the directory and the cause; every append
    that returned is still there after a reopen."""
    path = tmp_path / "wal"
    result = run_python(
        """
        import resource, signal, sys
        from framebus.wal import WalLog, WalError
        wal = WalLog(sys.argv[1])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        last = None
        try:
            for start in range(0, 10_000_000, 100):
                rows = [(s, "t", s, b"x" * 1000) for s in range(start, start + 100)]
                last = wal.append_batch(rows, sync=True)
            print("no error")
        except WalError as exc:
            print("ERR", exc.errno, exc)
            print("LAST", last)
        """,
        str(path),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ERR {errno.EFBIG} WAL {path}: cannot append frames ")
    assert "File too large" in lines[0]
    last = int(lines[1].split()[1])
    with WalLog(path) as wal:
        assert wal.last_seq is not None and wal.last_seq >= last
        frames = list(wal.read(0, last))
        assert [f.seq for f in frames] == list(range(last + 1))
        assert wal.corrupt_count == 0


# -- inspect and export ----------------------------------------------------


def test_inspect_reports_the_log(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WalLog(path) as wal:
        wal.append_batch(rows(range(3, 8)))
        wal.commit("g", 5)
    info = inspect(path)
    assert info == {
        "path": str(path),
        "layout": 1,
        "first_seq": 3,
        "last_seq": 7,
        "next_seq": 8,
        "retained_from": 0,
        "frames": 5,
        "bytes": 500,
        "groups": {"g": 5},
        "behind": {},
        "verified": True,
        "corrupt": 0,
        "corrupt_seqs": [],
        "scanned_frames": 5,
        "scanned_bytes": 500,
    }
    quick = inspect(path, verify=False)
    assert quick["corrupt"] is None and "scanned_frames" not in quick
    json.dumps(info)  # what the CLI prints


def test_export_jsonl_and_raw(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WalLog(path) as wal:
        wal.append_batch(
            [
                (1, "a.x", 10, b"hello"),
                (2, "b.y", 20, b"\xff\x00bin"),
                (3, "a.z", 30, "é".encode()),
            ]
        )
    out = io.BytesIO()
    assert export(path, out)["frames"] == 3
    lines = [json.loads(line) for line in out.getvalue().decode().splitlines()]
    assert lines == [
        {"seq": 1, "topic": "a.x", "ts_ns": 10, "payload": "hello"},
        {"seq": 2, "topic": "b.y", "ts_ns": 20, "payload_b64": "/wBiaW4="},
        {"seq": 3, "topic": "a.z", "ts_ns": 30, "payload": "é"},
    ]
    raw = io.BytesIO()
    summary = export(path, raw, from_seq=2, fmt="raw")
    assert raw.getvalue() == b"\xff\x00bin" + "é".encode()
    assert summary == {"frames": 2, "corrupt": 0, "corrupt_seqs": []}
    filtered = io.BytesIO()
    export(path, filtered, topic="a.*", to_seq=2, fmt="raw")
    assert filtered.getvalue() == b"hello"
    with pytest.raises(ValueError, match="fmt='xml'"):
        export(path, io.BytesIO(), fmt="xml")
