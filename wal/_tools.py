"""Describe a WAL directory (`inspect`) and write its frames out (`export`), for tools."""

from __future__ import annotations

import base64
import json
import os
from typing import Any, BinaryIO

from framebus._ring import Frame
from framebus.topics import TopicFilter

from ._log import LAYOUT_VERSION, WalLog

__all__ = ["export", "inspect"]

_EXPORT_BATCH = 4096


def inspect(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Describe the WAL in `path` without changing it.

    Opens the directory read-only, so it works while a FrameBus is writing
    (showing the state at the moment of opening). Returns a dict with
    ``path``, ``layout``, ``first_seq``, ``last_seq``, ``next_seq``,
    ``retained_from``, ``frames`` and ``bytes`` (the stored counters),
    ``groups`` (name -> committed next seq), ``behind`` (name -> frames that
    group can no longer get, only groups with losses), ``verified`` and
    ``corrupt`` / ``corrupt_seqs``.

    With ``verify=True`` (the default) every record is read and checked, at
    replay speed: ``corrupt`` counts the damaged records and ``scanned_frames``
    / ``scanned_bytes`` are what the scan found. Without it, nothing is read
    but the metadata and ``corrupt`` is None.
    """
    with WalLog(path, read_only=True) as wal:
        groups = wal.groups()
        info: dict[str, Any] = {
            "path": wal.path,
            "layout": LAYOUT_VERSION,
            "first_seq": wal.first_seq,
            "last_seq": wal.last_seq,
            "next_seq": wal.next_seq,
            "retained_from": wal.retained_from,
            "frames": wal.frame_count,
            "bytes": wal.byte_count,
            "groups": groups,
            "behind": {g: n for g, seq in groups.items() if (n := wal.lost(seq))},
            "verified": verify,
            "corrupt": None,
            "corrupt_seqs": [],
        }
        if verify:
            found = wal.verify()
            info["scanned_frames"] = found["frames"]
            info["scanned_bytes"] = found["bytes"]
            info["corrupt"] = found["corrupt"]
            info["corrupt_seqs"] = wal.corrupt_seqs()
        return info


def _jsonl_line(record: Frame) -> bytes:
    entry: dict[str, Any] = {"seq": record.seq, "topic": record.topic, "ts_ns": record.ts_ns}
    try:
        entry["payload"] = record.payload.decode("utf-8")
    except UnicodeDecodeError:
        entry["payload_b64"] = base64.b64encode(record.payload).decode("ascii")
    return json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"


def export(
    path: str | os.PathLike[str],
    out: BinaryIO,
    *,
    from_seq: int = 0,
    to_seq: int | None = None,
    topic: str | TopicFilter | None = None,
    fmt: str = "jsonl",
) -> dict[str, Any]:
    """Write the WAL's frames in `path` to the binary stream `out`, in sequence order.

    ``fmt="jsonl"``: one JSON object per line with ``seq``, ``topic``,
    ``ts_ns`` and the payload, as ``payload`` (a string) when it is valid
    UTF-8 and as ``payload_b64`` (base64) otherwise.
    ``fmt="raw"``: the payloads alone, back to back, exactly as published.

    `from_seq`, `to_seq` (inclusive) and `topic` select frames as in
    ``WalLog.read``. The WAL is opened read-only. Damaged records are skipped
    and logged. Returns ``{"frames": written, "corrupt": n, "corrupt_seqs": [...]}``.
    """
    if fmt not in ("jsonl", "raw"):
        raise ValueError(f"fmt={fmt!r}: expected 'jsonl' or 'raw'")
    written = 0
    with WalLog(path, read_only=True) as wal:
        seq = from_seq
        while True:
            records = wal.read_batch(seq, _EXPORT_BATCH, to_seq=to_seq, topic=topic)
            if not records:
                break
            if fmt == "raw":
                out.write(b"".join([r.payload for r in records]))
            else:
                out.write(b"".join([_jsonl_line(r) for r in records]))
            written += len(records)
            seq = records[-1].seq + 1
        return {
            "frames": written,
            "corrupt": wal.corrupt_count,
            "corrupt_seqs": wal.corrupt_seqs(),
        }
