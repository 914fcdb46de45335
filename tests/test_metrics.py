"""framebus.metrics: scraped over real HTTP and parsed with prometheus_client's parser;
and the ``framebus stats`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

import framebus as fb
from framebus import metrics
from framebus.cli import main

ROOT = Path(__file__).resolve().parents[1]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[metrics.MetricsServer]:
    srv = metrics.serve(0, registry=registry)  # port 0: a free port
    yield srv
    srv.close()
    assert not srv.thread.is_alive()


def scrape(srv: metrics.MetricsServer) -> Samples:
    assert srv.address == "127.0.0.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("framebus_"):
            continue  # the default registry also has python_* and process_*
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def val(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_counters_equal_what_was_published(make_bus, registry, server) -> None:
    bus = make_bus(preset="memory_optimized")
    sub = bus.subscribe("a.>")
    grp = bus.subscribe("a.>", group="workers")
    grp2 = bus.subscribe("a.>", group="workers")  # same cursor: one series
    assert metrics.register(bus, registry) is metrics.register(make_bus(), registry)
    for _ in range(123):
        bus.publish(b"0123456789", topic="a.b")
    assert len(sub.recv_batch(23, timeout=1)) == 23
    assert len(grp.recv_batch(100, timeout=1)) == 100

    s = scrape(server)
    assert val(s, "framebus_published_frames_total", bus="bus0") == 123
    assert val(s, "framebus_published_bytes_total", bus="bus0") == 1230
    assert val(s, "framebus_dropped_frames_total", bus="bus0", reason="overflow") == 0
    assert val(s, "framebus_ring_used_frames", bus="bus0") == 100  # sub is furthest behind
    assert val(s, "framebus_ring_used_bytes", bus="bus0") == 100 * (32 + 16)
    assert val(s, "framebus_ring_capacity_frames", bus="bus0") == bus.config.frame_capacity
    assert val(s, "framebus_ring_capacity_bytes", bus="bus0") == bus.stats()["capacity_bytes"]
    assert val(s, "framebus_paused", bus="bus0") == 0
    assert val(s, "framebus_readers", bus="bus0") == 2
    assert val(s, "framebus_topics", bus="bus0") == 1
    back = "framebus_subscription_backlog_frames"
    assert val(s, back, bus="bus0", filter="a.>", group="") == 100
    assert val(s, back, bus="bus0", filter="a.>", group="workers") == 23
    lag = "framebus_subscription_lagged_frames_total"
    assert val(s, lag, bus="bus0", filter="a.>", group="workers") == 0
    # the second bus: registered, nothing published, no subscriptions
    assert val(s, "framebus_published_frames_total", bus="bus1") == 0
    assert not any(dict(labels).get("bus") == "bus1" for n, labels in s if n == back)
    assert not any(n.startswith("framebus_wal_") for n in names(s))  # no WAL
    grp2.close()

    # read at scrape time: the next scrape sees the new counters
    bus.publish_batch([b"xy"] * 7, topic="a.c")
    s = scrape(server)
    assert val(s, "framebus_published_frames_total", bus="bus0") == 130
    assert val(s, "framebus_published_bytes_total", bus="bus0") == 1244
    assert val(s, back, bus="bus0", filter="a.>", group="") == 107
    assert val(s, "framebus_topics", bus="bus0") == 2


def test_pause_transitions_and_paused(small_bus, registry, server) -> None:
    bus = small_bus(overflow="drop")
    sub = bus.subscribe()
    metrics.register(bus, registry, name="small")
    for _ in range(512):  # pause_hi 0.5 of 1024 frames
        bus.publish(b"p")
    s = scrape(server)
    assert val(s, "framebus_paused", bus="small") == 1
    assert val(s, "framebus_pause_transitions_total", bus="small", direction="pause") == 1
    assert val(s, "framebus_pause_transitions_total", bus="small", direction="resume") == 0
    assert val(s, "framebus_subscription_backlog_frames", bus="small", filter=">", group="") == 512
    assert len(sub.recv_batch(512, timeout=1)) == 512  # down to resume_lo
    s = scrape(server)
    assert val(s, "framebus_paused", bus="small") == 0
    assert val(s, "framebus_pause_transitions_total", bus="small", direction="resume") == 1
    assert val(s, "framebus_subscription_backlog_frames", bus="small", filter=">", group="") == 0


def test_dropped_in_drop_mode(small_bus, registry, server) -> None:
    bus = small_bus(overflow="drop", backpressure_threshold=0.9, pause_hi=0.85, resume_lo=0.7)
    sub = bus.subscribe()  # kept: a dropped subscription closes and holds nothing back
    metrics.register(bus, registry)
    published = 0
    while bus.publish(b"d") != -1 and published < 2000:
        published += 1
    for _ in range(9):
        assert bus.publish(b"d") == -1
    s = scrape(server)
    assert val(s, "framebus_published_frames_total", bus="bus0") == published == 921
    assert val(s, "framebus_dropped_frames_total", bus="bus0", reason="overflow") == 10
    assert val(s, "framebus_subscription_backlog_frames", bus="bus0", filter=">", group="") == 921
    sub.close()


def test_lapped_in_overwrite_mode(small_bus, registry, server) -> None:
    bus = small_bus(overflow="overwrite")
    sub = bus.subscribe("t")
    metrics.register(bus, registry)
    for _ in range(3000):  # about three times round the 1024-frame ring
        bus.publish(b"o", topic="t")
    assert sub.recv(timeout=1) is not None
    assert sub.lagged > 0
    st = bus.stats()
    s = scrape(server)
    assert val(s, "framebus_lapped_readers_total", bus="bus0") == st["lapped"] >= 1
    lag = "framebus_subscription_lagged_frames_total"
    assert val(s, lag, bus="bus0", filter="t", group="") == sub.lagged


def test_wal_metrics(tmp_path, registry, server) -> None:
    with fb.FrameBus(preset="memory_optimized", wal_dir=str(tmp_path / "wal")) as bus:
        metrics.register(bus, registry)
        for _ in range(50):
            bus.publish(b"w" * 10, topic="w")
        assert bus.flush(timeout=10)
        s = scrape(server)
        assert val(s, "framebus_wal_durable_seq", bus="bus0") == 49
        assert val(s, "framebus_wal_lag_frames", bus="bus0") == 0
        assert val(s, "framebus_wal_degraded", bus="bus0") == 0
        assert val(s, "framebus_wal_corrupt_records_total", bus="bus0") == 0
        assert val(s, "framebus_wal_bytes", bus="bus0") == bus.stats()["wal_bytes"] > 0


def test_batch_and_wal_histograms(tmp_path, registry, server) -> None:
    with fb.FrameBus(preset="memory_optimized", wal_dir=str(tmp_path / "wal")) as bus:
        metrics.register(bus, registry)
        for n in (1, 3, 4, 100):  # payload bytes: 10, 30, 40, 1000
            bus.publish_batch([b"0123456789"] * n, topic="h")
        assert bus.flush(timeout=10)
        s = scrape(server)
        size = "framebus_batch_size_frames_bucket"
        # bounds are powers of four
        assert val(s, size, bus="bus0", le="1.0") == 1
        assert val(s, size, bus="bus0", le="4.0") == 3
        assert val(s, size, bus="bus0", le="16.0") == 3
        assert val(s, size, bus="bus0", le="64.0") == 3
        assert val(s, size, bus="bus0", le="256.0") == 4
        assert val(s, size, bus="bus0", le="+Inf") == 4
        assert ("framebus_batch_size_frames_bucket", (("bus", "bus0"), ("le", "2.0"))) not in s
        assert val(s, "framebus_batch_size_frames_count", bus="bus0") == 4
        assert val(s, "framebus_batch_size_frames_sum", bus="bus0") == 108
        mem = "framebus_batch_memory_bytes_bucket"
        assert val(s, mem, bus="bus0", le="64.0") == 3  # 10, 30, 40 bytes
        assert val(s, mem, bus="bus0", le="1024.0") == 4
        assert val(s, "framebus_batch_memory_bytes_sum", bus="bus0") == 1080
        assert val(s, "framebus_batch_send_seconds_count", bus="bus0") == 4
        assert val(s, "framebus_batch_send_seconds_sum", bus="bus0") > 0
        # the WAL writer's batches hold every frame once
        assert val(s, "framebus_wal_batch_frames_sum", bus="bus0") == 108
        flushes = val(s, "framebus_wal_flush_seconds_count", bus="bus0")
        assert flushes == val(s, "framebus_wal_batch_frames_count", bus="bus0") >= 1
        assert val(s, "framebus_wal_flush_seconds_bucket", bus="bus0", le="+Inf") == flushes


def test_flow_layer_metrics(make_bus, registry, server) -> None:
    import time

    bus = make_bus(preset="memory_optimized")
    metrics.register(bus, registry)
    s = scrape(server)
    # nothing observed yet: no histogram series
    assert not any(n.startswith("framebus_batch_") for n in names(s))
    tx = bus.data_port("cam", window=3)
    rx = bus.data_port("cam", window=3)
    rx.recv(timeout=0)
    for i in range(3):
        tx.send_frame(b"%d" % i)
    with pytest.raises(fb.WouldBlock):
        tx.send_frame(b"no credit")
    assert len(rx.recv_batch(2, timeout=1)) == 2
    late = bus.subscribe("late", envelopes=True)
    bus.publish(fb.Envelope("late", b"x", deadline_ns=time.time_ns() - 1))
    assert late.recv(timeout=1).deadline_missed
    ev = bus.events
    ev.subscribe("svc.echo", lambda m: m)
    assert ev.request("svc.echo", 5, timeout=10) == 5
    with pytest.raises(fb.NoResponders):
        ev.request("svc.none", 1)
    ev.subscribe("svc.mute", lambda m: None)
    with pytest.raises(fb.RequestTimeout):
        ev.request("svc.mute", 1, timeout=0.05)

    s = scrape(server)
    port = dict(bus="bus0", port="cam")
    assert val(s, "framebus_dataport_credits", **port) == 2  # granted back for 2 consumed
    assert val(s, "framebus_dataport_held_credits", **port) == 0
    assert val(s, "framebus_dataport_sent_frames_total", **port) == 3
    assert val(s, "framebus_dataport_received_frames_total", **port) == 2
    assert val(s, "framebus_dataport_would_block_total", **port) == 1
    assert val(s, "framebus_dataport_callback_errors_total", **port) == 0
    assert val(s, "framebus_deadline_misses_total", bus="bus0") == 1
    assert val(s, "framebus_eventbus_requests_total", bus="bus0") == 2  # sent: not svc.none
    assert val(s, "framebus_eventbus_timeouts_total", bus="bus0") == 1
    assert val(s, "framebus_eventbus_no_responders_total", bus="bus0") == 1
    assert val(s, "framebus_eventbus_replies_total", bus="bus0") == 1


def test_register_twice_and_unregister(make_bus, registry, server) -> None:
    bus = make_bus()
    other = make_bus()
    collector = metrics.register(bus, registry)
    with pytest.raises(ValueError, match="already registered"):
        metrics.register(bus, registry)
    with pytest.raises(ValueError, match="'bus0' is already registered"):
        metrics.register(other, registry, name="bus0")
    with pytest.raises(TypeError):
        metrics.register(object(), registry)  # type: ignore[arg-type]
    assert len(collector) == 1
    assert names(scrape(server))
    metrics.unregister(bus, registry)
    assert scrape(server) == {}
    with pytest.raises(ValueError, match="not registered"):
        metrics.unregister(bus, registry)
    # registered again: a new default label (labels are never reused)
    metrics.register(bus, registry)
    assert ("framebus_published_frames_total", (("bus", "bus1"),)) in scrape(server)


def test_closed_or_dropped_bus_disappears(registry, server) -> None:
    a = fb.FrameBus(preset="memory_optimized")
    b = fb.FrameBus(preset="memory_optimized")
    metrics.register(a, registry)
    metrics.register(b, registry)
    a.publish(b"x")
    buses = {dict(labels)["bus"] for n, labels in scrape(server)}
    assert buses == {"bus0", "bus1"}
    a.close()
    s = scrape(server)
    assert {dict(labels)["bus"] for n, labels in s} == {"bus1"}
    metrics.unregister(a, registry)  # still allowed after close
    b.close()
    assert scrape(server) == {}
    del b  # a garbage-collected bus leaves the collector
    import gc

    gc.collect()
    assert len(metrics.register(a, registry)) == 1
    assert scrape(server) == {}  # a is closed


def test_shared_bus_label_and_default_registry() -> None:
    from prometheus_client import REGISTRY

    name = f"mt-{uuid.uuid4().hex[:10]}"
    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    srv = metrics.serve(0)  # default registry
    try:
        metrics.register(bus)
        bus.publish_batch([b"s" * 4] * 5, topic="s")
        s = scrape(srv)
        assert val(s, "framebus_published_frames_total", bus=name) == 5
        assert val(s, "framebus_published_bytes_total", bus=name) == 20
        assert REGISTRY.get_sample_value("framebus_published_frames_total", {"bus": name}) == 5
    finally:
        metrics.unregister(bus)
        srv.close()
        bus.close()
        fb.FrameBus.unlink(name)


def test_serve_custom_registry_is_separate(make_bus) -> None:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    bus = make_bus()
    metrics.register(bus, r1, name="one")
    metrics.register(bus, r2, name="two")  # one bus may be in several registries
    bus.publish(b"z")
    with metrics.serve(0, registry=r1) as s1, metrics.serve(0, registry=r2) as s2:
        assert s1.port != s2.port
        assert s1.url == f"http://127.0.0.1:{s1.port}/metrics"
        assert {dict(k[1])["bus"] for k in scrape(s1)} == {"one"}
        assert {dict(k[1])["bus"] for k in scrape(s2)} == {"two"}
    assert not s1.thread.is_alive() and not s2.thread.is_alive()


def test_per_subscription_merge() -> None:
    subs = [
        {"filter": "a", "group": None, "backlog": 3, "lagged": 1},
        {"filter": "a", "group": None, "backlog": 7, "lagged": 2},
        {"filter": "a", "group": "g", "backlog": 5, "lagged": 4},
        {"filter": "a", "group": "g", "backlog": 5, "lagged": 4},
    ]
    assert metrics._per_subscription(subs) == {("a", ""): (7, 3), ("a", "g"): (5, 4)}


# ------------------------------------------------------------------ framebus stats


@pytest.fixture
def shared() -> Iterator[tuple[str, fb.FrameBus]]:
    name = f"st-{uuid.uuid4().hex[:10]}"
    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    try:
        yield name, bus
    finally:
        bus.close()
        fb.FrameBus.unlink(name)


def test_cli_stats_once(shared, capsys) -> None:
    name, bus = shared
    sub = bus.subscribe("a.>")
    bus.publish_batch([b"0123456789"] * 123, topic="a.b")
    assert main(["stats", name, "--once"]) == 0
    out = capsys.readouterr().out
    assert f"bus        {name}" in out
    assert "published  123 frames, 1230 bytes" in out
    assert "ring used  123/" in out
    assert f"   0 {os.getpid():>8} sub          1        123          0" in out
    assert "deadlines  0 envelopes received late" in out
    sub.close()


def test_cli_stats_flow_layer(shared, capsys) -> None:
    name, bus = shared
    rx = bus.data_port("cam0", window=5)
    rx.recv(timeout=0)
    tx = bus.data_port("cam0")
    tx.acquire_credit(2)
    bus.events.subscribe("svc.*", lambda m: m)
    bus.events.subscribe("svc.*", lambda m: m)
    late = bus.subscribe("late", envelopes=True)
    bus.publish(fb.Envelope("late", b"", deadline_ns=1))
    assert late.recv(timeout=5) is not None
    assert main(["stats", name, "--once"]) == 0
    out = capsys.readouterr().out
    assert "port       cam0: 3 credits granted, not taken" in out
    assert "events     svc.*: 2 subscriptions" in out
    assert "deadlines  1 envelopes received late" in out
    assert main(["stats", name, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ports"] == [{"name": "cam0", "credits": 3}]
    assert data["responders"] == [{"pattern": "svc.*", "subscriptions": 2}]
    assert data["deadline_misses"] == 1


def test_cli_stats_json(shared, capsys) -> None:
    name, bus = shared
    grp = bus.subscribe(">", group="g")
    bus.publish_batch([b"ab"] * 9, topic="t")
    assert main(["stats", name, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["name"] == name
    assert (got["published"], got["published_bytes"], got["dropped"]) == (9, 18, 0)
    assert got["paused"] is False
    assert [(r["group"], r["backlog"]) for r in got["reader_slots"]] == [(True, 9)]
    assert "subscriptions" not in got
    grp.close()


def test_cli_stats_missing_bus(capsys) -> None:
    assert main(["stats", f"missing-{uuid.uuid4().hex[:10]}", "--once"]) == 1
    err = capsys.readouterr().err
    assert "no shared bus named" in err


def test_cli_stats_bad_interval(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["stats", "x", "--interval", "0"])
    assert exc.value.code == 2


@pytest.mark.xproc
def test_cli_stats_refreshes_until_interrupted(shared) -> None:
    import signal
    import time

    name, bus = shared
    bus.publish(b"r")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "framebus", "stats", name, "--interval", "0.05"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        # a test run started in the background has SIGINT ignored, and children inherit
        # that: give the child Python's default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "framebus stats exited early"
            if text in line:
                return
        raise AssertionError(f"{text!r} never shown")

    try:
        wait_for("published  1 frames")
        bus.publish(b"r")
        wait_for("published  2 frames")  # the table is redrawn with live counters
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends it cleanly
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_text_exposition_is_generate_latest_byte_for_byte(make_bus, tmp_path) -> None:
    import time

    from prometheus_client import Counter, Enum, Gauge, Histogram, Info, Summary
    from prometheus_client.exposition import generate_latest

    reg = CollectorRegistry()
    bus = make_bus(preset="memory_optimized", wal_dir=str(tmp_path / "wal"))
    metrics.register(bus, reg, name='odd "name"\\ with\nnewline')
    other = make_bus(preset="memory_optimized")
    metrics.register(other, reg)
    bus.subscribe('weird."filter".>')
    bus.publish_batch([b"x" * 10] * 7, topic="a")
    tx = bus.data_port("cam", window=4)
    bus.data_port("cam", window=4).recv(timeout=0)
    tx.send_frame(b"y")
    bus.events.publish("e.x", 1)
    bus.subscribe("late", envelopes=True)
    bus.publish(fb.Envelope("late", b"", deadline_ns=time.time_ns() - 1))
    assert bus.flush(timeout=10)
    c = Counter("app_requests", "Requests.\nSecond line \\ here", ["path"], registry=reg)
    c.labels(path='/a"b').inc(3)
    Gauge("app_temp", "Temp.", registry=reg).set(21.5)
    h = Histogram("app_lat_seconds", "Latency.", registry=reg)
    h.observe(0.2)
    Summary("app_size", "Size.", registry=reg).observe(5)
    Info("app_build", "Build.", registry=reg).info({"version": "1.2"})
    Enum("app_state", "State.", states=["a", "b"], registry=reg).state("b")
    Gauge("app_colon:name", "Colon.", ["lab"], registry=reg).labels(lab="v").set(1)

    families = list(reg.collect())  # once: both encoders see the same values

    class Fixed:
        def collect(self):
            return iter(families)

    assert metrics.text_exposition(Fixed()) == generate_latest(Fixed())
    # a sample with a timestamp: handed to generate_latest whole
    stamped = GaugeMetricFamily("app_stamped", "Stamped.", labels=["k"])
    stamped.add_metric(["v"], 1.0, timestamp=1700000000.5)
    families.append(stamped)

    class Fixed:
        def collect(self):
            return iter(families)

    fast = metrics.text_exposition(Fixed())
    assert fast == generate_latest(Fixed())
    assert b'app_stamped{k="v"} 1.0 1700000000500' in fast
    assert b"framebus_batch_size_frames_bucket" in fast and b"app_build_info" in fast


def test_served_text_equals_the_collector(make_bus, registry, server) -> None:
    # serve() writes the framebus part itself: the same samples as collect() gives
    from prometheus_client import Gauge
    from prometheus_client.exposition import generate_latest

    bus = make_bus(preset="memory_optimized")
    metrics.register(bus, registry, name='a "quoted"\\name')
    bus.subscribe('f."x".>', group="g\nh")
    bus.publish_batch([b"x"] * 5, topic="f.q.r")
    bus.data_port("p", window=2).recv(timeout=0)
    bus.events.publish("e", 1)
    Gauge("app_level", "Level.", registry=registry).set(3)

    def parsed(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    with urllib.request.urlopen(server.url, timeout=10) as r:
        served = r.read().decode()
    expected = generate_latest(registry).decode()
    assert parsed(served) == parsed(expected)
    assert ("app_level", (), 3.0) in parsed(served)
    # bucket bounds are fixed between scrapes
    with urllib.request.urlopen(server.url, timeout=10) as r:
        again = r.read().decode()
    les = {line.split('le="')[1].split('"')[0] for line in again.splitlines() if 'le="' in line}
    assert les == {
        line.split('le="')[1].split('"')[0] for line in served.splitlines() if 'le="' in line
    }


def test_server_requests(make_bus, registry, server) -> None:
    import gzip
    import socket

    bus = make_bus(preset="memory_optimized")
    metrics.register(bus, registry)
    bus.publish(b"abc", topic="t")
    # gzip when accepted
    req = urllib.request.Request(server.url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = gzip.decompress(r.read()).decode()
    assert 'framebus_published_frames_total{bus="bus0"} 1.0' in text
    # name[] selects families
    with urllib.request.urlopen(server.url + "?name[]=framebus_paused", timeout=10) as r:
        only = r.read().decode()
    assert "framebus_paused" in only and "framebus_published" not in only
    # OpenMetrics when asked for
    om = urllib.request.Request(server.url, headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(om, timeout=10) as r:
        assert r.read().decode().rstrip().endswith("# EOF")
    # other methods, and garbage
    post = urllib.request.Request(server.url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(post, timeout=10)
    assert err.value.code == 405
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"NONSENSE\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 400")
    # the server still answers
    assert val(scrape(server), "framebus_published_frames_total", bus="bus0") == 1
