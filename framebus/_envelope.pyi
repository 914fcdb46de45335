from collections.abc import Collection
from typing import Any, Final

from typing_extensions import Buffer

MAGIC: Final[int]
VERSION: Final[int]
HEADER_SIZE: Final[int]
MSGPACK: Final[str]
OCTET_STREAM: Final[str]

class Envelope:
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> Any: ...
    @property
    def src(self) -> str: ...
    @property
    def dst(self) -> str: ...
    @property
    def corr_id(self) -> int: ...
    @property
    def deadline_ns(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def content_type(self) -> str: ...
    @property
    def schema_ver(self) -> int: ...
    @property
    def headers(self) -> dict[str, Any]: ...
    @property
    def payload_is_msgpack(self) -> bool: ...
    ts_ns: int | None
    seq: int | None
    deadline_missed: bool
    def __init__(
        self,
        topic: str,
        payload: Any = b"",
        *,
        src: str = "",
        dst: str = "",
        corr_id: int = 0,
        deadline_ns: int = 0,
        priority: int = 0,
        content_type: str = "application/octet-stream",
        schema_ver: int = 1,
        headers: dict[str, Any] | None = None,
        ts_ns: int | None = None,
        seq: int | None = None,
    ) -> None: ...
    def encode(self) -> bytes: ...
    @staticmethod
    def decode(
        buf: Buffer,
        *,
        schema_versions: Collection[int] | None = None,
        content_types: Collection[str] | None = None,
    ) -> Envelope: ...
    def replace(self, **changes: Any) -> Envelope: ...
    def __eq__(self, other: object) -> bool: ...
    __hash__: None  # type: ignore[assignment]

def decode_frames(
    frames: list[Any],
    env_topic: str | None,
    drop_late: bool,
    now_ns: int,
    schema_versions: Collection[int] | None = None,
    content_types: Collection[str] | None = None,
) -> tuple[list[Any], int, list[tuple[int, str]]]: ...
