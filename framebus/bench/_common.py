"""What the benchmark suites share: the options of ``framebus bench`` (each defined
once, with the defaults its help shows), the check of which suite takes which option,
progress lines, the machine description, summaries, rates and the report's ending.

Light on purpose: ``framebus`` builds its parser from this module for every command,
so it imports no suite and nothing a suite needs only to run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..config import PRESETS

__all__ = [
    "BENCH_FLAGS",
    "FB_BATCH_VARIANTS",
    "DEFAULT_BATCH",
    "DEFAULT_SIZES",
    "OPTIONS",
    "SHARED_FLAGS",
    "SUITES",
    "SUITE_OPTIONS",
    "BenchError",
    "Progress",
    "XProgress",
    "add_bench_arguments",
    "add_options",
    "check_common",
    "check_suite_args",
    "dist_version",
    "finish_report",
    "fmt_range",
    "fmt_rate",
    "import_optional",
    "load_average",
    "machine_info",
    "main_with",
    "parse_size",
    "positive_float",
    "positive_int",
    "run_guarded",
    "is_framebus",
    "summary",
    "variant_ratio_notes",
    "write_json",
]

SUITES: tuple[str, ...] = ("inproc", "xproc", "wal", "flow", "bridge", "all")

# The defaults the options' help states. They live here, not in the suites, so that
# building the parser imports no suite; each suite takes its own under its old names.
DEFAULT_SIZES: tuple[int, ...] = (64, 4096)
DEFAULT_BATCH = 100
INPROC_COUNT = 750_000
INPROC_QUICK_COUNT = 10_000
INPROC_REPEAT = 5
INPROC_QUICK_REPEAT = 3
XPROC_SCENARIOS: tuple[str, ...] = ("throughput", "pingpong", "queue")
XPROC_QUICK_COUNT = 3_000
XPROC_QUICK_REPEAT = 2
XPROC_SECONDS = 0.6  # a run without --count is sized to last about this long
XPROC_ROUND_TRIPS = 10_000
XPROC_QUICK_ROUND_TRIPS = 300
WAL_SECONDS = 0.5
WAL_QUICK_SECONDS = 0.03
WAL_QUICK_REPEAT = 2
WAL_REPLAY_SIZE = 64
WAL_REPLAY_FRAMES = 1_000_000
WAL_QUICK_REPLAY_FRAMES = 20_000


class BenchError(RuntimeError):
    """A run did not deliver what was sent, failed in a thread, or got stuck."""


# ------------------------------------------------------------------------ options


def parse_size(text: str) -> int:
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = 1
    if t.endswith("k"):
        mult, t = 1 << 10, t[:-1]
    elif t.endswith("m"):
        mult, t = 1 << 20, t[:-1]
    try:
        value = int(t) * mult
    except ValueError:
        raise ValueError(f"invalid size {text!r}: expected bytes, e.g. 64, 4096, 4k, 1m") from None
    if value < 1:
        raise ValueError(f"invalid size {text!r}: must be at least 1 byte")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


# Every option of ``framebus bench``: argparse's keywords, with the help that
# ``framebus bench --help`` shows. A suite's own script may word some help its way.
OPTIONS: dict[str, dict[str, Any]] = {
    "--size": dict(
        action="append",
        metavar="BYTES",
        help="payload size in bytes (k/m suffixes are KiB/MiB); repeat the option or give a "
        f"comma list (default: {','.join(map(str, DEFAULT_SIZES))})",
    ),
    "--count": dict(
        type=positive_int,
        metavar="N",
        help=f"frames per run (default: {INPROC_COUNT}; --quick: {INPROC_QUICK_COUNT})",
    ),
    "--repeat": dict(
        type=positive_int,
        metavar="R",
        help=f"runs per scenario; the median is reported (default: {INPROC_REPEAT}; "
        f"--quick: {INPROC_QUICK_REPEAT})",
    ),
    "--batch": dict(
        type=positive_int,
        default=DEFAULT_BATCH,
        metavar="B",
        help=f"frames per batch in the batch scenarios (default: {DEFAULT_BATCH})",
    ),
    "--preset": dict(
        default="default",
        choices=list(PRESETS),
        help="framebus preset for the bus under test (default: default)",
    ),
    "--json": dict(metavar="PATH", help="write every raw number to PATH as JSON"),
    "--quick": dict(
        action="store_true",
        help=f"a smoke run of a few seconds ({INPROC_QUICK_COUNT} frames, "
        f"{INPROC_QUICK_REPEAT} repeats unless --count/--repeat say otherwise)",
    ),
    "--no-progress": dict(action="store_true", help="no progress display on stderr"),
    "--suite": dict(
        choices=SUITES,
        default="inproc",
        help="inproc (default): threads in this process; xproc: across processes, "
        "framebus on a shared-memory ring vs multiprocessing.Queue/Pipe, faster-fifo, "
        "pyzmq and os.pipe (throughput, ping-pong latency, framebus.Queue); all: those two. "
        "For xproc, --count fixes the frames per run (default: each run sized to last "
        f"about --seconds) and --quick means {XPROC_QUICK_COUNT} frames, "
        f"{XPROC_QUICK_REPEAT} repeats. wal: the write-ahead log, publish with the WAL off, "
        "async and sync beside raw rocksdict and persist-queue, and replay (not part of "
        f"all); its --quick means runs of about {WAL_QUICK_SECONDS} s, {WAL_QUICK_REPEAT} "
        "repeats. flow: a source -> map -> filter -> sink pipeline of 64-byte items, "
        "framebus.flow sync and inproc beside bytewax, streamz and queue.Queue threads, ipc "
        "beside multiprocessing.Queue processes, a CPU-heavy map with parallelism 2 under "
        "ipc and inproc, and the latency of inproc and ipc paced at 20000 items/s (not "
        "part of all; --count items, default 500000). bridge: the NATS JetStream bridge, bus "
        "-> JetStream and bus -> JetStream -> bus against nats-py's async publish on one "
        "local nats-server it starts, and the end-to-end latency at 1000 frames/s (not part "
        "of all; needs nats-py and nats-server; sizes default 64,1024, --count default 50000)",
    ),
    "--scenario": dict(
        action="append",
        metavar="NAME",
        help=f"xproc scenarios: {', '.join(XPROC_SCENARIOS)}; repeat or comma list (default: all)",
    ),
    "--round-trips": dict(
        type=positive_int,
        metavar="N",
        help=f"xproc ping-pong round trips timed per run (default: {XPROC_ROUND_TRIPS}; "
        f"--quick: {XPROC_QUICK_ROUND_TRIPS})",
    ),
    "--seconds": dict(
        type=positive_float,
        metavar="S",
        help=f"xproc and wal without --count: size runs to last about S seconds (default: "
        f"{XPROC_SECONDS}; wal: {WAL_SECONDS})",
    ),
    "--start-method": dict(
        choices=("fork", "spawn", "forkserver"),
        help="xproc: multiprocessing start method of the benchmark processes (default: fork)",
    ),
    "--replay-frames": dict(
        type=positive_int,
        metavar="N",
        help=f"wal: frames of {WAL_REPLAY_SIZE} B in the replayed log (default: "
        f"{WAL_REPLAY_FRAMES}; --quick: {WAL_QUICK_REPLAY_FRAMES})",
    ),
    "--impls": dict(
        action="append",
        metavar="NAME",
        help="flow: the implementations to run, repeat or comma list (default: all: "
        "fb.inproc, fb.inproc.msgpack, fb.sync, bytewax, streamz, queue.Queue, fb.ipc, "
        "mp.Queue, cpu.inproc, cpu.ipc); the paced latency runs with fb.inproc and fb.ipc",
    ),
    "--cpu-count": dict(
        type=positive_int,
        metavar="N",
        help="flow: items per run of the CPU-heavy map rows cpu.inproc and cpu.ipc "
        "(default: 3000; --quick: 200)",
    ),
    "--dir": dict(
        metavar="PATH",
        help="wal: where the benchmark's databases go, a temp directory inside PATH "
        "(default: the system temp directory)",
    ),
}

# the options every suite takes, in the order --help lists them
SHARED_FLAGS: tuple[str, ...] = (
    "--size",
    "--count",
    "--repeat",
    "--batch",
    "--preset",
    "--json",
    "--quick",
    "--no-progress",
)
BENCH_FLAGS: tuple[str, ...] = (*SHARED_FLAGS, *(f for f in OPTIONS if f not in SHARED_FLAGS))

# The options only some suites take: (attribute, option, those suites). Checked in this
# order, so the first wrong one is the one reported.
SUITE_OPTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("replay_frames", "--replay-frames", ("wal",)),
    ("dir", "--dir", ("wal",)),
    ("scenario", "--scenario", ("xproc", "all")),
    ("round_trips", "--round-trips", ("xproc", "all")),
    ("seconds", "--seconds", ("xproc", "all", "wal")),
    ("start_method", "--start-method", ("xproc", "all")),
    ("impls", "--impls", ("flow",)),
    ("cpu_count", "--cpu-count", ("flow",)),
)


def add_options(p: Any, flags: Iterable[str], helps: Mapping[str, str] | None = None) -> None:
    """Add ``flags`` to the parser ``p`` as OPTIONS defines them; ``helps`` rewords the
    help of some (a suite's own script states its own defaults)."""
    for flag in flags:
        kwargs = dict(OPTIONS[flag])
        if helps and flag in helps:
            kwargs["help"] = helps[flag]
        p.add_argument(flag, **kwargs)


def add_bench_arguments(p: Any) -> None:
    """Every option of ``framebus bench``."""
    add_options(p, BENCH_FLAGS)


def check_suite_args(args: Any, error: Callable[[str], Any], suite: str | None = None) -> None:
    """``error(msg)`` for an option given to a suite that does not take it. ``suite``:
    the suite that runs (default: ``args.suite``)."""
    suite = suite or args.suite
    for attr, opt, suites in SUITE_OPTIONS:
        if suite not in suites and getattr(args, attr, None) is not None:
            takers = [f"--suite {s}" for s in suites]
            named = takers[0] if len(takers) == 1 else f"{', '.join(takers[:-1])} or {takers[-1]}"
            error(f"argument {opt}: only with {named}")


def check_common(args: Any, error: Callable[[str], Any]) -> list[int]:
    """Check --size, --preset, --batch and --json for every suite; returns the sizes.
    ``error(msg)`` (argparse's parser.error) on bad values."""
    from ..config import BusConfig, record_size
    from ..errors import ConfigError

    sizes: list[int] = []
    for item in args.size or []:
        for part in item.split(","):
            if not part.strip():
                continue
            try:
                size = parse_size(part)
            except ValueError as exc:
                error(f"argument --size: {exc}")
            if size not in sizes:
                sizes.append(size)
    if args.size and not sizes:
        error("argument --size: no size given")
    if not sizes:
        sizes = list(DEFAULT_SIZES)
    try:
        cfg = BusConfig.preset(args.preset)
    except (ConfigError, ValueError, KeyError) as exc:
        error(f"argument --preset: {exc}")
    for size in sizes:
        if size > cfg.max_frame:
            error(
                f"argument --size: {size} bytes is larger than the {args.preset!r} preset's "
                f"max_frame ({cfg.max_frame} bytes)"
            )
        per_batch = record_size(size) * args.batch
        room = int(cfg.ring_bytes * cfg.backpressure_threshold) // 2
        if per_batch > room:
            error(
                f"argument --batch: {args.batch} frames of {size} bytes take {per_batch} ring "
                f"bytes, more than half the usable space of the {args.preset!r} ring ({room})"
            )
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            error(f"argument --json: directory {parent!r} does not exist")
    return sizes


# ----------------------------------------------------------------------- progress


class Progress:
    """Live progress on a stream, one line per scenario.

    On a TTY the line is redrawn in place with ``\\r`` (scenario, repeat i/R, frames done,
    current rate) and kept when the scenario ends. Otherwise plain lines: one when a
    scenario ends, and one every ``plain_interval`` seconds while a scenario is running.
    """

    def __init__(
        self,
        stream: Any = None,
        tty: bool | None = None,
        interval: float = 0.2,
        plain_interval: float = 10.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.interval = interval if tty else plain_interval
        self._last = time.monotonic()
        self._width = 0

    def _write(self, line: str, final: bool) -> None:
        if self.tty:
            pad = " " * max(0, self._width - len(line))
            self.stream.write("\r" + line + pad + ("\n" if final else ""))
            self._width = 0 if final else len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    @staticmethod
    def _line(name: str, rep: int, reps: int, done: int, total: int, rate: str) -> str:
        return f"{name:<40} repeat {rep}/{reps}  {done:>{len(str(total))}}/{total} frames  {rate}"

    def start(self, name: str) -> None:
        self._last = time.monotonic()

    def update(
        self, name: str, rep: int, reps: int, done: int, total: int, elapsed: float | None
    ) -> None:
        """Mid-run: frames done and the rate so far in the current repeat."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = f"{fmt_rate(done / elapsed).rstrip()} frames/s" if elapsed else ""
        self._write(self._line(name, rep, reps, done, total, rate), final=False)

    def repeat_done(self, name: str, rep: int, reps: int, total: int, rates: list[float]) -> None:
        """After each repeat; ``rates`` holds the frames/s of the repeats so far."""
        last = rep == reps
        if last:
            rate = f"median {fmt_rate(statistics.median(rates)).rstrip()} frames/s"
        else:
            rate = f"{fmt_rate(rates[-1]).rstrip()} frames/s"
        if self.tty or last:
            self._write(self._line(name, rep, reps, total, total, rate), final=last)
        self._last = time.monotonic()


class XProgress(Progress):
    """Progress lines of the cross-process and WAL scenarios: any unit, any text."""

    def _xline(self, name: str, rep: int, reps: int, done: int, total: int, unit: str) -> str:
        return f"{name:<40} repeat {rep}/{reps}  {done:>{len(str(total))}}/{total} {unit}"

    def tick(
        self, name: str, rep: int, reps: int, done: int, total: int, unit: str, rate: str
    ) -> None:
        """Mid-run, at most once per interval."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        self._write(f"{self._xline(name, rep, reps, done, total, unit)}  {rate}", final=False)

    def done(
        self, name: str, rep: int, reps: int, total: int, unit: str, text: str, final_text: str
    ) -> None:
        """After each run: ``text`` about this run, ``final_text`` after the last one."""
        last = rep == reps
        if self.tty or last:
            line = self._xline(name, rep, reps, total, total, unit)
            self._write(f"{line}  {final_text if last else text}", final=last)
        self._last = time.monotonic()

    def note(self, name: str, text: str) -> None:
        self._write(f"{name:<40} {text}", final=True)

    def rates_done(
        self, name: str, rep: int, reps: int, total: int, unit: str, rates: list[float]
    ) -> None:
        """``done`` with this run's rate and, after the last, the median of ``rates``."""
        self.done(
            name,
            rep,
            reps,
            total,
            unit,
            f"{fmt_rate(rates[-1]).rstrip()} {unit}/s",
            f"median {fmt_rate(statistics.median(rates)).rstrip()} {unit}/s",
        )


# ---------------------------------------------------------------- numbers, peers


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f} "


def fmt_range(s: dict[str, float]) -> str:
    """``(min..max)`` of a summary's rates."""
    return f"({fmt_rate(s['min']).strip()}..{fmt_rate(s['max']).strip()})"


# framebus's batch receives without a Frame per frame (batch mode only), measured
# beside recv_batch ("framebus") in the inproc and xproc suites
FB_BATCH_VARIANTS: tuple[str, ...] = ("fb.recv_payloads", "fb.recv_frames")


def is_framebus(impl: str) -> bool:
    return impl == "framebus" or impl in FB_BATCH_VARIANTS


def variant_ratio_notes(
    ratios: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple[Any, ...]]
) -> dict[tuple[Any, ...], str]:
    """For each batch-receive row (``key(ratio)`` names it): "  (1.20x peer, ...)", its
    ratios to every peer, appended to its table line."""
    notes: dict[tuple[Any, ...], list[str]] = {}
    for r in ratios:
        if r.get("impl", "framebus") != "framebus":
            notes.setdefault(key(r), []).append(f"{r['framebus_over_peer']:.2f}x {r['peer']}")
    return {k: "  (" + ", ".join(v) + ")" for k, v in notes.items()}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def import_optional(module: str) -> Any:
    return importlib.import_module(module)


