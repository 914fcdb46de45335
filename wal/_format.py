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

from framebus._walcodec import (
    CRC_RESIDUE,
    MAX_PAYLOAD_BYTES,
    MAX_TOPIC_BYTES,
    RECORD_VERSION,
    crc32c,
    decode_record,
    encode_record,
)
from framebus._walcodec import record_problem as check_record

__all__ = [
    "CRC_RESIDUE",
    "HEADER",
    "KEY_SIZE",
    "MAX_PAYLOAD_BYTES",
    "MAX_TOPIC_BYTES",
    "OVERHEAD",
    "RECORD_VERSION",
    "TRAILER",
    "check_record",
    "crc32c",
    "decode_record",
    "encode_record",
    "key_of",
    "seq_of",
]

# The codec is framebus._walcodec (C); these names are its documented face:
#   encode_record(topic, ts_ns, payload) -> bytes: one frame as a WAL value. TypeError
#     for a topic that is not a str, a payload that is not bytes-like or a ts_ns that
#     is not an int; ValueError when the topic or payload is too long for the format
#     or ts_ns is outside [0, 2**64 - 1].
#   check_record(value) -> str | None: why `value` is not an intact record, or None
#     when it is. Never raises, whatever `value` holds.
#   decode_record(value) -> (topic, ts_ns, payload): DecodeError, with the reason, for
#     anything that is not an intact record of a known version; never anything else.
#   crc32c(data) -> int: the CRC-32C of a bytes-like object.

# version, flags, topic length, payload length, ts_ns
HEADER = struct.Struct("<BBHIQ")
TRAILER = struct.Struct("<I")
# bytes of a value besides its topic and payload
OVERHEAD = HEADER.size + TRAILER.size
KEY_SIZE = 8


def key_of(seq: int) -> bytes:
    """The RocksDB key of sequence number `seq` (8 bytes, big-endian)."""
    return seq.to_bytes(KEY_SIZE, "big")


def seq_of(key: bytes) -> int:
    """The sequence number stored under `key`."""
    return int.from_bytes(key, "big")
