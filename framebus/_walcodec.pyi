from collections.abc import Callable
from typing import Any, Final

from typing_extensions import Buffer

from framebus._ring import Frame, Reader

RECORD_VERSION: Final[int]
MAX_TOPIC_BYTES: Final[int]
MAX_PAYLOAD_BYTES: Final[int]
CRC_RESIDUE: Final[int]

def crc32c(data: Buffer) -> int: ...
def wal_encode(
    items: list[Any], topic_bytes: dict[str, bytes], after: int | None
) -> tuple[list[bytes], list[bytes], int] | None: ...
def wal_decode(
    chunk: list[tuple[bytes, bytes]],
    topics: dict[bytes, str | None],
    match: Callable[[str], bool] | None,
    damaged: list[tuple[bytes, bytes]],
) -> list[Frame]: ...
def wal_decode_values(
    values: list[bytes],
    first_seq: int,
    topics: dict[bytes, str | None],
    match: Callable[[str], bool] | None,
    damaged: list[tuple[bytes, bytes]],
) -> list[Frame]: ...
def read_ring_batch(
    sub: Reader, max_frames: int, topic_bytes: dict[str, bytes], timeout: float | None = None
) -> tuple[list[bytes], list[bytes], int, int, int] | None: ...
def encode_record(topic: str, ts_ns: int, payload: Buffer) -> bytes: ...
def record_problem(value: object) -> str | None: ...
def decode_record(value: object) -> tuple[str, int, bytes]: ...
