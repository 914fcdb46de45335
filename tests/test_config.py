from __future__ import annotations

import dataclasses
import math
import pathlib
import pickle
import queue
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framebus.config import PRESETS, BusConfig, record_size
from framebus.errors import (
    BusClosed,
    ConfigError,
    DecodeError,
    FrameBusError,
    FrameTooLarge,
    WalError,
    WouldBlock,
)

GiB = 1 << 30

# The design table, written out independently of PRESETS.
EXPECTED_PRESETS: dict[str, dict[str, Any]] = {
    "high_throughput": dict(
        ring_pow=21,
        ring_bytes=1 << 28,
        pause_hi=0.90,
        resume_lo=0.75,
        backpressure_threshold=0.95,
        wal_flush_ms=5,
        wal_max_bytes=16 * GiB,
        spin=100,
        async_write_queue_size=100_000,
        max_readers=64,
        max_topics=1024,
        max_frame=1 << 20,
    ),
    "low_latency": dict(
        ring_pow=19,
        ring_bytes=1 << 24,
        pause_hi=0.80,
        resume_lo=0.65,
        backpressure_threshold=0.85,
        wal_flush_ms=1,
        wal_max_bytes=4 * GiB,
        spin=20000,
        async_write_queue_size=100_000,
        max_readers=64,
        max_topics=1024,
        max_frame=1 << 20,
    ),
    "memory_optimized": dict(
        ring_pow=17,
        ring_bytes=1 << 22,
        pause_hi=0.75,
        resume_lo=0.60,
        backpressure_threshold=0.80,
        wal_flush_ms=20,
        wal_max_bytes=2 * GiB,
        spin=50,
        async_write_queue_size=100_000,
        max_readers=16,
        max_topics=256,
        max_frame=256 * 1024,
    ),
    "default": dict(
        ring_pow=20,
        ring_bytes=1 << 26,
        pause_hi=0.85,
        resume_lo=0.70,
        backpressure_threshold=0.90,
        wal_flush_ms=10,
        wal_max_bytes=8 * GiB,
        spin=1000,
        async_write_queue_size=100_000,
        max_readers=64,
        max_topics=1024,
        max_frame=1 << 20,
    ),
}

COMMON_DEFAULTS: dict[str, Any] = dict(
    overflow="block",
    publish_timeout=None,
    unblock_timeout=1.0,
    wal_dir=None,
    wal_sync=False,
    max_batch_size=2000,
    flush_interval=0.001,
    max_memory_bytes=8 << 20,
)


def m(text: str) -> str:
    return re.escape(text)


# ---------------------------------------------------------------- presets


def test_preset_names() -> None:
    assert set(BusConfig.presets()) == set(EXPECTED_PRESETS)
    assert set(PRESETS) == set(EXPECTED_PRESETS)
    assert isinstance(BusConfig.presets(), tuple)


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_preset_values(name: str) -> None:
    cfg = BusConfig.preset(name)
    for field, value in {**EXPECTED_PRESETS[name], **COMMON_DEFAULTS}.items():
        assert getattr(cfg, field) == value, field
    assert cfg.frame_capacity == 1 << EXPECTED_PRESETS[name]["ring_pow"]


def test_default_preset_equals_dataclass_defaults() -> None:
    assert BusConfig.preset("default") == BusConfig()


def test_presets_satisfy_invariant() -> None:
    for name in BusConfig.presets():
        cfg = BusConfig.preset(name)
        assert 0 < cfg.resume_lo < cfg.pause_hi <= cfg.backpressure_threshold <= 1
        assert 2 * record_size(cfg.max_frame) <= math.floor(
            cfg.backpressure_threshold * cfg.ring_bytes
        )


def test_preset_overrides() -> None:
    cfg = BusConfig.preset("low_latency", wal_dir="data/wal", wal_sync=True, overflow="error")
    assert cfg.wal_dir == "data/wal"
    assert cfg.wal_sync is True
    assert cfg.overflow == "error"
    assert cfg.ring_pow == 19
    assert cfg.spin == 20000


def test_preset_override_is_validated() -> None:
    with pytest.raises(ConfigError, match=m("ring_pow=9 out of range: expected an int in 10..30")):
        BusConfig.preset("high_throughput", ring_pow=9)
    # memory_optimized has ring_bytes 4 MiB at 0.80: 1 MiB frames do not fit twice
    # (floor(0.8 * 4 MiB) // 2 = 1677721 -> 1677720 - 32).
    with pytest.raises(ConfigError, match=m("the largest max_frame allowed is 1677688")):
        BusConfig.preset("memory_optimized", max_frame=2 << 20)


