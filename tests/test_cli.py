"""The ``framebus`` command: --help, --version, bad arguments, ``bench --quick``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import framebus
from framebus.bench import inproc
from framebus.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _check_report(report: dict, count: int, repeat: int, sizes: list[int]) -> None:
    assert report["schema"] == inproc.SCHEMA
    machine = report["machine"]
    for key in ("cpu_model", "logical_cpus", "python_version", "framebus_version"):
        assert machine[key], key
    assert machine["framebus_version"] == framebus.__version__
    assert report["command"][0] in ("framebus", "python")
    assert "bench" in report["command"]
    assert report["command_line"].split() == report["command"]
    params = report["params"]
    assert params["count"] == count and params["repeat"] == repeat
    assert params["sizes"] == sizes
    seen = set()
    for r in report["results"]:
        seen.add((r["topology"], r["mode"], r["size"], r["impl"]))
        assert r["count"] == count
        assert len(r["runs"]) == repeat
        for run in r["runs"]:
            assert run["ok"] is True
            assert run["frames_expected"] == count
            assert run["frames_delivered"] == count, r["scenario"]
            assert run["bytes_delivered"] == run["bytes_expected"] == count * r["size"]
            assert run["left_over"] == 0
            assert run["seconds"] > 0 and run["frames_per_s"] > 0
        for stat in ("frames_per_s", "mb_per_s", "ns_per_frame"):
            s = r[stat]
            assert s["min"] <= s["median"] <= s["max"]
    expected = {
        (t, m, s, i)
        for t in inproc.TOPOLOGIES
        for m in inproc.MODES
        for s in sizes
        for i in inproc.IMPLS
        if m == "batch" or i not in inproc.FB_BATCH_VARIANTS
    }
    assert seen == expected
    assert len(report["results"]) == len(expected)
    ratios = {(x["topology"], x["mode"], x["size"], x["impl"], x["peer"]) for x in report["ratios"]}
    assert ratios == {
        (t, m, s, fb_impl, peer)
        for (t, m, s, peer) in expected
        if peer in inproc.PEERS
        for fb_impl in ("framebus", *inproc.FB_BATCH_VARIANTS)
        if (t, m, s, fb_impl) in expected
    }
    assert all(x["framebus_over_peer"] > 0 for x in report["ratios"])


def _check_table(out: str) -> None:
    for name in inproc.IMPLS:
        assert name in out
    assert "fb/peer" in out and "frames/s" in out and "ns/frame" in out
    assert "batch100" in out


# ------------------------------------------------------------------ help, version


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"framebus {framebus.__version__}"


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: framebus")
    assert "bench" in out and "--version" in out


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: framebus bench")
    for opt in ("--size", "--count", "--repeat", "--batch", "--json", "--quick"):
        assert opt in out
    assert "queue.Queue" in out


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: framebus" in err and "error:" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--count", "0"], "--count"),
        (["bench", "--count", "many"], "--count"),
        (["bench", "--repeat", "-1"], "--repeat"),
        (["bench", "--batch", "0"], "--batch"),
        (["bench", "--size", "0"], "--size"),
        (["bench", "--size", "abc"], "--size"),
        (["bench", "--size", ","], "--size"),
        (["bench", "--size", "2m"], "max_frame"),
        (["bench", "--preset", "nope"], "--preset"),
        (["bench", "--json", "/nonexistent-framebus-dir/x.json"], "--json"),
        (["bench", "--frobnicate"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err


# ------------------------------------------------------------- what is imported

BENCH_SUITES = (
    "framebus.bench.inproc",
    "framebus.bench.xproc",
    "framebus.bench.wal",
    "framebus.bench.flow",
)


def test_commands_other_than_bench_import_no_benchmark_suite(tmp_path):
    # The parser takes the bench options from a light module; a suite is imported only
    # when `framebus bench` runs it.
    code = f"""
import json, sys
from framebus.cli import build_parser, main
build_parser()
assert main(["ls", "--json"]) == 0
loaded = [m for m in {BENCH_SUITES!r} if m in sys.modules]
main(["gc", "--dry-run"])
main(["stats", "no-such-bus-{os.getpid()}", "--once"])
main(["wal", "inspect", {str(tmp_path)!r}])
main(["wal", "replay", {str(tmp_path)!r}])
loaded += [m for m in {BENCH_SUITES!r} if m in sys.modules]
print("loaded:", json.dumps(loaded))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "loaded: []"


# ---------------------------------------------------------------------- bench


@pytest.mark.bench_smoke
def test_bench_quick_json_through_main(tmp_path, capsys):
    path = tmp_path / "quick.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    captured = capsys.readouterr()
    _check_table(captured.out)
    assert str(path) in captured.out
    assert "command: framebus bench --quick --json" in captured.out
    # Progress goes to stderr: captured output is no TTY, so plain lines, one per scenario.
    assert "\r" not in captured.err
    assert "threads/single/64B/framebus" in captured.err
    assert "one-thread/batch100/4096B/deque+Condition" in captured.err
    report = json.loads(path.read_text())
    assert report["params"]["quick"] is True
    _check_report(report, inproc.QUICK_COUNT, inproc.QUICK_REPEAT, list(inproc.DEFAULT_SIZES))
    assert report["command"] == ["framebus", "bench", "--quick", "--json", str(path)]


@pytest.mark.bench_smoke
def test_bench_options_reach_the_run(tmp_path, capsys):
    path = tmp_path / "small.json"
    argv = [
        "bench",
        "--quick",
        "--size",
        "100",
        "--size",
        "1k,100",
        "--count",
        "1234",
        "--repeat",
        "2",
        "--batch",
        "7",
        "--no-progress",
        "--json",
        str(path),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "batch7" in captured.out
    report = json.loads(path.read_text())
    assert report["params"]["batch"] == 7
    assert all(r["batch"] == (7 if r["mode"] == "batch" else 1) for r in report["results"])
    _check_report(report, 1234, 2, [100, 1024])


@pytest.mark.xproc
@pytest.mark.bench_smoke
def test_python_m_framebus_bench_quick(tmp_path):
    path = tmp_path / "sub.json"
    proc = subprocess.run(
        [sys.executable, "-m", "framebus", "bench", "--quick", "--json", str(path)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    _check_table(proc.stdout)
    assert "threads/batch100/64B/queue.SimpleQueue" in proc.stderr
    report = json.loads(path.read_text())
    _check_report(report, inproc.QUICK_COUNT, inproc.QUICK_REPEAT, list(inproc.DEFAULT_SIZES))
    assert report["command"] == [
        "python",
        "-m",
        "framebus",
        "bench",
        "--quick",
        "--json",
        str(path),
    ]


@pytest.mark.xproc
def test_python_m_framebus_version_and_bad_args(tmp_path):
    run = [sys.executable, "-m", "framebus"]
    proc = subprocess.run(
        [*run, "--version"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"python -m framebus {framebus.__version__}"
    proc = subprocess.run(
        [*run, "bench", "--count", "zero"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "error: argument --count" in proc.stderr


@pytest.mark.xproc
def test_console_script_if_installed(tmp_path):
    import shutil

    exe = shutil.which("framebus", path=os.path.dirname(sys.executable)) or shutil.which("framebus")
    if exe is None:
        pytest.skip("the framebus console script is not installed")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"framebus {framebus.__version__}"
