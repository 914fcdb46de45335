# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=False
"""The WAL's one record codec, in C: records encoded straight from the ring for the
bus's WAL thread, from Frames or tuples, one at a time, and decoded back to Frames.
The format is documented in framebus.wal._format, whose names are this module's
public face.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from framebus._ring cimport Frame, Reader

from framebus.errors import DecodeError

cdef extern from "fb_crc32c.h" nogil:
    uint32_t fb_crc32c(const void *buf, size_t len)

cdef enum:
    _VERSION = 1
    _HEADER = 16
    _CRC = 4
cdef uint32_t _RESIDUE = 0x48674BC7

RECORD_VERSION = _VERSION
cdef Py_ssize_t _MAX_TOPIC = 0xFFFF
cdef Py_ssize_t _MAX_PAYLOAD = 0xFFFFFFFF
MAX_TOPIC_BYTES = _MAX_TOPIC
MAX_PAYLOAD_BYTES = _MAX_PAYLOAD
# CRC32C(data + CRC32C(data).to_bytes(4, "little")) for any data
CRC_RESIDUE = _RESIDUE

cdef object _MISSING = object()


def crc32c(data):
    """CRC-32C (Castagnoli) of a bytes-like object."""
    cdef const unsigned char[::1] view = memoryview(data).cast("B")
    if view.shape[0] == 0:
        return fb_crc32c(NULL, 0)
    return fb_crc32c(&view[0], view.shape[0])


cdef inline void _put_le(unsigned char *p, uint64_t v, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        p[i] = <unsigned char>(v >> (8 * i))


cdef bytes _wal_key(uint64_t seq):
    cdef bytes key = PyBytes_FromStringAndSize(NULL, 8)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(key)
    cdef int k
    for k in range(8):
        p[k] = <unsigned char>(seq >> (8 * (7 - k)))  # big-endian: keys sort by seq
    return key


cdef bytes _wal_value(bytes tb, const char *payload, Py_ssize_t plen, uint64_t ts_ns):
    """One record of framebus.wal's format: header, topic, payload, CRC32C."""
    cdef Py_ssize_t tlen = PyBytes_GET_SIZE(tb)
    cdef Py_ssize_t body = 16 + tlen + plen
    cdef bytes val = PyBytes_FromStringAndSize(NULL, body + 4)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(val)
    p[0] = 1  # format version
    p[1] = 0  # flags
    _put_le(p + 2, <uint64_t>tlen, 2)
    _put_le(p + 4, <uint64_t>plen, 4)
    _put_le(p + 8, ts_ns, 8)
    memcpy(p + 16, PyBytes_AS_STRING(tb), tlen)
    memcpy(p + 16 + tlen, payload, plen)
    _put_le(p + body, fb_crc32c(p, body), 4)
    return val


def wal_encode(list items, dict topic_bytes, after):
    """Keys and values of the WAL's record format for a list of Frames or of
    ``(seq, topic, ts_ns, payload)`` tuples, CRCs included: ``(keys, values,
    value_bytes)``. Sequence numbers must rise strictly from above ``after`` (None: any
    start). Returns None when an item is not of that shape, out of order or out of the
    format's range: the caller then finds which and says why. ``topic_bytes`` caches
    topics' UTF-8 encodings (str -> bytes)."""
    cdef Py_ssize_t n = len(items), i
    cdef list keys = [None] * n
    cdef list values = [None] * n
    cdef Frame fr
    cdef bytes tb, val, pb
    cdef Py_ssize_t plen
    cdef uint64_t seq, ts
    cdef bint first = after is None
    cdef uint64_t prev = 0 if first else <uint64_t>after
    cdef Py_ssize_t total = 0
    for i in range(n):
        obj = items[i]
        if type(obj) is Frame:
            fr = <Frame>obj
            seq = fr.seq
            topic = fr.topic
            ts = fr.ts_ns
            pb = fr.payload
        elif type(obj) is tuple and len(<tuple>obj) == 4:
            seq_obj, topic, ts_obj, payload = <tuple>obj
            if (not isinstance(seq_obj, int) or not isinstance(ts_obj, int)
                    or type(topic) is not str or isinstance(payload, str)):
                return None
            try:
                seq = seq_obj
                ts = ts_obj
                pb = _as_bytes(payload)
            except (OverflowError, TypeError, ValueError):
                return None
        else:
            return None
        if not first and seq <= prev:
            return None
        first = False
        prev = seq
        t = topic_bytes.get(topic)
        if t is None:
            try:
                t = (<str>topic).encode("utf-8")
            except UnicodeEncodeError:
                return None
            if PyBytes_GET_SIZE(t) > _MAX_TOPIC:
                return None
            topic_bytes[topic] = t
        tb = <bytes>t
        plen = PyBytes_GET_SIZE(pb)
        if plen > _MAX_PAYLOAD:
            return None
        keys[i] = _wal_key(seq)
        val = _wal_value(tb, PyBytes_AS_STRING(pb), plen, ts)
        values[i] = val
        total += PyBytes_GET_SIZE(val)
    return keys, values, total


