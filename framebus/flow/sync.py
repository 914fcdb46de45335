"""The sync engine (``plan.run(runtime="sync")``): the reference semantics of a plan,
run in the calling thread, deterministically.

Order. Sources are pulled in turn (round robin, in declaration order, one item each,
an exhausted source leaving the turn). Each item goes depth first through the graph:
a node hands what it produces to its outputs in edge-declaration order, and each
output carries it as far as it goes before the next output gets it. Before an item
from a source starts, every accumulator whose TTL has run out (by the clock) flushes,
in topological order; at the end of the input (or the timeout) every accumulator
flushes what it holds, in topological order. The same input gives the same output in
the same order, and the same report with the same clock.

Time. ``clock()`` gives ns (default ``time.monotonic_ns``); busy time, TTLs, deadlines
and latencies follow it, so a test can step it. An item's emission time is the clock
when its source produced it; a node with ``deadline`` counts a miss for an item that
reaches it more than ``deadline`` s after its emission (and drops it with
``on_deadline="drop"``); a source's ``deadline`` sets its items' deadline_ns, and a
sink counts an end-to-end miss for an item that reaches it after that.

Failures. A call that raises is retried ``retries`` times, the k-th retry after
``backoff * 2**(k-1)`` s of ``sleep``; then the item goes to the dead letters (node,
item, repr of the error) and the run goes on. A source that raises ends there (its
dead letter has item None).

Async. ``async def`` callables, async generator functions and async iterables run on
one private asyncio event loop of the run, each awaitable to completion before the
engine goes on (so it cannot be used from a thread that is running an event loop).

``rate`` paces a node by a token bucket of one token (``sleep`` until the next is due);
``parallelism``, ``overflow`` and ``window`` do not apply in one thread.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .accumulate import Accumulator
from .errors import FlowError
from .report import DeadLetter, NodeStats, Report

if TYPE_CHECKING:
    from .compile import CompiledNode, Plan

__all__ = ["SyncEngine", "call_source", "source_iterator"]

_DONE = object()


class _Item:
    __slots__ = ("value", "emitted_ns", "deadline_ns")

    def __init__(self, value: Any, emitted_ns: int, deadline_ns: int) -> None:
        self.value = value
        self.emitted_ns = emitted_ns
        self.deadline_ns = deadline_ns  # 0: none


def call_source(node: CompiledNode, resume: int = 0) -> Any:
    """What a source's callable returns: ``fn()``, or ``fn(resume=n)`` for a source
    with ``resumable=True`` (``n``: how many of its items earlier runs of the same
    ``wal`` already took; 0 in a run without one)."""
    assert node.fn is not None
    if node.options.get("resumable"):
        return node.fn(resume=resume)
    return node.fn()


def source_iterator(node: CompiledNode, made: Any) -> Any:
    """The iterator (or async iterator) of what a source's callable returned (awaited
    already); FlowError naming the source when it is neither iterable."""
    if hasattr(made, "__aiter__"):
        return made.__aiter__()
    try:
        return iter(made)
    except TypeError:
        raise FlowError(
            f"source {node.name!r}: {node.fn!r}() returned {type(made).__name__}, "
            "not an iterable or an async iterable"
        ) from None


class _Failed(Exception):
    """A call failed after its retries; the dead letter is recorded."""


def clock_and_sleep(
    clock: Callable[[], int] | None, sleep: Callable[[float], None] | None
) -> tuple[Callable[[], int], Callable[[float], None]]:
    """A run's clock (ns) and sleep: the real ones, or an injected clock with its own
    ``sleep`` if it has one (a stepped clock), else a sleep that returns at once."""
    if clock is None:
        return time.monotonic_ns, sleep or time.sleep
    return clock, sleep or getattr(clock, "sleep", None) or (lambda seconds: None)


class SyncEngine:
    """Runs a Plan in the calling thread; see the module's docstring."""

    def __init__(
        self,
        plan: Plan,
        clock: Callable[[], int] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.plan = plan
        self.clock, self.sleep = clock_and_sleep(clock, sleep)
        self.nodes = plan.nodes
        self.report = Report(
            plan.name,
            "sync",
            {n: NodeStats(plan.nodes[n].kind, plan.nodes[n].stage) for n in plan.order},
        )
        self.stats = self.report.nodes
        self.accs = {
            n: Accumulator(
                node.options["count"], node.options["size"], node.options["ttl"], node.until
            )
            for n, node in plan.nodes.items()
            if node.kind == "accumulate"
        }
        self.acc_order = [n for n in plan.order if n in self.accs]
        self.next_at = {n: 0 for n in plan.nodes}  # rate: clock time the next item is due
        self.loop: asyncio.AbstractEventLoop | None = None

    def snapshot(self) -> dict[str, Any]:
        """The run's numbers so far, shaped as the inproc runtime's snapshot (for
        framebus.metrics and live progress; read from another thread while it runs)."""
        nodes = {
            name: {
                "items_in": s.items_in,
                "items_out": s.items_out,
                "errors": s.errors,
                "deadline_misses": s.deadline_misses,
            }
            for name, s in list(self.stats.items())
        }
        sinks = [n for n in self.plan.order if self.nodes[n].kind == "sink"]
        # the sync report keeps one histogram for all sinks: per sink only when one
        latency = {sinks[0]: self.report.buckets()} if len(sinks) == 1 else {}
        return {
            "graph": self.plan.name,
            "nodes": nodes,
            "e2e_deadline_misses": self.report.e2e_deadline_misses,
            "latency": latency,
        }

    # -- helpers ---------------------------------------------------------------------

    def _await(self, value: Any) -> Any:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(value)

    def _pace(self, name: str, rate: float) -> None:
        now = self.clock()
        due = self.next_at[name]
        if now < due:
            self.sleep((due - now) / 1e9)
            after = self.clock()
            self.stats[name].throttled_ns += max(0, after - now)
            now = after
        self.next_at[name] = max(now, due) + int(1e9 / rate)

    def _call(self, node: CompiledNode, value: Any) -> Any:
        stats = self.stats[node.name]
        retries = node.options.get("retries", 0)
        backoff = node.options.get("backoff", 0.0)
        assert node.fn is not None
        attempt = 0
        while True:
            start = self.clock()
            try:
                result = node.fn(value)
                if inspect.isawaitable(result):
                    result = self._await(result)
            except Exception as exc:
                stats.busy_ns += self.clock() - start
                stats.errors += 1
                if attempt < retries:
                    attempt += 1
                    stats.retries += 1
                    if backoff:
                        self.sleep(backoff * 2 ** (attempt - 1))
                    continue
                stats.dead_letters += 1
                self.report.dead_letters.append(DeadLetter(node.name, value, repr(exc)))
                raise _Failed from exc
            stats.busy_ns += self.clock() - start
            return result

    # -- the graph -------------------------------------------------------------------

    def _forward(self, node: CompiledNode, item: _Item) -> None:
        for out in node.outputs:
            self._deliver(self.nodes[out], item)

    def _deliver(self, node: CompiledNode, item: _Item) -> None:
        stats = self.stats[node.name]
        stats.items_in += 1
        options = node.options
        deadline = options.get("deadline")
        if deadline is not None and self.clock() - item.emitted_ns > deadline * 1e9:
            stats.deadline_misses += 1
            if options["on_deadline"] == "drop":
                stats.dropped += 1
                return
        rate = options.get("rate")
        if rate is not None:
            self._pace(node.name, rate)
        kind = node.kind
        if kind == "accumulate":
            acc = self.accs[node.name]
            now = self.clock()
            if acc.expired(now):
                self._flush(node, "ttl")
            start = self.clock()
            try:
                reason = acc.add(item.value, item.emitted_ns, start)
            except Exception as exc:  # the until predicate raised: the item stays held
                stats.errors += 1
                self.report.dead_letters.append(DeadLetter(node.name, item.value, repr(exc)))
                stats.dead_letters += 1
                reason = None
            stats.busy_ns += self.clock() - start
            if reason is not None:
                self._flush(node, reason)
            return
        try:
            result = self._call(node, item.value)
        except _Failed:
            return
        if kind == "map":
            stats.items_out += 1
            self._forward(node, _Item(result, item.emitted_ns, item.deadline_ns))
        elif kind == "filter":
            if result:
                stats.items_out += 1
                self._forward(node, item)
        else:  # sink
            stats.items_out += 1
            now = self.clock()
            self.report.record_latency(now - item.emitted_ns)
            if item.deadline_ns and now > item.deadline_ns:
                self.report.e2e_deadline_misses += 1

    def _flush(self, node: CompiledNode, reason: str) -> None:
        acc = self.accs[node.name]
        if not len(acc):
            return
        values, oldest = acc.take()
        stats = self.stats[node.name]
        stats.items_out += 1
        stats.flushes[reason] = stats.flushes.get(reason, 0) + 1
        self._forward(node, _Item(values, oldest, 0))

    def _flush_expired(self) -> None:
        if not self.acc_order:
            return
        now = self.clock()
        for name in self.acc_order:
            if self.accs[name].expired(now):
                self._flush(self.nodes[name], "ttl")

    # -- sources ---------------------------------------------------------------------

    def _open(self, node: CompiledNode) -> Iterator[Any] | Any:
        made = call_source(node)
        if inspect.isawaitable(made):
            made = self._await(made)
        return source_iterator(node, made)

    def _pull(self, node: CompiledNode, it: Any) -> Any:
        stats = self.stats[node.name]
        start = self.clock()
        try:
            if hasattr(it, "__anext__"):
                try:
                    return self._await(it.__anext__())
                except StopAsyncIteration:
                    return _DONE
            return next(it, _DONE)
        except Exception as exc:
            stats.errors += 1
            stats.dead_letters += 1
            self.report.dead_letters.append(DeadLetter(node.name, None, repr(exc)))
            return _DONE
        finally:
            stats.busy_ns += self.clock() - start

    def _close(self, it: Any) -> None:
        if hasattr(it, "aclose"):
            self._await(it.aclose())
        elif hasattr(it, "close"):
            it.close()

    def run(self, timeout: float | None = None) -> Report:
        plan = self.plan
        started = self.clock()
        limit = None if timeout is None else started + int(timeout * 1e9)
        sources: list[tuple[CompiledNode, Any]] = []
        try:
            for name in plan.order:
                node = self.nodes[name]
                if node.kind != "source":
                    continue
                start = self.clock()
                try:
                    it = self._open(node)
                except FlowError:
                    raise
                except Exception as exc:
                    stats = self.stats[name]
                    stats.errors += 1
                    stats.dead_letters += 1
                    self.report.dead_letters.append(DeadLetter(name, None, repr(exc)))
                    continue
                finally:
                    self.stats[name].busy_ns += self.clock() - start
                sources.append((node, it))
            active = list(sources)
            while active:
                for entry in list(active):
                    if limit is not None and self.clock() >= limit:
                        self.report.timed_out = True
                        active.clear()
                        break
                    node, it = entry
                    value = self._pull(node, it)
                    if value is _DONE:
                        active.remove(entry)
                        continue
                    rate = node.options.get("rate")
                    if rate is not None:
                        self._pace(node.name, rate)
                    emitted = self.clock()
                    deadline = node.options.get("deadline")
                    item = _Item(
                        value, emitted, 0 if deadline is None else emitted + int(deadline * 1e9)
                    )
                    self.stats[node.name].items_out += 1
                    self._flush_expired()
                    self._forward(node, item)
            for name in self.acc_order:
                self._flush(self.nodes[name], "end")
        finally:
            for _node, it in sources:
                try:
                    self._close(it)
                except Exception:  # a source failing to close has ended all the same
                    pass
            if self.loop is not None:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()
        self.report.duration_ns = self.clock() - started
        return self.report
