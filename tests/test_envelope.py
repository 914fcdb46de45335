"""Envelope: construction, round trips, validation errors and decoder fuzzing.

The fuzz tests run a few thousand Hypothesis examples; FRAMEBUS_FUZZ_EXAMPLES raises
that. For a long run without Hypothesis' per-example cost:

    python tests/test_envelope.py --fuzz 1000000 [--seed N]
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import random
import struct
import sys
import time
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framebus.envelope import HEADER_SIZE, MSGPACK, OCTET_STREAM, VERSION, Envelope
from framebus.errors import DecodeError

U64 = 2**64 - 1
FUZZ_EXAMPLES = int(os.environ.get("FRAMEBUS_FUZZ_EXAMPLES", "2000"))

# values that survive a msgpack round trip unchanged (no tuples, no NaN)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), U64)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=300)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
headers_st = st.dictionaries(st.text(max_size=40), values, max_size=8)
flat_headers = st.dictionaries(st.text(max_size=40), scalars, max_size=20)
text = st.text(max_size=300)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    msgpack_payload = draw(st.booleans())
    if msgpack_payload:
        payload: Any = draw(values)
        content_type = MSGPACK
    else:
        payload = draw(st.binary(max_size=5000) | st.sampled_from([b"", b"\x00" * 70000]))
        content_type = draw(st.sampled_from([OCTET_STREAM, "", "image/x-raw;fmt=gray8", "ü"]))
    return Envelope(
        topic=draw(text),
        payload=payload,
        src=draw(text),
        dst=draw(text),
        corr_id=draw(st.integers(0, U64)),
        deadline_ns=draw(st.integers(0, U64)),
        priority=draw(st.integers(-128, 127)),
        content_type=content_type,
        schema_ver=draw(st.integers(0, 0xFFFF)),
        headers=draw(headers_st | flat_headers),
    )


def typical(**kw: Any) -> Envelope:
    base: dict[str, Any] = dict(
        topic="cam.0.frames",
        payload=b"x" * 64,
        src="cam0",
        dst="detector",
        corr_id=7,
        deadline_ns=1_700_000_000_000_000_000,
        priority=3,
        content_type=OCTET_STREAM,
        schema_ver=2,
        headers={"trace": "abc", "hop": 2},
    )
    base.update(kw)
    return Envelope(**base)


# -- round trips ---------------------------------------------------------------------


def test_design_example() -> None:
    env = Envelope(
        topic="t",
        payload=b"x",
        src="a",
        dst="b",
        corr_id=7,
        deadline_ns=0,
        priority=0,
        content_type="application/octet-stream",
        schema_ver=1,
        headers={},
    )
    assert Envelope.decode(env.encode()) == env


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
@pytest.mark.slow
def test_round_trip(env: Envelope) -> None:
    data = env.encode()
    back = Envelope.decode(data)
    assert back == env
    for field in ("topic", "src", "dst", "corr_id", "deadline_ns", "priority"):
        assert getattr(back, field) == getattr(env, field)
    assert back.content_type == env.content_type and back.schema_ver == env.schema_ver
    assert back.headers == env.headers and back.payload == env.payload
    assert back.encode() == data
    # any bytes-like input decodes the same
    assert Envelope.decode(bytearray(data)) == env
    assert Envelope.decode(memoryview(data)) == env


@settings(max_examples=300)
@given(flat_headers)
def test_fast_headers_are_plain_msgpack(headers: dict[str, Any]) -> None:
    env = Envelope("t", b"", headers=headers)
    data = env.encode()
    lens = struct.unpack_from("<6I", data, 24)
    start = HEADER_SIZE + sum(lens[:4])
    blob = data[start : start + lens[4]]
    if headers:
        assert msgpack.unpackb(blob, raw=False) == headers
    else:
        assert blob == b""
    assert Envelope.decode(data).headers == headers


@pytest.mark.parametrize(
    "headers",
    [
        {"a": 2**64 - 1, "b": -(2**63), "c": 2**63, "d": -1, "e": 0, "f": 127, "g": -32},
        {"f32": 1.5, "inf": math.inf, "neg": -0.0},
        {"nested": {"x": [1, [2, {"y": b"z"}]]}, "empty": {}, "list": []},
        {"ext": msgpack.ExtType(5, b"abc")},
        {str(i): i for i in range(70000)},
        {"long": "x" * 70000, "blob": b"y" * 70000},
    ],
)
def test_header_edge_values(headers: dict[str, Any]) -> None:
    env = Envelope("t", b"p", headers=headers)
    assert Envelope.decode(env.encode()).headers == headers


def test_foreign_msgpack_headers_decode() -> None:
    # headers packed by msgpack with its own integer/float widths still decode
    headers = {"a": 1, "b": -100, "c": 3.25, "d": 70000, "e": -70000, "f": None}
    env = Envelope("t", b"", headers=headers)
    data = bytearray(env.encode())
    lens = list(struct.unpack_from("<6I", data, 24))
    start = HEADER_SIZE + sum(lens[:4])
    blob = msgpack.packb(headers, use_single_float=True)
    data[start : start + lens[4]] = blob
    lens[4] = len(blob)
    struct.pack_into("<6I", data, 24, *lens)
    assert Envelope.decode(bytes(data)).headers == headers


def test_layout_bytes() -> None:
    env = Envelope(
        "tp", b"PAY", src="s", dst="d", corr_id=0x0102, deadline_ns=5, priority=-1, schema_ver=3
    )
    data = env.encode()
    assert data[:4] == bytes([0xFB, VERSION, 0, 0xFF])
    assert struct.unpack_from("<HHQQ6I", data, 4) == (3, 0, 0x0102, 5, 2, 1, 1, 24, 0, 3)
    assert data[HEADER_SIZE:] == b"tpsd" + OCTET_STREAM.encode() + b"PAY"


def test_msgpack_payload() -> None:
    env = Envelope("t", {"k": [1, 2, (3, 4)]}, content_type=MSGPACK)
    back = Envelope.decode(env.encode())
    assert back.payload == {"k": [1, 2, [3, 4]]}
    assert back.payload_is_msgpack and back.encode()[2] & 1
    # bytes under the msgpack content type travel as a msgpack bin
    assert Envelope.decode(Envelope("t", b"ab", content_type=MSGPACK).encode()).payload == b"ab"


def test_buffer_payloads() -> None:
    for payload in (bytearray(b"abc"), memoryview(b"abcdef")[1:4]):
        env = Envelope("t", payload)
        back = Envelope.decode(env.encode())
        assert back.payload == bytes(payload) and back == env


def test_ts_seq_not_encoded_nor_compared() -> None:
    env = typical()
    env.ts_ns, env.seq = 123, 9
    back = Envelope.decode(env.encode())
    assert back.ts_ns is None and back.seq is None
    assert back == env
    clone = pickle.loads(pickle.dumps(env))
    assert clone == env and (clone.ts_ns, clone.seq) == (123, 9)


def test_repr_replace_eq() -> None:
    env = typical()
    assert repr(env).startswith("Envelope(topic='cam.0.frames', payload=b'xxx")
    assert "<bytes 1000 bytes>" in repr(typical(payload=b"x" * 1000))
    assert env.replace(priority=4).priority == 4 and env.replace(priority=4) != env
    assert env == typical() and env != "x"
    with pytest.raises(AttributeError):
        env.topic = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(env)


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, exc, message",
    [
        ({"topic": 1}, TypeError, "Envelope.topic must be str, got int"),
        ({"src": None}, TypeError, "Envelope.src must be str, got NoneType"),
        ({"dst": b"x"}, TypeError, "Envelope.dst must be str, got bytes"),
        ({"content_type": 3}, TypeError, "Envelope.content_type must be str, got int"),
        ({"topic": "\ud800"}, ValueError, "Envelope.topic is not encodable as UTF-8"),
        ({"corr_id": -1}, ValueError, "Envelope.corr_id must be in [0, 18446744073709551615]"),
        ({"corr_id": 2**64}, ValueError, "Envelope.corr_id must be in [0, 18446744073709551615]"),
        ({"corr_id": 1.0}, TypeError, "Envelope.corr_id must be int (u64), got float"),
        ({"corr_id": True}, TypeError, "Envelope.corr_id must be int (u64), got bool"),
        ({"deadline_ns": -5}, ValueError, "Envelope.deadline_ns must be in [0, "),
        ({"priority": 128}, ValueError, "Envelope.priority must be in [-128, 127] (i8), got 128"),
        ({"priority": -129}, ValueError, "Envelope.priority must be in [-128, 127]"),
        ({"priority": "1"}, TypeError, "Envelope.priority must be int (i8), got str"),
        ({"schema_ver": 65536}, ValueError, "Envelope.schema_ver must be in [0, 65535] (u16)"),
        ({"schema_ver": -1}, ValueError, "Envelope.schema_ver must be in [0, 65535]"),
        ({"headers": [("a", 1)]}, TypeError, "Envelope.headers must be dict[str, Any], got list"),
        ({"headers": {1: "a"}}, TypeError, "Envelope.headers keys must be str, got int"),
        ({"payload": "text"}, TypeError, "Envelope.payload must be bytes-like unless"),
        ({"payload": {"a": 1}}, TypeError, "Envelope.payload must be bytes-like unless"),
    ],
)
def test_validation_errors(kw: dict[str, Any], exc: type[Exception], message: str) -> None:
    with pytest.raises(exc) as info:
        typical(**kw)
    assert str(info.value).startswith(message), str(info.value)


def test_unserializable_values_fail_at_encode() -> None:
    with pytest.raises(TypeError, match="Envelope.headers is not msgpack-serializable"):
        typical(headers={"x": object()}).encode()
    with pytest.raises(TypeError, match="Envelope.payload is not msgpack-serializable"):
        Envelope("t", object(), content_type=MSGPACK).encode()
    env = typical()
    env.headers[5] = "late non-str key"  # type: ignore[index]
    with pytest.raises(TypeError, match="Envelope.headers keys must be str"):
        env.encode()


def test_non_contiguous_payload_refused() -> None:
    with pytest.raises(ValueError, match="C-contiguous"):
        Envelope("t", memoryview(b"abcdef")[::2])


# -- decoding errors -----------------------------------------------------------------


def _patched(data: bytes, offset: int, fmt: str, *vals: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *vals)
    return bytes(buf)


def test_decode_errors_say_what_is_wrong() -> None:
    data = typical().encode()
    cases = [
        (b"", "envelope truncated: 0 bytes"),
        (data[:47], "envelope truncated: 47 bytes, the fixed header needs 48"),
        (b"\x00" + data[1:], "not an envelope: bad magic byte 0x00"),
        (data[:1] + b"\x07" + data[2:], "unsupported envelope version 7"),
        (_patched(data, 2, "<B", 0x80), "envelope has unknown flag bits 0x80"),
        (_patched(data, 6, "<H", 1), "envelope reserved field is not zero"),
        (data[:-1], "envelope truncated: its lengths need"),
        (data + b"z", "envelope has 1 trailing bytes"),
        (_patched(data, 44, "<I", 2**32 - 1), "envelope truncated: its lengths need"),
        (_patched(data, 2, "<B", 0), "envelope headers flag disagrees"),
        (_patched(data, 2, "<B", 3), "envelope msgpack flag disagrees"),
    ]
    for bad, message in cases:
        with pytest.raises(DecodeError) as info:
            Envelope.decode(bad)
        assert str(info.value).startswith(message), (message, str(info.value))
    topic_at = HEADER_SIZE
    bad = data[:topic_at] + b"\xff" + data[topic_at + 1 :]
    with pytest.raises(DecodeError, match="envelope topic is not valid UTF-8"):
        Envelope.decode(bad)
    with pytest.raises(DecodeError, match="contiguous bytes-like object, got str"):
        Envelope.decode("text")  # type: ignore[arg-type]


def _with_headers_blob(blob: bytes) -> bytes:
    data = bytearray(Envelope("t", b"", headers={"a": 1}).encode())
    lens = list(struct.unpack_from("<6I", data, 24))
    start = HEADER_SIZE + sum(lens[:4])
    data[start : start + lens[4]] = blob
    lens[4] = len(blob)
    struct.pack_into("<6I", data, 24, *lens)
    return bytes(data)


@pytest.mark.parametrize(
    "blob, message",
    [
        (msgpack.packb([1, 2]), "envelope headers must be a non-empty msgpack map, got list"),
        (msgpack.packb({1: 2}), "envelope headers is not valid msgpack"),
        (msgpack.packb({b"k": 2}, use_bin_type=True), "envelope headers key b'k' is not a str"),
        (b"\xdf\xff\xff\xff\xff", "envelope headers is not valid msgpack"),
        (b"\x81\xa1a\xdd\xff\xff\xff\xff", "envelope headers is not valid msgpack"),
        (msgpack.packb({"a": 1}) + b"\x00", "envelope headers is not valid msgpack"),
        (b"\x81\xa1a" + b"\x91" * 5000 + b"\xc0", "envelope headers"),
    ],
)
def test_bad_headers(blob: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        Envelope.decode(_with_headers_blob(blob))
    assert str(info.value).startswith(message), str(info.value)


def test_refuse_unknown_schema_or_content_type() -> None:
    data = typical(schema_ver=3).encode()
    assert Envelope.decode(data, schema_versions={3}, content_types=[OCTET_STREAM])
    with pytest.raises(DecodeError, match=r"schema_ver 3 is not supported \(supported: \[1, 2\]\)"):
        Envelope.decode(data, schema_versions=range(1, 3))
    with pytest.raises(DecodeError, match="content_type 'application/octet-stream' is not"):
        Envelope.decode(data, content_types={MSGPACK})


# -- fuzzing -------------------------------------------------------------------------


def check_decode(data: bytes) -> None:
    """Decode must return an Envelope or raise DecodeError, nothing else."""
    try:
        env = Envelope.decode(data)
    except DecodeError:
        return
    assert isinstance(env, Envelope)


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 2 and len(buf) >= HEADER_SIZE:
            # a length field set huge, small or off by one
            at = 24 + 4 * rng.randrange(6)
            old = struct.unpack_from("<I", buf, at)[0]
            new = rng.choice([2**32 - 1, 2**31, 0, old + 1, old - 1, rng.getrandbits(32)])
            struct.pack_into("<I", buf, at, new & 0xFFFFFFFF)
        elif op == 3 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 4:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 5 and len(buf) > HEADER_SIZE:
            # rewrite the body with random bytes while keeping the lengths consistent
            at = rng.randrange(HEADER_SIZE, len(buf))
            buf[at:] = rng.randbytes(len(buf) - at)
    return bytes(buf)


SEEDS = [
    typical().encode(),
    typical(headers={}).encode(),
    typical(headers={"n": {"x": [1, 2.5, None, b"b"]}, "t": True}).encode(),
    Envelope("t", {"a": [1, "b", {"c": b"d"}]}, content_type=MSGPACK, headers={"k": "v"}).encode(),
    Envelope("").encode(),
]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary(max_size=400))
@pytest.mark.slow
def test_fuzz_random_bytes(data: bytes) -> None:
    check_decode(data)
    # random bytes behind a valid magic/version to get past the first checks
    check_decode(bytes([0xFB, VERSION]) + data)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.sampled_from(SEEDS) | envelopes().map(Envelope.encode), st.randoms(use_true_random=False))
@pytest.mark.slow
def test_fuzz_mutated_encodings(data: bytes, rng: random.Random) -> None:
    check_decode(mutate(rng, data))


@settings(max_examples=FUZZ_EXAMPLES // 2, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.integers(0, 5),
    st.sampled_from([2**32 - 1, 2**31, 2**16, 0, 1]),
)
def test_fuzz_huge_lengths(data: bytes, field: int, value: int) -> None:
    check_decode(_patched(data, 24 + 4 * field, "<I", value))


def run_fuzz(count: int, seed: int) -> None:
    """Decode `count` random and mutated inputs; exits non-zero on any other exception."""
    rng = random.Random(seed)
    pool = list(SEEDS)
    start = time.perf_counter()
    for i in range(count):
        r = rng.random()
        if r < 0.15:
            data = rng.randbytes(rng.randrange(200))
        elif r < 0.25:
            data = bytes([0xFB, VERSION]) + rng.randbytes(rng.randrange(200))
        else:
            data = mutate(rng, rng.choice(pool))
        try:
            check_decode(data)
        except Exception:
            print(f"input {i} (seed {seed}) raised: {data!r}", file=sys.stderr)
            raise
        if i % 50_000 == 0 and len(pool) < 64:
            pool.append(
                Envelope(
                    rng.randbytes(rng.randrange(20)).hex(),
                    rng.randbytes(rng.randrange(200)),
                    headers={"i": i, "s": "x" * rng.randrange(40)},
                ).encode()
            )
    elapsed = time.perf_counter() - start
    print(f"{count} inputs decoded, only DecodeError raised, in {elapsed:.1f} s (seed {seed})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Fuzz Envelope.decode with random inputs.")
    parser.add_argument("--fuzz", type=int, default=1_000_000, help="number of inputs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run_fuzz(args.fuzz, args.seed)
