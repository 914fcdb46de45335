"""Smoke tests of the flow benchmark (framebus.bench.flow, bench/flow.py,
``framebus bench --suite flow``).

No timing assertions: only that every implementation runs and delivers exactly the
items expected, that the report has the documented structure, and that a peer that is
not installed is skipped with a note rather than failing the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from framebus.bench import flow as fbf
from framebus.cli import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.bench_smoke


def test_every_implementation_delivers_exactly_and_reports() -> None:
    report = fbf.run(fbf.Params(count=1001, repeat=2, paced=200, cpu_count=12))
    ran = [r["impl"] for r in report["results"]]
    assert set(ran) | set(report["skipped"]) == set(fbf.IMPLS)
    assert "fb.inproc" in ran and "fb.sync" in ran and "queue.Queue" in ran
    assert {"fb.ipc", "mp.Queue", "cpu.inproc", "cpu.ipc"} <= set(ran)
    for r in report["results"]:
        assert len(r["runs"]) == 2 and r["items_per_s"]["median"] > 0
    assert {x["peer"] for x in report["ratios"]} == set(ran) & set(fbf.PEERS)
    assert [(x["impl"], x["peer"], x["target"]) for x in report["proc_ratios"]] == [
        ("fb.ipc", "mp.Queue", 20.0),
        ("cpu.ipc", "cpu.inproc", 1.6),
    ]
    paced = report["paced"]
    assert paced["count"] == 200 and paced["delivered"] == fbf.expected_count(200)
    assert set(paced["latency_us"]) == {"p50", "p95", "p99", "p99.9", "max"}
    paced_ipc = report["paced_ipc"]
    assert paced_ipc["runtime"] == "ipc" and paced_ipc["count"] == 200
    assert paced_ipc["delivered"] == fbf.expected_count(200)
    assert set(paced_ipc["latency_us"]) == set(paced["latency_us"])
    paced_thread = report["paced_thread"]
    assert paced_thread["handoff"] == "thread" and paced_thread["repeat"] == 2
    assert paced_thread["delivered"] == fbf.expected_count(200)
    assert paced["repeat"] == 2 and len(paced["p99_runs_us"]) == 2
    assert report["paced_ratio"]["target"] == 3.0
    assert report["paced_ratio"]["ipc_p95_over_inproc_p95"] > 0
    assert report["paced_ratio"]["ipc_p95_over_inproc_thread_p95"] > 0
    json.dumps(report)
    table = fbf.format_table(report)
    assert "fb.inproc" in table and "paced at 20000" in table
    assert "fb.ipc / mp.Queue" in table and "cpu.ipc / cpu.inproc" in table
    rows = [line.split()[0] for line in table.splitlines() if " achieved " in line]
    assert rows == ["fb.inproc", "fb.inproc.thread", "fb.ipc"]
    assert "paced ipc / inproc: p95" in table
    assert 'paced ipc / inproc handoff="thread": p95' in table
    assert "(cpu.*: 12 items per run" in table


def test_crunch_and_the_process_pipelines_count_exactly() -> None:
    assert fbf.crunch(3) == fbf.crunch(3) and isinstance(fbf.crunch(3), int)
    assert fbf.run_mp_queues(101) > 0  # raises BenchError unless 90 items arrived
    report = fbf.run(fbf.Params(count=50, repeat=1, paced=0, impls=("fb.ipc",)))
    assert [r["impl"] for r in report["results"]] == ["fb.ipc"]
    assert report["proc_ratios"] == [] and report["paced_ipc"] is None


def test_a_missing_peer_is_skipped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(items: list[bytes]) -> Any:
        raise fbf.Skip("bytewax is not installed (test)")

    monkeypatch.setitem(fbf.RUNNERS, "bytewax", missing)
    report = fbf.run(fbf.Params(count=100, repeat=1, paced=0, impls=("fb.inproc", "bytewax")))
    assert report["skipped"] == {"bytewax": "bytewax is not installed (test)"}
    assert report["ratios"] == [] and report["paced"] is None
    lines = fbf.format_table(report).splitlines()
    assert [line.split() for line in lines if line.startswith("bytewax")] == [
        ["bytewax", "skipped:", "bytewax", "is", "not", "installed", "(test)"]
    ]


def test_a_wrong_count_fails_the_run() -> None:
    with pytest.raises(fbf.BenchError, match="the sink got 1 items; expected exactly 9"):
        fbf._check("x", [(1, b"", 64)], 10)


def test_the_cli_suite_and_the_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flow.json"
    args = ["bench", "--suite", "flow", "--count", "300", "--repeat", "1", "--no-progress"]
    args += ["--impls", "fb.inproc,fb.sync", "--impls", "cpu.inproc", "--cpu-count", "5"]
    assert main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["params"]["count"] == 300 and report["params"]["paced"] == 300
    assert report["params"]["impls"] == ["fb.inproc", "fb.sync", "cpu.inproc"]
    assert report["params"]["cpu_count"] == 5
    assert "inproc/impl" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "flow", "--size", "64"])
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "flow", "--impls", "fb.ipc,nope"])
    assert "unknown 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "xproc", "--impls", "fb.ipc"])
    assert "argument --impls: only with --suite flow" in capsys.readouterr().err
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "flow.py"),
            "--count",
            "200",
            "--repeat",
            "1",
            "--no-progress",
            "--impls",
            "fb.inproc,fb.ipc,mp.Queue",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "fb.inproc" in done.stdout and "fb.ipc / mp.Queue" in done.stdout
    assert "paced ipc / inproc: p95" in done.stdout
