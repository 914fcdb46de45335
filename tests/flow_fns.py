"""Functions the flow tests name as "module:function" (in graphs and graph files)."""

from __future__ import annotations

from typing import Any

NOT_CALLABLE = 42
STORED: list[object] = []


def ten() -> range:
    return range(10)


def double(x: int) -> int:
    return 2 * x


def odd(x: int) -> bool:
    return x % 2 == 1


def store(x: object) -> None:
    STORED.append(x)


def longer_than_two(held: list[object]) -> bool:
    return len(held) > 2


class Ns:
    @staticmethod
    def inc(x: int) -> int:
        return x + 1


# -- for the ipc runtime: callables that run in worker processes and leave their
# effects where the test process can see them (files named by FLOW_DIR)

FLOW_DIR = "FLOW_DIR"  # the env var naming a directory the workers write to


def _path(name: str) -> str:
    import os

    return os.path.join(os.environ[FLOW_DIR], name)


def write_line(x: object) -> None:
    """Sink: appends json(x) as a line to $FLOW_DIR/out (one write per item, so what
    a killed worker wrote is whole)."""
    import json
    import os

    fd = os.open(_path("out"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(x) + "\n").encode())
    finally:
        os.close(fd)


def read_lines(directory: str, name: str = "out") -> list[object]:
    import json
    import os

    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def fifty() -> range:
    return range(50)


def thousand() -> range:
    return range(1000)


def inc(x: int) -> int:
    return x + 1


def fail_on_7(x: int) -> int:
    if x == 7:
        raise ValueError("seven")
    return x


