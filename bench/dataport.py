#!/usr/bin/env python3
"""DataPort throughput against the raw bus, in one process and across processes.

Four cases, 64 B payloads (--size), each measured for the raw bus and for a DataPort
on a ring of the same preset, interleaved (the order alternates every repeat):

  in-process per-frame   a sender thread and a receiver thread. Raw: bus.publish per
                         frame. Port: tx.acquire_credit(up to --window, timeout) and
                         then send_frame for every credit granted.
  in-process batch       the same with batches of --batch (64): raw publish_batch
                         against port send_batch (acquire_credit when it has no credit).
  cross-process ...      the same two, on a shared bus (FrameBus.create_shared), the
                         sender in this process and the receiver in a spawned child.

The receiver always drains with recv_batch(256). A run's rate is end to end: --frames
divided by the time from the first send to the last frame received (the processes
share CLOCK_MONOTONIC); sender-side and receiver-side rates are in the JSON. Medians
with min and max over --repeat runs, and the ratio DataPort / raw of the medians
against the issue's target (>= 0.8x).

    python bench/dataport.py                    # about 15 s on 2 cores
    python bench/dataport.py --quick            # a few seconds
    python bench/dataport.py --window 64 --json dataport.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    # Run from a checkout without installing: the repository root holds framebus/.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

import framebus as fb  # noqa: E402
from framebus.bench._common import BenchError, machine_info, summary  # noqa: E402

SCHEMA = "framebus.bench.dataport/1"
TARGET = 0.8
PRESET = "default"
PORT = "bench"
TOPIC = "t"
RECV_BATCH = 256
IMPLS = ("raw", "port")
CASES = ("inproc-frame", "inproc-batch", "xproc-frame", "xproc-batch")
SHM = "/dev/shm"
QUICK_FRAMES = 5000
QUICK_REPEAT = 1
_SEQ = itertools.count()
_now = time.monotonic_ns  # CLOCK_MONOTONIC: one clock for every process on the machine


# ------------------------------------------------------------------ receivers


def _receive(recv_batch: Callable[..., list[Any]], count: int, timeout: float) -> dict[str, Any]:
    """Drain ``count`` frames: the times of the first and the last (monotonic ns)."""
    got = 0
    first = last = 0
    deadline = time.monotonic() + timeout
    while got < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"receiver got {got} of {count} frames in {timeout:g} s")
        frames = recv_batch(RECV_BATCH, min(left, 1.0))
        if frames:
            last = _now()
            if not got:
                first = last
            got += len(frames)
    extra = len(recv_batch(RECV_BATCH, 0))
    return {"received": got, "extra": extra, "first_ns": first, "last_ns": last}


def _open_receiver(bus: fb.FrameBus, impl: str, window: int) -> tuple[Any, Callable[..., Any]]:
    if impl == "raw":
        sub = bus.subscribe(TOPIC)
        return sub, sub.recv_batch
    rx = bus.data_port(PORT, window=window)
    rx.recv(timeout=0)  # opens the receiver: grants the window
    return rx, rx.recv_batch


# -------------------------------------------------------------------- senders


def _sender(bus: fb.FrameBus, impl: str, mode: str, spec: dict[str, Any]) -> Callable[[], None]:
    """A function sending spec["frames"] frames of the run's kind."""
    count, window, batch = spec["frames"], spec["window"], spec["batch"]
    timeout = spec["timeout"]
    payload = b"x" * spec["size"]
    frames = [payload] * batch
    if impl == "raw":
        publish, publish_batch = bus.publish, bus.publish_batch
        if mode == "frame":

            def raw_frames() -> None:
                for _ in range(count):
                    publish(payload, topic=TOPIC)

            return raw_frames

        def raw_batches() -> None:
            i = 0
            while i < count:
                n = min(batch, count - i)
                publish_batch(frames if n == batch else frames[:n], topic=TOPIC)
                i += n

        return raw_batches

    tx = bus.data_port(PORT, window=window)
    acquire, send_frame, send_batch = tx.acquire_credit, tx.send_frame, tx.send_batch
    if mode == "frame":

        def port_frames() -> None:
            i = 0
            while i < count:
                got = acquire(min(window, count - i), timeout=timeout)
                for _ in range(got):
                    send_frame(payload)
                i += got

        return port_frames

    def port_batches() -> None:
        i = 0
        while i < count:
            n = min(batch, count - i)
            try:
                _, sent = send_batch(frames if n == batch else frames[:n])
            except fb.WouldBlock:
                acquire(min(window, count - i), timeout=timeout)  # waits for a grant
                continue
            i += sent

    return port_batches


def _result(spec: dict[str, Any], t0: int, t_sent: int, rcv: dict[str, Any]) -> dict[str, Any]:
    count = spec["frames"]
    if rcv["received"] != count or rcv["extra"]:
        raise BenchError(f"sent {count} frames, received {rcv['received']} + {rcv['extra']}")
    e2e = (rcv["last_ns"] - t0) / 1e9
    recv_span = (rcv["last_ns"] - rcv["first_ns"]) / 1e9
    return {
        "frames": count,
        "seconds": e2e,
        "frames_per_s": count / e2e,
        "send_seconds": (t_sent - t0) / 1e9,
        "send_frames_per_s": count / ((t_sent - t0) / 1e9),
        "recv_seconds": recv_span,
        # from the first frame received to the last: the first batch is not timed
        "recv_frames_per_s": (count / recv_span) if recv_span > 0 else None,
    }