def test_preset_does_not_mutate_table() -> None:
    before = {k: dict(v) for k, v in PRESETS.items()}
    BusConfig.preset("default", ring_pow=12)
    assert before == PRESETS


def test_unknown_preset() -> None:
    with pytest.raises(
        ConfigError,
        match=m(
            "unknown preset 'fast': expected one of "
            "'high_throughput', 'low_latency', 'memory_optimized', 'default'"
        ),
    ):
        BusConfig.preset("fast")
    with pytest.raises(ConfigError, match="unknown preset 3"):
        BusConfig.preset(3)  # type: ignore[arg-type]


def test_unknown_override_field() -> None:
    with pytest.raises(ConfigError, match=m("unknown BusConfig field 'ring_size': valid fields")):
        BusConfig.preset("default", ring_size=5)
    valid = r"valid fields are ring_pow, frame_limit, ring_bytes, max_frame, "
    with pytest.raises(ConfigError, match=valid):
        BusConfig.preset("default", bogus=1)
    with pytest.raises(ConfigError, match=m("unknown BusConfig field 'nope'")):
        BusConfig().replace(nope=1)


# ---------------------------------------------------------------- replace / to_dict


def test_replace_returns_validated_copy() -> None:
    cfg = BusConfig()
    cfg2 = cfg.replace(ring_pow=12, overflow="drop")
    assert cfg2.ring_pow == 12 and cfg2.overflow == "drop"
    assert cfg.ring_pow == 20 and cfg.overflow == "block"
    with pytest.raises(ConfigError, match=m("overflow='later' invalid")):
        cfg.replace(overflow="later")


def test_frozen() -> None:
    cfg = BusConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ring_pow = 12  # type: ignore[misc]


def test_to_dict_round_trip() -> None:
    for name in BusConfig.presets():
        cfg = BusConfig.preset(name, wal_dir="/tmp/w")
        d = cfg.to_dict()
        assert list(d) == [f.name for f in dataclasses.fields(BusConfig)]
        assert BusConfig(**d) == cfg


def test_hashable_and_picklable() -> None:
    cfg = BusConfig.preset("low_latency")
    assert hash(cfg) == hash(BusConfig.preset("low_latency"))
    assert pickle.loads(pickle.dumps(cfg)) == cfg


# ---------------------------------------------------------------- field validation


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ring_pow", 40, "ring_pow=40 out of range: expected an int in 10..30"),
        ("ring_pow", 9, "ring_pow=9 out of range: expected an int in 10..30"),
        ("ring_pow", True, "ring_pow=True has wrong type bool: expected an int in 10..30"),
        ("ring_pow", 20.0, "ring_pow=20.0 has wrong type float: expected an int in 10..30"),
        ("ring_pow", "20", "ring_pow='20' has wrong type str: expected an int in 10..30"),
        (
            "ring_bytes",
            5000,
            "ring_bytes=5000 is not a power of two: expected a power of two in 2**12..2**40",
        ),
        (
            "ring_bytes",
            1 << 11,
            "ring_bytes=2048 out of range: expected a power of two in 2**12..2**40",
        ),
        (
            "ring_bytes",
            1 << 41,
            f"ring_bytes={1 << 41} out of range: expected a power of two in 2**12..2**40",
        ),
        ("ring_bytes", False, "ring_bytes=False has wrong type bool"),
        ("max_frame", 0, "max_frame=0 out of range: expected an int >= 1"),
        ("max_frame", True, "max_frame=True has wrong type bool: expected an int >= 1"),
        ("max_readers", 0, "max_readers=0 out of range: expected an int in 1..1024"),
        ("max_readers", 1025, "max_readers=1025 out of range: expected an int in 1..1024"),
        ("max_topics", 0, "max_topics=0 out of range: expected an int in 1..65535"),
        ("max_topics", 65536, "max_topics=65536 out of range: expected an int in 1..65535"),
        (
            "overflow",
            "spill",
            "overflow='spill' invalid: expected one of 'block', 'error', 'drop', 'overwrite'",
        ),
        ("overflow", None, "overflow=None has wrong type NoneType: expected one of 'block'"),
        ("publish_timeout", -1, "publish_timeout=-1.0 out of range: expected a finite number >= 0"),
        ("publish_timeout", math.inf, "publish_timeout=inf out of range"),
        ("publish_timeout", "1", "publish_timeout='1' has wrong type str"),
        ("publish_timeout", True, "publish_timeout=True has wrong type bool"),
        ("spin", -1, "spin=-1 out of range: expected an int in 0..10000000"),
        ("spin", 10_000_001, "spin=10000001 out of range: expected an int in 0..10000000"),
        ("unblock_timeout", 0, "unblock_timeout=0.0 out of range: expected a finite number > 0"),
        ("unblock_timeout", math.nan, "unblock_timeout=nan out of range"),
        ("flush_interval", -0.5, "flush_interval=-0.5 out of range: expected a finite number > 0"),
        ("wal_dir", 5, "wal_dir=5 has wrong type int: expected a non-empty str or os.PathLike"),
        ("wal_dir", b"/tmp", "wal_dir=b'/tmp' has wrong type bytes"),
        ("wal_dir", "", "wal_dir='' invalid: expected a non-empty str or os.PathLike"),
        ("wal_sync", 1, "wal_sync=1 has wrong type int: expected a bool"),
        ("wal_sync", "yes", "wal_sync='yes' has wrong type str: expected a bool"),
        ("wal_flush_ms", 0, "wal_flush_ms=0 out of range: expected an int >= 1"),
        ("wal_flush_ms", 1.5, "wal_flush_ms=1.5 has wrong type float"),
        ("wal_max_bytes", 0, "wal_max_bytes=0 out of range: expected an int > 0"),
        ("async_write_queue_size", 0, "async_write_queue_size=0 out of range: expected an int > 0"),
        ("async_write_queue_size", True, "async_write_queue_size=True has wrong type bool"),
        ("max_batch_size", -3, "max_batch_size=-3 out of range: expected an int > 0"),
        ("max_memory_bytes", 0, "max_memory_bytes=0 out of range: expected an int > 0"),
    ],
)
def test_bad_field(field: str, value: object, message: str) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError, match=m(message)):
        BusConfig(**kwargs)


