"""Smoke tests of the cross-process benchmark (framebus.bench.xproc, bench/xproc.py,
``framebus bench --suite xproc``).

No timing assertions: only that every scenario runs in its processes, delivers exactly
what was sent, reports it in the documented structure, reports unimportable peers as
missing, and leaves no shared-memory segment behind. Pass with or without faster-fifo
and pyzmq installed.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from framebus.bench import _common as common
from framebus.bench import xproc as xb
from framebus.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(240)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _tiny(**overrides: Any) -> xb.XParams:
    base: dict[str, Any] = dict(
        sizes=[64, 4096],
        count=400,
        repeat=2,
        warmup=50,
        warmup_lap=False,
        round_trips=60,
        pingpong_warmup=10,
        quick=True,
        timeout=60.0,
    )
    base.update(overrides)
    return xb.XParams(**base)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _framebus_queue_ok() -> bool:
    return xb._framebus_queue()[1] is None


def _my_segments() -> list[str]:
    # the buses this process made, and the framebus.Queue segments it created
    prefixes = (f"framebus.xbench-{os.getpid()}-", f"framebus.q{os.getpid()}-")
    return [n for n in os.listdir("/dev/shm") if n.startswith(prefixes)]


def _expected_status(impl: str) -> str:
    if impl in xb.OPTIONAL_PEERS:
        return "ok" if _importable(xb.OPTIONAL_PEERS[impl][0]) else "missing"
    if impl == "framebus.Queue":
        return "ok" if _framebus_queue_ok() else "unavailable"
    return "ok"


def _check_report(report: dict[str, Any], params: xb.XParams) -> None:
    assert report["schema"] == xb.SCHEMA
    assert report["machine"]["cpu_model"] and report["machine"]["framebus_version"]
    assert report["params"]["repeat"] == params.repeat
    json.dumps(report)  # serialisable as is
    results = report["results"]
    assert set(results) == set(xb.SCENARIOS)

    tp = results["throughput"]
    expected = [
        (size, mode, impl)
        for size in params.sizes
        for mode in xb.MODES
        for impl in xb.THROUGHPUT_IMPLS
        if (mode == "single" and impl not in xb.FB_BATCH_VARIANTS)
        or (mode == "batch" and impl in xb.BATCH_IMPLS)
    ]
    assert [(r["size"], r["mode"], r["impl"]) for r in tp] == expected
    for r in tp:
        assert r["status"] == _expected_status(r["impl"]), r["scenario"]
        if r["status"] != "ok":
            assert r["reason"].startswith("missing (pip install ")
            assert r["runs"] == [] and "frames_per_s" not in r
            continue
        assert r["count"] == params.count
        assert len(r["runs"]) == params.repeat
        for run in r["runs"]:
            assert run["ok"] and run["frames_delivered"] == params.count
            assert run["bytes_delivered"] == params.count * r["size"]
            assert run["left_over"] == 0 and run["last_item_ok"] and run["sequence_ok"]
            assert run["frames_per_s"] > 0 and run["seconds"] > 0
        s = r["frames_per_s"]
        assert 0 < s["min"] <= s["median"] <= s["max"]
        assert r["batch"] == (params.batch if r["mode"] == "batch" else 1)

    pp = results["pingpong"]
    assert [(r["impl"], r["preset"]) for r in pp] == list(xb.PINGPONG_IMPLS)
    for r in pp:
        assert r["status"] == _expected_status(r["impl"]), r["scenario"]
        if r["status"] != "ok":
            assert r["reason"].startswith("missing (pip install ") and r["runs"] == []
            continue
        assert len(r["runs"]) == params.repeat
        assert all(run["round_trips"] == params.round_trips for run in r["runs"])
        lat = r["latency_us"]
        for key in ("p50", "p90", "p99", "p99.9"):
            assert 0 < lat[key]["min"] <= lat[key]["median"] <= lat[key]["max"]
        assert lat["p50"]["median"] <= lat["p99.9"]["median"]

    qs = results["queue"]
    assert [(r["object"], r["impl"]) for r in qs] == [
        (k, i) for k in xb.OBJECT_KINDS for i in xb.QUEUE_IMPLS
    ]
    for r in qs:
        assert r["status"] == _expected_status(r["impl"]), r["scenario"]
        if r["status"] != "ok":
            assert r["runs"] == [] and "objects_per_s" not in r
            continue
        assert all(run["ok"] and run["objects_delivered"] == params.count for run in r["runs"])
        assert r["objects_per_s"]["median"] > 0

    fb_rows = [r for r in tp if r["impl"] == "framebus"] + [
        r for r in pp if r["impl"] == "framebus"
    ]
    assert fb_rows and all(r["status"] == "ok" for r in fb_rows)

    # a ratio for every measured peer, none for a missing one
    measured = {(r["mode"], r["size"], r["impl"]) for r in tp if r["status"] == "ok"}
    ratios = {
        (x["mode"], x["size"], x["impl"], x["peer"])
        for x in report["ratios"]
        if x["scenario"] == "throughput"
    }
    fb_impls = ("framebus", *xb.FB_BATCH_VARIANTS)
    assert ratios == {
        (mode, size, fb_impl, peer)
        for (mode, size, peer) in measured
        if peer not in fb_impls
        for fb_impl in fb_impls
        if (mode, size, fb_impl) in measured
    }
    assert all(
        x.get("framebus_over_peer", x.get("p50_over_peer_p50", 0)) > 0 for x in report["ratios"]
    )

    table = xb.format_table(report)
    for impl in xb.THROUGHPUT_IMPLS:
        assert impl in table
    for r in tp + pp + qs:
        if r["status"] != "ok":
            assert r["reason"] in table
    assert "framebus low_latency" in table and "p99.9" in table and "batch100" in table


def test_every_scenario_delivers_exactly_count():
    params = _tiny()
    report = xb.run(params)
    _check_report(report, params)
    assert _my_segments() == []


def test_missing_peers_are_reported_not_measured(monkeypatch):
    real = xb.import_optional

    def no_optional(module: str) -> Any:
        if module.split(".")[0] in ("faster_fifo", "faster_fifo_reduction", "zmq"):
            raise ImportError(f"No module named {module!r}")
        return real(module)

    monkeypatch.setattr(xb, "import_optional", no_optional)
    monkeypatch.setattr(xb, "_framebus_queue", lambda: (None, "framebus.Queue unavailable"))
    params = _tiny(sizes=[64], repeat=1)
    report = xb.run(params)
    assert report["peers"]["faster-fifo"]["reason"] == "missing (pip install faster-fifo)"
    assert report["peers"]["pyzmq"]["reason"] == "missing (pip install pyzmq)"
    rows = [r for rows in report["results"].values() for r in rows]
    for r in rows:
        if r["impl"] in ("faster-fifo", "pyzmq", "framebus.Queue"):
            assert r["status"] in ("missing", "unavailable") and r["runs"] == []
            assert not any(k.endswith("_per_s") or k == "latency_us" for k in r)
        else:
            assert r["status"] == "ok", r["scenario"]
    assert not any(x.get("peer") in ("faster-fifo", "pyzmq") for x in report["ratios"])
    assert not any(x["scenario"] == "queue" for x in report["ratios"])
    table = xb.format_table(report)
    assert "missing (pip install faster-fifo)" in table
    assert "missing (pip install pyzmq)" in table
    assert "framebus.Queue unavailable" in table
    assert _my_segments() == []


@pytest.mark.parametrize(
    "impl, mode, message",
    [
        ("framebus", "single", "1 left over"),
        ("mp.Queue", "single", "1 left over"),
        # the extra frame rides in the last batch: one recv_batch returns one too many
        ("framebus", "batch", "received 51 items .* expected exactly 50 items"),
    ],
)
def test_extra_frames_fail_the_run(monkeypatch, impl, mode, message):
    # The producer (a forked child) sends one frame more than the run asks for.
    real = xb._cycled
    monkeypatch.setattr(xb, "_cycled", lambda pool, count: real(pool, count + 1))
    peers = xb.peer_status()
    ctx = xb.mp.get_context("fork")
    with pytest.raises(common.BenchError, match=message):
        xb._throughput(ctx, 64, mode, impl, _tiny(repeat=1), peers, None)
    assert _my_segments() == []


def test_a_wrong_last_payload_fails_the_run(monkeypatch):
    monkeypatch.setattr(xb, "_one_payload", lambda size, i: b"not what was sent")
    ctx = xb.mp.get_context("fork")
    with pytest.raises(common.BenchError, match="last item WRONG"):
        xb._throughput(ctx, 64, "batch", "os.pipe", _tiny(repeat=1), xb.peer_status(), None)


def test_percentiles_are_exact_nearest_rank():
    p = xb.percentiles(list(range(1000, 0, -1)))  # 1..1000 ns, unsorted
    assert (p["p50"], p["p90"], p["p99"], p["p99.9"]) == (0.5, 0.9, 0.99, 0.999)
    assert (p["min"], p["max"]) == (0.001, 1.0)
    p = xb.percentiles([5000] * 9 + [7000])
    assert p["p90"] == 5.0 and p["p99"] == 7.0 and p["p99.9"] == 7.0
    with pytest.raises(ValueError):
        xb.percentiles([])


def test_cli_xproc_quick_json(tmp_path, capsys):
    path = tmp_path / "xproc.json"
    argv = ["bench", "--suite", "xproc", "--quick", "--count", "500", "--json", str(path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "producer process -> consumer process" in captured.out
    assert "ping-pong of 64 B" in captured.out
    assert "multiprocessing.Queue API" in captured.out
    assert f"command: framebus bench --suite xproc --quick --count 500 --json {path}" in (
        captured.out
    )
    # progress on stderr: captured output is no TTY, so plain lines, one per scenario
    assert "\r" not in captured.err
    assert "throughput/single/64B/framebus" in captured.err
    assert "pingpong/64B/framebus:low_latency" in captured.err
    report = json.loads(path.read_text())
    assert report["command"] == ["framebus", *argv]
    assert report["params"]["quick"] is True and report["params"]["count"] == 500
    assert report["params"]["repeat"] == xb.QUICK_REPEAT
    _check_report(report, xb.XParams(**report["params"]))
    assert _my_segments() == []


def test_cli_suite_all_writes_both(tmp_path, capsys):
    path = tmp_path / "all.json"
    argv = [
        "bench",
        "--suite",
        "all",
        "--quick",
        "--size",
        "64",
        "--count",
        "300",
        "--repeat",
        "1",
        "--scenario",
        "pingpong,queue",
        "--round-trips",
        "50",
        "--no-progress",
        "--json",
        str(path),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "queue.SimpleQueue" in captured.out and "ping-pong of 64 B" in captured.out
    report = json.loads(path.read_text())
    assert report["schema"] == xb.SCHEMA_ALL
    assert set(report["suites"]) == {"inproc", "xproc"}
    xproc = report["suites"]["xproc"]
    assert xproc["results"]["throughput"] == []
    assert xproc["params"]["scenarios"] == ["pingpong", "queue"]
    assert all(len(r["runs"]) == 1 for r in xproc["results"]["pingpong"] if r["status"] == "ok")
    assert report["suites"]["inproc"]["params"]["count"] == 300


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--scenario", "pingpong"], "only with --suite xproc"),
        (["bench", "--round-trips", "10"], "only with --suite xproc"),
        (["bench", "--suite", "xproc", "--scenario", "nope"], "invalid choice 'nope'"),
        (["bench", "--suite", "xproc", "--round-trips", "0"], "--round-trips"),
        (["bench", "--suite", "xproc", "--seconds", "-1"], "--seconds"),
        (["bench", "--suite", "nope"], "--suite"),
    ],
)
def test_bad_xproc_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err


def test_bench_script_runs_and_writes_json(tmp_path):
    path = tmp_path / "x.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "xproc.py"),
            "--quick",
            "--scenario",
            "throughput",
            "--size",
            "256",
            "--count",
            "300",
            "--repeat",
            "1",
            "--json",
            str(path),
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(path.read_text())
    assert report["command"][0].endswith("xproc.py")
    assert {r["size"] for r in report["results"]["throughput"]} == {256}
    fb = [r for r in report["results"]["throughput"] if r["impl"] == "framebus"]
    assert len(fb) == 2 and all(r["frames_per_s"]["median"] > 0 for r in fb)