cdef inline uint64_t _get_le(const unsigned char *p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef class _TopicCache:
    """The topic of the record decoded last (most records repeat it): compared in C."""
    cdef bytes raw
    cdef object topic


cdef int _decode_record(uint64_t seq, bytes v, dict topics, object match, _TopicCache last,
                        list out) except -1:
    """Appends the Frame of WAL record v (seq) to out: 0; 1 when v is not an intact
    record; 2 when match rejects its topic."""
    cdef Py_ssize_t vlen = PyBytes_GET_SIZE(v)
    cdef const unsigned char *p
    cdef Py_ssize_t tlen, plen, body
    cdef Frame fr
    if vlen < 20:
        return 1
    p = <const unsigned char *>PyBytes_AS_STRING(v)
    body = vlen - 4
    if fb_crc32c(p, body) != <uint32_t>_get_le(p + body, 4) or p[0] != 1 or p[1] != 0:
        return 1
    tlen = <Py_ssize_t>_get_le(p + 2, 2)
    plen = <Py_ssize_t>_get_le(p + 4, 4)
    if 16 + tlen + plen != body:
        return 1
    if (last.raw is not None and PyBytes_GET_SIZE(last.raw) == tlen
            and memcmp(PyBytes_AS_STRING(last.raw), p + 16, tlen) == 0):
        topic = last.topic
    else:
        tb = PyBytes_FromStringAndSize(<const char *>p + 16, tlen)
        topic = topics.get(tb, _MISSING)
        if topic is _MISSING:
            try:
                topic = (<bytes>tb).decode("utf-8")
            except UnicodeDecodeError:
                return 1
            if match is not None and not match(topic):
                topic = None
            topics[tb] = topic
        last.raw = tb
        last.topic = topic
    if topic is None:
        return 2
    fr = Frame.__new__(Frame)
    fr.seq = seq
    fr.topic = topic
    fr.ts_ns = _get_le(p + 8, 8)
    fr.payload = PyBytes_FromStringAndSize(<const char *>p + 16 + tlen, plen)
    out.append(fr)
    return 0


def wal_decode(list chunk, dict topics, object match, list damaged):
    """Frames of the (key, value) pairs read from the WAL, in order. A pair that is not
    an intact record (key size, CRC32C, version, flags, sizes, UTF-8 topic) goes to
    ``damaged`` instead. ``topics`` caches topic bytes -> str, or None for a topic
    that ``match`` (a predicate or None) rejects: such frames are left out."""
    cdef list out = []
    cdef bytes k
    cdef uint64_t seq
    cdef int j
    cdef const unsigned char *kp
    cdef _TopicCache last = _TopicCache.__new__(_TopicCache)
    for pair in chunk:
        k = <bytes>pair[0]
        if PyBytes_GET_SIZE(k) != 8:
            damaged.append(pair)
            continue
        seq = 0
        kp = <const unsigned char *>PyBytes_AS_STRING(k)
        for j in range(8):
            seq = (seq << 8) | kp[j]
        if _decode_record(seq, <bytes>pair[1], topics, match, last, out) == 1:
            damaged.append(pair)
    return out


def wal_decode_values(list values, uint64_t first_seq, dict topics, object match,
                      list damaged):
    """wal_decode for a run of records whose keys are first_seq, first_seq + 1, ...
    (read without their keys); damaged gets (key, value) pairs as wal_decode's."""
    cdef list out = []
    cdef uint64_t seq = first_seq
    cdef _TopicCache last = _TopicCache.__new__(_TopicCache)
    for v in values:
        if _decode_record(seq, <bytes>v, topics, match, last, out) == 1:
            damaged.append((seq.to_bytes(8, "big"), v))
        seq += 1
    return out


# ------------------------------------------------------ straight from the ring

cdef Py_ssize_t _append_record(list keys, list values, uint64_t seq, bytes topic,
                               const char *payload, uint32_t length, uint64_t ts_ns) except -1:
    cdef bytes val = _wal_value(topic, payload, length, ts_ns)
    keys.append(_wal_key(seq))
    values.append(val)
    return PyBytes_GET_SIZE(val)


def read_ring_batch(Reader sub, Py_ssize_t max_frames, dict topic_bytes, timeout=None):
    """For the bus's WAL thread: up to max_frames frames of ``sub`` (a broadcast '>'
    subscription outside overwrite mode) encoded as records straight from the ring, no
    Frame objects: (keys, values, value_bytes, first_seq, last_seq), or None on
    timeout. ``topic_bytes`` caches topics' UTF-8 encodings."""
    return sub.take_records(max_frames, topic_bytes, _append_record, timeout)


# ------------------------------------------------------------ one record at a time

cdef bytes _as_bytes(object data):
    if type(data) is bytes:
        return <bytes>data
    return memoryview(data).tobytes()


def encode_record(topic, ts_ns, payload):
    """One frame as a WAL value. TypeError for a topic that is not a str, a payload
    that is not bytes-like or a ts_ns that is not an int; ValueError when the topic or
    payload is too long for the format or ts_ns is outside [0, 2**64 - 1]."""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    cdef bytes tb = (<str>topic).encode("utf-8")
    if isinstance(payload, str) or not isinstance(payload, (bytes, bytearray, memoryview)):
        try:
            memoryview(payload)
        except TypeError:
            raise TypeError(f"payload must be bytes-like, not {type(payload).__name__}") from None
    cdef bytes pb = _as_bytes(payload)
    if PyBytes_GET_SIZE(tb) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is {len(tb)} UTF-8 bytes long: at most {MAX_TOPIC_BYTES}")
    if PyBytes_GET_SIZE(pb) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload is {len(pb)} bytes long: at most {MAX_PAYLOAD_BYTES}")
    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int):
        raise TypeError(f"ts_ns must be an int, not {type(ts_ns).__name__}")
    if not 0 <= ts_ns <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"ts_ns={ts_ns} is outside [0, 2**64 - 1]")
    return _wal_value(tb, PyBytes_AS_STRING(pb), PyBytes_GET_SIZE(pb), <uint64_t>ts_ns)


