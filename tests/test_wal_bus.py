"""A bus with a write-ahead log: sequence numbers across restarts, flush, replay,
wal_sync durability (also under SIGKILL), retention, a failing WAL, exclusivity."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import framebus as fb
from framebus.wal import WalLog

CRASHES = int(os.environ.get("FRAMEBUS_WAL_CRASHES", "10"))

pytestmark = pytest.mark.timeout(300)


def bus_at(path: Path, **kw: object) -> fb.FrameBus:
    return fb.FrameBus(preset="memory_optimized", wal_dir=str(path), **kw)


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sequence_numbers_continue_across_restarts(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        assert bus.publish(b"a", topic="t.1") == 0
        assert bus.publish_batch([b"b", b"c"], topic="t.2") == 1
    with bus_at(tmp_path) as bus:
        assert bus.next_seq == 3
        assert bus.publish(b"d") == 3
        assert bus.flush(10)
        got = [(f.seq, f.topic, f.payload) for f in bus.replay()]
    assert got == [(0, "t.1", b"a"), (1, "t.2", b"b"), (2, "t.2", b"c"), (3, "", b"d")]


def test_replay_range_and_topic_filter(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        for i in range(100):
            bus.publish(b"%d" % i, topic=("s.a", "s.b", "x")[i % 3])
        assert bus.flush(10)
        assert [f.seq for f in bus.replay(10, 15)] == list(range(10, 16))
        assert [f.seq for f in bus.replay(topic="s.*")] == [i for i in range(100) if i % 3 != 2]
        assert [f.payload for f in bus.replay(97)] == [b"97", b"98", b"99"]
        frames = list(bus.replay(5, 5))
        assert len(frames) == 1 and frames[0].ts_ns > 0


def test_flush_and_stats(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        s = bus.stats()
        assert (s["wal_durable_seq"], s["wal_lag"], s["wal_degraded"]) == (-1, 0, False)
        for _ in range(5000):
            bus.publish(b"x" * 64)
        assert bus.flush(timeout=30) is True
        s = bus.stats()
        assert (s["wal_durable_seq"], s["wal_lag"], s["wal_degraded"]) == (4999, 0, False)
        assert s["wal_bytes"] > 5000 * 64
        assert s["wal_corrupt"] == 0


def test_no_wal_flush_is_immediate_and_replay_refuses() -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        bus.publish(b"x")
        assert bus.flush() is True
        with pytest.raises(fb.FrameBusError, match="replay needs a write-ahead log"):
            bus.replay()
        assert "wal_durable_seq" not in bus.stats()


def test_close_writes_everything_published_before(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        bus.publish_batch([b"%d" % i for i in range(3000)])
    with WalLog(tmp_path) as wal:
        assert [f.seq for f in wal.read()] == list(range(3000))


def test_wal_sync_publish_returns_once_durable(tmp_path: Path) -> None:
    with bus_at(tmp_path, wal_sync=True) as bus:
        for i in range(50):
            seq = bus.publish(b"%d" % i)
            # no flush: the frame is already in the log when publish returns
            assert bus.stats()["wal_durable_seq"] >= seq
        first = bus.publish_batch([b"a", b"b", b"c"])
        assert bus.stats()["wal_durable_seq"] >= first + 2
        assert bus.try_publish(b"t") == first + 3
        assert bus.stats()["wal_durable_seq"] >= first + 3
        assert [f.seq for f in bus.replay()] == list(range(first + 4))


def _attached_publisher(name: str, count: int, out: Any) -> None:
    bus = fb.FrameBus.attach(name)
    try:
        seqs = [bus.publish(b"c%d" % i, topic="from.child") for i in range(count)]
        durable = bus.stats()["wal_durable_seq"]  # wal_sync: already durable
        bus.publish_batch([b"b"] * 5, topic="from.child")
        replayed = [f.seq for f in bus.replay(topic="from.child")]
        out.put(("ok", seqs, durable, bus.flush(30), replayed))
        try:
            bus.subscribe(group="g").commit(0)  # stored by the creator's WAL thread
            out.put("committed")
        except fb.FrameBusError as exc:
            out.put(str(exc))
        out.put(bus.stats()["wal_bytes"])
    finally:
        bus.close()


def _publish_after_creator_closed(name: str, ready: Any, go: Any, out: Any) -> None:
    bus = fb.FrameBus.attach(name)
    ready.set()
    go.wait(60)
    try:
        bus.publish(b"late")
        out.put("published")
    except fb.WalError as exc:
        out.put(str(exc))
    bus.close()


@pytest.mark.xproc
def test_shared_bus_with_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    name = f"wal-{os.getpid()}"
    monkeypatch.chdir(tmp_path)
    cfg = fb.BusConfig.preset("memory_optimized", wal_dir="wal", wal_sync=True)
    bus = fb.FrameBus.create_shared(name, cfg)
    try:
        assert bus.config.wal_dir == str(tmp_path / "wal")  # absolute for the others
        bus.publish(b"parent", topic="from.parent")
        out = ctx.SimpleQueue()
        child = ctx.Process(target=_attached_publisher, args=(name, 20, out))
        child.start()
        status, seqs, durable, flushed, replayed = out.get()
        assert status == "ok" and flushed
        assert seqs == list(range(1, 21)) and durable >= 20
        assert replayed == list(range(1, 26))
        assert out.get() == "committed"
        assert bus._wal_writer is not None and bus._wal_writer.wal.committed("g") == 1
        assert out.get() is None  # wal_bytes: known to the writing process only
        child.join(60)
        assert child.exitcode == 0
        assert [f.seq for f in bus.replay()] == list(range(26))
        ready, go = ctx.Event(), ctx.Event()
        late = ctx.Process(target=_publish_after_creator_closed, args=(name, ready, go, out))
        late.start()
        assert ready.wait(60)
    finally:
        bus.close()  # the WAL stops with its writer
        fb.FrameBus.unlink(name)
    go.set()
    msg = out.get()
    late.join(60)
    assert "the WAL's process" in msg and "closed it or is gone" in msg


def _group_member(name: str, take: int, commit: bool, ready: Any, out: Any) -> None:
    bus = fb.FrameBus.attach(name)
    try:
        sub = bus.subscribe("t", group="ing")
        ready.set()
        got: list[int] = []
        while len(got) < take:
            frames = sub.recv_batch(take - len(got), timeout=30)
            if not frames:
                break
            got += [f.seq for f in frames]
        if commit and got:
            sub.commit(got[-1])
        out.put(got)
    finally:
        bus.close()


@pytest.mark.xproc
def test_group_in_another_process_commits_and_gets_frames_again(tmp_path: Path) -> None:
    # The group's member lives in a process attached to the shared bus: it commits
    # there, and after a restart of the bus it gets, there, every frame after its
    # offset from the WAL, then live frames, with no gap and no duplicate.
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    name = f"walg-{os.getpid()}"
    cfg = fb.BusConfig.preset("memory_optimized", wal_dir=str(tmp_path / "wal"))
    bus = fb.FrameBus.create_shared(name, cfg)
    try:
        ready, out = ctx.Event(), ctx.SimpleQueue()
        child = ctx.Process(target=_group_member, args=(name, 4, True, ready, out))
        child.start()
        assert ready.wait(60)
        bus.publish_batch([b"%d" % i for i in range(10)], topic="t")
        assert out.get() == [0, 1, 2, 3]
        child.join(60)
        assert child.exitcode == 0
        assert bus._wal_writer is not None and bus._wal_writer.wal.committed("ing") == 4
    finally:
        bus.close()
        fb.FrameBus.unlink(name)
    bus = fb.FrameBus.create_shared(name, cfg)  # a restart on the same WAL
    try:
        assert bus.next_seq == 10
        ready, out = ctx.Event(), ctx.SimpleQueue()
        child = ctx.Process(target=_group_member, args=(name, 8, False, ready, out))
        child.start()
        assert ready.wait(60)
        bus.publish_batch([b"live10", b"live11"], topic="t")
        assert out.get() == list(range(4, 12))  # 4..9 from the WAL, then 10, 11 live
        child.join(60)
        assert child.exitcode == 0
    finally:
        bus.close()
        fb.FrameBus.unlink(name)


@pytest.mark.xproc
def test_second_bus_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with bus_at(tmp_path):
        with pytest.raises(fb.WalError, match="already open"):
            bus_at(tmp_path)
        result = run_python(
            """
            import sys, framebus as fb
            try:
                fb.FrameBus(preset="memory_optimized", wal_dir=sys.argv[1])
            except fb.WalError as exc:
                print("WalError", exc)
            """,
            str(tmp_path),
        )
        assert result.stdout.startswith("WalError"), result.stderr
        assert f"already open in process {os.getpid()}" in result.stdout


def test_retention_keeps_the_log_under_wal_max_bytes(tmp_path: Path) -> None:
    limit = 200_000
    with bus_at(tmp_path, wal_max_bytes=limit) as bus:
        for _ in range(50):
            bus.publish_batch([b"y" * 1000] * 20)
            assert bus.flush(30)
        s = bus.stats()
        assert s["wal_bytes"] <= limit
        frames = list(bus.replay())
        assert frames[-1].seq == 999
        first = frames[0].seq
        assert first > 0  # the oldest went
        assert [f.seq for f in frames] == list(range(first, 1000))


@pytest.mark.xproc
def test_failing_wal_degrades_to_memory(tmp_path: Path) -> None:
    result = run_python(
        """
        import resource, signal, sys, framebus as fb
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        bus = fb.FrameBus(preset="memory_optimized", wal_dir=sys.argv[1], wal_sync=True)
        sub = bus.subscribe()
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        published = 0
        try:
            while True:
                bus.publish(b"x" * 1000)
                published += 1
                sub.recv(0)
        except fb.WalError as exc:
            print("ERR", "not durable" in str(exc))
        s = bus.stats()
        print("DEGRADED", s["wal_degraded"])
        # the bus goes on in memory: each publish still reaches the ring (and readers),
        # and says it is not durable
        refused = 0
        for i in range(10):
            try:
                bus.publish(b"z")
            except fb.WalError:
                refused += 1
        print("REFUSED", refused)
        print("READ", len(sub.recv_batch(100, timeout=1)) >= 10)
        bus.close()
        """,
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "ERR",
        "True",
        "DEGRADED",
        "True",
        "REFUSED",
        "10",
        "READ",
        "True",
    ]
    assert "the WAL cannot write, the bus goes on in memory" in result.stderr


CRASH_CHILD = """
import sys, framebus as fb
bus = fb.FrameBus(preset="memory_optimized", wal_dir=sys.argv[1], wal_sync=sys.argv[2] == "1")
out = sys.stdout
if sys.argv[3] == "publish":
    while True:
        seq = bus.publish(b"p%d" % bus.next_seq)
        out.write("%d\\n" % seq)
        out.flush()