def test_config_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        BusConfig(ring_pow=99)


def test_numbers_are_normalised() -> None:
    cfg = BusConfig(pause_hi=1, backpressure_threshold=1, publish_timeout=0, unblock_timeout=2)
    assert type(cfg.pause_hi) is float and cfg.pause_hi == 1.0
    assert type(cfg.backpressure_threshold) is float
    assert type(cfg.publish_timeout) is float and cfg.publish_timeout == 0.0
    assert type(cfg.unblock_timeout) is float


def test_wal_dir_pathlike() -> None:
    cfg = BusConfig(wal_dir=pathlib.Path("/tmp/wal"))  # type: ignore[arg-type]
    assert cfg.wal_dir == "/tmp/wal"
    assert type(cfg.wal_dir) is str


def test_overflow_modes_accepted() -> None:
    for mode in ("block", "error", "drop", "overwrite"):
        assert BusConfig(overflow=mode).overflow == mode


# ---------------------------------------------------------------- the hysteresis band


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(resume_lo=0.0), "resume_lo=0.0 violates 0 < resume_lo"),
        (dict(resume_lo=-0.1), "resume_lo=-0.1 violates 0 < resume_lo"),
        (dict(resume_lo=0.85), "resume_lo=0.85, pause_hi=0.85 violate resume_lo < pause_hi"),
        (dict(resume_lo=0.9), "resume_lo=0.9, pause_hi=0.85 violate resume_lo < pause_hi"),
        (
            dict(pause_hi=0.95),
            "pause_hi=0.95, backpressure_threshold=0.9 violate pause_hi <= backpressure_threshold",
        ),
        (
            dict(pause_hi=1.0, backpressure_threshold=1.5),
            "backpressure_threshold=1.5 violates backpressure_threshold <= 1",
        ),
        (dict(pause_hi=math.nan), "pause_hi=nan out of range"),
        (dict(pause_hi="0.8"), "pause_hi='0.8' has wrong type str"),
        (dict(backpressure_threshold=True), "backpressure_threshold=True has wrong type bool"),
    ],
)
def test_band_invariant(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=m(message)) as info:
        BusConfig(**kwargs)
    assert "0 < resume_lo < pause_hi <= backpressure_threshold <= 1" in str(info.value)


def test_band_edges_accepted() -> None:
    cfg = BusConfig(resume_lo=0.01, pause_hi=1.0, backpressure_threshold=1.0)
    assert cfg.pause_hi == cfg.backpressure_threshold == 1.0
    BusConfig(pause_hi=0.9, backpressure_threshold=0.9)