# ----------------------------------------------------------------- in process


def inproc_run(impl: str, mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    timeout = spec["timeout"]
    with fb.FrameBus(preset=PRESET) as bus:
        handle, recv_batch = _open_receiver(bus, impl, spec["window"])
        send = _sender(bus, impl, mode, spec)
        out: dict[str, Any] = {}
        errors: list[BaseException] = []
        go = threading.Event()

        def receiver() -> None:
            try:
                out["recv"] = _receive(recv_batch, spec["frames"], timeout)
            except BaseException as exc:
                errors.append(exc)

        def sender() -> None:
            try:
                if not go.wait(timeout):
                    raise BenchError("the sender was never started")
                out["t0"] = _now()
                send()
                out["t_sent"] = _now()
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=receiver, name="bench-recv", daemon=True),
            threading.Thread(target=sender, name="bench-send", daemon=True),
        ]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(timeout + 5)
        if any(t.is_alive() for t in threads):
            bus.close()  # wakes a blocked recv or credit wait with BusClosed
            for t in threads:
                t.join(10)
            raise BenchError(f"{impl} {mode}: a thread was still running after {timeout:g} s")
        if errors:
            raise BenchError(f"{impl} {mode}: {errors[0]!r}") from errors[0]
        handle.close()
    return _result(spec, out["t0"], out["t_sent"], out["recv"])


# ------------------------------------------------------------ across processes