port = bus.data_port("crash", window=4096)
port.recv_batch(1, timeout=0)  # the receiver: grants the window
while True:
    s = bus.next_seq
    first, sent = port.send_batch([b"p%d" % (s + i) for i in range(3)])
    out.write("%d\\n" % (first + sent - 1))
    out.flush()
    seq = port.send_frame(b"p%d" % bus.next_seq)
    out.write("%d\\n" % seq)
    out.flush()
    port.recv_batch(4096, timeout=0)  # consumed: the credits come back
"""


@pytest.mark.parametrize(("sync", "api"), [(True, "publish"), (False, "publish"), (True, "port")])
@pytest.mark.xproc
@pytest.mark.crash
def test_sigkill_loses_nothing_durable(tmp_path: Path, sync: bool, api: str) -> None:
    """A publisher (bus.publish, or DataPort send_frame/send_batch) killed at random
    points, CRASHES times: with wal_sync every frame whose send returned is recovered;
    without, at most the frames the WAL had not yet written (bounded by the ring's
    capacity). The log stays gap-free, in order, undamaged, and the next run numbers
    on from it."""
    rng = random.Random(1234 + sync)
    capacity = fb.BusConfig.preset("memory_optimized").frame_capacity
    lost: list[int] = []
    for _ in range(CRASHES):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD, str(tmp_path), "1" if sync else "0", api],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # it runs
        assert first
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        returned = [int(x) for x in (first + rest).split()]
        with WalLog(tmp_path) as wal:
            last = wal.last_seq
            assert last is not None
            frames = list(wal.read())
            assert wal.corrupt_count == 0
        assert [f.seq for f in frames] == list(range(last + 1))  # gap-free, in order
        assert all(f.payload == b"p%d" % f.seq for f in frames)
        assert returned[0] <= last + 1  # this run numbered on from the log
        lost.append(max(0, returned[-1] - last))
    print(f"frames lost per crash (wal_sync={sync}, {api}): {lost}")
    if sync:
        assert lost == [0] * CRASHES
    else:
        assert max(lost) <= capacity


# ------------------------------------------------------ durable consumer groups


def _drain(sub: fb.Subscription, timeout: float = 0.5) -> list[int]:
    got: list[int] = []
    while True:
        frames = sub.recv_batch(37, timeout=timeout)
        if not frames:
            return got
        got += [f.seq for f in frames]


def test_group_resumes_after_its_committed_offset(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        sub = bus.subscribe("j.>", group="g")
        bus.publish_batch([b"%d" % i for i in range(100)], topic="j.a")
        for _ in range(50):
            frame = sub.recv(timeout=5)
            assert frame is not None
        sub.commit(frame.seq)  # 0..49 done
        sub.recv(timeout=5)  # 50 read but not committed: it comes again
    with bus_at(tmp_path) as bus:
        bus.publish_batch([b"x"] * 10, topic="j.b")  # 100..109, before the group is back
        bus.publish(b"other", topic="k")  # 110, not the group's topic
        sub = bus.subscribe("j.>", group="g")
        assert sub.retention_lost == 0
        bus.publish_batch([b"y"] * 5, topic="j.c")  # 111..115, live
        got = _drain(sub)
        assert got == list(range(50, 110)) + list(range(111, 116))  # no gap, no duplicate
        sub.commit(115)
    with WalLog(tmp_path) as wal:
        assert wal.committed("g") == 116


def test_members_share_the_backfill(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        sub = bus.subscribe(group="g")
        bus.publish_batch([b"%d" % i for i in range(1000)])
        sub.commit(sub.recv(timeout=5).seq)
    with bus_at(tmp_path) as bus:
        a = bus.subscribe(group="g")
        b = bus.subscribe(group="g")
        bus.publish_batch([b"live"] * 100)
        got_a: list[int] = []
        got_b: list[int] = []
        while True:  # the members take turns
            fa, fb_ = a.recv_batch(50, timeout=0.3), b.recv_batch(50, timeout=0.3)
            if not fa and not fb_:
                break
            got_a += [f.seq for f in fa]
            got_b += [f.seq for f in fb_]
        assert got_a and got_b
        assert sorted(got_a + got_b) == list(range(1, 1100))


def test_group_that_never_committed_starts_live(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        bus.subscribe(group="g")
        bus.publish_batch([b"old"] * 10)
    with bus_at(tmp_path) as bus:
        sub = bus.subscribe(group="g")
        bus.publish(b"new")
        assert _drain(sub) == [10]


def test_commit_moves_forward_only_and_checks_its_input(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        sub = bus.subscribe(group="g")
        sub.commit(10)
        sub.commit(5)
        with pytest.raises(ValueError, match="seq must be an int >= 0"):
            sub.commit(-1)
        with pytest.raises(ValueError, match="seq must be an int >= 0"):
            sub.commit(True)  # type: ignore[arg-type]
        with pytest.raises(fb.FrameBusError, match="commit needs a group subscription"):
            bus.subscribe().commit(1)
    with WalLog(tmp_path) as wal:
        assert wal.committed("g") == 11
    with fb.FrameBus(preset="memory_optimized") as bus:
        with pytest.raises(fb.FrameBusError, match="commit needs a bus with a write-ahead"):
            bus.subscribe(group="g").commit(1)


def test_group_behind_retention_is_told_what_it_lost(tmp_path: Path) -> None:
    with bus_at(tmp_path, wal_max_bytes=100_000) as bus:
        sub = bus.subscribe(group="g")
        bus.publish(b"first")
        sub.commit(sub.recv(timeout=5).seq)  # offset 1
        for _ in range(20):
            bus.publish_batch([b"z" * 1000] * 10)  # 1..200, most of it retained away
            assert bus.flush(30)
        retained_from = bus._wal_writer.wal.retained_from
        assert retained_from > 1
    with bus_at(tmp_path, wal_max_bytes=100_000) as bus:
        sub = bus.subscribe(group="g")
        assert sub.retention_lost == retained_from - 1
        assert _drain(sub) == list(range(retained_from, 201))


def test_closing_a_group_member_mid_backfill(tmp_path: Path) -> None:
    with bus_at(tmp_path) as bus:
        sub = bus.subscribe(group="g")
        bus.publish_batch([b"a"] * 10)
        sub.commit(0)
    with bus_at(tmp_path) as bus:
        sub = bus.subscribe(group="g")
        assert sub.recv(timeout=5).seq == 1
        sub.close()
        with pytest.raises(fb.BusClosed):
            sub.recv(timeout=1)
        with pytest.raises(fb.BusClosed):
            sub.recv_batch(10, timeout=1)


def test_damaged_record_is_skipped_and_reported(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    with bus_at(tmp_path) as bus:
        sub = bus.subscribe(group="g")
        bus.publish_batch([b"%d" % i for i in range(10)])
        sub.commit(sub.recv(timeout=5).seq)  # offset 1
    db = Rdict(
        str(tmp_path),
        Options(raw_mode=True),
        column_families={"meta": Options(raw_mode=True), "groups": Options(raw_mode=True)},
    )
    key = (4).to_bytes(8, "big")
    db[key] = db[key][:-1] + bytes([db[key][-1] ^ 0x55])  # the CRC no longer matches
    db.close()
    with bus_at(tmp_path) as bus:
        assert [f.seq for f in bus.replay()] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
        assert bus.stats()["wal_corrupt"] == 1
        sub = bus.subscribe(group="g")  # the redelivery skips it too
        assert _drain(sub) == [1, 2, 3, 5, 6, 7, 8, 9]


def test_async_write_queue_size_bounds_the_frames_in_flight(tmp_path: Path) -> None:
    # the ring is the WAL's write queue: at most async_write_queue_size frames in it
    with bus_at(tmp_path, async_write_queue_size=100, overflow="error") as bus:
        stuck = bus.subscribe()  # never reads: holds every frame in the ring
        for i in range(100):
            assert bus.publish(b"%d" % i) == i
        assert bus.flush(30)  # the WAL's own cursor is past them
        with pytest.raises(fb.WouldBlock):
            bus.publish(b"one too many")
        assert stuck.recv(0).seq == 0
        assert bus.publish(b"room for one") == 100
    with fb.FrameBus(preset="memory_optimized", async_write_queue_size=100) as bus:
        bus.subscribe()
        bus.publish_batch([b"x"] * 1000)  # without a WAL it does not apply
