"""WalLog: the RocksDB (rocksdict) storage engine of the write-ahead log.

One RocksDB database per WAL directory, with three column families:

``default``
    the frames: key = 8-byte big-endian sequence number, value = a record in
    the format of ``framebus.wal._format`` (header, topic, payload, CRC32C).
``groups``
    consumer-group offsets: key = group name (UTF-8), value = 8-byte
    big-endian *next* sequence number the group wants (Kafka semantics).
``meta``
    the layout version and the counters below, each an 8-byte big-endian
    integer, written in the same atomic WriteBatch as the frames they count,
    so they are exact after any crash:

    - ``last_seq``: the highest sequence number ever appended (kept when
      retention deletes every frame, so numbering never restarts);
    - ``base_seq``: the first sequence number ever appended;
    - ``retained_from``: every frame below it has been deleted by retention;
    - ``frames`` and ``bytes``: how many frames are stored and their logical
      size, the sum of ``8 + len(value)`` over stored frames. Retention works
      on this counter rather than on RocksDB's size estimates, which lag
      behind flushes and compactions and would make retention unpredictable.

A directory has one writer at a time: a ``framebus-wal.lock`` file in it is
held with ``flock`` for as long as the WalLog is open, and holds the owner's pid.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from itertools import islice
from operator import attrgetter
from types import TracebackType
from typing import Any

from rocksdict import (
    AccessType,
    ColumnFamily,
    DbClosedError,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from framebus._ring import Frame
from framebus._walcodec import wal_decode as _wal_decode
from framebus._walcodec import wal_decode_values as _wal_decode_values
from framebus._walcodec import wal_encode as _wal_encode
from framebus.errors import WalError
from framebus.topics import TopicFilter

from ._format import (
    KEY_SIZE,
    MAX_PAYLOAD_BYTES,
    check_record,
    encode_record,
    key_of,
    seq_of,
)

__all__ = ["GiB", "LAYOUT_VERSION", "LOCK_NAME", "WalLog"]

log = logging.getLogger("framebus.wal")

GiB = 1 << 30
LAYOUT_VERSION = 1
LOCK_NAME = "framebus-wal.lock"
MAX_SEQ = (1 << 64) - 1

_CF_META = "meta"
_CF_GROUPS = "groups"
_M_LAYOUT = b"layout"
_M_LAST = b"last_seq"
_M_BASE = b"base_seq"
_M_RETAINED = b"retained_from"
_M_FRAMES = b"frames"
_M_BYTES = b"bytes"

# Distinct damaged records remembered per WalLog (each is logged once).
_MAX_REMEMBERED_CORRUPT = 100_000
# Topic encodings and decodings cached per WalLog.
_MAX_TOPICS = 4096

_FRAME_FIELDS = attrgetter("seq", "topic", "ts_ns", "payload")
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend  # runs an iterator in C


def _seq_of(row: Any) -> int:
    """The sequence number of a Frame or a (seq, topic, ts_ns, payload) record."""
    return int(row.seq if type(row) is Frame else row[0])


# errno for the messages RocksDB gives its I/O errors
_ERRNO_HINTS = (
    ("No space left on device", errno.ENOSPC),
    ("Read-only file system", errno.EROFS),
    ("Permission denied", errno.EACCES),
    ("File too large", errno.EFBIG),
    ("Input/output error", errno.EIO),
    ("No such file or directory", errno.ENOENT),
    ("Not a directory", errno.ENOTDIR),
)


def _wal_error(path: str, what: str, exc: BaseException | None = None) -> WalError:
    """A WalError for `path`, with errno set when the cause tells it."""
    text = f"WAL {path}: {what}" if exc is None else f"WAL {path}: {what}: {exc}"
    err = WalError(text)
    if isinstance(exc, OSError) and exc.errno is not None:
        err.errno = exc.errno
    elif exc is not None:
        cause = str(exc)
        for hint, code in _ERRNO_HINTS:
            if hint in cause:
                err.errno = code
                break
    return err


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _lock_dir(path: str) -> int:
    """Hold the directory's lock file; a WalError names the holder if it is taken."""
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _wal_error(path, f"cannot create the lock file {LOCK_NAME}", exc) from exc
    try:
        # flock, not lockf: flock locks also conflict between two opens in one process.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        pid = _read_pid(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _wal_error(path, f"cannot lock {LOCK_NAME}", exc) from exc
        if pid == os.getpid():
            holder = f"this process (pid {pid})"
        elif pid is not None:
            holder = f"process {pid}"
        else:
            holder = "another process"
        raise _wal_error(
            path,
            f"the WAL directory is already open in {holder}; one WalLog (one FrameBus "
            "with this wal_dir) may use a WAL directory at a time",
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass  # the pid is only a hint for the error message above
    return fd


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _u64(value: bytes | None) -> int | None:
    if value is None or len(value) != KEY_SIZE:
        return None
    return seq_of(value)


def _check_seq(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_SEQ:
        raise ValueError(f"{name}={value} is outside [0, 2**64 - 1]")
    return int(value)


def _topic_predicate(topic: str | TopicFilter | None) -> Callable[[str], bool] | None:
    if topic is None:
        return None
    if isinstance(topic, TopicFilter):
        return None if topic.match_all else topic.matches
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, a TopicFilter or None, not {type(topic).__name__}")
    if topic == "":
        return "".__eq__  # the default topic; a filter cannot name it
    flt = TopicFilter(topic)
    return None if flt.match_all else flt.matches


def _take(it: Iterator[Any], n: int | None) -> list[Any]:
    """The next `n` (all if None) items of a raw-mode iterator: (key, value) pairs of
    bytes, or values."""
    return list(islice(it, n))


def _span(first: int, last: int) -> str:
    return f"frame {first}" if first == last else f"frames {first}..{last}"


class _Cursor:
    """The RocksDB iterator of one `WalLog.read` generator; None once the log is closed."""

    __slots__ = ("it", "read_opt", "__weakref__")

    def __init__(self, it: Iterator[Any], read_opt: ReadOptions) -> None:
        self.it: Iterator[Any] | None = it
        # RocksDB keeps a pointer to the upper bound: its owner must outlive the iterator.
        self.read_opt = read_opt


def _first_key(keys: Iterator[Any]) -> bytes | None:
    """The first key of a raw-mode key iterator; None when it is empty."""
    return next(keys, None)


# WalLogs open in this process: a forked child must not touch their RocksDB.
_OPEN: weakref.WeakSet[WalLog] = weakref.WeakSet()
# RocksDB handles inherited by a forked child, kept alive so that they are never
# dropped (and so never closed) in the child.
_INHERITED: list[object] = []


def _after_fork_in_child() -> None:
    for wal in list(_OPEN):
        wal._detach_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class WalLog:
    """The storage of one WAL directory: frames, consumer-group offsets, retention.

    ``WalLog(path, *, max_bytes=8 GiB, create=True, read_only=False, on_corrupt=None)``

    - `path`: the WAL directory; created (mode 0700) when missing and `create`.
    - `max_bytes`: the retention limit used by `enforce_retention`; may be
      changed later through the attribute of the same name.
    - `read_only`: open without the directory lock, as RocksDB's read-only
      mode, for inspecting a WAL that another process may be writing. The view
      is the state at open; every write raises WalError.
    - `on_corrupt`: called as ``on_corrupt(seq, reason)`` the first time a
      damaged record is met (it is also logged once and counted in `stats`);
      exceptions it raises are logged and otherwise ignored.

    Every failure of the storage (I/O error, disk full, read-only directory,
    a directory that is no framebus WAL, a second opener) raises WalError,
    whose message names the directory and the cause (also its ``__cause__``),
    and whose ``errno`` is set when the cause tells it (ENOSPC, EROFS, ...).
    Argument errors raise ValueError or TypeError.

    Appends, commits and retention may come from any threads (they take one
    lock); reads take no lock and see a consistent snapshot each. A WalLog
    opened before ``os.fork()`` is unusable in the child, which must open the
    directory itself (after the parent has closed it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 8 * GiB,
        create: bool = True,
        read_only: bool = False,
        on_corrupt: Callable[[int, str], object] | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        self.max_bytes = max_bytes
        self._path = os.path.abspath(os.fspath(path))
        self._read_only = bool(read_only)
        self._on_corrupt = on_corrupt
        self._lock = threading.Lock()
        # closes the lock file: on close(), or when a WalLog is dropped unclosed
        self._unlock: weakref.finalize[..., Any] | None = None
        self._db: Rdict | None = None
        self._meta: Rdict | None = None
        self._groups: Rdict | None = None
        self._h_meta: ColumnFamily | None = None
        self._closed_reason = "closed"
        self._wo = WriteOptions()
        self._wo_sync = WriteOptions()
        self._wo_sync.sync = True
        self._cursors: weakref.WeakSet[_Cursor] = weakref.WeakSet()

        self._last_seq: int | None = None
        self._base_seq: int | None = None
        self._first_seq: int | None = None
        self._retained_from = 0
        self._frames = 0
        self._bytes = 0
        self._corrupt: dict[int, str] = {}
        self._corrupt_total = 0

        self._topic_enc: dict[str, bytes] = {}
        self._topic_dec: dict[bytes, str | None] = {}

        self._open(create)
        _OPEN.add(self)

    # -- opening and closing -------------------------------------------------

    @property
    def max_bytes(self) -> int:
        """Retention limit, in logical bytes (see the module docstring)."""
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"max_bytes must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError(f"max_bytes={value} must be >= 0")
        self._max_bytes = value

    def _open(self, create: bool) -> None:
        path = self._path
        current = os.path.join(path, "CURRENT")
        if os.path.exists(path) and not os.path.isdir(path):
            raise _wal_error(path, "exists and is not a directory")
        if self._read_only:
            if not os.path.isfile(current):
                raise _wal_error(path, "no WAL here (no RocksDB CURRENT file)")
        else:
            if not os.path.isdir(path):
                if not create:
                    raise _wal_error(path, "no WAL here and create=False")
                try:
                    os.makedirs(path, mode=0o700, exist_ok=True)
                except OSError as exc:
                    raise _wal_error(path, "cannot create the WAL directory", exc) from exc
            self._unlock = weakref.finalize(self, _close_quietly, _lock_dir(path))
        try:
            fresh = not os.path.isfile(current)
            if fresh and not create:
                raise _wal_error(path, "no WAL here and create=False")
            self._open_db(fresh)
            self._load()
        except BaseException:
            self._release()
            raise

    def _open_db(self, fresh: bool) -> None:
        path = self._path
        if not fresh:
            try:
                families = Rdict.list_cf(path, Options(raw_mode=True))
            except Exception as exc:
                raise _wal_error(path, "cannot read the RocksDB manifest", exc) from exc
            foreign = set(families) - {"default", _CF_META, _CF_GROUPS}
            if _CF_META not in families or foreign:
                raise _wal_error(
                    path,
                    "holds a RocksDB database that is not a framebus WAL "
                    f"(column families {sorted(families)})",
                )
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        # RocksDB's own info log: a few small files, not an ever-growing one.
        opts.set_keep_log_file_num(3)
        opts.set_max_log_file_size(4 << 20)
        families_opts = {_CF_META: Options(raw_mode=True), _CF_GROUPS: Options(raw_mode=True)}
        access = AccessType.read_only(False) if self._read_only else AccessType.read_write()
        try:
            db = Rdict(path, opts, column_families=families_opts, access_type=access)
        except Exception as exc:
            raise _wal_error(path, "cannot open RocksDB", exc) from exc
        self._db = db
        try:
            self._meta = db.get_column_family(_CF_META)
            self._groups = db.get_column_family(_CF_GROUPS)
            self._h_meta = db.get_column_family_handle(_CF_META)
        except Exception as exc:
            raise _wal_error(path, "cannot open the column families", exc) from exc

    def _load(self) -> None:
        meta, db, groups = self._meta, self._db, self._groups
        assert meta is not None and db is not None and groups is not None
        path = self._path
        try:
            layout = meta.get(_M_LAYOUT)
            first_key = _first_key(db.keys())
            last_key = _first_key(db.keys(backwards=True))
            has_groups = _first_key(groups.keys()) is not None
            values = {k: _u64(meta.get(k)) for k in (_M_LAST, _M_BASE, _M_RETAINED)}
            counters = (_u64(meta.get(_M_FRAMES)), _u64(meta.get(_M_BYTES)))
        except Exception as exc:
            raise _wal_error(path, "cannot read the WAL metadata", exc) from exc
        if layout is None:
            # A WAL whose creation was cut short before its first write is still empty.
            if first_key is not None or has_groups:
                raise _wal_error(path, "holds a RocksDB database that is not a framebus WAL")
            if not self._read_only:
                wb = WriteBatch(raw_mode=True)
                for key, value in (
                    (_M_LAYOUT, LAYOUT_VERSION),
                    (_M_RETAINED, 0),
                    (_M_FRAMES, 0),
                    (_M_BYTES, 0),
                ):
                    wb.put(key, key_of(value), self._h_meta)
                self._write(wb, True, "cannot initialise the WAL")
            return
        if _u64(layout) != LAYOUT_VERSION:
            found = _u64(layout)
            raise _wal_error(
                path,
                f"has WAL layout version {found if found is not None else layout!r}; "
                f"this framebus reads version {LAYOUT_VERSION}",
            )
        last = values[_M_LAST]
        if last_key is not None:
            last = seq_of(last_key) if last is None else max(last, seq_of(last_key))
        self._last_seq = last
        self._first_seq = None if first_key is None else seq_of(first_key)
        base = values[_M_BASE]
        if base is None and self._first_seq is not None:
            base = self._first_seq
        self._base_seq = base
        self._retained_from = values[_M_RETAINED] or 0
        frames, nbytes = counters
        if frames is None or nbytes is None:
            log.warning("WAL %s: frame and byte counters missing; counting the log", path)
            frames, nbytes = self._count()
            if not self._read_only:
                wb = WriteBatch(raw_mode=True)
                wb.put(_M_FRAMES, key_of(frames), self._h_meta)
                wb.put(_M_BYTES, key_of(nbytes), self._h_meta)
                self._write(wb, True, "cannot store the recounted counters")
        self._frames, self._bytes = frames, nbytes

    def _count(self) -> tuple[int, int]:
        db = self._need_db()
        frames = nbytes = 0
        try:
            it = db.values()
            while chunk := list(islice(it, 8192)):
                frames += len(chunk)
                nbytes += KEY_SIZE * len(chunk) + sum(map(len, chunk))
        except Exception as exc:
            raise _wal_error(self._path, "cannot scan the frames", exc) from exc
        return frames, nbytes

    def _release(self) -> None:
        for cursor in list(self._cursors):
            cursor.it = None  # its generator raises WalError on its next chunk
        db, self._db = self._db, None
        meta, self._meta = self._meta, None
        groups, self._groups = self._groups, None
        self._h_meta = None
        for cf in (meta, groups):
            if cf is not None:
                try:
                    cf.close()
                except Exception:
                    pass
        if db is not None:
            try:
                db.close()
            except Exception as exc:
                log.warning("WAL %s: closing RocksDB failed: %s", self._path, exc)
        if self._unlock is not None:
            self._unlock()

    def close(self) -> None:
        """Flush and close the database and release the directory. Idempotent.

        A `read` iterator still open gives the frames it has already fetched,
        then raises WalError: it never ends as if the log had ended.
        """
        with self._lock:
            self._release()
        _OPEN.discard(self)

    def _detach_after_fork(self) -> None:
        # Runs in a forked child: the RocksDB handles belong to the parent.
        # Closing them here would flush into the parent's files, so they are
        # kept alive and forgotten; the lock fd is this child's copy.
        self._lock = threading.Lock()
        _INHERITED.extend((self._db, self._meta, self._groups, self._h_meta))
        self._db = self._meta = self._groups = None
        self._h_meta = None
        self._cursors = weakref.WeakSet()
        if self._unlock is not None:
            self._unlock()  # this child's copy of the descriptor; the parent keeps its lock
        self._closed_reason = (
            "was opened by the parent of this forked process; open the directory again here"
        )

    @property
    def closed(self) -> bool:
        """Whether `close` was called (or the WalLog was inherited through fork)."""
        return self._db is None

    def __enter__(self) -> WalLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else f"frames={self._frames} bytes={self._bytes}"
        return f"<WalLog {self._path} {state}>"

    def _need_db(self) -> Rdict:
        db = self._db
        if db is None:
            raise _wal_error(self._path, self._closed_reason)
        return db

    def _need_writable(self) -> Rdict:
        db = self._need_db()
        if self._read_only:
            raise _wal_error(self._path, "opened read_only; writes are refused")
        return db

    def _write(self, wb: WriteBatch, sync: bool, what: str) -> None:
        db = self._need_writable()
        try:
            db.write(wb, self._wo_sync if sync else self._wo)
        except Exception as exc:
            raise _wal_error(self._path, what, exc) from exc

    # -- state ---------------------------------------------------------------

    @property
    def path(self) -> str:
        """The WAL directory (absolute)."""
        return self._path

    @property
    def read_only(self) -> bool:
        """Whether the log was opened with ``read_only=True``."""
        return self._read_only

    @property
    def first_seq(self) -> int | None:
        """The lowest stored sequence number; None when no frame is stored."""
        return self._first_seq

    @property
    def last_seq(self) -> int | None:
        """The highest sequence number ever appended; None if nothing ever was.

        It survives retention deleting every frame, so numbering continues.
        """
        return self._last_seq

    @property
    def next_seq(self) -> int:
        """The lowest sequence number the next append may use (0 for a new WAL)."""
        return 0 if self._last_seq is None else self._last_seq + 1

    @property
    def retained_from(self) -> int:
        """No frame below this sequence number is stored: retention deleted them.

        0 while retention has deleted nothing.
        """
        return self._retained_from

    @property
    def frame_count(self) -> int:
        """Frames stored."""
        return self._frames

    @property
    def byte_count(self) -> int:
        """Logical bytes stored: the sum of ``8 + len(value)`` over stored frames."""
        return self._bytes

    @property
    def corrupt_count(self) -> int:
        """Distinct damaged records met by this WalLog since it was opened."""
        return self._corrupt_total

    def corrupt_seqs(self) -> list[int]:
        """Sequence numbers of the damaged records met so far, ascending (first 100 000)."""
        return sorted(self._corrupt)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters; also works after `close`.

        Keys: ``path``, ``closed``, ``first_seq``, ``last_seq``, ``next_seq``,
        ``retained_from``, ``frames``, ``bytes``, ``max_bytes``, ``corrupt``
        (damaged records met since open), ``corrupt_seqs`` (the first 1 000 of
        them) and ``groups`` (name -> committed next seq; empty once closed).
        """
        return {
            "path": self._path,
            "closed": self._db is None,
            "first_seq": self._first_seq,
            "last_seq": self._last_seq,
            "next_seq": self.next_seq,
            "retained_from": self._retained_from,
            "frames": self._frames,
            "bytes": self._bytes,
            "max_bytes": self._max_bytes,
            "corrupt": self._corrupt_total,
            "corrupt_seqs": self.corrupt_seqs()[:1000],
            "groups": {} if self._db is None else self.groups(),
        }

    # -- appending -----------------------------------------------------------

    def append_batch(
        self,
        records: Iterable[tuple[int, str, int, bytes | bytearray | memoryview]],
        *,
        sync: bool = False,
    ) -> int | None:
        """Store ``(seq, topic, ts_ns, payload)`` records in one atomic WriteBatch.

        Sequence numbers must be strictly increasing and above `last_seq`
        (gaps are allowed); a violation raises ValueError naming both numbers
        and nothing of the batch is stored. The frame and byte counters are
        updated in the same batch. With ``sync=True`` the write is fsynced
        before this returns (one fsync for the whole batch).

        Returns the last sequence number written (`last_seq`, also for an
        empty batch). Raises WalError when RocksDB cannot write; nothing of the
        batch is stored then either.
        """
        return self._append(records, sync)

    def append_frames(self, frames: Iterable[Any], *, sync: bool = False) -> int | None:
        """`append_batch` for ``framebus.Frame`` objects (what ``Reader.recv_batch`` and
        `read_batch` return)."""
        return self._append(frames, sync)

    def append(
        self,
        seq: int,
        topic: str,
        ts_ns: int,
        payload: bytes | bytearray | memoryview,
        *,
        sync: bool = False,
    ) -> int | None:
        """Store one frame; see `append_batch`."""
        return self._append(((seq, topic, ts_ns, payload),), sync)

    def _append(self, records: Iterable[Any], sync: bool) -> int | None:
        # Frames and (seq, topic, ts_ns, payload) tuples are encoded in C, records and
        # CRCs in one pass; anything the encoder refuses is explained by _batch_error.
        rows = records if isinstance(records, list) else list(records)
        with self._lock:
            self._need_writable()
            last = self._last_seq
            if not rows:
                return last
            encoded = _wal_encode(rows, self._topic_enc, last)
            if len(self._topic_enc) > _MAX_TOPICS:
                self._topic_enc.clear()
            if encoded is None:
                raise self._batch_error(
                    [_FRAME_FIELDS(r) if type(r) is Frame else r for r in rows], last, None
                )
            keys, values, nbytes = encoded
            return self._store(keys, values, nbytes, _seq_of(rows[0]), _seq_of(rows[-1]), sync)

    def append_encoded(
        self,
        keys: list[bytes],
        values: list[bytes],
        value_bytes: int,
        first_seq: int,
        last_seq: int,
        *,
        sync: bool = False,
    ) -> int:
        """Store records already in this WAL's format (``framebus._walcodec`` encodes
        them straight from the ring for the bus's WAL thread): `keys` in rising order
        from `first_seq` to `last_seq`, `value_bytes` the total size of `values`."""
        if not keys or len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values: expected as many, > 0")
        with self._lock:
            self._need_writable()
            last = self._last_seq
            if last is not None and first_seq <= last:
                raise ValueError(
                    f"seq {first_seq} is not above the last stored seq {last}: "
                    "sequence numbers must strictly increase"
                )
            return self._store(keys, values, value_bytes, first_seq, last_seq, sync)

    def _store(
        self,
        keys: list[bytes],
        values: list[bytes],
        nbytes: int,
        first: int,
        last: int,
        sync: bool,
    ) -> int:
        # The one write of records (lock held): the records and the counters in one
        # WriteBatch.
        wb = WriteBatch(raw_mode=True)
        _consume(map(wb.put, keys, values))
        return self._commit_batch(wb, first, last, len(keys), nbytes, sync)

    def _commit_batch(
        self, wb: WriteBatch, first: int, last: int, count: int, nbytes: int, sync: bool
    ) -> int:
        # the counters go in the same WriteBatch as the frames (lock held)
        frames = self._frames + count
        total = self._bytes + nbytes + KEY_SIZE * count
        h = self._h_meta
        wb.put(_M_LAST, key_of(last), h)
        wb.put(_M_FRAMES, key_of(frames), h)
        wb.put(_M_BYTES, key_of(total), h)
        if self._base_seq is None:
            wb.put(_M_BASE, key_of(first), h)
        self._write(wb, sync, f"cannot append {_span(first, last)}")
        self._last_seq = last
        self._frames = frames
        self._bytes = total
        if self._base_seq is None:
            self._base_seq = first
        if self._first_seq is None:
            self._first_seq = first
        return last

    @staticmethod
    def _batch_error(rows: Sequence[Any], last: int | None, exc: BaseException | None) -> Exception:
        """The precise error for the first record of `rows` that cannot be appended.

        The append loop only notices that something failed (`exc`, or None for
        a sequence number out of order); finding which record and why is left
        to this slow path.
        """
        prev = -1 if last is None else last
        for index, record in enumerate(rows):
            if not isinstance(record, (tuple, list)) or len(record) != 4:
                shape = f" of length {len(record)}" if isinstance(record, (tuple, list)) else ""
                return TypeError(
                    f"record {index}: expected a (seq, topic, ts_ns, payload) tuple, "
                    f"got {type(record).__name__}{shape}"
                )
            seq, topic, ts_ns, payload = record
            if not isinstance(seq, int):
                return TypeError(f"record {index}: seq must be an int, not {type(seq).__name__}")
            if seq < 0:
                return ValueError(f"record {index}: seq {seq} is negative")
            if seq > MAX_SEQ:
                return ValueError(f"record {index}: seq {seq} is outside [0, 2**64 - 1]")
            if seq <= prev:
                if index == 0:
                    return ValueError(
                        f"seq {seq} is not above the last stored seq {last}: "
                        "sequence numbers must strictly increase"
                    )
                return ValueError(
                    f"record {index}: seq {seq} follows seq {prev} in the same batch: "
                    "sequence numbers must strictly increase"
                )
            prev = seq
            if isinstance(payload, str):
                return TypeError(f"record {index} (seq {seq}): payload must be bytes-like, not str")
            try:
                n = memoryview(payload).nbytes
            except TypeError:
                return TypeError(
                    f"record {index} (seq {seq}): payload must be bytes-like, "
                    f"not {type(payload).__name__}"
                )
            if n > MAX_PAYLOAD_BYTES:
                return ValueError(
                    f"record {index} (seq {seq}): payload of {n} bytes exceeds {MAX_PAYLOAD_BYTES}"
                )
            try:
                encode_record(topic, ts_ns, payload)
            except (ValueError, TypeError) as err:
                return type(err)(f"record {index} (seq {seq}): {err}")
        return ValueError(f"cannot append the batch: {exc}")

    # -- reading -------------------------------------------------------------

    def _read_options(self, to_seq: int | None) -> ReadOptions:
        ro = ReadOptions()
        if to_seq is not None and to_seq < MAX_SEQ:
            ro.set_iterate_upper_bound(key_of(to_seq + 1))
        return ro

    def read(
        self,
        from_seq: int = 0,
        to_seq: int | None = None,
        topic: str | TopicFilter | None = None,
        *,
        batch: int = 4096,
    ) -> Iterator[Frame]:
        """Iterate stored frames with ``from_seq <= seq <= to_seq`` in sequence order.

        Items are ``framebus.Frame`` objects (``.seq .topic .ts_ns .payload``),
        the type subscriptions deliver.

        `topic` selects frames: a NATS-style filter (``"a.b"``, ``"a.*"``,
        ``"a.>"``) or a TopicFilter; ``""`` selects the default topic only.
        Records are fetched and decoded `batch` at a time from one RocksDB
        iterator, which sees the log as it was when iteration started.

        A record that fails its CRC or does not decode is skipped and reported
        (logged once, counted in `stats`, passed to `on_corrupt`); every other
        record is still returned.
        """
        from_seq = _check_seq("from_seq", from_seq)
        if to_seq is not None:
            to_seq = _check_seq("to_seq", to_seq)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch={batch!r} must be an int >= 1")
        match = _topic_predicate(topic)
        self._need_db()
        return self._iterate(from_seq, to_seq, match, batch)

    def _iterate(
        self,
        from_seq: int,
        to_seq: int | None,
        match: Callable[[str], bool] | None,
        batch: int,
    ) -> Generator[Frame, None, None]:
        if to_seq is not None and to_seq < from_seq:
            return
        db = self._need_db()
        topics: dict[bytes, str | None] = self._topic_dec if match is None else {}
        read_opt = self._read_options(to_seq)
        try:
            rows, seq = self._rows(db, from_seq, read_opt)
            cursor = _Cursor(rows, read_opt)
            del rows
        except Exception as exc:
            raise _wal_error(self._path, "reading frames failed", exc) from exc
        del db
        self._cursors.add(cursor)
        try:
            while True:
                # Only the cursor holds the RocksDB iterator between chunks, so
                # that close() can drop it and really close the database.
                it = cursor.it
                if it is None:
                    raise _wal_error(self._path, self._closed_reason)
                try:
                    chunk = _take(it, batch)
                except Exception as exc:
                    raise _wal_error(self._path, "reading frames failed", exc) from exc
                del it
                if not chunk:
                    return
                out: list[Frame] = []
                self._decode(chunk, out, topics, match, seq)
                if seq is not None:
                    seq += len(chunk)
                del chunk
                yield from out
        finally:
            cursor.it = None
            self._cursors.discard(cursor)

    def read_batch(
        self,
        from_seq: int,
        max_frames: int,
        *,
        to_seq: int | None = None,
        topic: str | TopicFilter | None = None,
    ) -> list[Frame]:
        """Up to `max_frames` frames with ``seq >= from_seq`` (and ``<= to_seq``), in order.

        The fast path for replay: one iterator, one decode pass. An empty list
        means nothing is left in the range; otherwise continue from the last
        returned ``seq + 1``. Filters and damaged records behave as in `read`.
        """
        from_seq = _check_seq("from_seq", from_seq)
        if to_seq is not None:
            to_seq = _check_seq("to_seq", to_seq)
            if to_seq < from_seq:
                return []
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
            raise ValueError(f"max_frames={max_frames!r} must be an int >= 1")
        match = _topic_predicate(topic)
        db = self._need_db()
        topics: dict[bytes, str | None] = self._topic_dec if match is None else {}
        out: list[Frame] = []
        # read_opt holds the iterator's upper bound: it must outlive `it`
        read_opt = self._read_options(to_seq)
        it: Iterator[Any] | None = None
        try:
            it, seq = self._rows(db, from_seq, read_opt)
            while len(out) < max_frames:
                want = max_frames - len(out)
                # a filter may drop most records: scan in larger steps then
                chunk = _take(it, want if match is None else max(want, 1024))
                if not chunk:
                    break
                self._decode(chunk, out, topics, match, seq)
                if seq is not None:
                    seq += len(chunk)
        except DbClosedError as exc:
            raise _wal_error(self._path, self._closed_reason) from exc
        except WalError:
            raise
        except Exception as exc:
            raise _wal_error(self._path, "reading frames failed", exc) from exc
        finally:
            it = None
        del read_opt
        del out[max_frames:]
        return out

    def _decode(
        self,
        chunk: list[Any],
        out: list[Frame],
        topics: dict[bytes, str | None],
        match: Callable[[str], bool] | None,
        first: int | None = None,
    ) -> None:
        """Append the decoded records of `chunk` to `out`; report the damaged ones.
        `chunk` holds (key, value) pairs, or, with `first`, the values of consecutive
        keys from `first`."""
        if len(topics) >= _MAX_TOPICS:
            topics.clear()
        damaged: list[tuple[bytes, bytes]] = []
        # C: checks and decodes
        if first is None:
            out.extend(_wal_decode(chunk, topics, match, damaged))
        else:
            out.extend(_wal_decode_values(chunk, first, topics, match, damaged))
        for k, v in damaged:
            self._damaged(k, v)

    def _rows(
        self, db: Rdict, from_seq: int, read_opt: ReadOptions
    ) -> tuple[Iterator[Any], int | None]:
        """An iterator from `from_seq` for `_decode`, and its `first` argument: values
        from that seq when the keys run without a gap, else (key, value) pairs and
        None."""
        with self._lock:  # no append or deletion between the check and the iterator
            seq = self._consecutive_from(from_seq)
            if seq is None:
                return db.items(from_key=key_of(from_seq), read_opt=read_opt), None
            return db.values(from_key=key_of(seq), read_opt=read_opt), seq

    def _consecutive_from(self, from_seq: int) -> int | None:
        """When every stored key from the first to the last is present (the counters
        say so: as many frames as seqs), the seq to read values from (keys need not be
        read: a value's seq is its place); None otherwise. Lock held."""
        first, last = self._first_seq, self._last_seq
        if first is None or last is None or self._frames != last - first + 1:
            return None
        return max(from_seq, first)

    def _damaged(self, key: bytes, value: bytes) -> None:
        seq = seq_of(key)
        if seq in self._corrupt:
            return
        reason = check_record(value) if len(key) == KEY_SIZE else None
        if reason is None:
            reason = (
                f"key of {len(key)} bytes ({key.hex()})"
                if len(key) != KEY_SIZE
                else "undecodable record"
            )
        self._corrupt_total += 1
        if len(self._corrupt) < _MAX_REMEMBERED_CORRUPT:
            self._corrupt[seq] = reason
        log.error("WAL %s: record seq %d is damaged (%s); skipped", self._path, seq, reason)
        if self._on_corrupt is not None:
            try:
                self._on_corrupt(seq, reason)
            except Exception:
                log.exception("WAL %s: on_corrupt callback failed", self._path)

    def verify(self) -> dict[str, int]:
        """Read and check every stored record.

        Returns ``{"frames": n, "bytes": b, "corrupt": c}`` as found by the scan
        (frames and bytes include damaged records, which are reported as in
        `read`). Compare with `frame_count` and `byte_count`.
        """
        db = self._need_db()
        frames = nbytes = corrupt = 0
        scratch: list[Frame] = []
        try:
            it = db.items()
            while chunk := _take(it, 4096):
                frames += len(chunk)
                nbytes += sum(len(k) + len(v) for k, v in chunk)
                scratch.clear()
                self._decode(chunk, scratch, self._topic_dec, None)
                corrupt += len(chunk) - len(scratch)  # no filter: only damaged ones are missing
        except WalError:
            raise
        except Exception as exc:
            raise _wal_error(self._path, "reading frames failed", exc) from exc
        return {"frames": frames, "bytes": nbytes, "corrupt": corrupt}

    # -- consumer groups -----------------------------------------------------

    @staticmethod
    def _group_key(group: str) -> bytes:
        if not isinstance(group, str):
            raise TypeError(f"group must be a str, not {type(group).__name__}")
        if not group:
            raise ValueError("group name must not be empty")
        return group.encode("utf-8")

    def commit(self, group: str, next_seq: int, *, sync: bool = False) -> None:
        """Store `group`'s offset: `next_seq` is the next frame it wants (Kafka semantics).

        After a frame with sequence number ``s`` is processed, commit ``s + 1``.
        Offsets may move backwards (to reprocess) and past `last_seq` (frames
        the WAL has not stored yet). ``sync=True`` fsyncs the offset.
        """
        key = self._group_key(group)
        next_seq = _check_seq("next_seq", next_seq)
        with self._lock:
            self._need_writable()
            groups = self._groups
            assert groups is not None
            try:
                groups.put(key, key_of(next_seq), self._wo_sync if sync else self._wo)
            except Exception as exc:
                raise _wal_error(self._path, f"cannot commit group {group!r}", exc) from exc

    def committed(self, group: str) -> int | None:
        """`group`'s committed next sequence number; None if it never committed."""
        key = self._group_key(group)
        self._need_db()
        groups = self._groups
        assert groups is not None
        try:
            value = groups.get(key)
        except Exception as exc:
            raise _wal_error(self._path, f"cannot read group {group!r}", exc) from exc
        if value is None:
            return None
        seq = _u64(value)
        if seq is None:
            raise _wal_error(self._path, f"the stored offset of group {group!r} is damaged")
        return seq

    def groups(self) -> dict[str, int]:
        """Every group's committed next sequence number, by name."""
        self._need_db()
        groups = self._groups
        assert groups is not None
        result: dict[str, int] = {}
        try:
            for key, value in _take(groups.items(), None):
                seq = _u64(value)
                name = key.decode("utf-8", "backslashreplace")
                if seq is None:
                    log.error("WAL %s: the stored offset of group %r is damaged", self._path, name)
                    continue
                result[name] = seq
        except Exception as exc:
            raise _wal_error(self._path, "cannot read the groups", exc) from exc
        return result

    def forget_group(self, group: str) -> bool:
        """Delete `group`'s offset; whether it had one."""
        key = self._group_key(group)
        with self._lock:
            self._need_writable()
            groups = self._groups
            assert groups is not None
            try:
                existed = groups.get(key) is not None
                groups.delete(key, self._wo)
            except Exception as exc:
                raise _wal_error(self._path, f"cannot delete group {group!r}", exc) from exc
            return existed

    def lost(self, next_seq: int) -> int:
        """How many frames a reader at offset `next_seq` can no longer get.

        That is the count of sequence numbers in ``[next_seq, retained_from)``
        that were appended: deleted by retention before the reader had them.
        0 when nothing it wants was deleted.
        """
        next_seq = _check_seq("next_seq", next_seq)
        base = self._base_seq
        if base is None:
            return 0
        return max(0, self._retained_from - max(next_seq, base))

    def behind(self, group: str) -> int:
        """`lost` for `group`'s committed offset; 0 for a group that never committed."""
        committed = self.committed(group)
        return 0 if committed is None else self.lost(committed)

    # -- retention -----------------------------------------------------------

    def enforce_retention(self, target_bytes: int | None = None, *, compact: bool = True) -> int:
        """Delete the oldest frames until the logical size is at most `target_bytes`.

        `target_bytes` defaults to `max_bytes`; pass a lower value to make room
        ahead of time so that retention does not run on every append. Frames
        go by whole sequence numbers, oldest first, with one RocksDB
        ``delete_range`` written atomically with the new counters and
        `retained_from`; then (``compact=True``) the range is compacted so the
        disk space is returned. Returns the number of frames deleted.

        The scan that finds the cut reads the frames it deletes, holding the
        append lock meanwhile; the compaction (after the lock is released)
        rewrites the SST files the range overlaps. Both cost more per call than
        per byte, so delete in sizeable steps (for instance down to 90 % of
        `max_bytes` once the limit is passed), not a few frames per append.
        """
        target = self._max_bytes if target_bytes is None else target_bytes
        if isinstance(target, bool) or not isinstance(target, int) or target < 0:
            raise ValueError(f"target_bytes={target_bytes!r} must be an int >= 0")
        with self._lock:
            db = self._need_writable()
            excess = self._bytes - target
            if excess <= 0 or self._frames == 0:
                return 0
            freed = count = 0
            first_key: bytes | None = None
            last_key: bytes | None = None
            following: tuple[bytes, bytes] | None = None
            try:
                it = db.items()
                while freed < excess:
                    chunk = _take(it, 1024)
                    if not chunk:
                        break
                    if first_key is None:
                        first_key = chunk[0][0]
                    for i, (k, v) in enumerate(chunk):
                        freed += len(k) + len(v)
                        count += 1
                        last_key = k
                        if freed >= excess:
                            following = (
                                chunk[i + 1]
                                if i + 1 < len(chunk)
                                else next(iter(_take(it, 1)), None)
                            )
                            break
                del it
            except Exception as exc:
                raise _wal_error(self._path, "cannot scan frames for retention", exc) from exc
            if first_key is None or last_key is None:
                return 0
            end_seq = seq_of(last_key) + 1
            end_key = key_of(end_seq) if end_seq <= MAX_SEQ else last_key + b"\0"
            frames = max(0, self._frames - count)
            total = max(0, self._bytes - freed) if frames else 0
            retained = min(max(self._retained_from, end_seq), MAX_SEQ)
            wb = WriteBatch(raw_mode=True)
            wb.delete_range(first_key, end_key)
            h = self._h_meta
            wb.put(_M_FRAMES, key_of(frames), h)
            wb.put(_M_BYTES, key_of(total), h)
            wb.put(_M_RETAINED, key_of(retained), h)
            self._write(wb, False, f"cannot delete {_span(seq_of(first_key), end_seq - 1)}")
            self._frames, self._bytes, self._retained_from = frames, total, retained
            self._first_seq = None if following is None else seq_of(following[0])
            log.info(
                "WAL %s: retention deleted %d frames (%d bytes) below seq %d",
                self._path,
                count,
                freed,
                end_seq,
            )
        # Compaction can take a while: appends need not wait for it.
        if compact:
            try:
                db.compact_range(first_key, end_key)
            except Exception as exc:
                raise _wal_error(self._path, "compaction after retention failed", exc) from exc
        return count

    def sync(self) -> None:
        """Make every write so far durable (fsync RocksDB's log) in one call."""
        db = self._need_writable()
        try:
            db.flush_wal(True)
        except Exception as exc:
            raise _wal_error(self._path, "cannot sync the log", exc) from exc
