"""framebus run FLOW and framebus demo, end to end in subprocesses from a clean
temporary directory; the example graphs in examples/."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from framebus import flow
from framebus.flow.live import LiveRun, Progress, Sample

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 120


def framebus(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "framebus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
    )


def report_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("runtime", ["sync", "inproc", "ipc"])
def test_enrich_example_fans_out_and_in(tmp_path: Path, runtime: str) -> None:
    done = framebus(
        "run",
        str(EXAMPLES / "enrich.yaml"),
        "--runtime",
        runtime,
        "--json",
        "r.json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "latency (us): p50" in done.stdout and "p99" in done.stdout
    assert "end-to-end deadline misses: 0; dead letters: 0" in done.stdout
    rep = report_of(tmp_path / "r.json")
    nodes = rep["nodes"]
    assert rep["runtime"] == runtime
    assert nodes["orders"]["items_out"] == 20_000
    assert nodes["price"]["items_out"] == nodes["region"]["items_out"] == 20_000
    assert nodes["tally"]["items_in"] == nodes["tally"]["items_out"] == 40_000


@pytest.mark.parametrize("runtime", ["sync", "inproc", "ipc"])
def test_cpu_example_with_two_workers_and_a_plot(tmp_path: Path, runtime: str) -> None:
    from matplotlib import image

    done = framebus(
        "run",
        str(EXAMPLES / "cpu.yaml"),
        "--runtime",
        runtime,
        "--json",
        "r.json",
        "--plot",
        "cpu.png",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    nodes = report_of(tmp_path / "r.json")["nodes"]
    assert nodes["digest"]["items_in"] == nodes["keep"]["items_out"] == 2_000
    assert "plot: cpu.png" in done.stdout
    pixels = image.imread(tmp_path / "cpu.png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_ingest_example_for_a_duration_with_metrics(tmp_path: Path) -> None:
    done = framebus(
        "run",
        str(EXAMPLES / "ingest.yaml"),
        "--duration",
        "1.5",
        "--interval",
        "0.5",
        "--metrics-port",
        "0",
        "--json",
        "r.json",
        cwd=tmp_path,
        env={"FRAMEBUS_DEMO_DIR": str(tmp_path / "data")},
    )
    assert done.returncode == 0, done.stderr
    assert "metrics: http://127.0.0.1:" in done.stdout
    rep = report_of(tmp_path / "r.json")
    assert rep["timed_out"] is True
    nodes = rep["nodes"]
    emitted = nodes["sensors"]["items_out"]
    assert emitted > 0
    assert nodes["parse"]["items_in"] == emitted  # drained at the end: nothing lost
    assert nodes["batch"]["items_in"] == nodes["valid"]["items_out"]
    assert nodes["store"]["items_in"] == nodes["batch"]["items_out"] > 0
    # not a terminal: a plain progress line per sample
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) >= 2 and "sensors" in lines[0] and "deadline misses" in lines[0]
    assert (tmp_path / "data" / "wal").is_dir()


def _graph_file(tmp_path: Path, failing: bool) -> Path:
    fn = "flow_fns:odd_fails" if failing else "flow_fns:double"
    path = tmp_path / "g.yaml"
    path.write_text(
        "name: g\n"
        "nodes:\n"
        "  - {name: src, kind: source, fn: 'flow_fns:ten'}\n"
        f"  - {{name: m, kind: map, fn: '{fn}'}}\n"
        "  - {name: out, kind: sink, fn: 'flow_fns:store'}\n"
        "edges: [[src, m], [m, out]]\n"
    )
    (tmp_path / "flow_fns.py").write_text(
        (Path(__file__).parent / "flow_fns.py").read_text() + "\n\ndef odd_fails(x: int) -> int:\n"
        "    if x % 2:\n"
        "        raise ValueError(f'odd {x}')\n"
        "    return x\n"
    )
    return path


def test_dead_letters_set_the_exit_status_unless_allowed(tmp_path: Path) -> None:
    path = _graph_file(tmp_path, failing=True)
    done = framebus("run", str(path), "--json", "r.json", cwd=tmp_path)
    assert done.returncode == 1
    assert "5 dead letter(s): exit status 1" in done.stderr
    assert report_of(tmp_path / "r.json")["nodes"]["m"]["dead_letters"] == 5
    done = framebus("run", str(path), "--allow-errors", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_bad_graph_files_give_one_line_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: g\nnodes:\n  - {name: a, kind: source\n  - b\n")
    done = framebus("run", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert " run: error: " in done.stderr and "line 5: not valid YAML" in done.stderr
    missing = framebus("run", str(tmp_path / "none.yaml"), cwd=tmp_path)
    assert missing.returncode == 2 and "none.yaml: no such file" in missing.stderr
    unknown = tmp_path / "u.yaml"
    unknown.write_text("name: g\nnodes: [{name: a, kind: source, fn: 'nowhere:x'}]\n")
    done = framebus("run", str(unknown), cwd=tmp_path)
    assert done.returncode == 2 and "cannot import 'nowhere:x'" in done.stderr
    done = framebus("run", str(bad), "--duration", "-1", cwd=tmp_path)
    assert done.returncode == 2 and "must be a finite number > 0, got -1" in done.stderr


def _tagged(tag: str) -> list[str]:
    """Processes but multiprocessing's resource tracker whose environment holds
    ``tag`` (the CLI's, its workers'): pid and command line."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if tag.encode() in env and b"resource_tracker" not in cmd:
            found.append(f"{pid}: {cmd.replace(bytes(1), b' ').decode(errors='replace')}")
    return found


