"""Write-ahead log benchmarks: publish throughput with the WAL off, async and sync,
beside the storage engine's own limit (raw rocksdict) and persist-queue, plus replay.

Used by ``framebus bench --suite wal`` (framebus.cli), by ``python -m framebus.bench.wal``
and by ``bench/wal_append.py``. Everything is measured in one run, on the same disk (a
temp directory, one fresh subdirectory per run, removed after it).

``publish``
    ``publishers`` threads (1 and 4) publish into a new bus, by single ``publish``
    calls or ``publish_batch`` of ``batch`` frames, with ``wal_dir=None`` (off),
    ``wal_sync=False`` (async) and ``wal_sync=True`` (sync: every call waits for its
    fsync; publishers whose frames share a WAL write share the fsync). The clock runs
    from the publishers' start (a barrier) until ``bus.flush()`` returns: the span
    includes the WAL catching up. Each run then checks ``stats()``: ``next_seq`` and
    ``wal_durable_seq`` say every frame was published and written.
``engine``
    raw rocksdict: WriteBatch of ``engine_batch`` records (key: 8-byte big-endian
    seq, value: the payload) written from one thread with WriteOptions.sync off and on.
``peers``
    persist-queue (optional): ``persistqueue.Queue`` (files) and
    ``persistqueue.SQLiteQueue``, one ``put`` per frame from one thread, with their
    default durability.
``replay``
    ``replay_frames`` frames of 64 B written by a bus, read back after a restart with
    ``bus.replay()``, with a ``WalLog.read_batch`` loop, and (for reference) as raw
    rocksdict ``items()`` over the same number of bare records.

Runs are sized from an untimed warm-up run to last about ``seconds`` each (or hold
``count`` frames); the report gives the median with min and max over ``repeat``
runs, and the ratios to the targets of the WAL issue.
"""

from __future__ import annotations

import functools
import gc
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

from ._common import (
    DEFAULT_BATCH,
    DEFAULT_SIZES,
    SHARED_FLAGS,
    BenchError,
    add_options,
    check_common,
    dist_version,
    execute_suite,
    fmt_range,
    fmt_rate,
    import_optional,
    load_average,
    machine_info,
    main_with,
    summary,
)
from ._common import WAL_QUICK_REPEAT as QUICK_REPEAT
from ._common import WAL_QUICK_REPLAY_FRAMES as QUICK_REPLAY_FRAMES
from ._common import WAL_QUICK_SECONDS as QUICK_SECONDS
from ._common import WAL_REPLAY_FRAMES as DEFAULT_REPLAY_FRAMES
from ._common import WAL_REPLAY_SIZE as REPLAY_SIZE
from ._common import WAL_SECONDS as DEFAULT_SECONDS

__all__ = [
    "CALLS",
    "PEER_IMPLS",
    "PUBLISHERS",
    "REPLAY_IMPLS",
    "SCHEMA",
    "WAL_MODES",
    "WParams",
    "build_parser",
    "execute",
    "format_table",
    "main",
    "params_from_args",
    "peer_status",
    "run",
]

SCHEMA = "framebus.bench.wal/1"

WAL_MODES: tuple[str, ...] = ("off", "async", "sync")
CALLS: tuple[str, ...] = ("single", "batch")
PUBLISHERS: tuple[int, ...] = (1, 4)
PEER_IMPLS: tuple[str, ...] = ("persistqueue.Queue", "persistqueue.SQLiteQueue")
REPLAY_IMPLS: tuple[str, ...] = ("bus.replay", "WalLog.read_batch", "rocksdict items")
# impl -> (module, what to pip install)
OPTIONAL_PEERS: dict[str, tuple[str, str]] = {"persist-queue": ("persistqueue", "persist-queue")}

DEFAULT_REPEAT = 5
MIN_COUNT = 1_000
MAX_COUNT = 20_000_000
WARMUP_COUNT = 20_000
WARMUP_COUNT_FSYNC = 300  # scenarios bound by one fsync per call run at a few k/s
ENGINE_BATCH = 1000
READ_BATCH = 4096
FSYNC_PROBE_SECONDS = 0.3
QUICK_MIN_COUNT = 100
QUICK_WARMUP = 500
QUICK_WARMUP_FSYNC = 20
QUICK_FSYNC_PROBE_SECONDS = 0.05
POOL_BYTES = 16 << 20  # at most this many distinct payload bytes per size
POOL_MAX = 4096  # distinct payloads per size
RUN_TIMEOUT = 300.0  # seconds one run may take before it is declared stuck

TARGET_RATIO = 0.8
TARGET_REPLAY = 1_000_000.0

_consume: Callable[[Iterable[Any]], Any] = deque(maxlen=0).extend  # runs an iterator in C


# ------------------------------------------------------------------------ peers


