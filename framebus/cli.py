"""The ``framebus`` command.

``framebus bench``: in-process SPSC throughput of framebus beside queue.Queue,
queue.SimpleQueue and deque+Condition (see framebus._bench), with a live progress
line per scenario on stderr and the table on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "framebus") -> argparse.ArgumentParser:
    from . import _bench

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
        "(ns per frame). Progress goes to stderr, the table to stdout.",
    )
    _bench.add_arguments(bench)
    bench.set_defaults(func=_cmd_bench, subparser=bench)
    return parser


def _cmd_bench(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from . import _bench

    return _bench.execute(args, args.subparser.error, [*prog.split(), *argv])


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
