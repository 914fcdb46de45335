"""A run watched while it goes: ``LiveRun`` runs a plan in the calling thread (its
stages on threads, or in processes of their own with ``runtime="ipc"``, whose workers
copy their counters to this process, see framebus.flow.ipc) and samples its numbers
every ``interval`` seconds on a thread of its own (for the progress display of
``framebus run`` / ``framebus demo`` and the throughput plot); ``Progress`` draws them:
a table redrawn in place on a terminal, a plain line per sample otherwise."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from .errors import FlowError

if TYPE_CHECKING:
    from .compile import Plan
    from .report import Report

__all__ = ["LIVE_RUNTIMES", "LiveRun", "Progress", "Sample"]

LIVE_RUNTIMES = ("sync", "inproc", "ipc")


@dataclass
class Sample:
    """The run's numbers at ``t`` seconds after its start (cumulative counts)."""

    t: float
    nodes: dict[str, dict[str, int]]
    e2e_deadline_misses: int = 0


@dataclass
class LiveRun:
    """Runs ``plan`` on ``runtime`` with a sampler thread; ``samples`` holds one Sample
    per ``interval`` (and one at the end), ``on_sample(sample)`` is called with each."""

    plan: Plan
    runtime: str = "inproc"
    interval: float = 1.0
    on_sample: Any = None
    samples: list[Sample] = field(default_factory=list)
    wal: str | None = None  # a durable run's directory (ipc only)

    def __post_init__(self) -> None:
        if self.runtime not in LIVE_RUNTIMES:
            raise FlowError(
                f"runtime {self.runtime!r} is not available here; expected one of "
                + ", ".join(map(repr, LIVE_RUNTIMES))
            )
        if not (isinstance(self.interval, (int, float)) and self.interval > 0):
            raise FlowError(f"interval={self.interval!r} is invalid: expected a number > 0")
        if self.wal is not None and self.runtime != "ipc":
            raise FlowError(
                f"wal={self.wal!r}: the {self.runtime} runtime does not take wal; durable "
                'runs are runtime="ipc" only'
            )

    def run(self, timeout: float | None = None, registry: Any = None) -> Report:
        """The run's Report. ``registry``: a prometheus_client CollectorRegistry the
        run's ``framebus_flow_*`` families are exported in while it lives."""
        from framebus import metrics

        engine: Any
        if self.runtime == "sync":
            from .sync import SyncEngine

            engine = SyncEngine(self.plan)
        elif self.runtime == "ipc":
            from .ipc import IpcEngine

            engine = IpcEngine(self.plan, wal=self.wal)
        else:
            from .inproc import InprocEngine

            engine = InprocEngine(self.plan)
        stop = threading.Event()
        started = time.monotonic()

        def take(final: bool = False) -> None:
            snap = engine.snapshot()
            sample = Sample(time.monotonic() - started, snap["nodes"], snap["e2e_deadline_misses"])
            if final and self.samples and sample.t - self.samples[-1].t < self.interval / 4:
                self.samples[-1] = sample  # the end's totals, without a rate over ~0 s
                return
            self.samples.append(sample)
            if self.on_sample is not None:
                self.on_sample(sample)

        def sampler() -> None:
            while not stop.wait(self.interval):
                take()

        if registry is not None:
            metrics.register_flow(engine, registry)
        thread = threading.Thread(target=sampler, name="framebus-flow-progress", daemon=True)
        thread.start()
        try:
            return engine.run(timeout=timeout)  # type: ignore[no-any-return]
        except KeyboardInterrupt as exc:
            if getattr(exc, "report", None) is None:  # sync: the numbers so far
                exc.report = getattr(engine, "report", None)  # type: ignore[attr-defined]
            raise
        finally:
            stop.set()
            thread.join()
            take(final=True)
            if registry is not None:
                metrics.unregister_flow(engine, registry)


class Progress:
    """Draws samples of a LiveRun on ``out``: per node its rate (items out per second
    since the last sample), total out, backlog (items sent to it not taken yet) and
    deadline misses."""

    def __init__(self, plan: Plan, out: TextIO | None = None, tty: bool | None = None) -> None:
        self.plan = plan
        self.out = sys.stdout if out is None else out
        self.tty = self.out.isatty() if tty is None else tty
        self.inputs: dict[str, list[str]] = {n: [] for n in plan.order}
        for route in plan.routes:
            self.inputs[str(route["dst"])].append(str(route["src"]))
        self.last: Sample | None = None
        self.drawn = 0  # lines drawn last time (to redraw in place)

    def rows(self, sample: Sample) -> list[tuple[str, str, float, int, int, int]]:
        """(node, kind, items/s, items out, backlog, deadline misses) per node."""
        last = self.last
        dt = sample.t - (last.t if last is not None else 0.0)
        rows = []
        for name in self.plan.order:
            n = sample.nodes.get(name, {})
            out = n.get("items_out", 0)
            before = last.nodes.get(name, {}).get("items_out", 0) if last is not None else 0
            rate = (out - before) / dt if dt > 0 else 0.0
            sent = sum(sample.nodes.get(src, {}).get("items_out", 0) for src in self.inputs[name])
            backlog = max(0, sent - n.get("items_in", 0)) if self.inputs[name] else 0
            kind = self.plan.nodes[name].kind
            rows.append((name, kind, rate, out, backlog, n.get("deadline_misses", 0)))
        return rows

    def __call__(self, sample: Sample) -> None:
        rows = self.rows(sample)
        self.last = sample
        if self.tty:
            lines = [
                f"{self.plan.name}  {sample.t:6.1f} s   end-to-end deadline misses "
                f"{sample.e2e_deadline_misses}",
                f"  {'node':<16} {'kind':<10} {'items/s':>10} {'out':>12} {'backlog':>9} "
                f"{'misses':>7}",
            ]
            for name, kind, rate, out, backlog, misses in rows:
                lines.append(
                    f"  {name:<16} {kind:<10} {rate:>10,.0f} {out:>12,} {backlog:>9,} {misses:>7,}"
                )
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        else:
            parts = [f"{name} {rate:,.0f}/s" for name, _k, rate, *_ in rows]
            waiting = [f"{name}={b}" for name, _k, _r, _o, b, _m in rows if b]
            misses = sum(m for *_, m in rows)
            self.out.write(
                f"[{sample.t:6.1f} s] "
                + "  ".join(parts)
                + f"  backlog {' '.join(waiting) or 0}  deadline misses {misses}\n"
            )
        self.out.flush()
