"""Smoke tests of the benchmark machinery (framebus.bench.inproc and _common, bench/).

No timing assertions: only that every scenario runs, delivers exactly what was sent,
and reports it in the documented structure.
"""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from framebus import FrameBus
from framebus.bench import _common as common
from framebus.bench import inproc as fbb

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.bench_smoke


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_run_every_scenario_delivers_exactly_count():
    # 1001 is not a multiple of the batch: the last batch is a short one.
    params = fbb.Params(sizes=[8, 3000], count=1001, repeat=2, batch=64, timeout=60.0)
    report = fbb.run(params)
    # batch-receive variants have batch rows only
    rows_per_size = len(fbb.TOPOLOGIES) * (
        len(fbb.MODES) * len(fbb.IMPLS) - len(fbb.FB_BATCH_VARIANTS)
    )
    assert len(report["results"]) == 2 * rows_per_size
    for r in report["results"]:
        assert [run["frames_delivered"] for run in r["runs"]] == [1001, 1001], r["scenario"]
        assert all(run["ok"] and run["left_over"] == 0 for run in r["runs"])
        assert all(run["bytes_delivered"] == 1001 * r["size"] for run in r["runs"])
        assert r["batch"] == (64 if r["mode"] == "batch" else 1)
    # every peer against framebus, and in batch mode against each variant too
    per_topology = len(fbb.PEERS) * (len(fbb.MODES) + len(fbb.FB_BATCH_VARIANTS))
    assert len(report["ratios"]) == 2 * len(fbb.TOPOLOGIES) * per_topology
    json.dumps(report)  # serialisable as is
    table = fbb.format_table(report)
    for impl in fbb.IMPLS:
        assert impl in table
    assert "batch64" in table and "3000 B" in table


def test_a_short_delivery_fails_the_run(monkeypatch):
    def short(impl, mode, items, batches, params, bus, *args, **kwargs):
        n = len(items) - 1
        return fbb._run_record(len(items), n, n * len(items[0]), 0, 0.01, items)

    monkeypatch.setattr(fbb, "run_threads", short)
    params = fbb.Params(
        sizes=[16],
        count=100,
        repeat=1,
        impls=["queue.Queue"],
        modes=["single"],
        topologies=["threads"],
    )
    with pytest.raises(common.BenchError, match="received 99 frames.*expected exactly 100"):
        fbb.run(params)


def test_left_over_frames_fail_the_run():
    items = fbb.make_payloads(16, 10)
    rec = fbb._run_record(10, 10, 160, 3, 0.01, items)
    assert rec["ok"] is False
    assert fbb._run_record(10, 10, 160, 0, 0.01, items)["ok"] is True
    assert fbb._run_record(10, 10, 159, 0, 0.01, items)["ok"] is False


def test_threads_run_counts_frames_left_in_the_bus():
    with FrameBus() as bus:
        fbb.warm_up(bus)
        items = fbb.make_payloads(32, 500)
        batches = [items[i : i + 50] for i in range(0, 500, 50)]
        params = fbb.Params(sizes=[32], count=500, batch=50, timeout=60.0)
        for mode in fbb.MODES:
            r = fbb.run_threads("framebus", mode, items, batches, params, bus)
            assert r["ok"] and r["frames_delivered"] == 500
            r = fbb.run_one_thread("framebus", mode, items, batches, params, bus)
            assert r["ok"] and r["frames_delivered"] == 500
        for impl in fbb.FB_BATCH_VARIANTS:
            r = fbb.run_threads(impl, "batch", items, batches, params, bus)
            assert r["ok"] and r["frames_delivered"] == 500 and r["bytes_delivered"] == 500 * 32
            r = fbb.run_one_thread(impl, "batch", items, batches, params, bus)
            assert r["ok"] and r["frames_delivered"] == 500 and r["bytes_delivered"] == 500 * 32
        assert bus.stats()["dropped"] == 0


def test_payloads_are_distinct_prebuilt_bytes():
    items = fbb.make_payloads(64, 1000)
    assert len(items) == 1000
    assert all(type(p) is bytes and len(p) == 64 for p in items)
    assert len(set(items)) == 1000
    small = fbb.make_payloads(3, 10)
    assert [len(p) for p in small] == [3] * 10


def test_payload_pool_is_bounded(monkeypatch):
    monkeypatch.setattr(fbb, "POOL_BYTES", 64 * 100)
    items = fbb.make_payloads(64, 1000)
    assert len(items) == 1000 and len({id(p) for p in items}) == 100


def test_deque_queue_is_fifo_and_bounded():
    q = fbb.DequeQueue(2)
    q.put(1)
    q.put(2)
    done = threading.Event()

    def put3():
        q.put(3)
        done.set()

    t = threading.Thread(target=put3)
    t.start()
    assert not done.wait(0.05)  # full: the third put waits
    assert q.get() == 1
    assert done.wait(5)
    t.join()
    assert [q.get(), q.get()] == [2, 3]
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_progress_tty_redraws_one_line_per_scenario():
    out = io.StringIO()
    p = common.Progress(out, tty=True, interval=0.0)
    p.start("threads/single/64B/framebus")
    p.update("threads/single/64B/framebus", 1, 2, 500, 1000, 0.001)
    p.repeat_done("threads/single/64B/framebus", 1, 2, 1000, [1e6])
    p.repeat_done("threads/single/64B/framebus", 2, 2, 1000, [1e6, 3e6])
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 3
    assert " 500/1000 frames" in text and "repeat 2/2" in text and "median 2.00 M" in text


def test_progress_plain_lines_without_tty():
    out = io.StringIO()
    p = common.Progress(out, tty=False)
    p.start("one-thread/batch100/64B/queue.Queue")
    p.repeat_done("one-thread/batch100/64B/queue.Queue", 1, 2, 1000, [1e6])
    p.repeat_done("one-thread/batch100/64B/queue.Queue", 2, 2, 1000, [1e6, 2e6])
    text = out.getvalue()
    assert "\r" not in text
    assert text.splitlines() == [
        "one-thread/batch100/64B/queue.Queue      repeat 2/2  1000/1000 frames  "
        "median 1.50 M frames/s"
    ]


def test_machine_info():
    m = common.machine_info()
    assert m["cpu_model"] and m["logical_cpus"] >= 1
    assert m["python_version"].count(".") == 2


def test_bench_script_runs_and_writes_json(tmp_path):
    path = tmp_path / "spsc.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "spsc_throughput.py"),
            "--size",
            "64,512",
            "--count",
            "2000",
            "--repeat",
            "1",
            "--json",
            str(path),
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "queue.SimpleQueue" in proc.stdout and "deque+Condition" in proc.stdout
    report = json.loads(path.read_text())
    assert report["command"][0].endswith("spsc_throughput.py")
    assert report["params"]["sizes"] == [64, 512]
    assert {r["size"] for r in report["results"]} == {64, 512}
    assert all(run["frames_delivered"] == 2000 for r in report["results"] for run in r["runs"])


def test_bench_script_bad_argument_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "spsc_throughput.py"), "--repeat", "0"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "error: argument --repeat" in proc.stderr


def test_default_pytest_run_does_not_collect_bench():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "bench/" not in proc.stdout
    assert "tests/test_bench_smoke.py" in proc.stdout
