"""Inspecting the shared-memory buses on this machine (``framebus ls``)."""

from __future__ import annotations

import os
from typing import Any

from ._internal import attached_processes, reader_slots
from .bus import FrameBus

SHM_DIR = "/dev/shm"
PREFIX = "framebus."


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (killed, not yet reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def list_segments() -> list[dict[str, Any]]:
    """One dict per /dev/shm/framebus.* segment; unreadable ones carry an ``error``."""
    rows: list[dict[str, Any]] = []
    try:
        names = sorted(n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX))
    except FileNotFoundError:
        return rows
    for entry in names:
        name = entry[len(PREFIX) :]
        path = os.path.join(SHM_DIR, entry)
        row: dict[str, Any] = {"name": name, "path": path}
        try:
            row["bytes"] = os.stat(path).st_size
            bus = FrameBus.attach(name)
        except Exception as exc:  # listed with the reason, never fatal
            row.setdefault("bytes", 0)
            row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            continue
        try:
            s = bus.stats()
            pids: dict[int, bool] = {}
            for info in reader_slots(bus):
                if info["owner_pid"]:
                    pids[info["owner_pid"]] = pid_alive(info["owner_pid"])
            usage = max(s["ring_used"] / s["capacity"], s["ring_used_bytes"] / s["capacity_bytes"])
            row.update(
                attached_alive=attached_processes(bus) - 1,  # not counting this listing
                creator_pid=s["creator_pid"],
                creator_alive=pid_alive(s["creator_pid"]),
                readers=s["readers"],
                reader_processes=[{"pid": p, "alive": a} for p, a in sorted(pids.items())],
                usage=usage,
                published=s["published"],
                dropped=s["dropped"],
                evicted=s["evicted"],
                paused=s["paused"],
            )
        finally:
            bus.close()
        rows.append(row)
    return rows


def collect_garbage(dry_run: bool = False) -> list[dict[str, Any]]:
    """Unlink the segments no live process holds (attached or subscribed) and those
    that are not framebus rings of this layout; returns what was (or would be) removed."""
    removed = []
    for row in list_segments():
        if "error" in row:
            if not row["error"].startswith("FrameBusError"):
                continue  # unreadable for another reason (permissions): leave it
            reason = row["error"]
        elif row["attached_alive"] == 0 and not any(p["alive"] for p in row["reader_processes"]):
            reason = "no live process holds it"
        else:
            continue
        if not dry_run:
            try:
                os.unlink(row["path"])
            except FileNotFoundError:
                continue
        removed.append({"name": row["name"], "reason": reason})
    gone = {r["name"] for r in removed} if not dry_run else set()
    removed.extend(_collect_spill_files(dry_run, would_remove={r["name"] for r in removed} - gone))
    return removed


def _collect_spill_files(dry_run: bool, would_remove: set[str]) -> list[dict[str, Any]]:
    # A queue's spill file outlives its segment only if a process died holding it.
    from .queue import SPILL_PREFIX

    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    segments = {e[len(PREFIX) :] for e in entries if e.startswith(PREFIX)} - would_remove
    removed = []
    for entry in sorted(entries):
        if not entry.startswith(SPILL_PREFIX):
            continue
        queue_name = entry[len(SPILL_PREFIX) :].rsplit(".", 2)[0]
        if queue_name in segments:
            continue
        if not dry_run:
            try:
                os.unlink(os.path.join(SHM_DIR, entry))
            except FileNotFoundError:
                continue
        removed.append(
            {"name": entry, "reason": f"spill file of queue {queue_name!r}, which is gone"}
        )
    return removed
