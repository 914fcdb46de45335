"""Throughput of the WAL storage engine (framebus.wal.WalLog) beside raw rocksdict.

    python bench/wal_storage.py                 # 200 000 frames of 64 B, best of 3
    python bench/wal_storage.py --size 4096 --count 50000 --repeat 5

Measures, in one run and on the same disk:

- raw rocksdict: WriteBatch of `--batch` puts of the bare payload under an
  8-byte key (sync off), then an ``items()`` scan: the engine's own limit;
- WalLog.append_batch (sync off): records encoded with header and CRC32C,
  counters updated in the same batch;
- WalLog.read_batch: replay, each record's CRC checked and decoded into a
  framebus.Frame.

Prints frames/s per step (best of `--repeat`) and, with ``--json``, writes them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from typing import Any

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from framebus.wal import WalLog


def _best(
    repeat: int, setup: Callable[[], Any], run: Callable[[Any], int], close: bool = True
) -> tuple[float, float]:
    """Best frames/s of `repeat` runs, by wall clock and by this process's CPU time.

    setup() makes the state of each run, closed after it if `close`. On a busy
    machine the CPU-time rate is the steadier one; both are printed.
    """
    wall, cpu = [], []
    for _ in range(repeat):
        state = setup()
        start, start_cpu = time.perf_counter(), time.process_time()
        n = run(state)
        wall.append(n / (time.perf_counter() - start))
        cpu.append(n / max(time.process_time() - start_cpu, 1e-9))
        if close:
            state.close()
    return max(wall), max(cpu)


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="payload bytes (64)")
    parser.add_argument("--count", type=int, default=200_000, help="frames per run (200000)")
    parser.add_argument("--batch", type=int, default=1000, help="frames per WriteBatch (1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per step; best is kept (3)")
    parser.add_argument("--dir", default=None, help="where to put the databases (a temp dir)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    root = tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir)
    payload = bytes(range(256)) * (args.size // 256) + bytes(args.size % 256)
    n, batch = args.count, args.batch
    ts0 = time.time_ns()
    rows = [(i, "sensors.t1", ts0 + i, payload) for i in range(n)]
    counter = iter(range(1_000_000))
    results: dict[str, tuple[float, float]] = {}

    def fresh_path() -> str:
        return f"{root}/db{next(counter)}"

    try:

        def raw_setup() -> Rdict:
            return Rdict(fresh_path(), Options(raw_mode=True))

        def raw_append(db: Rdict) -> int:
            wo = WriteOptions()
            for start in range(0, n, batch):
                wb = WriteBatch(raw_mode=True)
                put = wb.put
                for seq in range(start, min(start + batch, n)):
                    put(seq.to_bytes(8, "big"), payload)
                db.write(wb, wo)
            return n

        results["raw_rocksdict_append"] = _best(args.repeat, raw_setup, raw_append)

        def wal_setup() -> WalLog:
            return WalLog(fresh_path())

        def wal_append(wal: WalLog) -> int:
            for start in range(0, n, batch):
                wal.append_batch(rows[start : start + batch])
            return n

        results["wal_append_batch"] = _best(args.repeat, wal_setup, wal_append)

        # one filled database of each kind for the read steps
        raw_db = raw_setup()
        raw_append(raw_db)
        wal = wal_setup()
        wal_append(wal)

        def raw_scan(db: Rdict) -> int:
            count = 0
            it = db.items()
            while chunk := list(islice(it, 4096)):
                count += len(chunk)
            return count

        results["raw_rocksdict_scan"] = _best(args.repeat, lambda: raw_db, raw_scan, close=False)

        def replay(w: WalLog) -> int:
            count = 0
            seq = 0
            while frames := w.read_batch(seq, 4096):
                count += len(frames)
                seq = frames[-1].seq + 1
            return count

        results["wal_read_batch"] = _best(args.repeat, lambda: wal, replay, close=False)
        raw_db.close()
        wal.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"payload {args.size} B, {n} frames, WriteBatch of {batch}, best of {args.repeat}")
    print(f"  {'step':24s} {'wall':>8s} {'cpu':>8s}   (M frames/s)")
    for name, (wall, cpu) in results.items():
        print(f"  {name:24s} {wall / 1e6:8.2f} {cpu / 1e6:8.2f}")
    for i, clock in enumerate(("wall", "cpu")):
        ratio = results["wal_append_batch"][i] / results["raw_rocksdict_append"][i]
        print(f"  append, WalLog / raw rocksdict ({clock}): {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            rates = {k: {"wall": w, "cpu": c} for k, (w, c) in results.items()}
            json.dump({"args": vars(args), "frames_per_s": rates}, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
