"""framebus.wal: the storage engine of framebus's write-ahead log.

Frames are kept in RocksDB (through ``rocksdict``) under their sequence number,
each with a CRC32C; consumer-group offsets and counters live beside them.
``WalLog`` is the engine; ``inspect`` describes a WAL directory and ``export``
writes its frames out as JSON lines or raw payloads::

    import time
    from framebus.wal import WalLog

    with WalLog("data/wal", max_bytes=8 << 30) as wal:
        wal.append_batch([(wal.next_seq, "sensors.t1", time.time_ns(), b"...")])
        for frame in wal.read(from_seq=0, topic="sensors.>"):
            print(frame.seq, frame.topic, frame.ts_ns, frame.payload)
            wal.commit("ingest", frame.seq + 1)  # the next frame the group wants
        wal.enforce_retention()  # the oldest frames go once past max_bytes

The record format is described in ``framebus.wal._format``; the database
layout in ``framebus.wal._log``.
"""

from framebus.errors import WalError

from ._format import RECORD_VERSION, decode_record, encode_record
from ._log import LAYOUT_VERSION, LOCK_NAME, GiB, WalLog
from ._tools import export, inspect

__all__ = [
    "GiB",
    "LAYOUT_VERSION",
    "LOCK_NAME",
    "RECORD_VERSION",
    "WalError",
    "WalLog",
    "decode_record",
    "encode_record",
    "export",
    "inspect",
]
