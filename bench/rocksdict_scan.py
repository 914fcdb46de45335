#!/usr/bin/env python3
"""rocksdict's scans of one database: items() against values() and keys() (the reason
the WAL reads a log without gaps in its keys by values alone).

    python bench/rocksdict_scan.py [--count N] [--repeat R]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

from rocksdict import Options, Rdict, WriteBatch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=300_000, help="records of 90 B")
    p.add_argument("--repeat", type=int, default=5, help="scans per kind; median")
    args = p.parse_args(argv)
    path = tempfile.mkdtemp(prefix="scan-")
    try:
        db = Rdict(path, options=Options(raw_mode=True))
        wb = WriteBatch(raw_mode=True)
        for i in range(args.count):
            wb.put(i.to_bytes(8, "big"), b"x" * 90)
        db.write(wb)
        for name, scan in (("items()", db.items), ("values()", db.values), ("keys()", db.keys)):
            rates = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                n = len(list(scan()))
                rates.append(n / (time.perf_counter() - t0))
            rate = statistics.median(rates) / 1e6
            print(f"{name:9} {rate:5.2f} M records/s (median of {args.repeat})")
        db.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
