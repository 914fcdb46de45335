"""The ``framebus`` command.

``framebus bench``: in-process SPSC throughput of framebus beside queue.Queue,
queue.SimpleQueue and deque+Condition (see framebus._bench), with a live progress
line per scenario on stderr and the table on stdout. ``--suite xproc`` (or ``all``)
runs the cross-process scenarios of framebus._xbench instead (or as well).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "framebus") -> argparse.ArgumentParser:
    from . import _bench, _xbench

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
        "latency, framebus.Queue vs multiprocessing.Queue); --suite all: both.",
    )
    _bench.add_arguments(bench)
    _xbench.add_arguments(bench)
    bench.set_defaults(func=_cmd_bench, subparser=bench)
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
    return parser


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


def _cmd_bench(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from . import _bench, _xbench

    error = args.subparser.error
    command = [*prog.split(), *argv]
    if args.suite == "inproc":
        _xbench.check_suite_args(args, error)
        return _bench.execute(args, error, command)
    return _xbench.execute(args, error, command, args.suite)


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
