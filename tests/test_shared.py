"""The shared-memory bus: create_shared / attach / unlink, frames between processes,
bad attaches, permissions and cleanup."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import stat
import struct

import pytest

import framebus as fb

SHM = "/dev/shm"


def _publisher(name: str, pid: int, count: int, batch: int) -> None:
    bus = fb.FrameBus.attach(name)
    try:
        k = 0
        while k < count:
            n = min(batch, count - k)
            frames = [struct.pack("<II", pid, k + i) for i in range(n)]
            if n == 1:
                bus.publish(frames[0], topic=f"p.{pid}")
            else:
                bus.publish_batch(frames, topic=f"p.{pid}")
            k += n
    finally:
        bus.close()


def _collect(sub: fb.Subscription, count: int) -> list[fb.Frame]:
    got: list[fb.Frame] = []
    while len(got) < count:
        batch = sub.recv_batch(1000, timeout=20)
        assert batch, f"timed out after {len(got)} of {count} frames"
        got.extend(batch)
    return got


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.xproc
def test_frames_cross_processes_in_order(name: str, method: str) -> None:
    count = 20_000
    with fb.FrameBus.create_shared(name, preset="memory_optimized") as bus:
        sub = bus.subscribe("p.>")
        ctx = mp.get_context(method)
        procs = [
            ctx.Process(target=_publisher, args=(name, pid, count, b))
            for pid, b in ((1, 1), (2, 37))
        ]
        for p in procs:
            p.start()
        got = _collect(sub, 2 * count)
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert [f.seq for f in got] == list(range(2 * count))
        for pid in (1, 2):
            mine = [struct.unpack("<II", f.payload) for f in got if f.topic == f"p.{pid}"]
            assert mine == [(pid, k) for k in range(count)]
        assert sub.recv(timeout=0) is None
        assert bus.stats()["published"] == 2 * count


def _subscriber(name: str, filter: str, group: str | None, count: int, out: mp.Queue) -> None:
    bus = fb.FrameBus.attach(name)
    sub = bus.subscribe(filter, group=group)
    out.put("ready")
    got = []
    while len(got) < count:
        batch = sub.recv_batch(500, timeout=20)
        if not batch:
            break
        got.extend(f.payload for f in batch)
    out.put(got)
    bus.close()


@pytest.mark.timeout(120)
@pytest.mark.xproc
def test_subscriber_in_another_process_sees_topics_interned_there(name: str) -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    with fb.FrameBus.create_shared(name, preset="memory_optimized") as bus:
        p = ctx.Process(target=_subscriber, args=(name, "a.*.c", None, 3, out))
        p.start()
        assert out.get(timeout=60) == "ready"
        for topic, payload in [
            ("a.b.c", b"1"),
            ("a.b", b"no"),
            ("a.x.c", b"2"),
            ("z", b"no"),
            ("a.y.c", b"3"),
        ]:
            bus.publish(payload, topic=topic)
        assert out.get(timeout=60) == [b"1", b"2", b"3"]
        p.join(30)
        assert p.exitcode == 0
        assert bus.stats()["readers"] == 0  # the child's close freed its cursor


def test_attach_sees_the_creators_config(name: str) -> None:
    with fb.FrameBus.create_shared(
        name, preset="low_latency", overflow="error", max_frame=4096
    ) as a:
        with fb.FrameBus.attach(name) as b:
            assert b.config == a.config
            assert b.config.overflow == "error" and b.config.max_frame == 4096
            assert b.name == name and b.shared
            sub = a.subscribe()
            seq = b.publish(b"hi", topic="t")
            f = sub.recv(timeout=5)
            assert (f.seq, f.topic, f.payload) == (seq, "t", b"hi")
            with pytest.raises(fb.FrameTooLarge):
                b.publish(b"x" * 4097)


def test_segment_is_mode_0600(name: str) -> None:
    old = os.umask(0)
    try:
        with fb.FrameBus.create_shared(name, preset="memory_optimized"):
            mode = stat.S_IMODE(os.stat(f"{SHM}/framebus.{name}").st_mode)
    finally:
        os.umask(old)
    assert mode == 0o600


def test_attach_missing_segment(name: str) -> None:
    with pytest.raises(FileNotFoundError, match=f"no framebus segment named '{name}'"):
        fb.FrameBus.attach(name)
    with pytest.raises(FileNotFoundError):
        fb.FrameBus.unlink(name)


def test_attach_foreign_file(name: str) -> None:
    with open(f"{SHM}/framebus.{name}", "wb") as f:
        f.write(os.urandom(8192))
    with pytest.raises(fb.FrameBusError, match="is not a framebus segment .no framebus magic"):
        fb.FrameBus.attach(name)


def test_attach_tiny_file(name: str) -> None:
    with open(f"{SHM}/framebus.{name}", "wb") as f:
        f.write(b"abc")
    with pytest.raises(fb.FrameBusError, match="is not a framebus segment: it holds only 3 bytes"):
        fb.FrameBus.attach(name)


def test_attach_other_layout_version(name: str) -> None:
    fb.FrameBus.create_shared(name, preset="memory_optimized").close()
    with open(f"{SHM}/framebus.{name}", "r+b") as f:
        f.seek(8)  # the u32 layout version follows the u64 magic
        f.write(struct.pack("<I", 99))
    with pytest.raises(
        fb.FrameBusError, match="layout version 99; this framebus reads layout version 3"
    ):
        fb.FrameBus.attach(name)


def test_create_existing_name_fails(name: str) -> None:
    with fb.FrameBus.create_shared(name, preset="memory_optimized"):
        with pytest.raises(FileExistsError, match=f"named '{name}' already exists"):
            fb.FrameBus.create_shared(name, preset="memory_optimized")


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "..", "x" * 201])
def test_bad_names(bad: str) -> None:
    with pytest.raises(ValueError, match="shared bus name .* is invalid"):
        fb.FrameBus.create_shared(bad)
    with pytest.raises(ValueError, match="is invalid"):
        fb.FrameBus.attach(bad)


def test_name_must_be_str() -> None:
    with pytest.raises(TypeError, match="name must be a str, not bytes"):
        fb.FrameBus.attach(b"x")  # type: ignore[arg-type]


def test_close_detaches_only_this_handle(name: str) -> None:
    a = fb.FrameBus.create_shared(name, preset="memory_optimized")
    b = fb.FrameBus.attach(name)
    sub_b = b.subscribe()
    b.close()
    with pytest.raises(fb.BusClosed):
        sub_b.recv(timeout=0)
    with pytest.raises(fb.BusClosed):
        b.publish(b"x")
    assert a.stats()["readers"] == 0  # b's subscription was released
    sub_a = a.subscribe()
    a.publish(b"still open")
    assert sub_a.recv(timeout=5).payload == b"still open"
    a.close()


def test_unlink_keeps_attached_processes_working(name: str) -> None:
    with fb.FrameBus.create_shared(name, preset="memory_optimized") as bus:
        sub = bus.subscribe()
        fb.FrameBus.unlink(name)
        assert not os.path.exists(f"{SHM}/framebus.{name}")
        bus.publish(b"after unlink")
        assert sub.recv(timeout=5).payload == b"after unlink"
        with pytest.raises(FileNotFoundError):
            fb.FrameBus.attach(name)


def test_damaged_meta_is_reported(name: str) -> None:
    fb.FrameBus.create_shared(name, preset="memory_optimized").close()
    with open(f"{SHM}/framebus.{name}", "r+b") as f:
        f.seek(2048)
        junk = b"{not json"
        f.write(struct.pack("<I", len(junk)) + junk)
    with pytest.raises(fb.FrameBusError, match="carries an unreadable config"):
        fb.FrameBus.attach(name)


def test_meta_is_json_config(name: str) -> None:
    with fb.FrameBus.create_shared(name, preset="memory_optimized", spin=7):
        with open(f"{SHM}/framebus.{name}", "rb") as f:
            f.seek(2048)
            (n,) = struct.unpack("<I", f.read(4))
            meta = json.loads(f.read(n))
    assert meta["config"]["spin"] == 7


def _idle_subscriber(name: str, out: mp.Queue) -> None:
    bus = fb.FrameBus.attach(name)
    sub = bus.subscribe(">")
    out.put(os.getpid())
    import time

    time.sleep(600)  # holds its cursor without reading until killed
    sub.close()


def _fill(bus: fb.FrameBus, count: int) -> None:
    batch = [b"x" * 8] * 1000
    for _ in range(count // 1000):
        bus.publish_batch(batch)


@pytest.mark.timeout(120)
@pytest.mark.xproc
@pytest.mark.crash
def test_dead_reader_process_is_evicted(name: str) -> None:
    import signal

    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    cfg = fb.BusConfig.preset("memory_optimized", dead_reader_timeout=0.3, publish_timeout=60)
    with fb.FrameBus.create_shared(name, cfg) as bus:
        child = ctx.Process(target=_idle_subscriber, args=(name, out))
        child.start()
        out.get(timeout=60)
        assert bus.stats()["readers"] == 1
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        # more than the ring holds: only the dead cursor's eviction lets this finish
        _fill(bus, 2 * cfg.frame_capacity)
        s = bus.stats()
        assert (s["evicted"], s["readers"]) == (1, 0)
        assert s["published"] == (2 * cfg.frame_capacity // 1000) * 1000


@pytest.mark.timeout(120)
@pytest.mark.xproc
def test_live_idle_reader_is_not_evicted(name: str) -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    cfg = fb.BusConfig.preset("memory_optimized", dead_reader_timeout=0.2, publish_timeout=1.0)
    with fb.FrameBus.create_shared(name, cfg) as bus:
        child = ctx.Process(target=_idle_subscriber, args=(name, out))
        child.start()
        try:
            out.get(timeout=60)
            with pytest.raises(fb.WouldBlock, match="still full after 1 s"):
                _fill(bus, 2 * cfg.frame_capacity)
            assert bus.stats()["evicted"] == 0
            assert bus.stats()["readers"] == 1
        finally:
            child.kill()
            child.join(30)


def test_in_process_bus_never_evicts() -> None:
    with fb.FrameBus(preset="memory_optimized", dead_reader_timeout=0.01) as bus:
        bus.subscribe()
        assert bus._evict_dead() == 0
        assert bus.stats()["evicted"] == 0


def _late_publisher(name: str, count: int) -> None:
    import time

    bus = fb.FrameBus.attach(name)
    time.sleep(0.2)  # the parent is awaiting by now
    for i in range(count):
        bus.publish(i.to_bytes(4, "little"), topic="aio")
    bus.close()


@pytest.mark.timeout(120)
@pytest.mark.xproc
def test_arecv_wakes_on_frames_from_another_process(name: str) -> None:
    import asyncio

    async def consume(sub: fb.Subscription, count: int) -> list[int]:
        got = []
        async for f in sub:
            got.append(int.from_bytes(f.payload, "little"))
            if len(got) == count:
                break
        return got

    ctx = mp.get_context("spawn")
    with fb.FrameBus.create_shared(name, preset="memory_optimized") as bus:
        sub = bus.subscribe("aio")
        p = ctx.Process(target=_late_publisher, args=(name, 500))
        p.start()
        got = asyncio.run(asyncio.wait_for(consume(sub, 500), 60))
        p.join(30)
        assert p.exitcode == 0
    assert got == list(range(500))


def test_framebus_ls_lists_segments(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from framebus.cli import main

    foreign = f"{name}-foreign"
    with open(f"{SHM}/framebus.{foreign}", "wb") as f:
        f.write(b"\0" * 100)
    try:
        with fb.FrameBus.create_shared(name, preset="memory_optimized") as bus:
            sub = bus.subscribe()
            bus.publish_batch([b"a", b"b", b"c"])
            assert main(["ls", "--json"]) == 0
            rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
            mine = rows[name]
            assert (mine["creator_pid"], mine["creator_alive"]) == (os.getpid(), True)
            assert mine["reader_processes"] == [{"pid": os.getpid(), "alive": True}]
            assert (mine["readers"], mine["published"]) == (1, 3)
            assert mine["usage"] > 0
            assert "not a framebus segment" in rows[foreign]["error"]
            assert main(["ls"]) == 0
            table = capsys.readouterr().out
            assert name in table and f"{os.getpid()} (alive)" in table
            sub.close()
    finally:
        os.unlink(f"{SHM}/framebus.{foreign}")


def _create_and_leave(name: str, out: mp.Queue) -> None:
    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    sub = bus.subscribe()  # a cursor that stays in the segment: the process dies with it
    out.put("made")
    import time

    time.sleep(600)
    sub.close()


@pytest.mark.timeout(120)
@pytest.mark.xproc
@pytest.mark.crash
def test_framebus_gc_removes_only_dead_segments(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    from framebus.cli import main

    dead, live = f"{name}-dead", f"{name}-live"
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    child = ctx.Process(target=_create_and_leave, args=(dead, out))
    child.start()
    assert out.get(timeout=60) == "made"
    try:
        with fb.FrameBus.create_shared(live, preset="memory_optimized"):
            assert main(["gc", "--dry-run"]) == 0
            assert "would remove" not in capsys.readouterr().out.replace("nothing", "")
            os.kill(child.pid, signal.SIGKILL)
            child.join(30)
            assert main(["gc", "--dry-run"]) == 0
            assert f"would remove {dead}: no live process holds it" in capsys.readouterr().out
            assert os.path.exists(f"{SHM}/framebus.{dead}")
            assert main(["gc"]) == 0
            printed = capsys.readouterr().out
            assert f"removed {dead}: no live process holds it" in printed
            assert live not in printed
            assert not os.path.exists(f"{SHM}/framebus.{dead}")
            assert os.path.exists(f"{SHM}/framebus.{live}")
    finally:
        child.kill()
        child.join(30)
        for n in (dead, live):
            try:
                fb.FrameBus.unlink(n)
            except FileNotFoundError:
                pass


def test_attachments_are_counted(name: str) -> None:
    with fb.FrameBus.create_shared(name, preset="memory_optimized") as a:
        assert a._attached_alive() == 1
        b = fb.FrameBus.attach(name)
        assert a._attached_alive() == 2
        b.close()
        assert a._attached_alive() == 1


def _idle_group_member(name: str, out: mp.Queue) -> None:
    bus = fb.FrameBus.attach(name)
    subs = [bus.subscribe(">", group="g") for _ in range(2)]  # two members, one process
    out.put(os.getpid())
    import time

    time.sleep(600)
    for sub in subs:
        sub.close()


@pytest.mark.timeout(120)
@pytest.mark.xproc
@pytest.mark.crash
def test_group_of_dead_processes_is_evicted(name: str) -> None:
    import signal

    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    cfg = fb.BusConfig.preset("memory_optimized", dead_reader_timeout=0.3, publish_timeout=60)
    with fb.FrameBus.create_shared(name, cfg) as bus:
        children = [ctx.Process(target=_idle_group_member, args=(name, out)) for _ in range(2)]
        for child in children:
            child.start()
        pids = {out.get(timeout=60) for _ in children}
        assert len(pids) == 2
        info = bus._reader_info(0)
        assert (info["active"], info["members"]) == (1, 4)
        for child in children:
            os.kill(child.pid, signal.SIGKILL)
            child.join(30)
        _fill(bus, 2 * cfg.frame_capacity)
        s = bus.stats()
        assert (s["evicted"], s["readers"]) == (1, 0)


@pytest.mark.timeout(120)
@pytest.mark.xproc
@pytest.mark.crash
def test_group_with_a_live_member_is_not_evicted(name: str) -> None:
    import signal

    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    cfg = fb.BusConfig.preset("memory_optimized", dead_reader_timeout=0.2, publish_timeout=1.0)
    with fb.FrameBus.create_shared(name, cfg) as bus:
        mine = bus.subscribe(">", group="g")
        child = ctx.Process(target=_idle_group_member, args=(name, out))
        child.start()
        out.get(timeout=60)
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        with pytest.raises(fb.WouldBlock, match="still full after 1 s"):
            _fill(bus, 2 * cfg.frame_capacity)
        s = bus.stats()
        assert (s["evicted"], s["readers"]) == (0, 1)
        # the live member still reads every frame from where the group was
        assert mine.recv(0).seq == 0


def _pause_then_resume(name: str, paused: mp.Event, go: mp.Event) -> None:
    bus = fb.FrameBus.attach(name)
    sub = bus.subscribe(">")
    while not bus.paused:
        bus.publish(b"x" * 64)
    paused.set()
    assert go.wait(60)
    while sub.recv(0) is not None:
        pass
    assert not bus.paused
    bus.close()


@pytest.mark.timeout(120)
@pytest.mark.xproc
def test_callbacks_fire_for_other_processes_transitions(name: str) -> None:
    import threading

    ctx = mp.get_context("spawn")
    paused, go = ctx.Event(), ctx.Event()
    cfg = fb.BusConfig.preset("memory_optimized", ring_bytes=1 << 16, max_frame=1024)
    with fb.FrameBus.create_shared(name, cfg) as bus:
        events: list[tuple[str, str]] = []
        fired = {"pause": threading.Event(), "resume": threading.Event()}

        def record(kind: str) -> None:
            events.append((kind, threading.current_thread().name))
            fired[kind].set()

        bus.on_pause(lambda: record("pause"))
        bus.on_resume(lambda: record("resume"))
        child = ctx.Process(target=_pause_then_resume, args=(name, paused, go))
        child.start()
        try:
            assert paused.wait(60)
            assert fired["pause"].wait(10), "on_pause did not fire for the child's pause"
            assert bus.paused
            go.set()
            assert fired["resume"].wait(10), "on_resume did not fire for the child's resume"
            child.join(60)
            assert child.exitcode == 0
        finally:
            go.set()
            child.join(30)
        assert events == [("pause", "framebus-transitions"), ("resume", "framebus-transitions")]
        s = bus.stats()
        assert (s["pause_events"], s["resume_events"]) == (1, 1)
        watcher = bus._watcher
        assert watcher is not None and watcher.is_alive()
    watcher.join(5)
    assert not watcher.is_alive()  # close stopped it


def test_framebus_gc_removes_spill_files_of_vanished_queues(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from framebus.cli import main

    live, gone = f"{name}-q", f"{name}-gone"
    kept, orphan = f"{SHM}/framebus-spill.{live}.1.0", f"{SHM}/framebus-spill.{gone}.1.7"
    with fb.FrameBus.create_shared(live, preset="memory_optimized"):
        try:
            for path in (kept, orphan):
                with open(path, "wb") as f:
                    f.write(b"pickle")
            assert main(["gc", "--dry-run"]) == 0
            printed = capsys.readouterr().out
            assert (
                f"would remove framebus-spill.{gone}.1.7: spill file of queue {gone!r}" in printed
            )
            assert os.path.exists(orphan)
            assert main(["gc"]) == 0
            printed = capsys.readouterr().out
            assert f"removed framebus-spill.{gone}.1.7" in printed
            assert live not in printed
            assert not os.path.exists(orphan)
            assert os.path.exists(kept)
        finally:
            for path in (kept, orphan):
                if os.path.exists(path):
                    os.unlink(path)
    fb.FrameBus.unlink(live)


def test_create_larger_than_dev_shm_raises_enospc(name: str) -> None:
    import errno

    st = os.statvfs(SHM)
    free = st.f_bavail * st.f_frsize
    size = 1 << free.bit_length()  # the next power of two above what is free
    if size > 1 << 40:
        pytest.skip(f"{SHM} has more free space than the largest ring")
    with pytest.raises(OSError, match=r"cannot reserve \d+ bytes of /dev/shm") as info:
        fb.FrameBus.create_shared(name, preset="memory_optimized", ring_bytes=size)
    assert info.value.errno == errno.ENOSPC
    assert not os.path.exists(f"{SHM}/framebus.{name}")
