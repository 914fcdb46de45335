"""``framebus run`` and ``framebus demo``: framebus.cli parses their arguments and
imports this module only when one of them runs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .errors import FlowError
from .live import LiveRun, Progress

__all__ = ["cmd_demo", "cmd_run"]

# exit statuses: dead letters (without --allow-errors), interrupted (as a shell's 128 + 2)
EXIT_DEAD_LETTERS = 1
EXIT_FAILED = 2  # a bad graph, or a run that ended with a FlowError
EXIT_INTERRUPTED = 130


def _prog(args: argparse.Namespace) -> str:
    parser = getattr(args, "subparser", None)
    return str(parser.prog) if parser is not None else "framebus"


def _execute(
    args: argparse.Namespace,
    plan: Any,
    duration: float | None,
    metrics_port: int | None,
    plot: str | None,
) -> tuple[Any, int]:
    """Runs the plan with progress, metrics and the report's outputs; (report, status)."""
    from framebus import metrics

    registry = None
    server = None
    if metrics_port is not None:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        server = metrics.serve(metrics_port, registry=registry)
        print(f"metrics: {server.url}", flush=True)
    status = 0
    report: Any
    try:
        try:
            live = LiveRun(
                plan, args.runtime, args.interval, Progress(plan), wal=getattr(args, "wal", None)
            )
            report = live.run(timeout=duration, registry=registry)
        except FlowError as exc:
            # a graph the runtime cannot run, or a run that ended with an error (a worker
            # process that died): one line, as for a bad graph file
            print(f"{_prog(args)}: error: {exc}", file=sys.stderr)
            return None, EXIT_FAILED
        except KeyboardInterrupt as exc:
            report = getattr(exc, "report", None)
            status = EXIT_INTERRUPTED
            print("\ninterrupted", file=sys.stderr)
            if report is None:
                return None, status
    finally:
        if server is not None:
            server.close()
    print()
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report.to_json(indent=2))
        print(f"report: {args.json}")
    if plot:
        from .plot import PlotUnavailable, plot_run

        try:
            print(f"plot: {plot_run(report, live.samples, plot)}")
        except PlotUnavailable as exc:
            print(f"no plot: {exc}")
    return report, status


def cmd_run(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from . import compile, load

    here = os.path.dirname(os.path.abspath(args.flow))
    if here not in sys.path:
        sys.path.insert(0, here)  # the graph's own modules, next to it
    try:
        plan = compile(load(args.flow))
    except FlowError as exc:
        print(f"{prog} run: error: {exc}", file=sys.stderr)
        return 2
    report, status = _execute(args, plan, args.duration, args.metrics_port, args.plot)
    if report is None:
        return status
    if status == 0 and report.dead_letters and not args.allow_errors:
        print(
            f"{len(report.dead_letters)} dead letter(s): exit status {EXIT_DEAD_LETTERS} "
            "(--allow-errors to accept them)",
            file=sys.stderr,
        )
        status = EXIT_DEAD_LETTERS
    return status


def cmd_demo(args: argparse.Namespace, argv: list[str], prog: str) -> int:
    from . import compile, demo

    os.makedirs(args.dir, exist_ok=True)
    store = demo.store
    store.directory = args.dir
    # the sink may run in a worker process (--runtime ipc): it finds the directory in
    # the environment it inherits, and opens the WAL there
    saved = os.environ.get(demo.DIR_ENV)
    os.environ[demo.DIR_ENV] = os.path.abspath(args.dir)
    plan = compile(demo.demo_graph(rate=args.rate))
    print(
        f"framebus demo: {args.rate:,.0f} sensor readings/s for {args.duration:g} s, "
        f"runtime {args.runtime}; batches stored in {store.path()}",
        flush=True,
    )
    try:
        report, status = _execute(
            args, plan, args.duration, 0, os.path.join(args.dir, "latency.png")
        )
    finally:
        store.close()
        if saved is None:
            del os.environ[demo.DIR_ENV]
        else:
            os.environ[demo.DIR_ENV] = saved
    if report is not None and os.path.isdir(store.path()):
        from framebus.wal import inspect  # type: ignore[import-not-found,unused-ignore]

        # the sink's items out: the batches it stored, in whichever process it ran
        batches = report.nodes["store"].items_out
        total = inspect(store.path(), verify=False)["frames"]
        print(f"stored {batches} batches this run; {total} in {store.path()} in all")
    return status