@given(
    st.floats(0.001, 1.0),
    st.floats(0.001, 1.0),
    st.floats(0.001, 1.0),
)
def test_band_property(lo: float, hi: float, thr: float) -> None:
    ok = 0 < lo < hi <= thr <= 1
    # Keep max_frame small so only the band decides.
    kwargs = dict(resume_lo=lo, pause_hi=hi, backpressure_threshold=thr, max_frame=1)
    if ok:
        BusConfig(**kwargs)  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError):
            BusConfig(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- max_frame vs ring size


def test_record_size() -> None:
    assert record_size(1) == 40
    assert record_size(8) == 40
    assert record_size(9) == 48
    assert record_size(0) == 32


def test_max_frame_limit_message() -> None:
    # 4096 * 0.9 = 3686 -> 1843 per frame -> 1840 record -> 1808 payload.
    BusConfig(ring_bytes=4096, max_frame=1808)
    with pytest.raises(
        ConfigError,
        match=m(
            "max_frame=1809 too large: two frames must fit below backpressure_threshold=0.9 "
            "of ring_bytes=4096; the largest max_frame allowed is 1808"
        ),
    ):
        BusConfig(ring_bytes=4096, max_frame=1809)


def test_max_frame_default_is_checked() -> None:
    # The default max_frame (1 MiB) does not fit the smallest ring.
    with pytest.raises(ConfigError, match=m("max_frame=1048576 too large")):
        BusConfig(ring_bytes=4096)


def test_ring_too_small_for_any_frame() -> None:
    with pytest.raises(ConfigError, match=m("leaves no room for two frames")):
        BusConfig(
            ring_bytes=4096,
            resume_lo=0.001,
            pause_hi=0.01,
            backpressure_threshold=0.01,
            max_frame=1,
        )


@given(
    st.integers(12, 40).map(lambda p: 1 << p),
    st.sampled_from([0.5, 0.8, 0.85, 0.9, 0.95, 1.0]),
    st.integers(1, 1 << 40),
)
def test_max_frame_property(ring_bytes: int, thr: float, max_frame: int) -> None:
    fits = 2 * record_size(max_frame) <= math.floor(thr * ring_bytes)
    kwargs = dict(
        ring_bytes=ring_bytes,
        backpressure_threshold=thr,
        pause_hi=thr,
        resume_lo=thr / 2,
        max_frame=max_frame,
    )
    if fits:
        assert BusConfig(**kwargs).max_frame == max_frame  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError) as info:
            BusConfig(**kwargs)  # type: ignore[arg-type]
        largest = int(str(info.value).rsplit(" ", 1)[1])
        # The reported limit is exact: it fits and one more byte does not.
        assert 2 * record_size(largest) <= math.floor(thr * ring_bytes)
        assert 2 * record_size(largest + 1) > math.floor(thr * ring_bytes)


# ---------------------------------------------------------------- errors module


def test_error_hierarchy() -> None:
    for cls in (ConfigError, WouldBlock, FrameTooLarge, BusClosed, DecodeError, WalError):
        assert issubclass(cls, FrameBusError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(WouldBlock, queue.Full)
    assert issubclass(FrameTooLarge, ValueError)
    assert issubclass(DecodeError, ValueError)
    assert issubclass(WalError, OSError)
    with pytest.raises(queue.Full):
        raise WouldBlock("ring full")


def test_frame_too_large() -> None:
    err = FrameTooLarge(5000, 4096)
    assert err.size == 5000 and err.max_frame == 4096
    assert str(err) == "frame of 5000 bytes exceeds max_frame=4096 bytes"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is FrameTooLarge
    assert (back.size, back.max_frame, str(back)) == (5000, 4096, str(err))


def test_other_errors_pickle() -> None:
    for err in (WouldBlock("x"), BusClosed("y"), DecodeError("z"), ConfigError("c")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.args == err.args
    wal = pickle.loads(pickle.dumps(WalError(28, "No space left on device")))
    assert isinstance(wal, WalError) and wal.errno == 28


def test_dead_reader_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="dead_reader_timeout=0.0 out of range"):
        BusConfig(dead_reader_timeout=0)
    assert BusConfig().dead_reader_timeout == 2.0


def test_frame_limit() -> None:
    assert BusConfig().frame_limit == 0
    assert BusConfig.preset("default", ring_pow=10, frame_limit=1024).frame_limit == 1024
    with pytest.raises(ConfigError, match=r"frame_limit=1025 out of range: expected an int in 0"):
        BusConfig.preset("default", ring_pow=10, frame_limit=1025)
    with pytest.raises(ConfigError, match=r"frame_limit=-1 out of range"):
        BusConfig.preset("default", frame_limit=-1)
    with pytest.raises(ConfigError, match=r"frame_limit"):
        BusConfig.preset("default", frame_limit=1.5)