def peer_status() -> dict[str, dict[str, Any]]:
    """rocksdict (required) and persist-queue: status "ok" with versions, or "missing"."""
    out: dict[str, dict[str, Any]] = {
        "rocksdict": {"status": "ok", "version": dist_version("rocksdict")}
    }
    for name, (module, dist) in OPTIONAL_PEERS.items():
        try:
            import_optional(module)
        except ImportError as exc:
            out[name] = {
                "status": "missing",
                "reason": f"missing (pip install {dist})",
                "error": str(exc),
            }
            continue
        import sqlite3

        out[name] = {
            "status": "ok",
            "version": dist_version(dist),
            "sqlite_version": sqlite3.sqlite_version,
        }
    return out


# ----------------------------------------------------------------------- params


@dataclass
class WParams:
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    count: int | None = None  # frames per run; None: sized by `seconds`
    seconds: float = DEFAULT_SECONDS
    min_count: int = MIN_COUNT
    max_count: int = MAX_COUNT
    warmup: int = WARMUP_COUNT
    warmup_fsync: int = WARMUP_COUNT_FSYNC
    repeat: int = DEFAULT_REPEAT
    batch: int = DEFAULT_BATCH
    engine_batch: int = ENGINE_BATCH
    publishers: list[int] = field(default_factory=lambda: list(PUBLISHERS))
    wal_modes: list[str] = field(default_factory=lambda: list(WAL_MODES))
    preset: str = "default"
    replay_frames: int = DEFAULT_REPLAY_FRAMES
    read_batch: int = READ_BATCH
    dir: str | None = None
    fsync_probe_seconds: float = FSYNC_PROBE_SECONDS
    quick: bool = False
    timeout: float = RUN_TIMEOUT


_HELPS = {
    "--count": "frames per run of every publish, engine and peer scenario (default: sized so "
    f"a run lasts about --seconds, {MIN_COUNT}..{MAX_COUNT})",
    "--repeat": f"timed runs per scenario; the median is reported (default: {DEFAULT_REPEAT}; "
    f"--quick: {QUICK_REPEAT})",
    "--batch": f"frames per publish_batch call (default: {DEFAULT_BATCH})",
    "--preset": "framebus preset of the buses (default: default)",
    "--seconds": f"without --count: size runs to last about S seconds (default: {DEFAULT_SECONDS})",
    "--quick": f"a smoke run of a few seconds (runs of about {QUICK_SECONDS} s, "
    f"{QUICK_REPEAT} repeats, {QUICK_REPLAY_FRAMES} frames replayed)",
}
_FLAGS = (
    *SHARED_FLAGS[:5],  # --size .. --preset
    "--seconds",
    *SHARED_FLAGS[5:],  # --json, --quick, --no-progress
    "--replay-frames",
    "--dir",
)


def params_from_args(args: Any, error: Callable[[str], Any]) -> WParams:
    """WParams from parsed options; ``error(msg)`` (argparse's parser.error) on bad values."""
    sizes = check_common(args, error)
    quick = bool(args.quick)
    if args.dir is not None and not os.path.isdir(args.dir):
        error(f"argument --dir: {args.dir!r} is not a directory")
    return WParams(
        sizes=sizes,
        count=args.count,
        seconds=args.seconds or (QUICK_SECONDS if quick else DEFAULT_SECONDS),
        min_count=QUICK_MIN_COUNT if quick else MIN_COUNT,
        warmup=QUICK_WARMUP if quick else WARMUP_COUNT,
        warmup_fsync=QUICK_WARMUP_FSYNC if quick else WARMUP_COUNT_FSYNC,
        repeat=args.repeat or (QUICK_REPEAT if quick else DEFAULT_REPEAT),
        batch=args.batch,
        preset=args.preset,
        replay_frames=args.replay_frames
        or (QUICK_REPLAY_FRAMES if quick else DEFAULT_REPLAY_FRAMES),
        dir=args.dir,
        fsync_probe_seconds=QUICK_FSYNC_PROBE_SECONDS if quick else FSYNC_PROBE_SECONDS,
        quick=quick,
    )


# --------------------------------------------------------------------- payloads


