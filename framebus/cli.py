"""The ``framebus`` command.

``framebus demo``
    runs the shipped ingestion pipeline (framebus.flow) with live progress, prints its
    report and plots its latency (see framebus.flow.commands).
``framebus run FLOW``
    runs a flow graph file (YAML or JSON) with live progress and the report.
``framebus bench``
    benchmarks framebus against its peers in the same run: ``--suite inproc``
    (default) threads in this process, ``xproc`` across processes, ``all`` both, ``wal``
    the write-ahead log, ``flow`` framebus.flow pipelines beside bytewax, streamz and
    queue.Queue threads, ``bridge`` the NATS JetStream bridge beside nats-py (see
    framebus.bench). Progress goes to stderr, the table to
    stdout, every raw number to ``--json PATH``.
``framebus ls``
    lists the shared buses (/dev/shm/framebus.*): creator and whether it is alive,
    subscribers' processes, usage, counters (``--json``).
``framebus gc``
    removes shared buses that no live process holds (``--dry-run``).
``framebus stats NAME``
    a shared bus's live counters, reader slots, DataPort credits and EventBus
    responders, refreshed every ``--interval`` seconds (``--once``, ``--json``).
``framebus wal inspect DIR`` / ``framebus wal replay DIR``
    describe a write-ahead log directory, or write its frames to stdout (JSON lines or
    raw payloads); read-only, also while a bus is writing it.
``framebus bridge --nats URL --export FILTER --import FILTER NAME``
    bridges the shared bus NAME to NATS JetStream with a live status line; ``framebus
    nodes --nats URL`` lists the cluster registry's live nodes (framebus.bridge._cli).

A benchmark suite is imported only when ``bench`` runs it: the parser takes its options
from framebus.bench._common.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "framebus") -> argparse.ArgumentParser:
    from .bench._common import add_bench_arguments

    parser = argparse.ArgumentParser(
        prog=prog,
        description="framebus: a high-performance frame bus for Python.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = sub.add_parser(
        "bench",
        help="SPSC throughput in this process: framebus vs queue.Queue, "
        "queue.SimpleQueue, deque+Condition",
        description="One producer thread -> one consumer thread in this process, single "
        "calls and batches, for framebus and queue.Queue, queue.SimpleQueue and "
        "deque+Condition measured in the same run; plus publish+recv in one thread "
        "(ns per frame). Progress goes to stderr, the table to stdout. --suite xproc: "
        "across processes, framebus on a shared-memory ring beside multiprocessing.Queue, "
        "multiprocessing.Pipe, faster-fifo, pyzmq and os.pipe (throughput, ping-pong "
        "latency, framebus.Queue vs multiprocessing.Queue); --suite all: both. "
        "--suite wal: the write-ahead log, publish throughput with the WAL off, async and "
        "sync (1 and 4 publishers) until bus.flush() returns, beside raw rocksdict "
        "WriteBatches (sync off and on) and persist-queue, replay speed, and the ratios to "
        "the WAL targets. --suite flow: a source -> map -> filter -> sink pipeline, "
        "framebus.flow's sync and inproc runtimes beside bytewax (one worker), streamz and "
        "queue.Queue threads, the ipc runtime beside three processes joined by "
        "multiprocessing.Queue, a CPU-heavy map with parallelism 2 under ipc and inproc, "
        "and the end-to-end latency of inproc and ipc paced at 20000 items/s (--impls "
        "selects rows). --suite bridge: the NATS JetStream bridge, bus -> JetStream and bus "
        "-> JetStream -> bus beside nats-py's async publish on a local nats-server it "
        "starts, and the end-to-end latency.",
    )
    add_bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench, subparser=bench)
    _add_flow_commands(sub)
    ls = sub.add_parser(
        "ls",
        help="list shared buses (/dev/shm/framebus.*) with owner, liveness and usage",
        description="List the shared-memory buses on this machine: the creating process "
        "and whether it is alive, the subscribers' processes, usage and counters.",
    )
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_cmd_ls)
    gc = sub.add_parser(
        "gc",
        help="remove shared buses that no live process holds",
        description="Unlink /dev/shm/framebus.* segments whose attached and subscribed "
        "processes are all dead, and files there that are not framebus segments.",
    )
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.set_defaults(func=_cmd_gc)
    stats = sub.add_parser(
        "stats",
        help="show a shared bus's live counters (refreshing table)",
        description="Attach to the shared bus NAME and show its counters from the ring "
        "header, and its reader slots, refreshed every --interval seconds until Ctrl-C.",
    )
    stats.add_argument("name", metavar="NAME", help="the shared bus (as in 'framebus ls')")
    from .bench._common import positive_float

    stats.add_argument(
        "--interval", type=positive_float, default=1.0, metavar="S", help="seconds (default 1)"
    )
    stats.add_argument("--once", action="store_true", help="print one table and exit")
    stats.add_argument("--json", action="store_true", help="print one JSON object and exit")
    stats.set_defaults(func=_cmd_stats)
    wal = sub.add_parser(
        "wal",
        help="inspect or replay a write-ahead log directory",
        description="Read a bus's write-ahead log (wal_dir). The directory is opened "
        "read-only: it works while a bus is writing it, showing the state at opening.",
    )
    wal_sub = wal.add_subparsers(dest="wal_command", metavar="WAL_COMMAND")
    inspect = wal_sub.add_parser(
        "inspect",
        help="sequence range, frames, bytes, groups and offsets, damaged records",
        description="Describe a WAL: sequence range, frame count, bytes, consumer groups "
        "and their committed offsets (and frames lost to retention), damaged records.",
    )
    inspect.add_argument("dir", metavar="DIR", help="the WAL directory (a bus's wal_dir)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument(
        "--no-verify", action="store_true", help="read the counters only, not every record"
    )
    inspect.set_defaults(func=_cmd_wal_inspect)
    replay = wal_sub.add_parser(
        "replay",
        help="write the WAL's frames to stdout (JSON lines or raw payloads)",
        description="Write the frames of a WAL to stdout in sequence order: one JSON object "
        "per line (seq, topic, ts_ns, payload as text, or payload_b64 when it is not "
        "UTF-8), or the raw payloads back to back.",
    )
    replay.add_argument("dir", metavar="DIR", help="the WAL directory (a bus's wal_dir)")
    replay.add_argument(
        "--from", dest="from_seq", type=_seq_arg, default=0, metavar="N", help="first seq"
    )
    replay.add_argument(
        "--to", dest="to_seq", type=_seq_arg, default=None, metavar="N", help="last seq"
    )
    replay.add_argument("--topic", default=None, metavar="FILTER", help="NATS-style filter")
    replay.add_argument("--format", choices=("jsonl", "raw"), default="jsonl")
    replay.set_defaults(func=_cmd_wal_replay)
    wal.set_defaults(func=_cmd_wal_usage, subparser=wal)
    from .bridge._cli import add_bridge_commands  # nats-py is imported only when they run

    add_bridge_commands(sub)
    return parser


def _seq_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a sequence number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a sequence number >= 0, got {value}")
    return value


def _wal_dir(path: str) -> str:
    import os

    if not os.path.isdir(path):
        raise SystemExit(f"framebus wal: {path}: no such directory")
    return path


def _cmd_wal_usage(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    args.subparser.print_usage(sys.stderr)
    print(f"{prog} wal: error: say 'inspect' or 'replay'", file=sys.stderr)
    return 2


def _cmd_wal_inspect(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    import json

    from .errors import WalError
    from .wal import inspect  # type: ignore[import-not-found,unused-ignore]

    try:
        info = inspect(_wal_dir(args.dir), verify=not args.no_verify)
    except WalError as exc:
        print(f"{prog} wal inspect: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    first, last = info["first_seq"], info["last_seq"]
    span = "empty" if last is None else f"{first}..{last}"
    print(f"WAL {info['path']} (layout {info['layout']})")
    print(f"  frames    {info['frames']} ({span}), next seq {info['next_seq']}")
    print(f"  bytes     {info['bytes']}, retained from seq {info['retained_from']}")
    corrupt = "not checked" if info["corrupt"] is None else str(info["corrupt"])
    if info["corrupt_seqs"]:
        corrupt += " (seq " + ", ".join(map(str, info["corrupt_seqs"][:20])) + ")"
    print(f"  damaged   {corrupt}")
    if not info["groups"]:
        print("  groups    none")
    for name, offset in sorted(info["groups"].items()):
        behind = info["behind"].get(name)
        lost = f", {behind} frames lost to retention" if behind else ""
        print(f"  group     {name}: next seq {offset}{lost}")
    return 0


def _cmd_wal_replay(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from .errors import WalError
    from .wal import export  # type: ignore[import-not-found,unused-ignore]

    try:
        result = export(
            _wal_dir(args.dir),
            sys.stdout.buffer,
            from_seq=args.from_seq,
            to_seq=args.to_seq,
            topic=args.topic,
            fmt=args.format,
        )
    except (WalError, ValueError) as exc:
        print(f"{prog} wal replay: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    if result["corrupt"]:
        seqs = ", ".join(map(str, result["corrupt_seqs"][:20]))
        print(
            f"{prog} wal replay: skipped {result['corrupt']} damaged records (seq {seqs})",
            file=sys.stderr,
        )
    return 0


def _cmd_gc(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from ._shm import collect_garbage

    removed = collect_garbage(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        print(f"{verb} {r['name']}: {r['reason']}")
    if not removed:
        print("nothing to remove")
    return 0


def _cmd_ls(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from ._shm import list_segments

    rows = list_segments()
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no shared framebus segments")
        return 0
    print(f"{'name':24} {'MiB':>8} {'creator':>14} {'readers':>22} {'used':>7} {'published':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:24} {r['bytes'] / 2**20:8.1f}  {r['error']}")
            continue
        creator = f"{r['creator_pid']} ({'alive' if r['creator_alive'] else 'dead'})"
        readers = (
            ",".join(f"{x['pid']}{'' if x['alive'] else '(dead)'}" for x in r["reader_processes"])
            or "-"
        )
        print(
            f"{r['name']:24} {r['bytes'] / 2**20:8.1f} {creator:>14} {readers:>22} "
            f"{r['usage'] * 100:6.1f}% {r['published']:>12}"
        )
    return 0


def _stats_snapshot(bus: Any) -> dict[str, Any]:
    from ._internal import TopicCounter, reader_slots, topic_table
    from ._reserved import EVENT_RESPONDERS, PORT

    s: dict[str, Any] = bus.stats()
    s.pop("subscriptions", None)  # this process's own: none, it only attached
    s["reader_slots"] = reader_slots(bus)  # every process's readers, from the header
    # the ports' and EventBus's shared state, from the topic table and its counters
    ports, responders = [], []
    for tid, topic in topic_table(bus):
        if topic.startswith(PORT) and topic.endswith(".b"):
            credits = TopicCounter(bus, tid=tid).get()
            ports.append({"name": topic[len(PORT) : -2], "credits": credits})
        elif topic.startswith(EVENT_RESPONDERS):
            count = TopicCounter(bus, tid=tid).get()
            responders.append({"pattern": topic[len(EVENT_RESPONDERS) :], "subscriptions": count})
    s["ports"] = ports
    s["responders"] = [r for r in responders if r["subscriptions"]]
    s.pop("events", None)  # this process's EventBus: it has none
    s.pop("histograms", None)  # this process's batches: none
    return s


def _stats_table(name: str, s: dict[str, Any], rate: float | None) -> str:
    usage = max(s["ring_used"] / s["capacity"], s["ring_used_bytes"] / s["capacity_bytes"])
    per_s = "" if rate is None else f" ({rate:,.0f}/s)"
    rows = [
        ("bus", f"{name} (overflow {s['overflow']}, creator pid {s['creator_pid']})"),
        ("published", f"{s['published']} frames{per_s}, {s['published_bytes']} bytes"),
        (
            "ring used",
            f"{s['ring_used']}/{s['capacity']} frames, "
            f"{s['ring_used_bytes']}/{s['capacity_bytes']} bytes ({usage * 100:.1f}%)",
        ),
        (
            "paused",
            f"{'yes' if s['paused'] else 'no'} ({s['pause_events']} pauses, "
            f"{s['resume_events']} resumes)",
        ),
        ("dropped", str(s["dropped"])),
        ("lapped", str(s["lapped"])),
        ("unblocked", str(s["unblocked"])),
        ("evicted", str(s["evicted"])),
        ("topics", str(s["topics"])),
        ("readers", f"{s['readers']}/{s['max_readers']}"),
        ("deadlines", f"{s['deadline_misses']} envelopes received late"),
    ]
    for port in s["ports"]:
        rows.append(("port", f"{port['name']}: {port['credits']} credits granted, not taken"))
    for r in s["responders"]:
        rows.append(("events", f"{r['pattern']}: {r['subscriptions']} subscriptions"))
    if "wal_durable_seq" in s:
        wal_bytes = "?" if s["wal_bytes"] is None else str(s["wal_bytes"])
        rows.append(
            (
                "wal",
                f"durable seq {s['wal_durable_seq']}, lag {s['wal_lag']} frames, "
                f"{wal_bytes} bytes{', DEGRADED' if s['wal_degraded'] else ''}",
            )
        )
    lines = [f"{k:10} {v}" for k, v in rows]
    if s["reader_slots"]:
        lines.append(
            f"{'slot':>4} {'pid':>8} {'kind':6} {'members':>7} {'backlog':>10} {'lagged':>10}"
        )
        for r in s["reader_slots"]:
            kind = "group" if r["group"] else "sub"
            pid = r["owner_pid"] or "-"  # a group records its processes elsewhere
            lines.append(
                f"{r['slot']:>4} {pid:>8} {kind:6} {r['members']:>7} "
                f"{r['backlog']:>10} {r['lagged']:>10}"
            )
    return "\n".join(lines)


def _cmd_stats(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    import time

    import framebus as fb

    try:
        bus = fb.FrameBus.attach(args.name)
    except FileNotFoundError:
        print(f"{prog} stats: no shared bus named {args.name!r} (see '{prog} ls')", file=sys.stderr)
        return 1
    except (fb.FrameBusError, ValueError, TypeError) as exc:
        print(f"{prog} stats: {args.name}: {exc}", file=sys.stderr)
        return 1
    try:
        if args.json:
            import json

            print(json.dumps({"name": args.name, **_stats_snapshot(bus)}, indent=2))
            return 0
        if args.once:
            print(_stats_table(args.name, _stats_snapshot(bus), None))
            return 0
        clear = "\x1b[H\x1b[J" if sys.stdout.isatty() else ""  # redraw in place on a terminal
        prev: tuple[float, int] | None = None
        try:
            while True:
                s = _stats_snapshot(bus)
                now = time.monotonic()
                rate = None if prev is None else (s["published"] - prev[1]) / (now - prev[0])
                prev = (now, s["published"])
                print(f"{clear}{_stats_table(args.name, s, rate)}\n", flush=True)
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
    finally:
        bus.close()  # detaches this process


# framebus.flow's runtimes that `framebus run` / `demo` can watch live
FLOW_RUNTIMES = ("sync", "inproc", "ipc")


def _add_flow_commands(sub: Any) -> None:
    _add_demo_parser(sub)
    _add_run_parser(sub)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: expected a port in 0..65535")
    return value


def _flow_common(p: argparse.ArgumentParser, default_runtime: str) -> None:
    from .bench._common import positive_float

    p.add_argument(
        "--runtime",
        choices=FLOW_RUNTIMES,
        default=default_runtime,
        help=f"where the stages run (default: {default_runtime})",
    )
    p.add_argument("--json", metavar="REPORT", help="also write the report to REPORT as JSON")
    p.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        metavar="S",
        help="seconds between progress samples (default: 1)",
    )


def _add_run_parser(sub: Any) -> None:
    from .bench._common import positive_float

    p = sub.add_parser(
        "run",
        help="run a flow graph file (YAML or JSON) with live progress",
        description="Runs the framebus.flow graph in FLOW (YAML or JSON; its callables "
        "named 'module:function', importable with FLOW's directory on the import path). "
        "Shows items/s, backlog and deadline misses per node while it runs (a table "
        "redrawn on a terminal, a line per sample otherwise) and the report at the end. "
        "Exit status 1 if any item became a dead letter (unless --allow-errors), 130 "
        "when interrupted (Ctrl-C drains what is in flight first), 2 for a bad graph or a "
        "run that ended with an error (e.g. an ipc worker process died).",
    )
    p.add_argument("flow", metavar="FLOW", help="the graph file (.yaml, .yml or .json)")
    _flow_common(p, "inproc")
    p.add_argument(
        "--duration",
        type=positive_float,
        metavar="S",
        help="stop the sources after S seconds (ipc: from when every worker has started)",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        metavar="P",
        help="serve the run's framebus_flow_* metrics on 127.0.0.1:P/metrics (0: a free port)",
    )
    p.add_argument("--plot", metavar="PNG", help="write the latency and throughput plot")
    p.add_argument(
        "--wal",
        metavar="DIR",
        help="a durable run (--runtime ipc): the sources' output is logged in DIR, and a run "
        "killed and started again with the same DIR resumes where its stages had got to",
    )
    p.add_argument(
        "--allow-errors", action="store_true", help="exit 0 even if there are dead letters"
    )
    p.set_defaults(func=_cmd_run, subparser=p)


def _add_demo_parser(sub: Any) -> None:
    from .bench._common import positive_float

    p = sub.add_parser(
        "demo",
        help="run the shipped ingestion pipeline and plot its latency",
        description="Runs framebus.flow's ingestion example: synthetic sensor readings "
        "at --rate per second -> parse -> validate -> batches of 500 readings or 50 ms "
        "-> each batch one frame on a WAL-backed bus in DIR/wal (created, and appended "
        "to by the next run). Serves its metrics on a free local port, prints the "
        "report and writes DIR/latency.png (needs matplotlib: pip install "
        "'framebus[plot]').",
    )
    _flow_common(p, "inproc")
    p.add_argument(
        "--rate",
        type=positive_float,
        default=20_000.0,
        metavar="R",
        help="sensor readings per second (default: 20000)",
    )
    p.add_argument(
        "--duration",
        type=positive_float,
        default=5.0,
        metavar="S",
        help="seconds to run (default: 5; ipc: from when every worker has started)",
    )
    p.add_argument(
        "--dir",
        default="framebus-data",
        metavar="DIR",
        help="where the data and the plot go (default: ./framebus-data)",
    )
    p.set_defaults(func=_cmd_demo, subparser=p)


def _cmd_run(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from .flow.commands import cmd_run

    return cmd_run(args, argv, prog)


def _cmd_demo(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from .flow.commands import cmd_demo

    return cmd_demo(args, argv, prog)


def _cmd_bench(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    error = args.subparser.error
    command = [*prog.split(), *argv]
    if args.suite == "inproc":
        from .bench import inproc

        return inproc.execute(args, error, command)
    if args.suite == "wal":
        from .bench import wal

        return wal.execute(args, error, command)
    if args.suite == "flow":
        from .bench import flow

        return flow.execute(args, error, command)
    if args.suite == "bridge":
        from .bench import bridge

        return bridge.execute(args, error, command)
    from .bench import xproc

    return xproc.execute(args, error, command, args.suite)


def main(argv: Sequence[str] | None = None, prog: str = "framebus") -> int:
    """Entry point of the ``framebus`` console script; returns the exit status.

    Bad arguments exit with status 2 and a message on stderr (argparse).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: a command is required (try '{prog} --help')", file=sys.stderr)
        return 2
    return int(func(args, args_list, prog))


if __name__ == "__main__":
    sys.exit(main())