def dist_version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


# ------------------------------------------------------------------------ machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    from .. import __version__

    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    gil = getattr(sys, "_is_gil_enabled", None)
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "gil_enabled": gil() if gil is not None else True,
        "switch_interval_s": sys.getswitchinterval(),
        "framebus_version": __version__,
    }


# ------------------------------------------------------------------------- report


def write_json(report: dict[str, Any], path: str) -> None:
    import json

    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")


def run_guarded(fn: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any] | None, int]:
    """Run a suite: (report, 0), or (None, exit status) after saying why on stderr."""
    try:
        return fn(), 0
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return None, 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return None, 130


def finish_report(report: dict[str, Any], args: Any, command: list[str], table: str) -> None:
    """Record the command in the report, write the JSON if asked, print the table."""
    report["command"] = command
    report["command_line"] = shlex.join(command)
    if args.json:
        write_json(report, args.json)
    print(table)
    print(f"\ncommand: {report['command_line']}")
    if args.json:
        print(f"raw numbers: {args.json}")
    sys.stdout.flush()


def execute_suite(
    args: Any,
    error: Callable[[str], Any],
    command: list[str],
    suite: str,
    make_params: Callable[[Any, Callable[[str], Any]], Any],
    run: Callable[[Any, Any], dict[str, Any]],
    format_table: Callable[[dict[str, Any]], str],
    progress_class: type[Progress] | None = None,
) -> int:
    """A suite's ``execute``: check and parse the options, run with progress on
    stderr (``progress_class``, default XProgress), print the table, write the JSON."""
    check_suite_args(args, error, suite)
    params = make_params(args, error)
    progress = None if args.no_progress else (progress_class or XProgress)(sys.stderr)
    report, status = run_guarded(lambda: run(params, progress))
    if report is None:
        return status
    finish_report(report, args, command, format_table(report))
    return 0


def main_with(
    build_parser: Callable[[str | None], Any],
    execute: Callable[[Any, Callable[[str], Any], list[str]], int],
    argv: Sequence[str] | None,
    prog: str | None,
) -> int:
    """A suite's own entry point: parse ``argv`` (default: sys.argv), then run."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    command = list(sys.argv) if argv is None else [*parser.prog.split(), *argv]
    return execute(args, parser.error, command)
