"""Smoke tests of the NATS bridge benchmark (framebus.bench.bridge, bench/bridge.py,
``framebus bench --suite bridge``) against the nats-server it starts.

No timing assertions: only that every scenario runs and moves exactly the frames sent
(acknowledged, stored in the stream, received on the far bus), that the report has the
documented structure, and that a missing nats-py or nats-server skips the suite with a
note rather than a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framebus.bench import bridge as fbb
from framebus.cli import main

ROOT = Path(__file__).resolve().parents[1]

# the suite starts a nats-server process, as the NATS tests do
pytestmark = [pytest.mark.xproc, pytest.mark.bench_smoke]

COUNT = 1500  # a window and a half: the last window is a partial one


def test_every_scenario_moves_exactly_the_frames_sent() -> None:
    report = fbb.run(fbb.Params(sizes=(64, 1024), count=COUNT, repeat=2, paced=120))
    assert report["schema"] == "framebus.bench.bridge/1" and report["skipped"] is None
    rows = [(r["scenario"], r["size"], r["impl"]) for r in report["results"]]
    assert rows == [
        (scenario, size, impl)
        for size in (64, 1024)
        for scenario in fbb.SCENARIOS
        for impl in fbb.IMPLS[scenario]
    ]
    for r in report["results"]:
        assert r["count"] == COUNT and len(r["runs"]) == 2
        assert r["frames_per_s"]["median"] > 0 and r["mib_per_s"] > 0
        want = {"acked": COUNT, "stored": COUNT}
        if r["scenario"] == "roundtrip":
            want["received"] = COUNT
        assert r["counts"] == [want, want], r
    ratios = {(x["scenario"], x["size"], x["peer"]): x for x in report["ratios"]}
    assert set(ratios) == {
        (scenario, size, peer)
        for size in (64, 1024)
        for scenario in fbb.SCENARIOS
        for peer in fbb.PEERS[scenario]
    }
    for (_s, _z, peer), x in ratios.items():
        assert x["bridge_over_peer"] > 0
        assert x["target"] == (0.8 if peer == "nats-py" else None)
        assert x["met"] == (None if x["target"] is None else x["bridge_over_peer"] >= 0.8)
    assert [lat["impl"] for lat in report["latency"]] == ["bridge", "nats-py"]
    for lat in report["latency"]:
        assert lat["count"] == 120 and lat["delivered"] == 120 and lat["rate"] == 1000.0
        assert set(lat["latency_us"]) == {"p50", "p90", "p99", "p99.9", "max"}
        assert 0 < lat["latency_us"]["p50"] <= lat["latency_us"]["p99"] <= lat["latency_us"]["max"]
    assert report["server"]["version"].startswith("nats-server")
    json.dumps(report)
    table = fbb.format_table(report)
    assert "roundtrip   1 KiB  nats-py" in table and "bridge/impl" in table
    assert "latency bridge   bus -> JetStream -> bus at 1000/s (120 x 64 B" in table


def test_missing_nats_py_or_server_skips_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # import nats raises ImportError
    report = fbb.run(fbb.Params(count=10, repeat=1, paced=0))
    assert report["skipped"].startswith("nats-py is not installed")
    assert "pip install 'framebus[nats]'" in report["skipped"]
    assert report["results"] == [] and report["latency"] == []
    assert "bridge suite skipped: nats-py is not installed" in fbb.format_table(report)
    monkeypatch.undo()

    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert main(["bench", "--suite", "bridge", "--count", "10", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "bridge suite skipped: nats-server not found" in out.out
    assert "Traceback" not in out.out + out.err


def test_the_cli_suite_and_the_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bridge.json"
    args = ["bench", "--suite", "bridge", "--size", "64", "--count", "300", "--repeat", "1"]
    assert main([*args, "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["params"]["sizes"] == [64] and report["params"]["count"] == 300
    assert report["params"]["paced"] == 300
    assert [r["counts"] for r in report["results"]] == [
        [{"acked": 300, "stored": 300}],
        [{"acked": 300, "stored": 300}],
        [{"acked": 300, "stored": 300}],
        [{"acked": 300, "stored": 300, "received": 300}],
        [{"acked": 300, "stored": 300, "received": 300}],
    ]
    assert "bridge/impl" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "bridge", "--scenario", "pingpong"])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bridge.py"),
            "--size",
            "1k",
            "--count",
            "200",
            "--repeat",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "roundtrip   1 KiB  bridge" in done.stdout
