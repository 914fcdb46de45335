"""Smoke test of the DataPort benchmark (bench/dataport.py).

No timing assertions: only that a --quick run of every case (in one process and across
processes, raw bus and DataPort) exits 0, reports in the documented JSON structure with
positive rates, and leaves no shared-memory segment behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "dataport.py"
CASES = ["inproc-frame", "inproc-batch", "xproc-frame", "xproc-batch"]
SHM = "/dev/shm"

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(120)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _segments() -> set[str]:
    try:
        return {n for n in os.listdir(SHM) if n.startswith("framebus.dpbench-")}
    except OSError:
        return set()


def test_quick_run_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "dp.json"
    before = _segments()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--frames", "2000", "--json", str(path)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr and "warning" not in proc.stderr
    assert "port/raw" in proc.stdout and "cross-process batch 64" in proc.stdout
    assert _segments() <= before  # every shared bus of the run was unlinked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dp.json"]

    report = json.loads(path.read_text())
    assert report["schema"] == "framebus.bench.dataport/1"
    p = report["params"]
    assert (p["frames"], p["repeat"], p["quick"]) == (2000, 1, True)
    assert (p["size"], p["batch"], p["window"], p["preset"]) == (64, 64, 1024, "default")
    assert report["bus_config"]["ring_pow"] > 0
    assert report["machine"]["cpu_model"] and report["machine"]["framebus_version"]
    assert report["target"] == 0.8
    assert list(report["results"]) == CASES
    for case in CASES:
        for impl in ("raw", "port"):
            res = report["results"][case][impl]
            assert len(res["runs"]) == 1
            for run in res["runs"]:
                assert run["frames"] == 2000
                assert run["frames_per_s"] > 0 and run["send_frames_per_s"] > 0
                assert run["seconds"] > 0 and run["send_seconds"] > 0
            s = res["frames_per_s"]
            assert 0 < s["min"] <= s["median"] <= s["max"]
    assert [r["case"] for r in report["ratios"]] == CASES
    for r in report["ratios"]:
        assert r["ratio"] > 0 and len(r["paired_ratios"]) == 1
        assert r["met"] == (r["ratio"] >= r["target"])