def test_a_graph_ipc_cannot_run_and_a_dead_worker_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "acc.yaml"
    path.write_text(
        "name: acc\n"
        "nodes:\n"
        "  - {name: src, kind: source, fn: 'flow_fns:ten'}\n"
        "  - {name: b, kind: accumulate, options: {count: 2, parallelism: 2}}\n"
        "  - {name: out, kind: sink, fn: 'flow_fns:store'}\n"
        "edges: [[src, b], [b, out]]\n"
    )
    (tmp_path / "flow_fns.py").write_text((Path(__file__).parent / "flow_fns.py").read_text())
    done = framebus("run", str(path), "--runtime", "ipc", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert " run: error: node 'b': option parallelism=2 is invalid" in done.stderr
    dies = tmp_path / "dies.yaml"
    dies.write_text(
        "name: dies\n"
        "nodes:\n"
        "  - {name: src, kind: source, fn: 'flow_fns:ten'}\n"
        "  - {name: m, kind: map, fn: 'flow_fns:die_on_5'}\n"
        "  - {name: out, kind: sink, fn: 'flow_fns:store'}\n"
        "edges: [[src, m], [m, out]]\n"
    )
    done = framebus("run", str(dies), "--runtime", "ipc", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert " run: error: " in last and "was killed by signal SIGKILL" in last


@pytest.mark.parametrize("runtime", ["inproc", "ipc"])
def test_ctrl_c_drains_reports_and_exits_130(tmp_path: Path, runtime: str) -> None:
    tag = f"FRAMEBUS_TEST_TAG=ctrl-c-{os.getpid()}-{runtime}"
    key, value = tag.split("=")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "framebus",
            "run",
            str(EXAMPLES / "ingest.yaml"),
            "--runtime",
            runtime,
            "--interval",
            "0.2",
            "--json",
            "r.json",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FRAMEBUS_DEMO_DIR": str(tmp_path / "data"), key: value},
    )
    try:
        assert proc.stdout is not None
        for _ in range(600):  # progress samples until the source has emitted (bounded)
            line = proc.stdout.readline()
            assert line.startswith("["), line
            if not line.split("sensors ", 1)[1].startswith("0/s"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "latency (us): p50" in out
    rep = report_of(tmp_path / "r.json")
    assert rep["runtime"] == runtime
    nodes = rep["nodes"]
    assert nodes["parse"]["items_in"] == nodes["sensors"]["items_out"] > 0
    # nothing left behind: no worker process, no shared-memory segment of the run
    assert _tagged(tag) == []
    assert [n for n in os.listdir("/dev/shm") if f"-{proc.pid}-" in n] == []


def test_demo_from_a_clean_directory_and_again(tmp_path: Path) -> None:
    from matplotlib import image

    done = framebus("demo", "--duration", "1", "--rate", "3000", "--interval", "0.5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = tmp_path / "framebus-data"
    assert (data / "wal").is_dir() and (data / "latency.png").is_file()
    assert "metrics: http://127.0.0.1:" in done.stdout
    assert "latency (us): p50" in done.stdout and "end-to-end deadline misses" in done.stdout
    first = _stored(done.stdout)
    assert first[0] > 0 and first[0] == first[1]
    assert image.imread(data / "latency.png").shape[0] > 100
    again = framebus("demo", "--duration", "1", "--rate", "3000", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    second = _stored(again.stdout)
    assert second[1] == first[1] + second[0]  # the WAL is reused and appended to


def test_demo_ipc_stores_from_its_worker_and_reuses_the_data(tmp_path: Path) -> None:
    from matplotlib import image

    args = ("demo", "--runtime", "ipc", "--duration", "1", "--rate", "3000", "--interval", "0.5")
    done = framebus(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = tmp_path / "framebus-data"
    assert "runtime ipc" in done.stdout and "metrics: http://127.0.0.1:" in done.stdout
    assert "flow 'ingest' (ipc):" in done.stdout and "(timed out)" in done.stdout
    assert "latency (us): p50" in done.stdout and "p95" in done.stdout and "p99" in done.stdout
    assert "end-to-end deadline misses" in done.stdout
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[")]
    assert lines and all("store" in ln and "deadline misses" in ln for ln in lines)
    first = _stored(done.stdout)
    assert first[0] > 0 and first[0] == first[1]  # the sink's worker wrote them all
    assert image.imread(data / "latency.png").shape[0] > 100
    again = framebus(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    second = _stored(again.stdout)
    assert second[0] > 0 and second[1] == first[1] + second[0]  # reused and appended to


def _stored(out: str) -> tuple[int, int]:
    line = next(ln for ln in out.splitlines() if ln.startswith("stored "))
    words = line.split()
    return int(words[1]), int(words[words.index("in", 5) - 1])


def test_demo_without_matplotlib_says_how_to_get_the_plot(tmp_path: Path) -> None:
    blocker = tmp_path / "nomatplotlib"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('matplotlib is not installed')\n")
    done = framebus(
        "demo",
        "--duration",
        "0.5",
        "--rate",
        "1000",
        cwd=tmp_path,
        env={"PYTHONPATH": str(blocker)},
    )
    assert done.returncode == 0, done.stderr
    assert "no plot: the plot needs matplotlib: pip install 'framebus[plot]'" in done.stdout
    assert not (tmp_path / "framebus-data" / "latency.png").exists()


# -- in process -----------------------------------------------------------------------


def test_progress_rows_rates_and_backlog() -> None:
    g = flow.Graph("p")
    g.source("s", "flow_fns:ten") >> g.map("m", "flow_fns:double") >> g.sink("k", "flow_fns:store")
    plan = flow.compile(g, fuse=False)
    import io

    out = io.StringIO()
    progress = Progress(plan, out, tty=False)
    counts = {"s": {"items_out": 100}, "m": {"items_in": 80, "items_out": 80}}
    progress(Sample(2.0, counts))
    progress(Sample(3.0, {"s": {"items_out": 150}, "m": {"items_in": 150, "items_out": 140}}))
    first, second = out.getvalue().splitlines()
    assert first.startswith("[   2.0 s] s 50/s  m 40/s  k 0/s  backlog m=20 k=80")
    assert second.startswith("[   3.0 s] s 50/s  m 60/s  k 0/s  backlog k=140")
    tty = io.StringIO()
    Progress(plan, tty, tty=True)(Sample(1.0, counts))
    assert "\x1b[2K" in tty.getvalue() and "backlog" in tty.getvalue()


def test_live_run_samples_until_the_end() -> None:
    g = flow.Graph("live")
    g.source("s", "flow_fns:ten") >> g.sink("k", "flow_fns:store")
    seen: list[Sample] = []
    live = LiveRun(flow.compile(g), "sync", 0.01, seen.append)
    report = live.run()
    assert report.items_delivered == 10
    assert live.samples and seen  # every sample but a last one replaced by the totals
    assert live.samples[-1].nodes["k"]["items_out"] == 10
    with pytest.raises(flow.FlowError, match="runtime 'threads' is not available here"):
        LiveRun(flow.compile(g), "threads")


def test_live_run_ipc_counts_from_the_worker_processes() -> None:
    g = flow.Graph("liveipc")
    src = g.source("s", "flow_fns:thousand")
    (
        src
        >> g.map("m", "flow_fns:double")
        >> g.filter("f", "flow_fns:odd")
        >> g.sink("k", "flow_fns:store")
    )
    seen: list[Sample] = []
    live = LiveRun(flow.compile(g, fuse=False), "ipc", 0.05, seen.append)
    report = live.run(timeout=60)
    assert report.runtime == "ipc" and report.timed_out is False
    last = live.samples[-1].nodes  # the workers' last numbers: the report's
    for name, stats in report.nodes.items():
        assert last[name]["items_in"] == stats.items_in
        assert last[name]["items_out"] == stats.items_out
    assert last["s"]["items_out"] == last["m"]["items_in"] == 1000
    assert last["f"]["items_out"] == 0  # doubled: none odd
    assert seen
    times = [x.t for x in live.samples]
    outs = [x.nodes["s"]["items_out"] for x in live.samples]
    assert times == sorted(times) and outs == sorted(outs)  # cumulative: never back


def test_live_run_ipc_duration_counts_from_the_workers_start() -> None:
    g = flow.Graph("liveipcdur")
    g.source("s", "flow_fns:endless_slow") >> g.sink("k", "flow_fns:store")
    live = LiveRun(flow.compile(g), "ipc", 0.05)
    report = live.run(timeout=0.3)
    assert report.timed_out is True
    # the source emitted for the duration, not for what was left after the start-up
    assert report.nodes["s"].items_out > 0
    assert report.nodes["k"].items_in == report.nodes["s"].items_out
    last = live.samples[-1]  # the end's numbers, from the workers' counters
    assert last.nodes["k"]["items_out"] == report.nodes["k"].items_out
    assert last.nodes["s"]["items_out"] == report.nodes["s"].items_out


def test_run_wal_resumes_a_resumable_source_and_is_ipc_only(tmp_path: Path) -> None:
    path = tmp_path / "durable.yaml"
    path.write_text(
        "name: durable\n"
        "nodes:\n"
        "  - {name: src, kind: source, fn: 'flow_fns:resumable_ten', options: {resumable: true}}\n"
        "  - {name: m, kind: map, fn: 'flow_fns:double'}\n"
        "  - {name: out, kind: sink, fn: 'flow_fns:write_line'}\n"
        "edges: [[src, m], [m, out]]\n"
    )
    (tmp_path / "flow_fns.py").write_text((Path(__file__).parent / "flow_fns.py").read_text())
    env = {"FLOW_DIR": str(tmp_path)}
    wal = str(tmp_path / "wal")
    for _ in range(2):
        done = framebus(
            "run",
            str(path),
            "--runtime",
            "ipc",
            "--wal",
            wal,
            "--json",
            "r.json",
            cwd=tmp_path,
            env=env,
        )
        assert done.returncode == 0, done.stderr
    # the second run was told the first had stored all ten, so it made nothing more
    assert (tmp_path / "resumed").read_text().split() == ["0", "10"]
    lines = (tmp_path / "out").read_text().split()
    assert sorted(map(int, lines)) == [2 * i for i in range(10)]
    assert report_of(tmp_path / "r.json")["nodes"]["src"]["items_out"] == 0
    assert os.listdir(wal)
    done = framebus("run", str(path), "--runtime", "inproc", "--wal", wal, cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert 'durable runs are runtime="ipc" only' in done.stderr


def test_cpu_example_with_two_workers_in_a_durable_run(tmp_path: Path) -> None:
    # a node of parallelism 2 in a run with a WAL: a port per worker, each with its own
    # durable ack cursor; a second run on the same WAL hands on nothing again
    wal = tmp_path / "wal"
    for _ in range(2):
        done = framebus(
            "run",
            str(EXAMPLES / "cpu.yaml"),
            "--runtime",
            "ipc",
            "--wal",
            str(wal),
            "--json",
            "r.json",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        nodes = report_of(tmp_path / "r.json")["nodes"]
        assert nodes["digest"]["items_in"] == nodes["keep"]["items_out"] == 2_000
        assert nodes["digest"]["redelivered"] == nodes["keep"]["redelivered"] == 0
    assert os.listdir(wal)
