"""Bus configuration: `BusConfig` and the performance presets.

Every value is checked once, when the config is built, so the ring and the
WAL can trust it; a bad value raises `ConfigError` naming the field, the value
and what would have been accepted.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Any

from .errors import ConfigError

__all__ = ["OVERFLOW_MODES", "PRESETS", "WAL_DIR_ENV", "BusConfig", "record_size"]

GiB = 1 << 30
KiB = 1 << 10

OVERFLOW_MODES: tuple[str, ...] = ("block", "error", "drop", "overwrite")

# Fixed part of a ring record: commit word, length, topic id, seq, ts_ns (the layout
# is stated in _native/fb_ring.h; the WAL's records are another format, in wal/_format.py).
RECORD_HEADER = 32
RECORD_ALIGN = 8

# Presets from the design table. Fields not listed keep the dataclass default.
# Treat as read-only: BusConfig.preset() copies before applying overrides.
PRESETS: dict[str, dict[str, Any]] = {
    "high_throughput": {
        "ring_pow": 21,
        "ring_bytes": 1 << 28,
        "pause_hi": 0.90,
        "resume_lo": 0.75,
        "backpressure_threshold": 0.95,
        "wal_flush_ms": 5,
        "wal_max_bytes": 16 * GiB,
        "spin": 100,
        "async_write_queue_size": 100_000,
    },
    "low_latency": {
        "ring_pow": 19,
        "ring_bytes": 1 << 24,
        "pause_hi": 0.80,
        "resume_lo": 0.65,
        "backpressure_threshold": 0.85,
        "wal_flush_ms": 1,
        "wal_max_bytes": 4 * GiB,
        "spin": 20_000,
        "async_write_queue_size": 100_000,
    },
    "memory_optimized": {
        "ring_pow": 17,
        "ring_bytes": 1 << 22,
        "pause_hi": 0.75,
        "resume_lo": 0.60,
        "backpressure_threshold": 0.80,
        "wal_flush_ms": 20,
        "wal_max_bytes": 2 * GiB,
        "max_readers": 16,
        "max_topics": 256,
        "max_frame": 256 * KiB,
        "spin": 50,
        "async_write_queue_size": 100_000,
    },
    # Spelled out although equal to the dataclass defaults, so the table
    # above can be read in one place; a test keeps the two in step.
    "default": {
        "ring_pow": 20,
        "ring_bytes": 1 << 26,
        "pause_hi": 0.85,
        "resume_lo": 0.70,
        "backpressure_threshold": 0.90,
        "wal_flush_ms": 10,
        "wal_max_bytes": 8 * GiB,
        "spin": 1000,
        "async_write_queue_size": 100_000,
    },
}


# The WAL directory of a config built without wal_dir (see BusConfig.wal_dir).
WAL_DIR_ENV = "FRAMEBUS_WAL_DIR"


def _wal_dir_from_env() -> str | None:
    return os.environ.get(WAL_DIR_ENV) or None


def record_size(payload_bytes: int) -> int:
    """Bytes one frame of `payload_bytes` occupies in the ring (header + payload, aligned)."""
    return (RECORD_HEADER + payload_bytes + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)


def _largest_max_frame(ring_bytes: int, threshold: float) -> int:
    # Two records must fit under the threshold so a writer can always make
    # progress while a reader holds the previous frame; invert record_size.
    budget = math.floor(threshold * ring_bytes) // 2
    return (budget & ~(RECORD_ALIGN - 1)) - RECORD_HEADER


def _type_error(name: str, value: object, expected: str) -> ConfigError:
    return ConfigError(
        f"{name}={value!r} has wrong type {type(value).__name__}: expected {expected}"
    )


def _check_int(name: str, value: object, lo: int, hi: int | None, expected: str) -> int:
    # bool is an int subclass, but True as a size is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _type_error(name, value, expected)
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        raise ConfigError(f"{name}={v!r} out of range: expected {expected}")
    return v


def _check_real(name: str, value: object, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _type_error(name, value, expected)
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name}={v!r} out of range: expected {expected}")
    return v


@dataclasses.dataclass(frozen=True, slots=True)
class BusConfig:
    """Validated, immutable settings of one bus. Build with `BusConfig.preset(...)`."""

    ring_pow: int = 20
    frame_limit: int = 0
    ring_bytes: int = 1 << 26
    max_frame: int = 1 << 20
    max_readers: int = 64
    max_topics: int = 1024
    overflow: str = "block"
    pause_hi: float = 0.85
    resume_lo: float = 0.70
    backpressure_threshold: float = 0.90
    publish_timeout: float | None = None
    spin: int = 1000
    unblock_timeout: float = 1.0
    dead_reader_timeout: float = 2.0
    # The write-ahead log. wal_dir: its directory, or None for no WAL. When wal_dir
    # is not passed at all, it is $FRAMEBUS_WAL_DIR if that is set and not empty
    # (read when the config is built); wal_dir=None passed explicitly means no WAL
    # whatever the environment. The directory is locked: one bus at a time.
    wal_dir: str | None = dataclasses.field(default_factory=_wal_dir_from_env)
    wal_sync: bool = False  # publishers wait until their frames are fsynced
    wal_flush_ms: int = 10  # the idle WAL thread wakes this often (ms) to notice a stop
    wal_max_bytes: int = 8 * GiB  # retention: the oldest frames go past this
    async_write_queue_size: int = 100_000  # with a WAL, at most this many frames in the ring
    # One WAL write (a RocksDB WriteBatch; one fsync with wal_sync) takes the frames
    # waiting in the ring, and is written as soon as it holds max_batch_size frames or
    # max_memory_bytes bytes of records (payload, topic and 20 bytes of header and CRC
    # each: what wal_bytes counts, less the 8-byte keys; a single larger frame is a
    # write of its own), or flush_interval seconds after its first frame was taken
    # while frames keep arriving, or as soon as no more frames are waiting, whichever
    # comes first: the writer never waits for frames to fill a batch, so an idle ring
    # adds no delay to wal_sync publishers.
    max_batch_size: int = 2000
    flush_interval: float = 0.001
    max_memory_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        # Frozen: normalised values (int(), float(), fspath) go in via object.__setattr__.
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("ring_pow", _check_int("ring_pow", self.ring_pow, 10, 30, "an int in 10..30"))
        limit_expected = f"an int in 0..2**ring_pow ({1 << self.ring_pow}); 0 = from the threshold"
        put(
            "frame_limit",
            _check_int("frame_limit", self.frame_limit, 0, 1 << self.ring_pow, limit_expected),
        )

        rb_expected = "a power of two in 2**12..2**40"
        ring_bytes = _check_int("ring_bytes", self.ring_bytes, 1 << 12, 1 << 40, rb_expected)
        if ring_bytes & (ring_bytes - 1):
            raise ConfigError(
                f"ring_bytes={ring_bytes!r} is not a power of two: expected {rb_expected}"
            )
        put("ring_bytes", ring_bytes)

        put(
            "max_readers", _check_int("max_readers", self.max_readers, 1, 1024, "an int in 1..1024")
        )
        put("max_topics", _check_int("max_topics", self.max_topics, 1, 65535, "an int in 1..65535"))

        choices = ", ".join(repr(m) for m in OVERFLOW_MODES)
        if not isinstance(self.overflow, str):
            raise _type_error("overflow", self.overflow, f"one of {choices}")
        if self.overflow not in OVERFLOW_MODES:
            raise ConfigError(f"overflow={self.overflow!r} invalid: expected one of {choices}")

        band = "0 < resume_lo < pause_hi <= backpressure_threshold <= 1"
        pause_hi = _check_real("pause_hi", self.pause_hi, f"a number with {band}")
        resume_lo = _check_real("resume_lo", self.resume_lo, f"a number with {band}")
        threshold = _check_real(
            "backpressure_threshold", self.backpressure_threshold, f"a number with {band}"
        )
        if not 0 < resume_lo:
            raise ConfigError(f"resume_lo={resume_lo!r} violates 0 < resume_lo: expected {band}")
        if not resume_lo < pause_hi:
            raise ConfigError(
                f"resume_lo={resume_lo!r}, pause_hi={pause_hi!r} violate "
                f"resume_lo < pause_hi: expected {band}"
            )
        if not pause_hi <= threshold:
            raise ConfigError(
                f"pause_hi={pause_hi!r}, backpressure_threshold={threshold!r} violate "
                f"pause_hi <= backpressure_threshold: expected {band}"
            )
        if not threshold <= 1:
            raise ConfigError(
                f"backpressure_threshold={threshold!r} violates "
                f"backpressure_threshold <= 1: expected {band}"
            )
        put("pause_hi", pause_hi)
        put("resume_lo", resume_lo)
        put("backpressure_threshold", threshold)

        # Checked after ring_bytes and the threshold, which bound it.
        max_frame = _check_int("max_frame", self.max_frame, 1, None, "an int >= 1")
        largest = _largest_max_frame(ring_bytes, threshold)
        if largest < 1:
            raise ConfigError(
                f"max_frame={max_frame!r} cannot fit: ring_bytes={ring_bytes} with "
                f"backpressure_threshold={threshold!r} leaves no room for two frames; "
                "raise ring_bytes or backpressure_threshold"
            )
        if record_size(max_frame) * 2 > math.floor(threshold * ring_bytes):
            raise ConfigError(
                f"max_frame={max_frame!r} too large: two frames must fit below "
                f"backpressure_threshold={threshold!r} of ring_bytes={ring_bytes}; "
                f"the largest max_frame allowed is {largest}"
            )
        put("max_frame", max_frame)

        if self.publish_timeout is not None:
            expected = "a finite number >= 0, or None to wait forever"
            timeout = _check_real("publish_timeout", self.publish_timeout, expected)
            if timeout < 0:
                raise ConfigError(f"publish_timeout={timeout!r} out of range: expected {expected}")
            put("publish_timeout", timeout)

        put("spin", _check_int("spin", self.spin, 0, 10_000_000, "an int in 0..10000000"))

        for name in ("unblock_timeout", "dead_reader_timeout", "flush_interval"):
            value = _check_real(name, getattr(self, name), "a finite number > 0 (seconds)")
            if value <= 0:
                raise ConfigError(
                    f"{name}={value!r} out of range: expected a finite number > 0 (seconds)"
                )
            put(name, value)

        if self.wal_dir is not None:
            expected = "a non-empty str or os.PathLike path, or None for no WAL"
            if not isinstance(self.wal_dir, (str, os.PathLike)):
                raise _type_error("wal_dir", self.wal_dir, expected)
            wal_dir = os.fspath(self.wal_dir)
            if not isinstance(wal_dir, str):  # a bytes path
                raise _type_error("wal_dir", self.wal_dir, expected)
            if not wal_dir:
                raise ConfigError(f"wal_dir='' invalid: expected {expected}")
            put("wal_dir", wal_dir)

        if not isinstance(self.wal_sync, bool):
            raise _type_error("wal_sync", self.wal_sync, "a bool")

        put("wal_flush_ms", _check_int("wal_flush_ms", self.wal_flush_ms, 1, None, "an int >= 1"))
        for name in (
            "wal_max_bytes",
            "async_write_queue_size",
            "max_batch_size",
            "max_memory_bytes",
        ):
            put(name, _check_int(name, getattr(self, name), 1, None, "an int > 0"))

    @property
    def frame_capacity(self) -> int:
        """Number of frames the ring indexes (2**ring_pow)."""
        return 1 << self.ring_pow

    @classmethod
    def presets(cls) -> tuple[str, ...]:
        """Names accepted by `BusConfig.preset`."""
        return tuple(PRESETS)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BusConfig:
        """The named preset, with `overrides` applied on top, validated as a whole."""
        if not isinstance(name, str) or name not in PRESETS:
            valid = ", ".join(repr(n) for n in PRESETS)
            raise ConfigError(f"unknown preset {name!r}: expected one of {valid}")
        _check_fields(overrides)
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **overrides: Any) -> BusConfig:
        """A validated copy with `overrides` applied."""
        _check_fields(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Field values in declaration order; `BusConfig(**cfg.to_dict()) == cfg`."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BusConfig))


def _check_fields(overrides: dict[str, Any]) -> None:
    # dataclasses would raise a bare TypeError; say which name is wrong and what exists.
    unknown = [k for k in overrides if k not in _FIELD_NAMES]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise ConfigError(
            f"unknown BusConfig field {names}: valid fields are {', '.join(_FIELD_NAMES)}"
        )