def counted(n: int = 200) -> object:
    """Source: 0..n-1, writing how many it has produced to $FLOW_DIR/emitted before
    each (8 bytes, overwritten in place)."""
    import os

    fd = os.open(_path("emitted"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for i in range(n):
            os.pwrite(fd, (i + 1).to_bytes(8, "little"), 0)
            yield i
    finally:
        os.close(fd)


def slow_progress_sink(x: int) -> None:
    """Sink: sleeps 2 ms, then writes [x, items the source had produced by then]."""
    import time

    time.sleep(0.002)
    with open(_path("emitted"), "rb") as f:
        emitted = int.from_bytes(f.read(8), "little")
    write_line([x, emitted])


def endless_slow() -> object:
    """Source: 0, 1, 2, ... one every 5 ms, without end."""
    import itertools
    import time

    for i in itertools.count():
        time.sleep(0.005)
        yield i


def die_on_5(x: int) -> int:
    """Map: SIGKILLs its own process at item 5."""
    import os
    import signal

    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def not_iterable() -> int:
    return 42


def _envelope() -> object:
    from framebus.envelope import Envelope

    return Envelope("t.x", {"a": 1}, content_type="application/msgpack", corr_id=7)


def mixed() -> list[object]:
    """Source: items of every kind msgpack carries (bytes and an Envelope among them)."""
    return [b"\x00raw", _envelope(), (1, 2), {"k": [1, None]}, {3: "int key"}, 1.5, "s", None]


def describe_line(x: object) -> None:
    """Sink: writes [type name, repr], an Envelope compared with mixed()'s."""
    write_line([type(x).__name__, x == _envelope() if type(x).__name__ == "Envelope" else repr(x)])


def set_on_2(x: int) -> object:
    return {x} if x == 2 else x


def die_once_on_5(x: int) -> int:
    """Map: SIGKILLs its own process at item 5 the first time ($FLOW_DIR/died marks it)."""
    import os
    import signal

    if x == 5:
        try:
            fd = os.open(_path("died"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return x
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def sink_dying_once_on_5(x: int) -> None:
    """Sink: write_line, but SIGKILLs its process at item 5 the first time."""
    die_once_on_5(x)
    write_line(x)


def _note_pid(name: str) -> None:
    import os

    with open(_path(f"pid-{name}"), "w") as f:
        f.write(str(os.getpid()))


def endless_noting_pid() -> object:
    """Source: endless_slow, its process id in $FLOW_DIR/pid-src first."""
    _note_pid("src")
    yield from endless_slow()  # type: ignore[misc]


def write_line_noting_pid(x: object) -> None:
    """Sink: write_line, its process id in $FLOW_DIR/pid-out at the first item."""
    import os

    if not os.path.exists(_path("pid-out")):
        _note_pid("out")
    write_line(x)


def orphan_main() -> None:
    """A program (python -c) running an endless ipc graph, for a test to kill."""
    from framebus import flow

    g = flow.Graph("ipc-orphan")
    g.source("src", endless_noting_pid) >> g.sink("out", write_line_noting_pid)
    flow.compile(g).run(runtime="ipc")


async def adouble(x: int) -> int:
    import asyncio

    await asyncio.sleep(0)
    return 2 * x


def three_then_raise() -> object:
    """Source: 0, 1, 2, then raises."""
    yield from range(3)
    raise RuntimeError("source broke")


def slow_write_line(x: object) -> None:
    """Sink: sleeps 1 ms, then write_line."""
    import time

    time.sleep(0.001)
    write_line(x)


def resumable_300(resume: int = 0) -> object:
    """Source (resumable): resume, resume + 1, ... 299, one every 5 ms; notes each
    resume value in $FLOW_DIR/resumed."""
    import time

    _note_resume(resume)
    for i in range(resume, 300):
        time.sleep(0.005)
        yield i


def _note_resume(resume: int) -> None:
    with open(_path("resumed"), "a") as f:
        f.write(f"{resume}\n")


def resumable_ten(resume: int) -> range:
    """Source (resumable): resume .. 9; notes the resume value."""
    _note_resume(resume)
    return range(resume, 10)


def resumable_endless(resume: int) -> object:
    """Source (resumable): resume, resume + 1, ... one every ms; notes the resume
    value."""
    import time

    _note_resume(resume)
    i = resume
    while True:
        time.sleep(0.001)
        yield i
        i += 1


def resumable_fifty_more(resume: int) -> range:
    """Source (resumable): the 50 items after resume; notes the resume value."""
    _note_resume(resume)
    return range(resume, resume + 50)


async def aresumable_ten(resume: int) -> object:
    """Async source (resumable): resume .. 9; notes the resume value."""
    _note_resume(resume)
    for i in range(resume, 10):
        yield i


def slow_ten() -> object:
    """Source: 0 .. 299, one every 5 ms (not resumable: every run starts at 0)."""
    import time

    for i in range(300):
        time.sleep(0.005)
        yield i


def durable_graph(source: str = "resumable_300", parallelism: int = 1) -> object:
    from framebus import flow

    g = flow.Graph("ipc-durable")
    (
        g.source("src", globals()[source], resumable=source.startswith("resumable"))
        >> g.map("inc", inc, parallelism=parallelism)
        >> g.accumulate("acc", count=4)
        >> g.sink("out", write_line_noting_pid)
    )
    return g


def durable_main(wal: str, source: str = "resumable_300", parallelism: int = 1) -> None:
    """A program (python -c) running durable_graph with a WAL, for a test to kill."""
    from framebus import flow

    flow.compile(durable_graph(source, parallelism)).run(runtime="ipc", wal=wal)  # type: ignore[arg-type]


def sensor_readings_2000() -> object:
    """Source: the first 2 000 of the ingest example's readings (its source never ends)."""
    from itertools import islice

    from framebus.flow.demo import sensor_readings

    return islice(sensor_readings(), 2000)


def gated_write_line(x: int) -> None:
    """Sink: write_line(x) once $FLOW_DIR/gate holds a number x or above (the test
    opens the gate item by item); gives up with an error after 60 s."""
    import time

    end = time.monotonic() + 60
    while True:
        try:
            with open(_path("gate")) as f:
                gate = int(f.read() or 0)
        except (FileNotFoundError, ValueError):
            gate = 0
        if x <= gate:
            break
        if time.monotonic() > end:
            raise TimeoutError(f"gate closed at item {x}")
        time.sleep(0.002)
    write_line(x)


def chain_steps(max_size: int) -> object:
    """A Hypothesis strategy of chain steps for the random-graph tests: (kind,
    constant, pure, parallelism); maps add the constant, filters drop multiples of it
    plus one, accumulators group by it plus one."""
    from hypothesis import strategies as st

    return st.lists(
        st.tuples(
            st.sampled_from(["map", "filter", "accumulate"]),
            st.integers(1, 4),
            st.booleans(),
            st.sampled_from([1, 1, 2]),
        ),
        min_size=1,
        max_size=max_size,
    )


def chain_step(g: object, i: int, kind: str, c: int, pure: bool, par: int) -> object:
    """The node ``n<i>`` of one chain step (see chain_steps) added to graph ``g``."""
    if kind == "map":
        return g.map(  # type: ignore[attr-defined]
            f"n{i}",
            lambda x, c=c: (x if isinstance(x, int) else len(x)) + c,
            pure=pure,
            parallelism=par,
        )
    if kind == "filter":
        return g.filter(  # type: ignore[attr-defined]
            f"n{i}",
            lambda x, c=c: not isinstance(x, int) or x % (c + 1) != 0,
            pure=pure,
            parallelism=par,
        )
    return g.accumulate(f"n{i}", count=c + 1)  # type: ignore[attr-defined]


def linear(items: Any, *stages: tuple[str, str, Any, dict[str, Any]], name: str = "g") -> Any:
    """A graph source "src" -> the stages (kind, name, fn, options) -> sink "out"
    collecting: (graph, the sink's list)."""
    from framebus import flow

    out: list[Any] = []
    g = flow.Graph(name)
    node = g.source("src", items)
    for kind, nname, fn, options in stages:
        node = node >> g.add(nname, kind, fn, **options)
    node >> g.sink("out", out.append)
    return g, out