def _child(name: str, impl: str, spec: dict[str, Any], conn: Any) -> None:
    """The receiving process: attach, open the receiver, say ready, drain, report."""
    try:
        bus = fb.FrameBus.attach(name)
        try:
            handle, recv_batch = _open_receiver(bus, impl, spec["window"])
            conn.send(("ready", None))
            conn.send(("done", _receive(recv_batch, spec["frames"], spec["timeout"])))
            handle.close()
        finally:
            bus.close()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _expect(conn: Any, proc: Any, kind: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not conn.poll(0.05):
        if not proc.is_alive() and not conn.poll(0):
            raise BenchError(f"receiver process exited ({proc.exitcode}) before {kind!r}")
        if time.monotonic() > deadline:
            raise BenchError(f"no {kind!r} from the receiver process in {timeout:g} s")
    what, value = conn.recv()
    if what == "error":
        raise BenchError(f"receiver process: {value}")
    if what != kind:
        raise BenchError(f"receiver process sent {what!r}, expected {kind!r}")
    return value


def _unlink_quietly(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fb.FrameBus.unlink(name)


def xproc_run(impl: str, mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    timeout = spec["timeout"]
    ctx = mp.get_context("spawn")
    name = f"dpbench-{os.getpid()}-{next(_SEQ)}"
    with contextlib.ExitStack() as stack:
        stack.callback(_unlink_quietly, name)
        bus = fb.FrameBus.create_shared(name, preset=PRESET)
        stack.callback(bus.close)
        parent, child = ctx.Pipe()
        stack.callback(parent.close)
        proc = ctx.Process(target=_child, args=(name, impl, spec, child), daemon=True)
        proc.start()
        child.close()

        def reap() -> None:
            proc.join(timeout)
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(10)

        stack.callback(reap)
        _expect(parent, proc, "ready", 60 + timeout)  # a spawned interpreter starts slowly
        send = _sender(bus, impl, mode, spec)
        t0 = _now()
        send()
        t_sent = _now()
        rcv = _expect(parent, proc, "done", timeout)
    if proc.exitcode != 0:
        raise BenchError(f"receiver process exited with code {proc.exitcode}")
    return _result(spec, t0, t_sent, rcv)


# ---------------------------------------------------------------------- driver


def run_case(case: str, impl: str, spec: dict[str, Any]) -> dict[str, Any]:
    topology, mode = case.split("-")
    fn = inproc_run if topology == "inproc" else xproc_run
    return fn(impl, mode, spec)


def _label(case: str, batch: int) -> str:
    topology, mode = case.split("-")
    where = "in-process" if topology == "inproc" else "cross-process"
    return f"{where:13} {'per-frame' if mode == 'frame' else f'batch {batch}'}"


def _fmt(x: float) -> str:
    return f"{x / 1e6:.2f}"


def _cell(s: dict[str, float]) -> str:
    return f"{_fmt(s['median']):>6} ({_fmt(s['min'])}..{_fmt(s['max'])})"


def format_table(report: dict[str, Any]) -> str:
    p, m = report["params"], report["machine"]
    out = [
        f"DataPort vs raw bus: {p['size']} B payloads, {p['frames']} frames per run, "
        f"window {p['window']}, median of {p['repeat']} run{'s' if p['repeat'] != 1 else ''} "
        f"(min..max), preset {p['preset']!r}",
        f"{m['cpu_model']}, {m['usable_cpus']} CPUs, Python {m['python_version']}",
        "M frames/s end to end (first send to last frame received)",
        f"{'case':24} {'raw bus':>20} {'DataPort':>20} {'port/raw':>9}  target",
    ]
    for row in report["ratios"]:
        case = row["case"]
        res = report["results"][case]
        verdict = "met" if row["met"] else "missed"
        out.append(
            f"{_label(case, p['batch']):24} {_cell(res['raw']['frames_per_s']):>20} "
            f"{_cell(res['port']['frames_per_s']):>20} {row['ratio']:>8.2f}x  "
            f"{verdict} (>= {report['target']}x)"
        )
    out.append(
        "M frames/s, medians: sender side (first to last send) / "
        "receiver side (first to last frame received)"
    )
    for row in report["ratios"]:
        res = report["results"][row["case"]]
        cells = []
        for impl in IMPLS:
            send = statistics.median(r["send_frames_per_s"] for r in res[impl]["runs"])
            rcv = [r["recv_frames_per_s"] for r in res[impl]["runs"] if r["recv_frames_per_s"]]
            rcv_s = _fmt(statistics.median(rcv)) if rcv else "-"
            cells.append(f"{impl} {_fmt(send):>6} / {rcv_s:>6}")
        out.append(f"{_label(row['case'], p['batch']):24} " + "    ".join(cells))
    return "\n".join(out)


def _leftovers() -> list[str]:
    prefix = f"framebus.dpbench-{os.getpid()}-"
    try:
        return sorted(n for n in os.listdir(SHM) if n.startswith(prefix))
    except OSError:
        return []


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=_positive_int, help="frames per run (200000)")
    ap.add_argument("--repeat", type=_positive_int, help="runs per case and impl (7)")
    ap.add_argument("--quick", action="store_true", help=f"--frames {QUICK_FRAMES} --repeat 1")
    ap.add_argument("--window", type=_positive_int, default=1024, help="DataPort window (1024)")
    ap.add_argument("--batch", type=_positive_int, default=64, help="frames per batch (64)")
    ap.add_argument("--size", type=_positive_int, default=64, help="payload bytes (64)")
    ap.add_argument("--case", action="append", choices=CASES, help="only these (repeatable)")
    ap.add_argument("--timeout", type=float, default=60.0, help="limit of one run, s (60)")
    ap.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    args = ap.parse_args(argv)
    if args.window >= 1 << 31:
        ap.error(f"--window must be below 2**31, got {args.window}")
    if not args.timeout > 0:
        ap.error(f"--timeout must be > 0, got {args.timeout}")
    if args.frames is None:
        args.frames = QUICK_FRAMES if args.quick else 200_000
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else 7
    cases = [c for c in CASES if args.case is None or c in args.case]
    spec = {
        "frames": args.frames,
        "window": args.window,
        "batch": args.batch,
        "size": args.size,
        "timeout": args.timeout,
    }
    warm = dict(spec, frames=max(1000, min(args.frames // 10, 20_000)))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {i: [] for i in IMPLS} for c in cases}
    try:
        for case in cases:  # warm-up, not recorded: imports, page faults, the first spawn
            for impl in IMPLS:
                run_case(case, impl, warm)
        for rep in range(args.repeat):
            for case in cases:
                for impl in IMPLS if rep % 2 == 0 else IMPLS[::-1]:
                    r = run_case(case, impl, spec)
                    runs[case][impl].append(r)
                    print(
                        f"run {rep + 1}/{args.repeat} {case:12} {impl:4} "
                        f"{r['frames_per_s'] / 1e6:6.3f} M frames/s",
                        file=sys.stderr,
                        flush=True,
                    )
    except (BenchError, fb.FrameBusError) as exc:  # e.g. WouldBlock: no credit in --timeout
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        left = _leftovers()
        for n in left:
            _unlink_quietly(n.removeprefix("framebus."))
        if left:
            print(f"warning: removed leftover segments {left}", file=sys.stderr)

    results: dict[str, Any] = {}
    ratios = []
    for case in cases:
        results[case] = {
            impl: {
                "runs": runs[case][impl],
                "frames_per_s": summary([r["frames_per_s"] for r in runs[case][impl]]),
            }
            for impl in IMPLS
        }
        raw = results[case]["raw"]["frames_per_s"]["median"]
        port = results[case]["port"]["frames_per_s"]["median"]
        paired = [
            p["frames_per_s"] / r["frames_per_s"]
            for p, r in zip(runs[case]["port"], runs[case]["raw"], strict=True)
        ]
        ratios.append(
            {
                "case": case,
                "ratio": port / raw,
                "paired_ratios": paired,
                "target": TARGET,
                "met": port / raw >= TARGET,
            }
        )
    report = {
        "schema": SCHEMA,
        "params": {**spec, "repeat": args.repeat, "quick": args.quick, "preset": PRESET},
        "bus_config": dataclasses.asdict(fb.BusConfig.preset(PRESET)),
        "machine": machine_info(),
        "target": TARGET,
        "results": results,
        "ratios": ratios,
        "argv": sys.argv,
    }
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