def record_problem(value):
    """Why ``value`` is not an intact record, or None when it is. Never raises."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        return f"a WAL record is bytes, not {type(value).__name__}"
    cdef bytes v = _as_bytes(value)
    cdef Py_ssize_t vlen = PyBytes_GET_SIZE(v)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(v)
    cdef Py_ssize_t overhead = _HEADER + _CRC, tlen, plen
    if vlen < overhead:
        return f"value of {vlen} bytes is shorter than the {overhead}-byte record overhead"
    if fb_crc32c(p, vlen) != _RESIDUE:
        return "CRC32C mismatch"
    if p[0] != _VERSION:
        return f"unknown record format version {p[0]}"
    if p[1] != 0:
        return f"unknown record flags 0x{p[1]:02x}"
    tlen = <Py_ssize_t>_get_le(p + 2, 2)
    plen = <Py_ssize_t>_get_le(p + 4, 4)
    if overhead + tlen + plen != vlen:
        return (f"header says {tlen} topic + {plen} payload bytes but the value holds "
                f"{vlen - overhead}")
    try:
        PyBytes_FromStringAndSize(<const char *>p + _HEADER, tlen).decode("utf-8")
    except UnicodeDecodeError:
        return "topic is not valid UTF-8"
    return None


def decode_record(value):
    """One WAL value as ``(topic, ts_ns, payload)``. DecodeError, with the reason, for
    anything that is not an intact record of a known version; never anything else."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise DecodeError(f"a WAL record is bytes, not {type(value).__name__}")
    problem = record_problem(value)
    if problem is not None:
        raise DecodeError(f"bad WAL record: {problem}")
    cdef bytes v = _as_bytes(value)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(v)
    cdef Py_ssize_t tlen = <Py_ssize_t>_get_le(p + 2, 2)
    cdef Py_ssize_t plen = <Py_ssize_t>_get_le(p + 4, 4)
    topic = PyBytes_FromStringAndSize(<const char *>p + _HEADER, tlen).decode("utf-8")
    payload = PyBytes_FromStringAndSize(<const char *>p + _HEADER + tlen, plen)
    return topic, _get_le(p + 8, 8), payload
