"""Smoke tests of the WAL benchmark (framebus.bench.wal, bench/wal_append.py,
``framebus bench --suite wal``).

No timing assertions: only that every scenario runs, checks what it wrote, reports it
in the documented structure, reports a missing persist-queue as missing, and leaves no
directory behind. Pass with or without persist-queue installed.
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
from framebus.bench import wal as wb
from framebus.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(240)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _tiny(tmp_path: Path, **overrides: Any) -> wb.WParams:
    base: dict[str, Any] = dict(
        sizes=[64],
        seconds=0.01,
        min_count=50,
        warmup=200,
        warmup_fsync=5,
        repeat=2,
        replay_frames=3000,
        fsync_probe_seconds=0.01,
        dir=str(tmp_path),
        quick=True,
        timeout=60.0,
    )
    base.update(overrides)
    return wb.WParams(**base)


def _pq_importable() -> bool:
    try:
        importlib.import_module("persistqueue")
    except ImportError:
        return False
    return True


def _check_report(report: dict[str, Any], params: wb.WParams, pq_ok: bool) -> None:
    assert report["schema"] == wb.SCHEMA
    assert report["machine"]["cpu_model"] and report["machine"]["framebus_version"]
    assert report["disk"]["fsync_per_s"] > 0
    assert report["params"]["repeat"] == params.repeat
    json.dumps(report)  # serialisable as is
    results = report["results"]
    assert set(results) == {"publish", "engine", "peers", "replay"}

    pub = results["publish"]
    expected = [
        (size, wal, call, n)
        for size in params.sizes
        for wal in wb.WAL_MODES
        for call in wb.CALLS
        for n in params.publishers
    ]
    assert [(r["size"], r["wal"], r["call"], r["publishers"]) for r in pub] == expected
    for r in pub:
        assert r["status"] == "ok"
        assert r["count"] % r["publishers"] == 0
        if r["call"] == "batch":
            assert r["batch"] == params.batch and r["count"] % params.batch == 0
        assert len(r["runs"]) == params.repeat
        for run in r["runs"]:
            assert run["ok"] and run["frames"] == r["count"]
            assert run["frames_per_s"] > 0 and run["seconds"] >= run["publish_seconds"] > 0
            if r["wal"] == "off":
                assert run["wal_durable_seq"] is None
            else:
                assert run["wal_durable_seq"] == r["count"] - 1
        s = r["frames_per_s"]
        assert 0 < s["min"] <= s["median"] <= s["max"]
        assert 0 < r["publish_share"] <= 1

    eng = results["engine"]
    assert [(r["size"], r["sync"]) for r in eng] == [
        (size, sync) for size in params.sizes for sync in (False, True)
    ]
    for r in eng:
        assert r["status"] == "ok" and r["batch"] == params.engine_batch
        assert r["count"] % params.engine_batch == 0
        assert all(run["ok"] and run["frames_per_s"] > 0 for run in r["runs"])

    peers = results["peers"]
    assert [(r["size"], r["impl"]) for r in peers] == [
        (size, impl) for size in params.sizes for impl in wb.PEER_IMPLS
    ]
    for r in peers:
        if not pq_ok:
            assert r["status"] == "missing"
            assert r["reason"] == "missing (pip install persist-queue)"
            assert r["runs"] == [] and "frames_per_s" not in r
            continue
        assert r["status"] == "ok" and len(r["runs"]) == params.repeat
        assert r["frames_per_s"]["median"] > 0

    rep = results["replay"]
    assert [r["impl"] for r in rep] == list(wb.REPLAY_IMPLS)
    for r in rep:
        assert r["count"] == params.replay_frames and len(r["runs"]) == params.repeat
        assert all(run["frames"] == params.replay_frames for run in r["runs"])
        assert r["frames_per_s"]["median"] > 0

    # a target ratio for every WAL row (async and sync, each size, call and publishers
    # count) and for each WAL replay reader; peer ratios only for a measured peer
    ratios = report["ratios"]
    targets = [x for x in ratios if x["target"]]
    wal_rows = [r for r in pub if r["wal"] != "off"]
    assert len([x for x in targets if x["target"].startswith("wal_")]) == len(wal_rows)
    assert [x["impl"] for x in targets if x["target"] == "replay_frames_per_s"] == [
        "bus.replay",
        "WalLog.read_batch",
    ]
    for x in targets:
        assert isinstance(x["met"], bool) and x["goal"] > 0
        if "ratio" in x:
            assert x["ratio"] > 0 and x["met"] == (x["ratio"] >= wb.TARGET_RATIO)
    vs_peer = [x for x in ratios if not x["target"]]
    assert len(vs_peer) == (2 * len(params.sizes) if pq_ok else 0)

    table = wb.format_table(report)
    for text in ("wal", "async", "sync", "batch100", "rocksdict WriteBatch(1000) sync on"):
        assert text in table
    assert "bus.replay()" in table and "targets" in table
    if not pq_ok:
        assert "missing (pip install persist-queue)" in table


def test_every_scenario_runs_and_is_checked(tmp_path):
    params = _tiny(tmp_path)
    report = wb.run(params)
    _check_report(report, params, _pq_importable())
    assert os.listdir(tmp_path) == []


def test_missing_persist_queue_is_reported_not_measured(tmp_path, monkeypatch):
    real = wb.import_optional

    def no_pq(module: str) -> Any:
        if module.split(".")[0] == "persistqueue":
            raise ImportError(f"No module named {module!r}")
        return real(module)

    monkeypatch.setattr(wb, "import_optional", no_pq)
    params = _tiny(tmp_path, repeat=1, publishers=[1], replay_frames=500)
    report = wb.run(params)
    assert report["peers"]["persist-queue"]["status"] == "missing"
    _check_report(report, params, pq_ok=False)
    assert os.listdir(tmp_path) == []


def test_a_lost_frame_fails_the_run(tmp_path, monkeypatch):
    # a publisher that skips its last frame: flush succeeds, the seq check does not
    monkeypatch.setattr(wb, "_publish_single", lambda publish, items: [*map(publish, items[1:])])
    with pytest.raises(common.BenchError, match="next_seq 99"):
        wb.publish_run(str(tmp_path), 64, "async", "single", 1, 100, _tiny(tmp_path))
    assert os.listdir(tmp_path) == []


def test_cli_wal_quick_json(tmp_path, capsys):
    path = tmp_path / "wal.json"
    work = tmp_path / "work"
    work.mkdir()
    argv = ["bench", "--suite", "wal", "--quick", "--size", "64", "--dir", str(work)]
    argv += ["--json", str(path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "publish into a bus" in captured.out
    assert "the engine's own limit" in captured.out
    assert f"replay of {wb.QUICK_REPLAY_FRAMES} frames" in captured.out
    assert f"command: framebus bench {' '.join(argv[1:])}" in captured.out
    # progress on stderr: plain lines (no TTY), one per scenario
    assert "\r" not in captured.err
    assert "publish/64B/sync/single/4pub" in captured.err
    assert "replay/64B/bus.replay" in captured.err
    report = json.loads(path.read_text())
    assert report["command"] == ["framebus", *argv]
    params = wb.WParams(**report["params"])
    assert params.quick and params.repeat == wb.QUICK_REPEAT
    assert params.seconds == wb.QUICK_SECONDS
    _check_report(report, params, _pq_importable())
    assert os.listdir(work) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--replay-frames", "10"], "only with --suite wal"),
        (["bench", "--suite", "xproc", "--dir", "/tmp"], "only with --suite wal"),
        (["bench", "--suite", "wal", "--scenario", "pingpong"], "only with --suite xproc"),
        (["bench", "--suite", "wal", "--round-trips", "5"], "only with --suite xproc"),
        (["bench", "--suite", "wal", "--replay-frames", "0"], "--replay-frames"),
        (["bench", "--suite", "wal", "--dir", "/nonexistent/x"], "--dir"),
        (["bench", "--suite", "wal", "--seconds", "0"], "--seconds"),
    ],
)
def test_bad_wal_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err


def test_bench_script_runs_and_writes_json(tmp_path):
    path = tmp_path / "w.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "wal_append.py"),
            "--quick",
            "--size",
            "256",
            "--repeat",
            "1",
            "--replay-frames",
            "1000",
            "--no-progress",
            "--dir",
            str(tmp_path),
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
    assert proc.stderr == ""
    assert "publish into a bus" in proc.stdout
    report = json.loads(path.read_text())
    assert report["schema"] == wb.SCHEMA
    assert report["params"]["sizes"] == [256] and report["params"]["replay_frames"] == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["w.json"]
