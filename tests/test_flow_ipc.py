"""framebus.flow's ipc runtime: the sync engine's outputs across processes (a chain
with an accumulator, a fan-out/fan-in with parallel workers), backpressure bounded by
the windows across processes, a killed worker, a failing source, timeout and Ctrl-C,
refused callables and options; after every run no worker process and no shared-memory
segment is left. Exact behaviour only, no timing assertions; every wait is bounded."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import flow_fns
import pytest

from framebus import flow
from framebus.flow import FlowError
from framebus.flow.ipc import IpcEngine

pytestmark = pytest.mark.xproc

SHM = "/dev/shm"


def _children() -> list[int]:
    """Processes whose parent is this one, but multiprocessing's own helpers."""
    me = str(os.getpid())
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]
        if ppid == me and b"resource_tracker" not in cmd and b"forkserver" not in cmd:
            out.append(int(pid))
    return out


def _segments(graph: str, pid: int | None = None) -> list[str]:
    """The segments of runs of ``graph`` started by ``pid`` (default: this process; a
    run's bus is named after its parent's pid, so another test run's do not count)."""
    prefix = f"framebus.flow-{graph}-{os.getpid() if pid is None else pid}-"
    return [n for n in os.listdir(SHM) if n.startswith(prefix)]


@pytest.fixture(autouse=True)
def nothing_left(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The workers write to tmp_path; afterwards no worker process and no segment of a
    run is left."""
    monkeypatch.setenv(flow_fns.FLOW_DIR, str(tmp_path))
    yield
    assert multiprocessing.active_children() == []
    assert _children() == []
    mine = f"-{os.getpid()}-"
    assert [n for n in os.listdir(SHM) if n.startswith("framebus.flow-ipc") and mine in n] == []


def ipc(g: flow.Graph, **kwargs: Any) -> flow.Report:
    kwargs.setdefault("timeout", 60)
    report = flow.compile(g).run(runtime="ipc", **kwargs)
    assert _segments(g.name) == []
    return report


def sync_out(g: flow.Graph) -> list[Any]:
    flow_fns.STORED.clear()
    flow.compile(g).run(runtime="sync")
    out = list(flow_fns.STORED)
    flow_fns.STORED.clear()
    return out


def test_chain_with_accumulate_as_sync(tmp_path: Any) -> None:
    def graph(sink: Any) -> flow.Graph:
        g = flow.Graph("ipc-chain")
        src = g.source("src", flow_fns.fifty)
        (
            src
            >> g.map("inc", flow_fns.inc)
            >> g.filter("odd", flow_fns.odd)
            >> g.map("double", flow_fns.double)
            >> g.accumulate("acc", count=3)
            >> g.sink("out", sink)
        )
        return g

    expected = sync_out(graph(flow_fns.store))
    report = ipc(graph(flow_fns.write_line))
    assert flow_fns.read_lines(str(tmp_path)) == expected  # one path: in order
    assert report.runtime == "ipc"
    assert report.nodes["src"].items_out == 50
    assert report.nodes["odd"].items_out == 25
    assert report.nodes["acc"].items_out == report.nodes["out"].items_in == len(expected)
    assert report.nodes["acc"].flushes == {"count": 8, "end": 1}
    assert report.latency_ns()["count"] == report.items_delivered == len(expected)
    assert not report.timed_out and report.dead_letters == []


def test_fan_out_fan_in_parallel_as_sync(tmp_path: Any) -> None:
    def graph(sink: Any, parallelism: int) -> flow.Graph:
        g = flow.Graph("ipc-fan")
        src = g.source("src", flow_fns.thousand)
        a = g.map("a", flow_fns.double, parallelism=parallelism, window=8)
        b = g.map("b", flow_fns.inc)
        k = g.sink("out", sink, parallelism=parallelism)
        src >> a >> k
        src >> b >> k
        return g

    expected = sync_out(graph(flow_fns.store, 1))
    report = ipc(graph(flow_fns.write_line, 2), max_batch=16)
    got = flow_fns.read_lines(str(tmp_path))
    assert Counter(got) == Counter(expected)
    assert report.nodes["a"].items_in == report.nodes["b"].items_in == 1000
    assert report.nodes["out"].items_out == 2000
    assert report.latency_ns()["count"] == 2000


def test_backpressure_bounded_by_windows(tmp_path: Any) -> None:
    window = 4
    g = flow.Graph("ipc-bp")
    g.source("src", flow_fns.counted) >> g.sink("out", flow_fns.slow_progress_sink, window=window)
    report = ipc(g, max_batch=1)
    rows = flow_fns.read_lines(str(tmp_path))
    assert [x for x, _ in rows] == list(range(200))
    # when the sink took item x, the source had made at most: the window's frames, the
    # frames the sink holds (at most one window), the one it works on and the one the
    # source is making
    ahead = max(emitted - (x + 1) for x, emitted in rows)
    assert ahead <= 2 * window + 2
    assert report.nodes["src"].blocked_ns > 0


@pytest.mark.parametrize("durable", [False, True])
def test_backpressure_bounded_across_a_chain_of_processes(tmp_path: Any, durable: bool) -> None:
    window = 4
    g = flow.Graph("ipc-bp-chain")
    (
        g.source("src", flow_fns.counted)
        >> g.map("m", flow_fns.inc, window=window)
        >> g.sink("out", flow_fns.slow_progress_sink, window=window)
    )
    report = ipc(g, max_batch=1, wal=str(tmp_path / "wal") if durable else None)
    rows = flow_fns.read_lines(str(tmp_path))
    assert [x for x, _ in rows] == list(range(1, 201))
    # when the sink took item x (the source's x-th), the source had made at most: per
    # port its window and the frames its receiver holds (one window), the item in each
    # of the two receivers' hands and the one the source is making
    ahead = max(emitted - x for x, emitted in rows)
    assert ahead <= 2 * (2 * window) + 3
    assert report.nodes["src"].blocked_ns > 0


def test_dead_letters_and_retries_cross(tmp_path: Any) -> None:
    g = flow.Graph("ipc-dead")
    (
        g.source("src", flow_fns.ten)
        >> g.map("m", flow_fns.fail_on_7, retries=2)
        >> g.sink("out", flow_fns.write_line)
    )
    report = ipc(g)
    assert sorted(flow_fns.read_lines(str(tmp_path))) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    m = report.nodes["m"]
    assert (m.errors, m.retries, m.dead_letters) == (3, 2, 1)
    assert [(d.node, d.item) for d in report.dead_letters] == [("m", 7)]
    assert "seven" in report.dead_letters[0].error


@pytest.mark.crash
def test_killed_worker_is_a_flow_error_naming_the_stage(tmp_path: Any) -> None:
    g = flow.Graph("ipc-kill")
    (
        g.source("src", flow_fns.endless_slow)
        >> g.map("victim", flow_fns.die_on_5, pure=False)
        >> g.sink("out", flow_fns.write_line)
    )
    with pytest.raises(FlowError) as info:
        ipc(g)
    msg = str(info.value)
    assert "'victim'" in msg and "SIGKILL" in msg


def test_source_error_in_worker_is_raised() -> None:
    g = flow.Graph("ipc-bad")
    g.source("src", flow_fns.not_iterable) >> g.sink("out", flow_fns.write_line)
    with pytest.raises(FlowError, match="not an iterable"):
        ipc(g)


def test_timeout_drains(tmp_path: Any) -> None:
    g = flow.Graph("ipc-timeout")
    (
        g.source("src", flow_fns.endless_slow)
        >> g.map("inc", flow_fns.inc)
        >> g.sink("out", flow_fns.write_line)
    )
    report = ipc(g, timeout=2.0)
    assert report.timed_out
    got = flow_fns.read_lines(str(tmp_path))
    assert report.nodes["src"].items_out == report.items_delivered == len(got)
    assert got == list(range(1, len(got) + 1))


def test_ctrl_c_drains_and_reraises_with_report(tmp_path: Any) -> None:
    g = flow.Graph("ipc-int")
    g.source("src", flow_fns.endless_slow) >> g.sink("out", flow_fns.write_line)
    out = tmp_path / "out"

    def interrupt() -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end and not (out.exists() and out.stat().st_size > 20):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt) as info:
        ipc(g)
    t.join(10)
    report = info.value.report  # type: ignore[attr-defined]
    got = flow_fns.read_lines(str(tmp_path))
    assert len(got) > 0
    assert report.nodes["src"].items_out == report.items_delivered == len(got)
    assert got == list(range(len(got)))


def test_lambda_and_local_function_refused_before_any_process() -> None:
    def local(x: int) -> int:
        return x

    for fn, what in ((lambda x: x, "<lambda>"), (local, "<locals>")):
        g = flow.Graph("ipc-lambda")
        g.source("src", flow_fns.ten) >> g.map("m", fn) >> g.sink("out", flow_fns.write_line)
        with pytest.raises(FlowError, match=f"node 'm'.*{what}"):
            ipc(g)


def test_options_refused() -> None:
    g = flow.Graph("ipc-opts")
    g.source("src", flow_fns.ten) >> g.sink("out", flow_fns.write_line)
    plan = flow.compile(g)
    with pytest.raises(FlowError, match="start_method"):
        plan.run(runtime="ipc", start_method="thread")
    with pytest.raises(FlowError, match="clock"):
        plan.run(runtime="ipc", clock=time.monotonic_ns)
    with pytest.raises(FlowError, match="codec"):
        plan.run(runtime="ipc", codec="ref")
    with pytest.raises(FlowError, match="only the ipc runtime"):
        plan.run(runtime="inproc", start_method="spawn")


def test_forkserver_start_method(tmp_path: Any) -> None:
    g = flow.Graph("ipc-fs")
    (
        g.source("src", flow_fns.ten)
        >> g.map("d", flow_fns.double)
        >> g.sink("out", flow_fns.write_line)
    )
    ipc(g, start_method="forkserver")
    assert flow_fns.read_lines(str(tmp_path)) == [2 * i for i in range(10)]


def test_items_cross_msgpack_encoded_bytes_and_envelopes_as_they_are(tmp_path: Any) -> None:
    g = flow.Graph("ipc-items")
    g.source("src", flow_fns.mixed) >> g.sink("out", flow_fns.describe_line)
    ipc(g)
    assert flow_fns.read_lines(str(tmp_path)) == [
        ["bytes", repr(b"\x00raw")],
        ["Envelope", True],
        ["list", "[1, 2]"],  # a tuple comes back a list, as on any msgpack channel
        ["dict", "{'k': [1, None]}"],
        ["dict", "{3: 'int key'}"],
        ["float", "1.5"],
        ["str", "'s'"],
        ["NoneType", "None"],
    ]


def test_an_item_msgpack_cannot_encode_is_a_dead_letter_by_its_repr(tmp_path: Any) -> None:
    g = flow.Graph("ipc-unenc")
    (
        g.source("src", flow_fns.ten)
        >> g.map("m", flow_fns.set_on_2, pure=False)
        >> g.sink("out", flow_fns.write_line)
    )
    report = ipc(g)
    assert flow_fns.read_lines(str(tmp_path)) == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert [(d.node, d.item) for d in report.dead_letters] == [("m", "{2}")]
    assert "TypeError" in report.dead_letters[0].error


def test_fork_start_method(tmp_path: Any) -> None:
    g = flow.Graph("ipc-fork")
    g.source("src", flow_fns.ten) >> g.sink("out", flow_fns.write_line, parallelism=2)
    report = ipc(g, start_method="fork")
    assert sorted(flow_fns.read_lines(str(tmp_path))) == list(range(10))
    assert report.nodes["out"].items_out == 10


@pytest.mark.crash
@pytest.mark.parametrize("max_batch", [1, 64])
def test_restart_redelivers_what_the_dead_worker_did_not_finish(
    tmp_path: Any, max_batch: int
) -> None:
    g = flow.Graph("ipc-restart")
    (
        g.source("src", flow_fns.fifty)
        >> g.map("m", flow_fns.die_once_on_5, pure=False, restart=True)
        >> g.map("d", flow_fns.double)
        >> g.sink("out", flow_fns.write_line)
    )
    report = ipc(g, max_batch=max_batch)
    assert (tmp_path / "died").exists()
    got = flow_fns.read_lines(str(tmp_path))
    assert set(got) == {2 * i for i in range(50)}  # nothing lost
    assert report.nodes["m"].redelivered >= 1
    assert len(got) - 50 <= report.nodes["m"].redelivered  # duplicates, all counted


@pytest.mark.crash
def test_restart_of_a_sink(tmp_path: Any) -> None:
    g = flow.Graph("ipc-restart-sink")
    g.source("src", flow_fns.thousand) >> g.sink(
        "out", flow_fns.sink_dying_once_on_5, restart=True, window=4
    )
    engine = IpcEngine(flow.compile(g), max_batch=8)
    report = engine.run(timeout=60)
    got = flow_fns.read_lines(str(tmp_path))
    assert set(got) == set(range(1000))
    assert report.nodes["out"].redelivered >= 1
    assert len(got) - 1000 <= report.nodes["out"].redelivered
    # the live counters: the replacement went on from what the dead worker had copied
    # into the row, the report counts what the replacement did
    snap = engine.snapshot()["nodes"]
    assert snap["src"]["items_out"] == report.nodes["src"].items_out == 1000
    assert snap["out"]["items_out"] >= report.nodes["out"].items_out


@pytest.mark.crash
@pytest.mark.parametrize("max_batch", [1, 16])
def test_restart_of_one_of_two_workers(tmp_path: Any, max_batch: int) -> None:
    # each worker has a port of its own: the dead one's replacement takes what it had
    # taken and not finished; the other worker goes on meanwhile
    g = flow.Graph("ipc-restart-par")
    (
        g.source("src", flow_fns.thousand)
        >> g.map("m", flow_fns.die_once_on_5, pure=False, restart=True, parallelism=2, window=8)
        >> g.map("d", flow_fns.double)
        >> g.sink("out", flow_fns.write_line)
    )
    report = ipc(g, max_batch=max_batch)
    assert (tmp_path / "died").exists()
    got = Counter(flow_fns.read_lines(str(tmp_path)))
    expected = Counter(2 * i for i in range(1000))
    assert got >= expected  # nothing lost
    assert got - expected == Counter({x: n - 1 for x, n in got.items() if n > 1})  # dups only
    assert report.nodes["m"].redelivered >= 1
    assert sum(got.values()) - 1000 <= report.nodes["m"].redelivered  # all counted
    assert report.nodes["src"].items_out == 1000


@pytest.mark.crash
def test_restart_of_a_sink_of_two_workers(tmp_path: Any) -> None:
    g = flow.Graph("ipc-restart-par-sink")
    g.source("src", flow_fns.thousand) >> g.sink(
        "out", flow_fns.sink_dying_once_on_5, restart=True, parallelism=2, window=4
    )
    report = ipc(g, max_batch=8)
    got = Counter(flow_fns.read_lines(str(tmp_path)))
    assert set(got) == set(range(1000))
    assert report.nodes["out"].redelivered >= 1
    assert sum(got.values()) - 1000 <= report.nodes["out"].redelivered


@pytest.mark.crash
def test_a_worker_dying_on_every_restart_ends_the_run() -> None:
    g = flow.Graph("ipc-restart-loop")
    (
        g.source("src", flow_fns.ten)
        >> g.map("victim", flow_fns.die_on_5, pure=False, restart=True)
        >> g.sink("out", flow_fns.write_line)
    )
    with pytest.raises(FlowError) as info:
        ipc(g)
    msg = str(info.value)
    assert "'victim'" in msg and "SIGKILL" in msg and "after 3 restarts" in msg


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended
    except OSError:
        return True


@pytest.mark.crash
def test_workers_stop_when_the_parent_is_killed(tmp_path: Any) -> None:
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    parent = subprocess.Popen(
        [sys.executable, "-c", "import flow_fns; flow_fns.orphan_main()"], cwd=here
    )
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not (tmp_path / "pid-out").exists():
            assert parent.poll() is None
            time.sleep(0.02)
        pids = [int((tmp_path / f"pid-{n}").read_text()) for n in ("src", "out")]
    finally:
        parent.kill()
        parent.wait(10)
    end = time.monotonic() + 20
    while time.monotonic() < end and not all(_gone(p) for p in pids):
        time.sleep(0.05)
    assert all(_gone(p) for p in pids)
    for n in os.listdir(SHM):  # the killed run's segment (framebus gc would take it)
        if n.startswith("framebus.flow-ipc-orphan-"):
            os.unlink(os.path.join(SHM, n))


def test_async_map_runs_in_its_worker(tmp_path: Any) -> None:
    g = flow.Graph("ipc-async")
    (
        g.source("src", flow_fns.ten)
        >> g.map("a", flow_fns.adouble)
        >> g.sink("out", flow_fns.write_line)
    )
    ipc(g)
    assert flow_fns.read_lines(str(tmp_path)) == [2 * i for i in range(10)]


def test_a_failing_source_is_a_dead_letter_and_the_rest_drains(tmp_path: Any) -> None:
    g = flow.Graph("ipc-srcfail")
    g.source("src", flow_fns.three_then_raise) >> g.sink("out", flow_fns.write_line)
    report = ipc(g, max_batch=1)
    assert flow_fns.read_lines(str(tmp_path)) == [0, 1, 2]
    assert [(d.node, d.item) for d in report.dead_letters] == [("src", None)]
    assert "source broke" in report.dead_letters[0].error


def test_overflow_drop_across_processes_counts_what_it_drops(tmp_path: Any) -> None:
    g = flow.Graph("ipc-drop")
    g.source("src", flow_fns.thousand) >> g.sink(
        "out", flow_fns.slow_write_line, window=1, overflow="drop"
    )
    report = ipc(g, max_batch=1)
    got = flow_fns.read_lines(str(tmp_path))
    out = report.nodes["out"]
    assert out.items_out == len(got) and out.dropped == 1000 - len(got)
    assert got == sorted(got)  # one path: what arrives keeps the source's order


def test_rate_with_parallelism_delivers_everything(tmp_path: Any) -> None:
    g = flow.Graph("ipc-rate")
    (
        g.source("src", flow_fns.fifty)
        >> g.map("m", flow_fns.double, rate=500.0, parallelism=2)
        >> g.sink("out", flow_fns.write_line)
    )
    report = ipc(g)
    assert sorted(flow_fns.read_lines(str(tmp_path))) == [2 * i for i in range(50)]
    assert report.nodes["m"].items_out == 50


def _group_pids(pgid: int) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(pid))
    return out


def _kill_run_midway(
    tmp_path: Any, wal: Any, source: str, batches: int = 10, parallelism: int = 1
) -> tuple[list[int], int]:
    """Runs durable_graph(source, parallelism) with ``wal`` in a program of its own,
    SIGKILLs the whole run (parent and workers, one process group) once the sink wrote
    ``batches`` lines, waits until every process of it has ended; the items written
    before, and the killed parent's pid."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import flow_fns; flow_fns.durable_main({str(wal)!r}, {source!r}, {parallelism})",
        ],
        cwd=here,
        start_new_session=True,
    )
    out = tmp_path / "out"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not (
            out.exists() and out.read_text().count("\n") >= batches
        ):
            assert run.poll() is None
            time.sleep(0.02)
        assert out.exists() and out.read_text().count("\n") >= batches
    finally:
        pids = _group_pids(run.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(10)
    assert len(pids) >= 5  # the parent and its four workers, at least
    end = time.monotonic() + 20
    while time.monotonic() < end and not all(_gone(p) for p in pids):
        time.sleep(0.05)
    assert all(_gone(p) for p in pids)
    assert len(_segments("ipc-durable", run.pid)) == 1  # the killed run's, left behind
    items = [x for batch in flow_fns.read_lines(str(tmp_path)) for x in batch]  # type: ignore[attr-defined]
    return items, run.pid


@pytest.mark.crash
def test_a_killed_run_with_a_wal_resumes_without_loss(tmp_path: Any) -> None:
    expected = Counter(range(1, 301))  # what the sync engine delivers
    wal = tmp_path / "wal"
    before, killed = _kill_run_midway(tmp_path, wal, "resumable_300")
    assert 40 <= len(before) < 300
    report = ipc(flow_fns.durable_graph(), wal=str(wal))  # type: ignore[arg-type]
    assert _segments("ipc-durable", killed) == []  # the run with the wal removed the dead one's
    got = Counter(x for batch in flow_fns.read_lines(str(tmp_path)) for x in batch)  # type: ignore[attr-defined]
    assert set(got) == set(expected)  # nothing lost
    assert got - expected == Counter({x: n - 1 for x, n in got.items() if n > 1})  # dups only
    resumed = [int(v) for v in (tmp_path / "resumed").read_text().split()]
    assert resumed[0] == 0 and 0 < resumed[1] < 300  # told where to resume
    assert report.nodes["src"].items_out == 300 - resumed[1]
    # an item before the resume point comes twice only when handed on again from the
    # WAL, and those are counted (the source makes again only items after it); the
    # sink's items are batches of up to 4 (acc's count)
    nodes = report.nodes
    again = nodes["inc"].redelivered + nodes["acc"].redelivered + 4 * nodes["out"].redelivered
    assert sum(n - 1 for x, n in got.items() if x <= resumed[1]) <= again


@pytest.mark.crash
def test_a_killed_run_with_two_workers_of_a_map_resumes_without_loss(tmp_path: Any) -> None:
    # the map "inc" runs in two workers, a port each: each port's uncommitted frames
    # are handed on again to its worker
    expected = Counter(range(1, 301))
    wal = tmp_path / "wal"
    before, killed = _kill_run_midway(tmp_path, wal, "resumable_300", parallelism=2)
    assert 40 <= len(before) < 300
    report = ipc(flow_fns.durable_graph("resumable_300", 2), wal=str(wal))  # type: ignore[arg-type]
    assert _segments("ipc-durable", killed) == []
    got = Counter(x for batch in flow_fns.read_lines(str(tmp_path)) for x in batch)  # type: ignore[attr-defined]
    assert got >= expected  # every item delivered
    assert got - expected == Counter({x: n - 1 for x, n in got.items() if n > 1})  # dups only
    resumed = [int(v) for v in (tmp_path / "resumed").read_text().split()]
    assert resumed[0] == 0 and 0 < resumed[1] < 300
    assert report.nodes["src"].items_out == 300 - resumed[1]
    assert report.nodes["inc"].items_in >= 300 - resumed[1]
    nodes = report.nodes  # the sink's items are batches of up to 4 (acc's count)
    again = nodes["inc"].redelivered + nodes["acc"].redelivered + 4 * nodes["out"].redelivered
    assert sum(n - 1 for x, n in got.items() if x <= resumed[1]) <= again


@pytest.mark.crash
def test_a_killed_run_of_a_source_not_resumable_starts_it_again(tmp_path: Any) -> None:
    wal = tmp_path / "wal"
    before, _killed = _kill_run_midway(tmp_path, wal, "slow_ten")
    report = ipc(flow_fns.durable_graph("slow_ten"), wal=str(wal))  # type: ignore[arg-type]
    got = Counter(x for batch in flow_fns.read_lines(str(tmp_path)) for x in batch)  # type: ignore[attr-defined]
    assert set(got) == set(range(1, 301))  # nothing lost
    assert report.nodes["src"].items_out == 300  # all of it again
    assert sum(got.values()) >= 300 + len(before)


def test_a_durable_run_resumes_where_the_one_before_ended(tmp_path: Any) -> None:
    def graph(fn: Any) -> flow.Graph:
        g = flow.Graph("ipc-resume")
        g.source("src", fn, resumable=True) >> g.sink("out", flow_fns.write_line)
        return g

    wal = str(tmp_path / "wal")
    first = ipc(graph(flow_fns.resumable_ten), wal=wal)
    second = ipc(graph(flow_fns.resumable_ten), wal=wal)
    assert flow_fns.read_lines(str(tmp_path)) == list(range(10))  # nothing twice
    assert (tmp_path / "resumed").read_text().split() == ["0", "10"]
    assert first.nodes["src"].items_out == 10 and second.nodes["src"].items_out == 0
    assert second.items_delivered == 0 and second.nodes["out"].redelivered == 0
    # an async source is told the same, and without a wal every runtime says 0
    (tmp_path / "resumed").unlink()
    ipc(graph(flow_fns.aresumable_ten), wal=wal)
    flow.compile(graph(flow_fns.resumable_ten)).run(runtime="sync")
    flow.compile(graph(flow_fns.resumable_ten)).run(runtime="inproc")
    ipc(graph(flow_fns.resumable_ten))
    assert (tmp_path / "resumed").read_text().split() == ["10", "0", "0", "0"]


def test_a_durable_run_stopped_by_timeout_resumes_exactly(tmp_path: Any) -> None:
    def graph(fn: Any) -> flow.Graph:
        g = flow.Graph("ipc-resume-to")
        (
            g.source("src", fn, resumable=True)
            >> g.map("inc", flow_fns.inc)
            >> g.accumulate("acc", count=7)
            >> g.sink("out", flow_fns.write_line)
        )
        return g

    wal = str(tmp_path / "wal")
    first = ipc(graph(flow_fns.resumable_endless), wal=wal, timeout=1.0)
    assert first.timed_out
    n = first.nodes["src"].items_out
    second = ipc(graph(flow_fns.resumable_fifty_more), wal=wal)
    got = [x for batch in flow_fns.read_lines(str(tmp_path)) for x in batch]  # type: ignore[attr-defined]
    assert got == list(range(1, n + 51))  # drained and committed: no gap, no repeat
    assert (tmp_path / "resumed").read_text().split()[-1] == str(n)
    assert second.nodes["inc"].redelivered == second.nodes["acc"].redelivered == 0


def test_bad_wal_values_are_clear_errors(tmp_path: Any) -> None:
    g = flow.Graph("ipc-badwal")
    g.source("src", flow_fns.ten) >> g.sink("out", flow_fns.write_line)
    plan = flow.compile(g)
    for bad in (123, "", b"dir", True):
        with pytest.raises(FlowError, match=r"wal=.* is invalid: expected a directory path"):
            plan.run(runtime="ipc", wal=bad)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(FlowError, match="cannot be used: .*not a directory"):
        plan.run(runtime="ipc", wal=str(a_file))
    from framebus.bus import FrameBus

    with FrameBus(wal_dir=str(tmp_path / "busy")):  # another bus holds the directory
        with pytest.raises(FlowError, match="cannot be used: .*already open"):
            plan.run(runtime="ipc", wal=str(tmp_path / "busy"))
    for runtime in ("sync", "inproc"):
        with pytest.raises(FlowError, match=f"the {runtime} runtime does not take wal"):
            plan.run(runtime=runtime, wal=str(tmp_path / "w"))
    no_resume = flow.Graph("ipc-badwal-res")
    no_resume.source("src", flow_fns.ten, resumable=True) >> no_resume.sink("o", flow_fns.store)
    with pytest.raises(FlowError, match="node 'src': option resumable=True needs .* resume"):
        flow.compile(no_resume)
    assert not (tmp_path / "w").exists()
    assert not list(tmp_path.glob("out"))  # no run started


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _example(name: str, sink: Any) -> flow.Graph:
    """examples/<name>.yaml with its sink writing where the test sees it (and the
    ingest example's endless source bounded to 2 000 readings)."""
    g = flow.load(os.path.join(EXAMPLES, f"{name}.yaml"))
    for node in g.nodes.values():
        if node.kind == "sink":
            node.fn = sink
        elif node.kind == "source" and name == "ingest":
            node.fn = flow_fns.sensor_readings_2000
    return g


@pytest.mark.parametrize("name", ["ingest", "enrich", "cpu"])
def test_every_example_graph_as_sync(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    import json

    monkeypatch.syspath_prepend(EXAMPLES)  # "enrich:orders": the workers get this path
    expected = [json.loads(json.dumps(x)) for x in sync_out(_example(name, flow_fns.store))]
    report = ipc(_example(name, flow_fns.write_line))
    got = flow_fns.read_lines(str(tmp_path))
    if name == "ingest":
        # batches by count and TTL: cut where time says; the readings are the same
        assert [r for b in got for r in b] == [r for b in expected for r in b]  # type: ignore[attr-defined]
        assert all(len(b) <= 500 for b in got)  # type: ignore[arg-type]
        assert report.nodes["sensors"].items_out == 2000
    else:
        assert Counter(map(json.dumps, got)) == Counter(map(json.dumps, expected))
    assert len(expected) > 0 and not report.dead_letters
    assert report.items_delivered == sum(
        report.nodes[n].items_out for n, node in report.nodes.items() if node.kind == "sink"
    )


# -- live counters: snapshot() and metrics while the workers run -----------------------


def _until(what: Any, timeout: float = 30.0) -> None:
    """Waits (bounded) until what() is true."""
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "not reached within the bound"
        time.sleep(0.01)


def _open_gate(tmp_path: Any, n: int) -> None:
    (tmp_path / "gate.tmp").write_text(str(n))
    os.replace(tmp_path / "gate.tmp", tmp_path / "gate")


def _same_counts(snap: dict[str, Any], report: flow.Report) -> None:
    for name, stats in report.nodes.items():
        got = snap["nodes"][name]
        want = {f: getattr(stats, f) for f in ("items_in", "items_out", "errors")}
        want["deadline_misses"] = stats.deadline_misses
        assert got == want, name
    assert snap["e2e_deadline_misses"] == report.e2e_deadline_misses


def test_snapshot_counts_while_the_run_goes_and_ends_as_the_report(tmp_path: Any) -> None:
    from prometheus_client import CollectorRegistry

    g = flow.Graph("ipc-live")
    (
        g.source("src", flow_fns.fifty)
        >> g.map("inc", flow_fns.inc)
        >> g.sink("out", flow_fns.gated_write_line)
    )
    engine = IpcEngine(flow.compile(g, fuse=False), max_batch=1)  # a frame per item
    before = engine.snapshot()
    assert before["graph"] == "ipc-live" and set(before["latency"]) == {"out"}
    assert all(v == 0 for d in before["nodes"].values() for v in d.values())
    registry = CollectorRegistry()
    reports: list[flow.Report] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(engine.run(timeout=60, metrics=registry))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    def out_counts() -> tuple[int, int]:
        d = engine.snapshot()["nodes"]["out"]
        return d["items_in"], d["items_out"]

    def exported(node: str) -> float | None:
        return registry.get_sample_value(
            "framebus_flow_items_total", {"graph": "ipc-live", "node": node, "direction": "out"}
        )

    _open_gate(tmp_path, 5)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        # items 1..5 are through; the sink took the 6th and waits at the gate
        _until(lambda: out_counts() == (6, 5))
        _until(lambda: exported("out") == 5.0)  # exported while the run is live
        _until(lambda: engine.snapshot()["nodes"]["inc"]["items_out"] >= 6)
        _open_gate(tmp_path, 20)
        _until(lambda: out_counts() == (21, 20))  # grows
        _open_gate(tmp_path, 50)
    finally:
        _open_gate(tmp_path, 50)
        t.join(60)
    assert not errors and len(reports) == 1
    report = reports[0]
    assert flow_fns.read_lines(str(tmp_path)) == list(range(1, 51))
    snap = engine.snapshot()  # the workers' last numbers: the report's
    _same_counts(snap, report)
    assert snap["nodes"]["out"]["items_out"] == 50
    bounds, counts, total = snap["latency"]["out"]
    assert len(counts) == len(bounds) + 1 and total > 0
    assert sum(counts) == report.latency_ns()["count"] == 50
    assert exported("out") is None  # unregistered at the end


def test_timeout_counts_from_when_every_worker_is_in_place(tmp_path: Any) -> None:
    g = flow.Graph("ipc-live-timeout")
    g.source("src", flow_fns.endless_slow) >> g.sink("out", flow_fns.write_line)
    engine = IpcEngine(flow.compile(g))
    report = engine.run(timeout=0.3)  # shorter than starting the processes takes
    assert report.timed_out is True
    # the source emitted for the timeout, not for what start-up left of it
    assert report.nodes["src"].items_out > 0
    assert report.nodes["out"].items_in == report.nodes["src"].items_out
    assert report.items_delivered == len(flow_fns.read_lines(str(tmp_path)))
    snap = engine.snapshot()
    _same_counts(snap, report)
    bounds, counts, _sum_ns = snap["latency"]["out"]
    assert sum(counts) == report.latency_ns()["count"] == report.nodes["out"].items_out


def test_snapshot_of_durable_runs(tmp_path: Any) -> None:
    g = flow.Graph("ipc-live-wal")
    (
        g.source("src", flow_fns.resumable_ten, resumable=True)
        >> g.map("inc", flow_fns.inc)
        >> g.accumulate("acc", count=4)
        >> g.sink("out", flow_fns.write_line)
    )
    wal = str(tmp_path / "wal")
    first = IpcEngine(flow.compile(g), wal=wal)
    report = first.run(timeout=60)
    assert _segments("ipc-live-wal") == []
    got = flow_fns.read_lines(str(tmp_path))
    assert got == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    snap = first.snapshot()
    _same_counts(snap, report)
    assert snap["nodes"]["src"]["items_out"] == 10 and snap["nodes"]["out"]["items_in"] == 3
    # run again on the same wal: the source resumes at its end, nothing is handed on
    second = IpcEngine(flow.compile(g), wal=wal)
    again = second.run(timeout=60)
    assert (tmp_path / "resumed").read_text().split() == ["0", "10"]
    assert flow_fns.read_lines(str(tmp_path)) == got
    _same_counts(second.snapshot(), again)
    assert all(v == 0 for d in second.snapshot()["nodes"].values() for v in d.values())


def test_metrics_option_and_its_check() -> None:
    g = flow.Graph("ipc-live-metrics")
    g.source("src", flow_fns.ten) >> g.sink("out", flow_fns.write_line)
    with pytest.raises(FlowError, match=r"metrics='yes' is invalid"):
        flow.compile(g).run(runtime="ipc", metrics="yes")
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    report = flow.compile(g).run(runtime="ipc", timeout=60, metrics=registry)
    assert report.items_delivered == 10
    assert (
        registry.get_sample_value(
            "framebus_flow_items_total",
            {"graph": "ipc-live-metrics", "node": "out", "direction": "in"},
        )
        is None
    )  # exported only while the run lives


def test_a_script_without_a_main_guard_gets_a_hint(tmp_path: Any) -> None:
    import subprocess

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import flow_fns\n"
        "from framebus import flow\n"
        "g = flow.Graph('ipc-unguarded')\n"
        "g.source('src', flow_fns.ten) >> g.sink('out', flow_fns.store)\n"
        "flow.compile(g).run(runtime='ipc', timeout=30)\n"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": here},
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("framebus.flow.errors.FlowError: flow 'ipc-unguarded': stage ")
    assert "exited with code 1 without its result" in last
    assert "if __name__ == '__main__':" in last
    assert [n for n in os.listdir(SHM) if n.startswith("framebus.flow-ipc-unguarded-")] == []
