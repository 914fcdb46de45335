"""examples/cpu.yaml: a CPU-heavy map run by two workers. hashlib releases the GIL on
large buffers, so the two threads of the inproc runtime hash at the same time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

BLOCKS = 2_000
BLOCK = bytes(range(256)) * 256  # 64 KiB


def blocks() -> Iterator[int]:
    return iter(range(BLOCKS))


def digest(n: int) -> str:
    return hashlib.sha256(n.to_bytes(4, "little") + BLOCK).hexdigest()


def keep(digest: str) -> None:
    assert len(digest) == 64
