"""pytest-benchmark suite: the scenarios of spsc_throughput.py at small counts.

    pytest bench/bench_pytest.py --benchmark-only
    pytest bench/bench_pytest.py --benchmark-only --benchmark-group-by=group \\
        --benchmark-json=bench.json

Each benchmark group (``threads/single/64B``, ``one-thread/batch100/4096B``, ...) holds
framebus and the three peers side by side. pytest-benchmark times one whole run
(``FRAMEBUS_BENCH_COUNT`` frames, default 20000, thread start and join included,
gc.collect() in the untimed setup);
``extra_info`` carries the run's own clock (barrier release to the last frame) as
frames_per_s and ns_per_frame. Every run asserts that exactly the frames sent arrived.

Not collected by the default ``pytest`` run (testpaths = ["tests"]; the file name does
not match test_*.py either).
"""

from __future__ import annotations

import gc
import os

import pytest

pytest.importorskip("pytest_benchmark")

from framebus import FrameBus  # noqa: E402
from framebus.bench import inproc as fbb  # noqa: E402

COUNT = int(os.environ.get("FRAMEBUS_BENCH_COUNT", "20000"))
BATCH = 100
SIZES = (64, 4096)
ROUNDS = 5


@pytest.fixture(scope="module")
def payloads():
    cache: dict[int, tuple[list[bytes], list[list[bytes]]]] = {}

    def get(size: int) -> tuple[list[bytes], list[list[bytes]]]:
        if size not in cache:
            items = fbb.make_payloads(size, COUNT)
            cache[size] = (items, [items[i : i + BATCH] for i in range(0, COUNT, BATCH)])
        return cache[size]

    return get


@pytest.fixture
def bus_for():
    buses = []

    def make(impl: str):
        if impl != "framebus":
            return None
        bus = FrameBus(preset="default")
        fbb.warm_up(bus)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


def _collect() -> None:
    gc.collect()  # untimed; returns None (a value would be taken as the call's arguments)


def _record(benchmark, result: dict, impl: str, size: int) -> None:
    assert result["ok"], result
    assert result["frames_delivered"] == COUNT
    benchmark.extra_info.update(
        impl=impl,
        size=size,
        frames=result["frames_delivered"],
        frames_per_s=result["frames_per_s"],
        mb_per_s=result["mb_per_s"],
        ns_per_frame=result["ns_per_frame"],
    )


@pytest.mark.parametrize("impl", fbb.IMPLS)
@pytest.mark.parametrize("mode", fbb.MODES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_spsc_threads(benchmark, payloads, bus_for, size, mode, impl):
    """One producer thread -> one consumer thread."""
    items, batches = payloads(size)
    params = fbb.Params(sizes=[size], count=COUNT, batch=BATCH, timeout=120.0)
    bus = bus_for(impl)
    benchmark.group = f"threads/{'single' if mode == 'single' else f'batch{BATCH}'}/{size}B"
    result = benchmark.pedantic(
        fbb.run_threads,
        args=(impl, mode, items, batches, params, bus, None, False),
        setup=_collect,
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=1,
    )
    _record(benchmark, result, impl, size)


@pytest.mark.parametrize("impl", fbb.IMPLS)
@pytest.mark.parametrize("mode", fbb.MODES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_one_thread(benchmark, payloads, bus_for, size, mode, impl):
    """publish then recv in the same thread."""
    items, batches = payloads(size)
    params = fbb.Params(sizes=[size], count=COUNT, batch=BATCH)
    bus = bus_for(impl)
    benchmark.group = f"one-thread/{'single' if mode == 'single' else f'batch{BATCH}'}/{size}B"
    result = benchmark.pedantic(
        fbb.run_one_thread,
        args=(impl, mode, items, batches, params, bus, False),
        setup=_collect,
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=1,
    )
    _record(benchmark, result, impl, size)
