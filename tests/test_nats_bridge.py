"""framebus.bridge.nats against a real nats-server (tests/nats_support.py): envelopes in
both directions with every field, wildcards, loop prevention, a NATS restart and a
bridge SIGKILL in the middle of a stream with nothing lost, errors and metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from nats_support import (
    NatsServer,
    free_port,
    no_bridge_threads,
    run,
    serve,
    stream_messages,
    wait_for,
)
from prometheus_client import CollectorRegistry, generate_latest

import framebus as fb
from framebus.bridge import nats as fbn
from framebus.bridge.nats import ORIGIN_HEADER, BridgeError, NatsBridge

# FRAMEBUS_NATS_FRAMES: frames of the NATS-restart test (CI default 20 000; 100 000 for
# the full run)
STRESS = int(os.environ.get("FRAMEBUS_NATS_FRAMES", "20000"))
CRASH_FRAMES = max(STRESS // 4, 1000)  # frames of the bridge-SIGKILL test
WORKERS = Path(__file__).resolve().parent / "nats_workers.py"

FULL = dict(
    src="cam-a",
    dst="store",
    corr_id=2**64 - 1,
    deadline_ns=1_900_000_000_000_000_000,
    priority=-7,
    content_type="image/raw",
    schema_ver=3,
    headers={"k": [1, "two", b"3"], "n": 4},
)

# every test here starts a nats-server process
pytestmark = pytest.mark.xproc


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from serve(tmp_path)


@pytest.fixture(autouse=True)
def _nothing_left_behind() -> Any:
    yield
    assert wait_for(no_bridge_threads, 10), "a bridge thread is still running"


def recv_envelopes(sub: fb.Subscription, n: int, timeout: float = 20.0) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(sub.recv_batch(n - len(out), timeout=0.1))
    return out


def test_export_carries_every_envelope_field(nats_server: NatsServer) -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        with NatsBridge(bus, servers=[nats_server.url], export=["sensors.>"], durable="a"):
            env = fb.Envelope(topic="sensors.t1", payload=b"\x00\xffpix", **FULL)
            bus.publish(env)
            bus.publish(b"plain bytes", topic="sensors.t2")
            msgs = run(stream_messages(nats_server.url, "FRAMEBUS", expect=2))
    assert [m.subject for m in msgs] == ["sensors.t1", "sensors.t2"]
    got = fb.Envelope.decode(msgs[0].data)
    assert got == env
    assert fb.Envelope.decode(msgs[1].data) == fb.Envelope(
        topic="sensors.t2", payload=b"plain bytes"
    )
    assert msgs[0].headers["Framebus-Origin"] == "a"
    assert msgs[0].headers["Nats-Msg-Id"] != msgs[1].headers["Nats-Msg-Id"]


def test_import_carries_every_envelope_field(nats_server: NatsServer) -> None:
    env = fb.Envelope(topic="cmd.reload", payload=b"now", **FULL)

    async def publish() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.publish("cmd.reload", env.encode())
        await js.publish("cmd.raw", b"not an envelope")
        await nc.close()

    with fb.FrameBus(preset="memory_optimized") as bus:
        sub = bus.subscribe("cmd.>", envelopes=True)
        with NatsBridge(bus, servers=[nats_server.url], import_=["cmd.>"], durable="b") as br:
            run(publish())
            got = recv_envelopes(sub, 2)
            assert wait_for(lambda: br.stats()["frames_in"] == 2, 10)
    assert got[0] == env.replace(headers={**env.headers, ORIGIN_HEADER: "nats"})
    assert got[1] == fb.Envelope(
        topic="cmd.raw", payload=b"not an envelope", headers={ORIGIN_HEADER: "nats"}
    )


def test_wildcards_and_reserved_topics(nats_server: NatsServer) -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        with NatsBridge(bus, servers=[nats_server.url], export=["s.*.temp", "logs.>"], durable="w"):
            for topic in ["s.a.temp", "s.a.hum", "s.a.b.temp", "logs.x.y", "logs", "other"]:
                bus.publish(topic.encode(), topic=topic)
            bus.events.publish("logs.ev", 1)  # the EventBus's own topics never leave
            bus.publish(b"end", topic="logs.end")
            msgs = run(stream_messages(nats_server.url, "FRAMEBUS", expect=3))
    assert [m.subject for m in msgs] == ["s.a.temp", "logs.x.y", "logs.end"]


def test_request_reply_shaped_round_trip_between_two_buses(nats_server: NatsServer) -> None:
    # bus A exports q.>, imports r.>; bus B the other way round; B answers A's frames
    with fb.FrameBus(preset="memory_optimized") as a, fb.FrameBus(preset="memory_optimized") as b:
        a_in = a.subscribe("r.>", envelopes=True)
        b_in = b.subscribe("q.>", envelopes=True)
        url = [nats_server.url]
        with (
            NatsBridge(a, url, export=["q.>"], import_=["r.>"], durable="A"),
            NatsBridge(b, url, export=["r.>"], import_=["q.>"], durable="B"),
        ):
            for i in range(50):
                a.publish(fb.Envelope(topic=f"q.{i % 3}", payload=b"%d" % i, corr_id=i))
            asks = recv_envelopes(b_in, 50)
            for e in asks:
                b.publish(
                    fb.Envelope(topic="r." + e.topic[2:], payload=e.payload * 2, corr_id=e.corr_id)
                )
            answers = recv_envelopes(a_in, 50)
    assert sorted(e.corr_id for e in asks) == list(range(50))
    assert sorted((e.corr_id, e.payload) for e in answers) == [
        (i, b"%d" % i * 2) for i in range(50)
    ]
    assert all(e.headers[ORIGIN_HEADER] == "B" for e in answers)


def test_loops_are_prevented(nats_server: NatsServer) -> None:
    # both buses export and import the same subjects: every frame reaches the other bus
    # once and never comes back
    with fb.FrameBus(preset="memory_optimized") as a, fb.FrameBus(preset="memory_optimized") as b:
        a_all = a.subscribe("x.>")
        b_all = b.subscribe("x.>")
        url = [nats_server.url]
        with (
            NatsBridge(a, url, export=["x.>"], import_=["x.>"], durable="la") as ba,
            NatsBridge(b, url, export=["x.>"], import_=["x.>"], durable="lb") as bb,
        ):
            for i in range(20):
                a.publish(b"a%d" % i, topic="x.a")
                b.publish(b"b%d" % i, topic="x.b")
            got_a = recv_envelopes(a_all, 40)
            got_b = recv_envelopes(b_all, 40)
            assert wait_for(
                lambda: ba.stats()["loops_prevented"] >= 40 and bb.stats()["loops_prevented"] >= 40
            )
            time.sleep(0.5)  # a frame going round again would arrive by now
            assert a_all.recv_batch(100, timeout=0) == []
            assert b_all.recv_batch(100, timeout=0) == []
            msgs = run(stream_messages(url[0], "FRAMEBUS"))
    assert len(got_a) == len(got_b) == 40
    assert len(msgs) == 40  # each frame stored once
    for s in (ba.stats(), bb.stats()):
        assert (s["frames_out"], s["frames_in"], s["loops_prevented"]) == (20, 20, 40)


def check_stream(msgs: list[Any], total: int) -> None:
    """Every seq 0..total-1 stored exactly once, in order per topic."""
    ids = [int(m.data and fb.Envelope.decode(m.data).payload) for m in msgs]
    assert len(ids) == total, f"{len(ids)} stored, {total} published"
    assert sorted(ids) == list(range(total))
    per_topic: dict[str, list[int]] = {}
    for m, i in zip(msgs, ids, strict=True):
        per_topic.setdefault(m.subject, []).append(i)
    for seqs in per_topic.values():
        assert seqs == sorted(seqs)


@pytest.mark.crash
def test_nats_server_restart_loses_nothing(nats_server: NatsServer) -> None:
    total = STRESS

    async def command(i: int) -> None:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().publish("cmd.x", b"%d" % i)
        await nc.close()

    with fb.FrameBus(preset="memory_optimized") as bus:
        inbox = bus.subscribe("cmd.>", envelopes=True)
        with NatsBridge(
            bus, [nats_server.url], export=["load.>"], import_=["cmd.>"], durable="r", backoff=0.05
        ) as br:
            run(command(0))
            assert [e.payload for e in recv_envelopes(inbox, 1)] == [b"0"]

            last: list[int] = []  # the seq of the last frame (an import took seq 0)

            def produce() -> None:
                for start in range(0, total, 100):
                    n = min(100, total - start)
                    first = bus.publish_batch(
                        [b"%d" % (start + i) for i in range(n)], topic=f"load.{start // 100 % 3}"
                    )
                    last[:] = [first + n - 1]

            producer = threading.Thread(target=produce, name="fb-test-producer")
            producer.start()
            try:
                assert wait_for(lambda: br.stats()["frames_out"] >= total // 3, 60)
                nats_server.kill()  # SIGKILL in the middle of the stream
                assert wait_for(lambda: br.stats()["errors"]["transient"] >= 1, 30)
                nats_server.start()
            finally:
                producer.join(120)
            assert not producer.is_alive()
            assert wait_for(lambda: br.stats()["exported_through"] == last, 120)
            run(command(1))  # imports go on too, through the durable consumer
            assert [e.payload for e in recv_envelopes(inbox, 1)] == [b"1"]
            s = br.stats()
    msgs = run(stream_messages(nats_server.url, "FRAMEBUS", "load.>", expect=total), 120)
    check_stream(msgs, total)
    assert s["reconnects"] >= 1 and s["acks_pending"] == 0
    # every frame acknowledged once; resends of frames JetStream had stored (their ack
    # lost with the server) are acknowledged as duplicates, and not stored again
    assert s["frames_out"] == total
    assert 0 <= s["duplicates"] <= total


@pytest.mark.crash
def test_bridge_sigkill_resends_from_the_wal(nats_server: NatsServer, tmp_path: Path) -> None:
    total = CRASH_FRAMES
    wal = str(tmp_path / "wal")
    cmd = [sys.executable, str(WORKERS), "export", wal, nats_server.url, str(total), "crash"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith("started 0")

        async def stored() -> int:
            nc = await nats.connect(nats_server.url)
            try:
                try:
                    info = await nc.jetstream().stream_info("FRAMEBUS")
                except nats.js.errors.NotFoundError:
                    return 0
                return int(info.state.messages)
            finally:
                await nc.close()

        assert wait_for(lambda: run(stored()) >= total // 3, 60, 0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        killed_at = run(stored())
        assert killed_at < total  # killed mid-stream
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().startswith("started ")
        assert child.stdout.readline() == "done\n"
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    msgs = run(stream_messages(nats_server.url, "FRAMEBUS", expect=total), 60)
    check_stream(msgs, total)


def test_bad_server_address_fails_clearly(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nobody listens there
    with fb.FrameBus(preset="memory_optimized") as bus:
        with pytest.raises(BridgeError) as info:
            NatsBridge(bus, [url], export=["a.>"], connect_timeout=1.0)
    assert info.value.error_class == "transient"
    assert url in str(info.value) and "could not start" in str(info.value)
    assert "Connect call failed" in str(info.value)  # the cause, not just "no servers"
    with fb.FrameBus(preset="memory_optimized") as bus:
        with pytest.raises(ValueError, match="durable"):
            NatsBridge(bus, [url], export=["a"], durable="no.dots", start=False)
        with pytest.raises(ValueError, match="nothing to bridge"):
            NatsBridge(bus, [url], durable="x", start=False)


def test_stream_overlap_is_a_configuration_error(nats_server: NatsServer) -> None:
    async def other_stream() -> None:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(name="OTHER", subjects=["taken.>"])
        await nc.close()

    run(other_stream())
    with fb.FrameBus(preset="memory_optimized") as bus:
        with pytest.raises(BridgeError) as info:
            NatsBridge(bus, [nats_server.url], export=["taken.x"], durable="c")
    assert info.value.error_class == "configuration"
    assert "overlap" in str(info.value)


def test_shared_bus_stats_and_metrics(nats_server: NatsServer, name: str) -> None:
    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    other = fb.FrameBus.attach(name)
    try:
        inbox = other.subscribe("back.>", envelopes=True)
        registry = CollectorRegistry()
        with NatsBridge(
            bus, [nats_server.url], export=["out.>"], import_=["back.>"], durable="m"
        ) as br:
            fbn.register(br, registry)
            for i in range(10):
                other.publish(b"%d" % i, topic="out.x")  # published by another handle

            async def answer() -> None:
                nc = await nats.connect(nats_server.url)
                js = nc.jetstream()
                for i in range(5):
                    await js.publish("back.y", b"%d" % i)
                await nc.close()

            assert wait_for(lambda: br.stats()["frames_out"] == 10)
            run(answer())
            got = recv_envelopes(inbox, 5)
            assert wait_for(lambda: br.stats()["frames_in"] == 5)
            text = generate_latest(registry).decode()
            s = br.stats()
        assert [e.payload for e in got] == [b"%d" % i for i in range(5)]
        assert 'framebus_bridge_frames_out_total{bridge="m"} 10.0' in text
        assert 'framebus_bridge_frames_in_total{bridge="m"} 5.0' in text
        assert 'framebus_bridge_errors_total{bridge="m",class="transient"} 0.0' in text
        assert 'framebus_bridge_connected{bridge="m"} 1.0' in text
        assert (s["acks_pending"], s["errors"], s["state"]) == (
            0,
            {"transient": 0, "permanent": 0, "configuration": 0},
            "connected",
        )
        assert "framebus_bridge_frames_out_total{" not in generate_latest(registry).decode()
    finally:
        other.close()
        bus.close()


def test_refused_frames_are_permanent_errors_and_skipped(nats_server: NatsServer) -> None:
    async def small_stream() -> None:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(name="FRAMEBUS", subjects=["big.>"], max_msg_size=4096)
        await nc.close()

    run(small_stream())
    # nats-server's max_payload is 1 MiB; the stream takes 4 KiB; the bus 64 KiB frames
    with fb.FrameBus(preset="memory_optimized", max_frame=4 << 20, ring_bytes=32 << 20) as bus:
        inbox = bus.subscribe("big.in.>", envelopes=True)
        with NatsBridge(
            bus, [nats_server.url], export=["big.out.>"], import_=["big.in.>"], durable="p"
        ) as br:
            bus.publish(b"a", topic="big.out.a")
            bus.publish(b"x" * (2 << 20), topic="big.out.b")  # over max_payload
            bus.publish(b"y" * 10_000, topic="big.out.c")  # over the stream's max_msg_size
            bus.publish(b"d", topic="big.out.d")
            assert wait_for(lambda: br.stats()["exported_through"] == [3])
            s = br.stats()
            assert s["errors"]["permanent"] == 2
            assert "message size exceeds maximum allowed" in s["last_error"]
        msgs = run(stream_messages(nats_server.url, "FRAMEBUS", expect=2))
        assert [m.subject for m in msgs] == ["big.out.a", "big.out.d"]
        assert (s["frames_out"], s["frames_skipped"]) == (2, 2)
        assert s["errors"]["transient"] == s["errors"]["configuration"] == 0
        assert inbox.recv(timeout=0) is None


def test_imported_message_too_large_for_the_bus_is_skipped(nats_server: NatsServer) -> None:
    async def publish() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        for data in (b"first", b"z" * 4000, b"last"):
            await js.publish("in.x", data)
        await nc.close()

    with fb.FrameBus(preset="memory_optimized", max_frame=1024) as bus:
        inbox = bus.subscribe("in.>", envelopes=True)
        with NatsBridge(bus, [nats_server.url], import_=["in.>"], durable="q") as br:
            run(publish())
            got = recv_envelopes(inbox, 2)
            assert wait_for(lambda: br.stats()["frames_in"] == 2)
            s = br.stats()
    assert [e.payload for e in got] == [b"first", b"last"]
    assert (s["frames_in"], s["errors"]["permanent"], s["errors"]["transient"]) == (2, 1, 0)


def test_a_closed_bus_stops_the_bridge(nats_server: NatsServer) -> None:
    bus = fb.FrameBus(preset="memory_optimized")
    br = NatsBridge(bus, [nats_server.url], export=["a.>"], import_=["b.>"], durable="z")
    try:
        bus.close()
        assert wait_for(lambda: br.stats()["state"] == "bus closed", 10)
    finally:
        br.close()
    assert br.stats()["state"] == "closed"


def test_default_durable_name(name: str) -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        assert NatsBridge(bus, export=["a"], start=False).durable == "framebus"
    bus = fb.FrameBus.create_shared(name + ".cam.0", preset="memory_optimized")
    try:
        br = NatsBridge(bus, export=["a"], start=False)
        assert br.durable == (name + ".cam.0").replace(".", "_")
        br.close()
        assert br.stats()["state"] == "closed"
    finally:
        bus.close()
        fb.FrameBus.unlink(name + ".cam.0")


def test_resent_frames_are_deduplicated_and_counted(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # as if a bridge had died after JetStream stored frames 0..4 and before its group
    # committed them: they come again with the same message ids and are not stored twice
    async def stored_before() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(name="FRAMEBUS", subjects=["d.>"])
        for seq in range(5):
            env = fb.Envelope(topic="d.x", payload=b"%d" % seq)
            await js.publish("d.x", env.encode(), headers={"Nats-Msg-Id": f"dd:{seq}"})
        await nc.close()

    run(stored_before())
    with fb.FrameBus(preset="memory_optimized", wal_dir=str(tmp_path / "wal")) as bus:
        with NatsBridge(bus, [nats_server.url], export=["d.>"], durable="dd") as br:
            bus.publish_batch([b"%d" % i for i in range(10)], topic="d.x")  # seqs 0..9
            assert wait_for(lambda: br.stats()["exported_through"] == [9])
            s = br.stats()
    msgs = run(stream_messages(nats_server.url, "FRAMEBUS", expect=10))
    check_stream(msgs, 10)
    assert (s["frames_out"], s["duplicates"]) == (10, 5)


def test_imports_wait_in_the_durable_consumer_while_the_bridge_is_down(
    nats_server: NatsServer,
) -> None:
    async def publish(first: int, n: int) -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        for i in range(first, first + n):
            await js.publish("cmd.x", b"%d" % i)
        await nc.close()

    with fb.FrameBus(preset="memory_optimized") as bus:
        inbox = bus.subscribe("cmd.>", envelopes=True)
        with NatsBridge(bus, [nats_server.url], import_=["cmd.>"], durable="in"):
            run(publish(0, 10))
            got = recv_envelopes(inbox, 10)
        run(publish(10, 10))  # nobody bridges these now: the consumer keeps them
        assert inbox.recv(timeout=0.2) is None
        with NatsBridge(bus, [nats_server.url], import_=["cmd.>"], durable="in") as br:
            got += recv_envelopes(inbox, 10)
            assert wait_for(lambda: br.stats()["frames_in"] == 10)
    assert [e.payload for e in got] == [b"%d" % i for i in range(20)]
