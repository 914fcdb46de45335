"""The on-disk record format of the WAL.

A frame is stored under its key, the 8-byte big-endian sequence number, so keys
sort in sequence order. The value is::

    offset  size  field
    0       1     format version (1)
    1       1     flags (0; every other value is refused)
    2       2     topic length in bytes (little-endian u16)
    4       4     payload length in bytes (little-endian u32)
    8       8     ts_ns (little-endian u64, as in the ring)
    16      T     topic, UTF-8
    16+T    P     payload
    16+T+P  4     CRC32C of bytes [0, 16+T+P), little-endian

The CRC is the CRC-32C (Castagnoli) used by iSCSI, ext4 and RocksDB. Because it
is stored little-endian right after the bytes it covers, the CRC32C of the
whole value is the constant ``CRC_RESIDUE`` exactly when the value is intact:
readers check a record with one call over the whole value, without slicing it.

The sequence number is not repeated in the value: the key is the only place it
lives, and a reader reports a damaged record by that key.
"""

from __future__ import annotations

import struct
import warnings

import google_crc32c

from framebus.errors import DecodeError

__all__ = [
    "CRC_RESIDUE",
    "HEADER",
    "OVERHEAD",
    "RECORD_VERSION",
    "crc32c",
    "decode_record",
    "encode_record",
    "key_of",
    "seq_of",
]

RECORD_VERSION = 1

# version, flags, topic length, payload length, ts_ns
HEADER = struct.Struct("<BBHIQ")
TRAILER = struct.Struct("<I")
# bytes of a value besides its topic and payload
OVERHEAD = HEADER.size + TRAILER.size
KEY_SIZE = 8

MAX_TOPIC_BYTES = 0xFFFF
MAX_PAYLOAD_BYTES = 0xFFFFFFFF

# CRC32C(data + CRC32C(data).to_bytes(4, "little")) for any data
CRC_RESIDUE = 0x48674BC7

crc32c = google_crc32c.value

if google_crc32c.implementation != "c":  # pragma: no cover - depends on the wheel
    warnings.warn(
        "framebus.wal: google-crc32c has no C extension on this platform; every WAL record "
        "is checksummed in pure Python, which is about 100x slower",
        RuntimeWarning,
        stacklevel=2,
    )


def key_of(seq: int) -> bytes:
    """The RocksDB key of sequence number `seq` (8 bytes, big-endian)."""
    return seq.to_bytes(KEY_SIZE, "big")


def seq_of(key: bytes) -> int:
    """The sequence number stored under `key`."""
    return int.from_bytes(key, "big")


def encode_record(topic: str, ts_ns: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Encode one frame as a WAL value.

    Raises ValueError when the topic or payload is too long for the format or
    ts_ns is outside [0, 2**64 - 1], TypeError for a payload that is not
    bytes-like, a topic that is not a str or a ts_ns that is not an int.
    """
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    tb = topic.encode("utf-8")
    if type(payload) is not bytes:
        payload = memoryview(payload).tobytes()
    if len(tb) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is {len(tb)} UTF-8 bytes long: at most {MAX_TOPIC_BYTES}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload is {len(payload)} bytes long: at most {MAX_PAYLOAD_BYTES}")
    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int):
        raise TypeError(f"ts_ns must be an int, not {type(ts_ns).__name__}")
    if not 0 <= ts_ns <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"ts_ns={ts_ns} is outside [0, 2**64 - 1]")
    head = HEADER.pack(RECORD_VERSION, 0, len(tb), len(payload), ts_ns)
    body = head + tb + payload
    return body + TRAILER.pack(crc32c(body))


def check_record(value: bytes) -> str | None:
    """Why `value` is not a valid record, or None when it is.

    Never raises, whatever `value` holds.
    """
    if len(value) < OVERHEAD:
        return f"value of {len(value)} bytes is shorter than the {OVERHEAD}-byte record overhead"
    if crc32c(value) != CRC_RESIDUE:
        return "CRC32C mismatch"
    version, flags, tlen, plen, _ = HEADER.unpack_from(value)
    if version != RECORD_VERSION:
        return f"unknown record format version {version}"
    if flags != 0:
        return f"unknown record flags 0x{flags:02x}"
    if OVERHEAD + tlen + plen != len(value):
        return (
            f"header says {tlen} topic + {plen} payload bytes but the value holds "
            f"{len(value) - OVERHEAD}"
        )
    try:
        value[HEADER.size : HEADER.size + tlen].decode("utf-8")
    except UnicodeDecodeError:
        return "topic is not valid UTF-8"
    return None


def decode_record(value: bytes) -> tuple[str, int, bytes]:
    """Decode one WAL value into ``(topic, ts_ns, payload)``.

    Raises DecodeError, with the reason, for anything that is not an intact
    record of a known version; never anything else.
    """
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise DecodeError(f"a WAL record is bytes, not {type(value).__name__}")
    value = bytes(value)
    problem = check_record(value)
    if problem is not None:
        raise DecodeError(f"bad WAL record: {problem}")
    _, _, tlen, _, ts_ns = HEADER.unpack_from(value)
    start = HEADER.size
    topic = value[start : start + tlen].decode("utf-8")
    return topic, ts_ns, value[start + tlen : -TRAILER.size]