@functools.lru_cache(maxsize=4)
def _pool(size: int) -> tuple[bytes, ...]:
    """Distinct random payloads (seeded): RocksDB compresses blocks, so repeated or
    patterned bytes would flatter every RocksDB-backed row."""
    rng = random.Random(size)
    n = max(1, min(POOL_MAX, POOL_BYTES // size))
    return tuple(rng.randbytes(size) for _ in range(n))


def _cycled(pool: Sequence[Any], count: int) -> list[Any]:
    return list(pool) * (count // len(pool)) + list(pool[: count % len(pool)])


def _batches(pool: Sequence[bytes], batch: int, n: int) -> list[list[bytes]]:
    """``n`` lists of ``batch`` payloads: the pool cut into lists in turn, and those
    lists used again once it runs out (so a long run costs references, not copies)."""
    distinct = max(1, min(n, len(pool) // batch))
    items = _cycled(pool, batch * distinct)
    return _cycled([items[i : i + batch] for i in range(0, len(items), batch)], n)


def _round_up(n: int, unit: int) -> int:
    return max(unit, -(-n // unit) * unit)


def _sized(params: WParams, warm_rate: float, unit: int) -> int:
    if params.count is not None:
        n = params.count
    else:
        n = max(params.min_count, min(params.max_count, int(warm_rate * params.seconds)))
    return _round_up(n, unit)


# ------------------------------------------------------------------------- runs


def _record(count: int, size: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "frames": count,
        **extra,
        "ok": True,
        "frames_per_s": count / seconds,
        "mb_per_s": count * size / seconds / 1e6,
        "ns_per_frame": seconds * 1e9 / count,
    }


def _publish_single(publish: Callable[[bytes], Any], items: list[bytes]) -> None:
    for p in items:
        publish(p)


def _publish_batches(publish_batch: Callable[[list[bytes]], Any], batches: list[Any]) -> None:
    for b in batches:
        publish_batch(b)


def publish_run(
    root: str, size: int, wal: str, call: str, publishers: int, count: int, params: WParams
) -> dict[str, Any]:
    """``count`` frames published by ``publishers`` threads into a new bus; checked."""
    from .. import FrameBus

    pool = _pool(size)
    per = count // publishers
    wal_dir = tempfile.mkdtemp(prefix="wal-", dir=root) if wal != "off" else None
    kwargs: dict[str, Any] = {"wal_dir": wal_dir}  # None: no WAL, whatever FRAMEBUS_WAL_DIR says
    if wal_dir is not None:
        kwargs["wal_sync"] = wal == "sync"
    try:
        bus = FrameBus(preset=params.preset, **kwargs)
        try:
            if call == "single":
                work: list[Any] = _cycled(pool, per)
                target: Callable[..., None] = _publish_single
                fn: Any = bus.publish
            else:
                work = _batches(pool, params.batch, per // params.batch)
                target = _publish_batches
                fn = bus.publish_batch
            t0: list[int] = []
            ends: list[int] = []
            errors: list[BaseException] = []
            barrier = threading.Barrier(
                publishers, action=lambda: t0.append(time.perf_counter_ns())
            )

            def publisher() -> None:
                try:
                    barrier.wait()
                    target(fn, work)
                    ends.append(time.perf_counter_ns())
                except BaseException as exc:  # reported by this thread's caller
                    errors.append(exc)

            threads = [
                threading.Thread(target=publisher, name=f"bench-publisher-{i}", daemon=True)
                for i in range(publishers)
            ]
            gc.collect()
            for t in threads:
                t.start()
            deadline = time.monotonic() + params.timeout
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            if errors or any(t.is_alive() for t in threads):
                bus.close()  # wakes publishers blocked on backpressure or on the WAL
                why = repr(errors[0]) if errors else f"no end after {params.timeout:g} s"
                raise BenchError(f"publishing {count} frames failed: {why}")
            flushed = bus.flush(timeout=max(1.0, deadline - time.monotonic()))
            t1 = time.perf_counter_ns()
            stats = bus.stats()
        finally:
            bus.close()
    finally:
        if wal_dir is not None:
            shutil.rmtree(wal_dir, ignore_errors=True)
    durable = stats.get("wal_durable_seq")
    ok = flushed and stats["next_seq"] == count
    if wal_dir is not None:
        ok = ok and durable == count - 1 and stats["wal_lag"] == 0 and not stats["wal_degraded"]
    if not ok:
        raise BenchError(
            f"published {count} frames: flush {'returned' if flushed else 'timed out'}, "
            f"next_seq {stats['next_seq']}, wal_durable_seq {durable}, "
            f"wal_lag {stats.get('wal_lag')}, wal_degraded {stats.get('wal_degraded')}"
        )
    return _record(
        count,
        size,
        (t1 - t0[0]) / 1e9,
        publish_seconds=(max(ends) - t0[0]) / 1e9,
        wal_durable_seq=durable,
    )


_pack_key = struct.Struct(">Q").pack  # the 8-byte big-endian key, as the WAL's


def _key(seq: int) -> bytes:
    return _pack_key(seq)


def _engine_fill(db: Any, batches: list[list[bytes]], batch: int, wo: Any) -> None:
    from rocksdict import WriteBatch

    for i, values in enumerate(batches):
        wb = WriteBatch(raw_mode=True)
        start = i * batch
        # keys made and put in C: the engine's limit, not Python's loop overhead
        _consume(
            map(
                wb.put,
                map(_pack_key, range(start, start + len(values))),
                values,
            )
        )
        db.write(wb, wo)


def engine_run(root: str, size: int, sync: bool, count: int, params: WParams) -> dict[str, Any]:
    """``count`` records in WriteBatches of ``engine_batch`` into a new rocksdict; checked."""
    from rocksdict import Options, Rdict, WriteOptions

    pool = _pool(size)
    batch = params.engine_batch
    batches = _batches(pool, batch, count // batch)
    path = tempfile.mkdtemp(prefix="raw-", dir=root)
    try:
        db = Rdict(path, Options(raw_mode=True))
        try:
            wo = WriteOptions()
            wo.sync = sync
            gc.collect()
            t0 = time.perf_counter_ns()
            _engine_fill(db, batches, batch, wo)
            t1 = time.perf_counter_ns()
            first, last = db.get(_key(0)), db.get(_key(count - 1))
            beyond = db.get(_key(count))
        finally:
            db.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    if first != batches[0][0] or last != batches[-1][-1] or beyond is not None:
        raise BenchError(f"rocksdict: the records of seq 0 and {count - 1} are not as written")
    return _record(count, size, (t1 - t0) / 1e9)


def peer_run(root: str, impl: str, size: int, count: int, params: WParams) -> dict[str, Any]:
    """``count`` puts into a new persist-queue queue from one thread; checked."""
    pq = import_optional("persistqueue")
    items = _cycled(_pool(size), count)
    path = tempfile.mkdtemp(prefix="pq-", dir=root)
    try:
        if impl == "persistqueue.SQLiteQueue":
            q = pq.SQLiteQueue(os.path.join(path, "q"))
        else:
            q = pq.Queue(os.path.join(path, "q"))
        try:
            put = q.put
            gc.collect()
            t0 = time.perf_counter_ns()
            for p in items:
                put(p)
            t1 = time.perf_counter_ns()
            size_after = q.qsize()
        finally:
            close = getattr(q, "close", None)
            if close is not None:
                close()
            del q
    finally:
        shutil.rmtree(path, ignore_errors=True)
    if size_after != count:
        raise BenchError(f"{impl}: {size_after} items queued after {count} puts")
    return _record(count, size, (t1 - t0) / 1e9)


# ----------------------------------------------------------------- replay runs


def _fill_wal(path: str, count: int, params: WParams) -> None:
    from .. import FrameBus

    batches = _batches(_pool(REPLAY_SIZE), params.batch, -(-count // params.batch))
    left = count
    with FrameBus(preset=params.preset, wal_dir=path) as bus:
        for b in batches:
            bus.publish_batch(b if len(b) <= left else b[:left])
            left -= len(b)
            if left <= 0:
                break
        if not bus.flush(timeout=params.timeout):
            raise BenchError(f"replay: the WAL did not take {count} frames")


def _replay_bus(bus: Any) -> tuple[int, int, int]:
    n = nbytes = 0
    last = -1
    for f in bus.replay():
        n += 1
        nbytes += len(f.payload)
        last = f.seq
    return n, nbytes, last


def _replay_read_batch(wal: Any, batch: int) -> tuple[int, int, int]:
    n = nbytes = 0
    seq = 0
    read_batch = wal.read_batch
    last = -1
    while frames := read_batch(seq, batch):
        n += len(frames)
        for f in frames:
            nbytes += len(f.payload)
        last = frames[-1].seq
        seq = last + 1
    return n, nbytes, last


def _scan_raw(db: Any) -> tuple[int, int, int]:
    n = nbytes = 0
    last = b""
    it = db.items()
    while chunk := list(islice(it, READ_BATCH)):
        n += len(chunk)
        for _, v in chunk:
            nbytes += len(v)
        last = chunk[-1][0]
    return n, nbytes, int.from_bytes(last, "big") if last else -1


def _timed_read(read: Callable[[], tuple[int, int, int]], count: int, impl: str) -> dict[str, Any]:
    gc.collect()
    t0 = time.perf_counter_ns()
    n, nbytes, last = read()
    t1 = time.perf_counter_ns()
    if n != count or nbytes != count * REPLAY_SIZE or last != count - 1:
        raise BenchError(
            f"replay/{impl}: read {n} frames ({nbytes} bytes, last seq {last}); expected "
            f"{count} frames of {REPLAY_SIZE} B, seq 0..{count - 1}"
        )
    return _record(count, REPLAY_SIZE, (t1 - t0) / 1e9)


# -------------------------------------------------------------------- scenarios


def _summaries(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "frames_per_s": summary([r["frames_per_s"] for r in runs]),
        "mb_per_s": summary([r["mb_per_s"] for r in runs]),
        "ns_per_frame": summary([r["ns_per_frame"] for r in runs]),
    }


def _repeat_runs(
    name: str,
    one: Callable[[int], dict[str, Any]],
    warm: int,
    unit: int,
    params: WParams,
    progress: Any,
) -> dict[str, Any]:
    """An untimed warm-up run of ``warm`` frames, then ``repeat`` timed runs sized from it."""
    warm_rec = one(_round_up(warm, unit))
    count = _sized(params, warm_rec["frames_per_s"], unit)
    runs: list[dict[str, Any]] = []
    for rep in range(1, params.repeat + 1):
        runs.append(one(count))
        if progress is not None:
            rates = [r["frames_per_s"] for r in runs]
            progress.rates_done(name, rep, params.repeat, count, "frames", rates)
    return {"count": count, "warmup": warm_rec, "runs": runs, **_summaries(runs)}


def _fsync_bound(wal: str) -> bool:
    return wal == "sync"


def _publish_scenario(
    root: str, size: int, wal: str, call: str, pubs: int, params: WParams, progress: Any
) -> dict[str, Any]:
    m = "single" if call == "single" else f"batch{params.batch}"
    name = f"publish/{size}B/{wal}/{m}/{pubs}pub"
    unit = pubs * (1 if call == "single" else params.batch)
    warm = params.warmup_fsync if _fsync_bound(wal) else params.warmup
    if _fsync_bound(wal) and call == "batch":
        # each call waits for one fsync whatever its size: a quarter as many calls
        warm *= max(1, params.batch // 4)
    res = _repeat_runs(
        name,
        lambda n: publish_run(root, size, wal, call, pubs, n, params),
        warm,
        unit,
        params,
        progress,
    )
    # the rest of the span is the WAL catching up after the last publish returned
    share = statistics.median(r["publish_seconds"] / r["seconds"] for r in res["runs"])
    return {
        "scenario": name,
        "size": size,
        "wal": wal,
        "call": call,
        "batch": params.batch if call == "batch" else 1,
        "publishers": pubs,
        "status": "ok",
        **res,
        "publish_share": share,
    }


def _engine_scenario(
    root: str, size: int, sync: bool, params: WParams, progress: Any
) -> dict[str, Any]:
    name = f"engine/{size}B/rocksdict/sync-{'on' if sync else 'off'}"
    res = _repeat_runs(
        name,
        lambda n: engine_run(root, size, sync, n, params),
        params.warmup,
        params.engine_batch,
        params,
        progress,
    )
    return {
        "scenario": name,
        "size": size,
        "impl": "rocksdict",
        "sync": sync,
        "batch": params.engine_batch,
        "status": "ok",
        **res,
    }


def _peer_scenario(
    root: str,
    impl: str,
    size: int,
    params: WParams,
    peers: dict[str, dict[str, Any]],
    progress: Any,
) -> dict[str, Any]:
    name = f"peer/{size}B/{impl}"
    base: dict[str, Any] = {"scenario": name, "size": size, "impl": impl}
    info = peers["persist-queue"]
    if info["status"] != "ok":
        if progress is not None:
            progress.note(name, info["reason"])
        return {**base, "status": info["status"], "reason": info["reason"], "runs": []}
    res = _repeat_runs(
        name,
        lambda n: peer_run(root, impl, size, n, params),
        params.warmup_fsync,
        1,
        params,
        progress,
    )
    return {**base, "status": "ok", **res}


def _replay_scenarios(root: str, params: WParams, progress: Any) -> list[dict[str, Any]]:
    from rocksdict import Options, Rdict, WriteOptions

    from .. import FrameBus
    from ..wal import WalLog  # type: ignore[import-not-found,unused-ignore]

    count = params.replay_frames
    out: list[dict[str, Any]] = []

    def timed(impl: str, read: Callable[[], tuple[int, int, int]]) -> None:
        name = f"replay/{REPLAY_SIZE}B/{impl}"
        _timed_read(read, count, impl)  # warm-up: block cache, decoders
        runs: list[dict[str, Any]] = []
        for rep in range(1, params.repeat + 1):
            runs.append(_timed_read(read, count, impl))
            if progress is not None:
                rates = [r["frames_per_s"] for r in runs]
                progress.rates_done(name, rep, params.repeat, count, "frames", rates)
        out.append(
            {
                "scenario": name,
                "size": REPLAY_SIZE,
                "impl": impl,
                "status": "ok",
                "count": count,
                "runs": runs,
                **_summaries(runs),
            }
        )

    path = tempfile.mkdtemp(prefix="replay-", dir=root)
    try:
        _fill_wal(path, count, params)
        # read after a restart: a new bus on the same directory
        with FrameBus(preset=params.preset, wal_dir=path) as bus:
            timed("bus.replay", lambda: _replay_bus(bus))
        with WalLog(path) as wal:
            timed("WalLog.read_batch", lambda: _replay_read_batch(wal, params.read_batch))
    finally:
        shutil.rmtree(path, ignore_errors=True)
    path = tempfile.mkdtemp(prefix="replay-raw-", dir=root)
    try:
        db = Rdict(path, Options(raw_mode=True))
        try:
            n = _round_up(count, params.engine_batch)
            batches = _batches(_pool(REPLAY_SIZE), params.engine_batch, n // params.engine_batch)
            # exactly `count` records, like the WAL
            batches[-1] = batches[-1][: count - (len(batches) - 1) * params.engine_batch]
            _engine_fill(db, batches, params.engine_batch, WriteOptions())
            timed("rocksdict items", lambda: _scan_raw(db))
        finally:
            db.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return out


# ------------------------------------------------------------------------- disk


def _fs_type(path: str) -> str | None:
    """The filesystem type of ``path`` from /proc/mounts (longest mount point)."""
    best, fs = "", None
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fs = mnt, parts[2]
    except OSError:
        return None
    return fs


def _fsync_rate(root: str, seconds: float) -> float:
    """Appends of 64 B each followed by fsync, per second: the disk's floor for sync rows."""
    fd, path = tempfile.mkstemp(prefix="fsync-", dir=root)
    try:
        data = b"\0" * 64
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            os.write(fd, data)
            os.fsync(fd)
            n += 1
            now = time.perf_counter()
            if now >= end:
                return n / (now - t0)
    finally:
        os.close(fd)
        os.unlink(path)


# -------------------------------------------------------------------- report


def _ratio_rows(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Ratios of medians: WAL rows to the raw engine (the targets) and to persist-queue."""
    out: list[dict[str, Any]] = []
    engine = {(r["size"], r["sync"]): r for r in results["engine"] if r["status"] == "ok"}
    peers = {(r["size"], r["impl"]): r for r in results["peers"] if r["status"] == "ok"}
    for r in results["publish"]:
        if r["wal"] == "off" or r["status"] != "ok":
            continue
        sync = r["wal"] == "sync"
        base = {
            "size": r["size"],
            "wal": r["wal"],
            "call": r["call"],
            "batch": r["batch"],
            "publishers": r["publishers"],
            "wal_frames_per_s": r["frames_per_s"]["median"],
        }
        e = engine.get((r["size"], sync))
        if e is not None:
            ratio = r["frames_per_s"]["median"] / e["frames_per_s"]["median"]
            out.append(
                {
                    "target": f"wal_{r['wal']}_vs_rocksdict_sync_{'on' if sync else 'off'}",
                    **base,
                    "peer": f"rocksdict WriteBatch({e['batch']}) sync {'on' if sync else 'off'}",
                    "peer_frames_per_s": e["frames_per_s"]["median"],
                    "ratio": ratio,
                    "goal": TARGET_RATIO,
                    "met": ratio >= TARGET_RATIO,
                }
            )
        # persist-queue beside the single-call rows of one publisher: like for like
        impl = "persistqueue.SQLiteQueue" if sync else "persistqueue.Queue"
        p = peers.get((r["size"], impl))
        if p is not None and r["call"] == "single" and r["publishers"] == 1:
            out.append(
                {
                    "target": None,
                    **base,
                    "peer": impl,
                    "peer_frames_per_s": p["frames_per_s"]["median"],
                    "ratio": r["frames_per_s"]["median"] / p["frames_per_s"]["median"],
                }
            )
    for r in results["replay"]:
        if r["impl"] == "rocksdict items" or r["status"] != "ok":
            continue
        fps = r["frames_per_s"]["median"]
        out.append(
            {
                "target": "replay_frames_per_s",
                "size": r["size"],
                "impl": r["impl"],
                "wal_frames_per_s": fps,
                "goal": TARGET_REPLAY,
                "met": fps >= TARGET_REPLAY,
            }
        )
    return out


PQ_DURABILITY = {
    "persistqueue.Queue": "defaults (chunksize=100, autosave=False): each put pickles the "
    "item into the chunk file and flushes it to the OS, then rewrites the info file "
    "(temp file + rename); fsync only when a chunk of 100 items is full",
    "persistqueue.SQLiteQueue": "defaults: each put is one committed SQLite transaction, "
    "journal_mode=WAL with SQLite's default synchronous=FULL, so every put fsyncs",
}


def run(params: WParams, progress: Any = None) -> dict[str, Any]:
    """Run every scenario; returns the report (the structure written by --json)."""
    started = time.time()
    load_start = load_average()
    peers = peer_status()
    results: dict[str, list[dict[str, Any]]] = {
        "publish": [],
        "engine": [],
        "peers": [],
        "replay": [],
    }
    root = tempfile.mkdtemp(prefix="framebus-walbench-", dir=params.dir)
    try:
        disk = {
            "dir": root,
            "fs_type": _fs_type(root),
            "fsync_per_s": _fsync_rate(root, params.fsync_probe_seconds),
        }
        for size in params.sizes:
            for wal in params.wal_modes:
                for call in CALLS:
                    for pubs in params.publishers:
                        results["publish"].append(
                            _publish_scenario(root, size, wal, call, pubs, params, progress)
                        )
            for sync in (False, True):
                results["engine"].append(_engine_scenario(root, size, sync, params, progress))
            for impl in PEER_IMPLS:
                results["peers"].append(_peer_scenario(root, impl, size, params, peers, progress))
        results["replay"] = _replay_scenarios(root, params, progress)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "schema": SCHEMA,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "machine": machine_info(),
        # 1-minute load average: other work on the machine moves these numbers a lot
        "load_average": {"start": load_start, "end": load_average()},
        "disk": disk,
        "params": asdict(params),
        "peers": peers,
        "notes": {
            "clock": "time.perf_counter_ns; publish: from the publishers' barrier until "
            "bus.flush() returns (every frame in the WAL), then stats() must show "
            "next_seq == count and wal_durable_seq == count - 1; engine and peers: the "
            "loop of writes or puts in one thread; replay: the whole read loop",
            "statistics": "median, min and max over the timed runs, after one untimed "
            "warm-up run per scenario; without --count each run is sized from the warm-up "
            f"rate to last about {params.seconds:g} s ({params.min_count}..{params.max_count} "
            "frames, rounded to whole batches and publishers)",
            "runs": "publish: a new bus (preset "
            f"{params.preset!r}) per run, on a new WAL directory; engine and peers: a new "
            "database or queue per run; all under one temp directory, removed after",
            "payloads": "distinct random bytes (seeded), cycled from a pool of at most "
            f"{POOL_MAX}; default topic",
            "publish": "single: one bus.publish per frame; batch: bus.publish_batch of "
            f"{params.batch} frames; sync: every call returns once its frames are fsynced, "
            "publishers whose frames share one WAL write share the fsync (group commit)",
            "engine": f"rocksdict Rdict(Options(raw_mode=True)), WriteBatch of "
            f"{params.engine_batch} puts (key: 8-byte big-endian seq, value: the bare "
            "payload), one write per batch with WriteOptions.sync off or on",
            "peers": "; ".join(f"{k}: {v}" for k, v in PQ_DURABILITY.items())
            + "; one put per frame from one thread, the payload bytes as the item",
            "replay": f"{params.replay_frames} frames of {REPLAY_SIZE} B written by a bus "
            "(publish_batch, wal_sync=False); bus.replay() on a new bus on that directory "
            f"(a restart), then WalLog.read_batch(seq, {params.read_batch}) loops; "
            "rocksdict items: the same number of bare records in a raw database, read "
            f"{READ_BATCH} at a time; every reader touches each payload (len); the page "
            "cache is warm (just written) and one untimed read comes first",
            "mb": "MB/s counts payload bytes, 1 MB = 1e6 bytes",
            "targets": f"WAL async >= {TARGET_RATIO}x raw rocksdict WriteBatch sync off; WAL "
            f"sync >= {TARGET_RATIO}x raw rocksdict WriteBatch sync on (both in frames/s, "
            f"same payload size); replay >= {TARGET_REPLAY / 1e6:g} M frames/s at "
            f"{REPLAY_SIZE} B",
            "gc": "enabled; gc.collect() before each run",
        },
        "results": results,
        "ratios": _ratio_rows(results),
    }


# ------------------------------------------------------------------------ table


def _rate_cells(r: dict[str, Any]) -> tuple[str, str]:
    fps = r["frames_per_s"]
    return fmt_rate(fps["median"]), fmt_range(fps)


def format_table(report: dict[str, Any]) -> str:
    p = report["params"]
    m = report["machine"]
    peers = report["peers"]
    disk = report["disk"]
    pq = peers.get("persist-queue", {})
    pq_text = (
        f"persist-queue {pq.get('version') or '?'} (SQLite {pq.get('sqlite_version')})"
        if pq.get("status") == "ok"
        else f"persist-queue {pq.get('reason', 'missing')}"
    )
    out = [
        f"framebus {m['framebus_version']} write-ahead log: median of {p['repeat']} "
        f"run{'s' if p['repeat'] != 1 else ''} (min..max) after a warm-up run, "
        f"preset {p['preset']!r}",
        f"{m['cpu_model']}, {m['usable_cpus']} CPUs, Python {m['python_version']}; "
        f"rocksdict {peers['rocksdict'].get('version') or '?'}, {pq_text}",
        f"disk: {disk['fs_type'] or '?'} under {os.path.dirname(disk['dir'])}, "
        f"{disk['fsync_per_s']:,.0f} fsyncs/s (64 B append + fsync)",
    ]
    load = report.get("load_average") or {}
    if load.get("start") is not None and load.get("end") is not None:
        out[-1] += f"; load average {load['start']:.2f} -> {load['end']:.2f}"
    ratios = report["ratios"]
    to_engine = {
        (x["size"], x["wal"], x["call"], x["publishers"]): x["ratio"]
        for x in ratios
        if x.get("target") and x["target"].startswith("wal_")
    }

    rows = report["results"]["publish"]
    if rows:
        out += [
            "",
            "publish into a bus, clock stopped when bus.flush() returns (every frame in the "
            "WAL); vs raw = frames/s / raw rocksdict WriteBatch frames/s (sync off for async, "
            "on for sync); pub% = share of the span until the last publish call returned, the "
            "rest is the WAL catching up",
        ]
        head = (
            f"{'size':>7}  {'wal':<5}  {'call':<9}  {'pubs':>4}  {'frames/s':>9}  "
            f"{'(min..max)':<19}  {'MB/s':>8}  {'vs raw':>6}  {'pub%':>4}  {'frames/run':>10}"
        )
        out += [head, "-" * len(head)]
        prev: tuple[Any, ...] | None = None
        for r in rows:
            first_size = prev is None or prev[0] != r["size"]
            first_wal = first_size or prev is None or prev[1] != r["wal"]
            first_call = first_wal or prev is None or prev[2] != r["call"]
            if first_wal and prev is not None:
                out.append("")
            prev = (r["size"], r["wal"], r["call"])
            size = f"{r['size']} B" if first_size else ""
            wal = r["wal"] if first_wal else ""
            call = "single" if r["call"] == "single" else f"batch{r['batch']}"
            call = call if first_call else ""
            val, rng = _rate_cells(r)
            rt = to_engine.get((r["size"], r["wal"], r["call"], r["publishers"]))
            rts = f"{rt:.2f}x" if rt is not None else "-"
            out.append(
                f"{size:>7}  {wal:<5}  {call:<9}  {r['publishers']:>4}  {val:>9}  {rng:<19}  "
                f"{r['mb_per_s']['median']:>8.1f}  {rts:>6}  {r['publish_share']:>4.0%}  "
                f"{r['count']:>10}"
            )

    rows = report["results"]["engine"] + report["results"]["peers"]
    if rows:
        out += [
            "",
            "the engine's own limit and the Python peer: one writer thread, fresh database per run",
        ]
        head = (
            f"{'size':>7}  {'impl':<42}  {'frames/s':>9}  {'(min..max)':<19}  "
            f"{'MB/s':>8}  {'frames/run':>10}"
        )
        out += [head, "-" * len(head)]
        prev_size = None
        for r in sorted(rows, key=lambda x: x["size"]):
            first = r["size"] != prev_size
            if first and prev_size is not None:
                out.append("")
            prev_size = r["size"]
            size = f"{r['size']} B" if first else ""
            if "sync" in r:
                label = f"rocksdict WriteBatch({r['batch']}) sync {'on' if r['sync'] else 'off'}"
            else:
                kind = (
                    "fsync per put" if r["impl"].endswith("SQLiteQueue") else "fsync per 100 puts"
                )
                label = f"{r['impl']} ({kind})"
            lead = f"{size:>7}  {label:<42}"
            if r["status"] != "ok":
                out.append(f"{lead}  {r['reason']}")
                continue
            val, rng = _rate_cells(r)
            out.append(
                f"{lead}  {val:>9}  {rng:<19}  {r['mb_per_s']['median']:>8.1f}  {r['count']:>10}"
            )

    rows = report["results"]["replay"]
    if rows:
        out += [
            "",
            f"replay of {p['replay_frames']} frames of {REPLAY_SIZE} B after a restart "
            "(page cache warm); rocksdict items: bare records, for reference",
        ]
        head = f"{'impl':<36}  {'frames/s':>9}  {'(min..max)':<19}  {'MB/s':>8}"
        out += [head, "-" * len(head)]
        for r in rows:
            label = {
                "bus.replay": "bus.replay()",
                "WalLog.read_batch": f"WalLog.read_batch({p['read_batch']}) loop",
                "rocksdict items": "rocksdict items() (raw)",
            }.get(r["impl"], r["impl"])
            val, rng = _rate_cells(r)
            out.append(f"{label:<36}  {val:>9}  {rng:<19}  {r['mb_per_s']['median']:>8.1f}")

    targets = [x for x in ratios if x.get("target")]
    if targets:
        out += ["", "targets (ratios of medians in this run)"]
        groups = (
            ("wal_async_vs_rocksdict_sync_off", "WAL async >= 0.8x raw rocksdict batch, sync off"),
            ("wal_sync_vs_rocksdict_sync_on", "WAL sync  >= 0.8x raw rocksdict batch, sync on"),
        )
        for key, title in groups:
            sel = [x for x in targets if x["target"] == key]
            if not sel:
                continue
            met = sum(1 for x in sel if x["met"])
            out.append(f"  {title}: met in {met} of {len(sel)}")
            for x in sel:
                call = "single" if x["call"] == "single" else f"batch{x['batch']}"
                out.append(
                    f"    {x['size']:>5} B  {call:<9} {x['publishers']} pub  "
                    f"{fmt_rate(x['wal_frames_per_s']):>9} / "
                    f"{fmt_rate(x['peer_frames_per_s']):>9}  = {x['ratio']:5.2f}x  "
                    f"{'met' if x['met'] else 'MISSED'}"
                )
        sel = [x for x in targets if x["target"] == "replay_frames_per_s"]
        if sel:
            out.append(f"  replay >= {TARGET_REPLAY / 1e6:g} M frames/s at {REPLAY_SIZE} B")
            for x in sel:
                out.append(
                    f"    {x['impl']:<19}  {fmt_rate(x['wal_frames_per_s']):>9} frames/s"
                    f"  {'met' if x['met'] else 'MISSED'}"
                )
    vs_peer = [x for x in ratios if not x.get("target")]
    if vs_peer:
        out += ["", "beside persist-queue (single calls, one publisher)"]
        for x in vs_peer:
            out.append(f"    {x['size']:>5} B  WAL {x['wal']:<5} {x['ratio']:8.1f}x {x['peer']}")
    return "\n".join(out)


# ------------------------------------------------------------------------- main


def execute(args: Any, error: Callable[[str], Any], command: list[str]) -> int:
    """Run the WAL suite: progress on stderr, the table on stdout, JSON if asked."""
    return execute_suite(args, error, command, "wal", params_from_args, run, format_table)


def build_parser(prog: str | None = None) -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="Write-ahead log benchmarks: publish throughput into a bus with the "
        "WAL off, async and sync (1 and 4 publishers, single calls and batches), beside "
        "raw rocksdict WriteBatches (sync off and on) and persist-queue; replay speed. "
        "Progress goes to stderr, the table to stdout.",
    )
    add_options(p, _FLAGS, _HELPS)
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The entry point of bench/wal_append.py and ``python -m framebus.bench.wal``."""
    return main_with(build_parser, execute, argv, prog)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python -m framebus.bench.wal"))
