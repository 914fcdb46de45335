# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=False
"""Envelope and its binary codec (the layout is documented in framebus/envelope.py).

Encoding and decoding of the fixed header, strings and bytes payloads happen here in C;
msgpack is called only for non-empty headers and for payloads of content type
application/msgpack.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_Check, PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int16_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

import msgpack

from framebus.errors import DecodeError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

MAGIC = 0xFB
VERSION = 1
HEADER_SIZE = 48
MSGPACK = "application/msgpack"
OCTET_STREAM = "application/octet-stream"
cdef str _MSGPACK = MSGPACK

DEF _HDR = 48
DEF _FLAG_MSGPACK = 1
DEF _FLAG_HEADERS = 2
DEF _U32_MAX = 0xFFFFFFFF

cdef object _packb = msgpack.packb
cdef object _unpackb = msgpack.unpackb
cdef object _DecodeError = DecodeError
cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF


cdef inline void _put16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = <unsigned char>v
    p[1] = <unsigned char>(v >> 8)


cdef inline void _put32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>v
    p[1] = <unsigned char>(v >> 8)
    p[2] = <unsigned char>(v >> 16)
    p[3] = <unsigned char>(v >> 24)


cdef inline void _put64(unsigned char* p, uint64_t v) noexcept nogil:
    _put32(p, <uint32_t>v)
    _put32(p + 4, <uint32_t>(v >> 32))


cdef inline uint16_t _get16(const unsigned char* p) noexcept nogil:
    return <uint16_t>(p[0] | (<uint16_t>p[1] << 8))


cdef inline uint32_t _get32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef inline uint64_t _get64(const unsigned char* p) noexcept nogil:
    return <uint64_t>_get32(p) | (<uint64_t>_get32(p + 4) << 32)


cdef object _check_str(str field, object value):
    if not PyUnicode_Check(value):
        raise TypeError(f"Envelope.{field} must be str, got {type(value).__name__}")
    cdef Py_ssize_t n
    try:
        # also caches the UTF-8 form that encode() copies
        PyUnicode_AsUTF8AndSize(value, &n)
    except UnicodeEncodeError:
        raise ValueError(f"Envelope.{field} is not encodable as UTF-8 (lone surrogate)") from None
    if n > _U32_MAX:
        raise ValueError(f"Envelope.{field} is longer than 2**32-1 UTF-8 bytes")
    return value


cdef object _check_int(str field, object value, object lo, object hi, str kind):
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Envelope.{field} must be int ({kind}), got {type(value).__name__}")
        value = int(value)
    if not (lo <= value <= hi):
        raise ValueError(f"Envelope.{field} must be in [{lo}, {hi}] ({kind}), got {value}")
    return value


cdef object _check_headers(object headers):
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise TypeError(f"Envelope.headers must be dict[str, Any], got {type(headers).__name__}")
    for k in headers:
        if not PyUnicode_Check(k):
            raise TypeError(f"Envelope.headers keys must be str, got {type(k).__name__}")
    return headers


cdef dict _copy_headers(object headers):
    # a private copy keeps the envelope's headers from changing under it
    _check_headers(headers)
    return {} if headers is None else dict(headers)


cdef bint _payload_equal(object a, object b):
    if PyBytes_CheckExact(a) and PyBytes_CheckExact(b):
        return a == b
    if PyObject_CheckBuffer(a) and PyObject_CheckBuffer(b):
        return memoryview(a).cast("B") == memoryview(b).cast("B")
    return a == b


# A msgpack writer/reader for the common header shape (a flat map of str keys to None,
# bool, int, float, str or bytes): the wire bytes are ordinary msgpack, but the library
# call costs more than the rest of the codec. Other shapes go through msgpack itself.

cdef inline unsigned char* _be16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v
    return p + 2


cdef inline unsigned char* _be32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v
    return p + 4


cdef inline unsigned char* _be64(unsigned char* p, uint64_t v) noexcept nogil:
    _be32(p, <uint32_t>(v >> 32))
    return _be32(p + 4, <uint32_t>v)


cdef inline uint64_t _rbe(const unsigned char* p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef inline Py_ssize_t _len_hdr(Py_ssize_t n, Py_ssize_t fix) noexcept:
    if n < fix:
        return 1
    if n <= 0xFF and fix == 32:
        return 2
    if n <= 0xFFFF:
        return 3
    return 5


cdef Py_ssize_t _fast_size(dict h) except -2:
    """Bytes the fast writer needs for h, or -1 when h needs the msgpack library."""
    cdef Py_ssize_t total = _len_hdr(len(h), 16), n
    cdef long long sv
    for k, v in h.items():
        if type(k) is not str:
            return -1
        try:
            PyUnicode_AsUTF8AndSize(k, &n)
        except UnicodeEncodeError:
            return -1
        total += _len_hdr(n, 32) + n
        t = type(v)
        if v is None or t is bool:
            total += 1
        elif t is int:
            try:
                sv = v
            except OverflowError:
                if v < 0 or v > _U64_MAX:
                    return -1
                sv = 1 << 62
            total += 9 if not (-0x80000000 <= sv <= 0xFFFFFFFF) else 5
        elif t is float:
            total += 9
        elif t is str:
            try:
                PyUnicode_AsUTF8AndSize(v, &n)
            except UnicodeEncodeError:
                return -1
            total += _len_hdr(n, 32) + n
        elif t is bytes:
            n = PyBytes_GET_SIZE(v)
            total += (2 if n <= 0xFF else 3 if n <= 0xFFFF else 5) + n
        else:
            return -1
        if total > _U32_MAX:
            return -1
    return total


cdef inline unsigned char* _w_str(unsigned char* p, const char* s, Py_ssize_t n) noexcept:
    if n < 32:
        p[0] = 0xA0 | <unsigned char>n
        p += 1
    elif n <= 0xFF:
        p[0] = 0xD9
        p[1] = <unsigned char>n
        p += 2
    elif n <= 0xFFFF:
        p[0] = 0xDA
        p = _be16(p + 1, <uint16_t>n)
    else:
        p[0] = 0xDB
        p = _be32(p + 1, <uint32_t>n)
    memcpy(p, s, n)
    return p + n


cdef unsigned char* _fast_write(unsigned char* p, dict h) except NULL:
    cdef Py_ssize_t n = len(h)
    cdef const char* s
    cdef long long sv
    cdef unsigned long long uv
    cdef double dv
    if n < 16:
        p[0] = 0x80 | <unsigned char>n
        p += 1
    elif n <= 0xFFFF:
        p[0] = 0xDE
        p = _be16(p + 1, <uint16_t>n)
    else:
        p[0] = 0xDF
        p = _be32(p + 1, <uint32_t>n)
    for k, v in h.items():
        s = PyUnicode_AsUTF8AndSize(k, &n)
        p = _w_str(p, s, n)
        t = type(v)
        if v is None:
            p[0] = 0xC0
            p += 1
        elif t is bool:
            p[0] = 0xC3 if v else 0xC2
            p += 1
        elif t is int:
            if v > 0x7FFFFFFFFFFFFFFF:
                uv = v
                p[0] = 0xCF
                p = _be64(p + 1, uv)
            else:
                sv = v
                if 0 <= sv <= 0xFFFFFFFF:
                    p[0] = 0xCE
                    p = _be32(p + 1, <uint32_t>sv)
                elif -0x80000000 <= sv < 0:
                    p[0] = 0xD2
                    p = _be32(p + 1, <uint32_t>sv)
                else:
                    p[0] = 0xD3
                    p = _be64(p + 1, <uint64_t>sv)
        elif t is float:
            dv = v
            p[0] = 0xCB
            memcpy(&uv, &dv, 8)
            p = _be64(p + 1, uv)
        elif t is str:
            s = PyUnicode_AsUTF8AndSize(v, &n)
            p = _w_str(p, s, n)
        else:
            n = PyBytes_GET_SIZE(v)
            if n <= 0xFF:
                p[0] = 0xC4
                p[1] = <unsigned char>n
                p += 2
            elif n <= 0xFFFF:
                p[0] = 0xC5
                p = _be16(p + 1, <uint16_t>n)
            else:
                p[0] = 0xC6
                p = _be32(p + 1, <uint32_t>n)
            memcpy(p, PyBytes_AS_STRING(v), n)
            p += n
    return p


cdef object _fast_read(const unsigned char* p, Py_ssize_t n):
    """The flat map at p[0:n], or None when it needs the msgpack library (or is bad)."""
    cdef const unsigned char* end = p + n
    cdef Py_ssize_t count, ln, i
    cdef unsigned char b
    cdef uint64_t uv
    cdef double dv
    if n < 1:
        return None
    b = p[0]
    if (b & 0xF0) == 0x80:
        count = b & 0x0F
        p += 1
    elif b == 0xDE and n >= 3:
        count = <Py_ssize_t>_rbe(p + 1, 2)
        p += 3
    elif b == 0xDF and n >= 5:
        count = <Py_ssize_t>_rbe(p + 1, 4)
        p += 5
    else:
        return None
    # each entry takes at least two bytes
    if count > (end - p) // 2:
        return None
    d = {}
    for i in range(count * 2):
        if p >= end:
            return None
        b = p[0]
        p += 1
        ln = -1
        if (b & 0xE0) == 0xA0:
            ln = b & 0x1F
        elif b == 0xD9 or b == 0xDA or b == 0xDB:
            ln = 1 if b == 0xD9 else 2 if b == 0xDA else 4
            if end - p < ln:
                return None
            uv = _rbe(p, <int>ln)
            p += ln
            if uv > <uint64_t>(end - p):
                return None
            ln = <Py_ssize_t>uv
        if ln >= 0:
            if end - p < ln:
                return None
            if i < 16 and i % 2 == 0:
                try:
                    obj = _cached_utf8(4 + i // 2, p, ln, "headers key")
                except DecodeError:
                    return None
            else:
                try:
                    obj = PyUnicode_DecodeUTF8(<const char*>p, ln, "strict")
                except UnicodeDecodeError:
                    return None
            p += ln
        elif i % 2 == 0:
            return None  # non-str key
        elif b == 0xC0:
            obj = None
        elif b == 0xC2:
            obj = False
        elif b == 0xC3:
            obj = True
        elif b <= 0x7F:
            obj = <long>b
        elif b >= 0xE0:
            obj = <long><int8_t>b
        elif b == 0xC4 or b == 0xC5 or b == 0xC6:
            ln = 1 if b == 0xC4 else 2 if b == 0xC5 else 4
            if end - p < ln:
                return None
            uv = _rbe(p, <int>ln)
            p += ln
            if uv > <uint64_t>(end - p):
                return None
            obj = PyBytes_FromStringAndSize(<const char*>p, <Py_ssize_t>uv)
            p += <Py_ssize_t>uv
        elif 0xCA <= b <= 0xD3:
            ln = (4, 8, 1, 2, 4, 8, 1, 2, 4, 8)[b - 0xCA]
            if end - p < ln:
                return None
            uv = _rbe(p, <int>ln)
            p += ln
            if b == 0xCA:
                obj = _f32(<uint32_t>uv)
            elif b == 0xCB:
                memcpy(&dv, &uv, 8)
                obj = dv
            elif b <= 0xCF:
                obj = uv
            elif b == 0xD0:
                obj = <long long><int8_t>uv
            elif b == 0xD1:
                obj = <long long><int16_t>uv
            elif b == 0xD2:
                obj = <long long><int32_t>uv
            else:
                obj = <long long>uv
        else:
            return None
        if i % 2 == 0:
            key = obj
        else:
            d[key] = obj
    if p != end:
        return None
    return d


cdef double _f32(uint32_t bits) noexcept:
    cdef float f
    memcpy(&f, &bits, 4)
    return f


cdef class Envelope:
    """A message with routing metadata; see framebus.envelope for the documentation."""

    cdef readonly str topic, src, dst, content_type
    cdef readonly object payload
    cdef readonly dict headers
    cdef readonly object corr_id, deadline_ns
    cdef readonly int priority, schema_ver
    cdef public object ts_ns, seq
    cdef public bint deadline_missed  # set on receipt: deadline_ns had passed

    def __init__(self, topic, payload=b"", *, src="", dst="",
                 corr_id=0, deadline_ns=0, priority=0, content_type=OCTET_STREAM,
                 schema_ver=1, headers=None, ts_ns=None, seq=None):
        self.topic = _check_str("topic", topic)
        self.src = _check_str("src", src)
        self.dst = _check_str("dst", dst)
        self.content_type = _check_str("content_type", content_type)
        self.corr_id = _check_int("corr_id", corr_id, 0, _U64_MAX, "u64")
        self.deadline_ns = _check_int("deadline_ns", deadline_ns, 0, _U64_MAX, "u64")
        self.priority = _check_int("priority", priority, -128, 127, "i8")
        self.schema_ver = _check_int("schema_ver", schema_ver, 0, 0xFFFF, "u16")
        self.headers = _copy_headers(headers)
        if not PyBytes_CheckExact(payload) and self.content_type != _MSGPACK:
            if not PyObject_CheckBuffer(payload):
                raise TypeError(
                    f"Envelope.payload must be bytes-like unless content_type is {MSGPACK!r}, "
                    f"got {type(payload).__name__}")
            with memoryview(payload) as mv:
                if not mv.c_contiguous:
                    raise ValueError("Envelope.payload buffer must be C-contiguous")
                if mv.nbytes > _U32_MAX:
                    raise ValueError("Envelope.payload is larger than 2**32-1 bytes")
        elif PyBytes_CheckExact(payload) and PyBytes_GET_SIZE(payload) > _U32_MAX:
            raise ValueError("Envelope.payload is larger than 2**32-1 bytes")
        self.payload = payload
        self.ts_ns = ts_ns
        self.seq = seq

    @property
    def payload_is_msgpack(self):
        """True when the payload travels msgpack-encoded (content_type application/msgpack)."""
        return self.content_type == _MSGPACK

    def encode(self):
        """The envelope as bytes in the version-1 layout (ts_ns and seq are not encoded)."""
        cdef Py_ssize_t lt, ls, ld, lc, lh = 0, lp
        cdef const char* pt = PyUnicode_AsUTF8AndSize(self.topic, &lt)
        cdef const char* ps = PyUnicode_AsUTF8AndSize(self.src, &ls)
        cdef const char* pd = PyUnicode_AsUTF8AndSize(self.dst, &ld)
        cdef const char* pc = PyUnicode_AsUTF8AndSize(self.content_type, &lc)
        cdef uint8_t flags = 0
        cdef object hbytes = None
        cdef object pobj = self.payload
        cdef Py_buffer view
        cdef bint have_view = False
        cdef const char* pp
        cdef unsigned char* p
        cdef dict hd = self.headers
        cdef Py_ssize_t fast = -1
        if hd:
            fast = _fast_size(hd)
        if fast >= 0:
            lh = fast
            flags |= _FLAG_HEADERS
        elif hd:
            _check_headers(hd)
            try:
                hbytes = _packb(hd, use_bin_type=True)
            except Exception as e:
                raise TypeError(f"Envelope.headers is not msgpack-serializable: {e}") from e
            lh = PyBytes_GET_SIZE(hbytes)
            if lh > _U32_MAX:
                raise ValueError("Envelope.headers encode to more than 2**32-1 bytes")
            flags |= _FLAG_HEADERS
        if self.content_type == _MSGPACK:
            try:
                pobj = _packb(pobj, use_bin_type=True)
            except Exception as e:
                raise TypeError(f"Envelope.payload is not msgpack-serializable: {e}") from e
            flags |= _FLAG_MSGPACK
        if PyBytes_CheckExact(pobj):
            pp = PyBytes_AS_STRING(pobj)
            lp = PyBytes_GET_SIZE(pobj)
        else:
            PyObject_GetBuffer(pobj, &view, PyBUF_SIMPLE)
            have_view = True
            pp = <const char*>view.buf
            lp = view.len
        try:
            if lp > _U32_MAX:
                raise ValueError("Envelope.payload encodes to more than 2**32-1 bytes")
            out = PyBytes_FromStringAndSize(NULL, _HDR + lt + ls + ld + lc + lh + lp)
            p = <unsigned char*>PyBytes_AS_STRING(out)
            p[0] = 0xFB
            p[1] = 1
            p[2] = flags
            p[3] = <uint8_t><int8_t>self.priority
            _put16(p + 4, <uint16_t>self.schema_ver)
            _put16(p + 6, 0)
            _put64(p + 8, <uint64_t>self.corr_id)
            _put64(p + 16, <uint64_t>self.deadline_ns)
            _put32(p + 24, <uint32_t>lt)
            _put32(p + 28, <uint32_t>ls)
            _put32(p + 32, <uint32_t>ld)
            _put32(p + 36, <uint32_t>lc)
            _put32(p + 40, <uint32_t>lh)
            _put32(p + 44, <uint32_t>lp)
            p += _HDR
            memcpy(p, pt, lt)
            p += lt
            memcpy(p, ps, ls)
            p += ls
            memcpy(p, pd, ld)
            p += ld
            memcpy(p, pc, lc)
            p += lc
            if fast >= 0:
                p = _fast_write(p, hd)
            elif lh:
                memcpy(p, PyBytes_AS_STRING(hbytes), lh)
                p += lh
            memcpy(p, pp, lp)
        finally:
            if have_view:
                PyBuffer_Release(&view)
        return out

    @staticmethod
    def decode(buf, *, schema_versions=None, content_types=None):
        """Decode bytes made by encode(); any problem raises DecodeError.

        schema_versions / content_types, when given, are the values the reader accepts;
        anything else is refused with a DecodeError naming the value.
        """
        cdef Py_buffer view
        if PyBytes_CheckExact(buf):
            env = _decode(<const unsigned char*>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf))
            if schema_versions is None and content_types is None:
                return env
            return _admit(env, schema_versions, content_types)
        try:
            PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        except Exception:
            raise _DecodeError(
                f"envelope must be a contiguous bytes-like object, got {type(buf).__name__}"
            ) from None
        try:
            env = _decode(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return _admit(env, schema_versions, content_types)

    def replace(self, **changes):
        """A copy with the given fields changed (validated like the constructor)."""
        kw = dict(topic=self.topic, payload=self.payload, src=self.src, dst=self.dst,
                  corr_id=self.corr_id, deadline_ns=self.deadline_ns, priority=self.priority,
                  content_type=self.content_type, schema_ver=self.schema_ver,
                  headers=self.headers, ts_ns=self.ts_ns, seq=self.seq)
        kw.update(changes)
        return Envelope(**kw)

    def __eq__(self, other):
        if not isinstance(other, Envelope):
            return NotImplemented
        cdef Envelope o = <Envelope>other
        return (self.topic == o.topic and self.src == o.src and self.dst == o.dst
                and self.corr_id == o.corr_id and self.deadline_ns == o.deadline_ns
                and self.priority == o.priority and self.content_type == o.content_type
                and self.schema_ver == o.schema_ver and self.headers == o.headers
                and _payload_equal(self.payload, o.payload))

    __hash__ = None

    def __repr__(self):
        p = self.payload
        if PyObject_CheckBuffer(p) and not isinstance(p, (bytes, bytearray)):
            p = f"<{type(p).__name__} {memoryview(p).nbytes} bytes>"
        elif isinstance(p, (bytes, bytearray)) and len(p) > 64:
            p = f"<{type(p).__name__} {len(p)} bytes>"
        else:
            p = repr(p)
        return (f"Envelope(topic={self.topic!r}, payload={p}, src={self.src!r}, "
                f"dst={self.dst!r}, corr_id={self.corr_id}, deadline_ns={self.deadline_ns}, "
                f"priority={self.priority}, content_type={self.content_type!r}, "
                f"schema_ver={self.schema_ver}, headers={self.headers!r}, "
                f"ts_ns={self.ts_ns!r}, seq={self.seq!r})")

    def __reduce__(self):
        return (_rebuild, (self.encode(), self.ts_ns, self.seq))


cdef Envelope _admit(Envelope env, object schema_versions, object content_types):
    if schema_versions is not None and env.schema_ver not in schema_versions:
        raise _DecodeError(
            f"envelope schema_ver {env.schema_ver} is not supported "
            f"(supported: {sorted(schema_versions)})")
    if content_types is not None and env.content_type not in content_types:
        raise _DecodeError(
            f"envelope content_type {env.content_type!r} is not supported "
            f"(supported: {sorted(content_types)})")
    return env


def _rebuild(data, ts_ns, seq):
    env = Envelope.decode(data)
    env.ts_ns = ts_ns
    env.seq = seq
    return env


# The last string decoded for each of topic/src/dst/content_type and the first eight
# header keys: a stream of envelopes mostly repeats them, and a memcmp is cheaper than
# building a new str.
DEF _SLOTS = 12
cdef list _last_str = [""] * _SLOTS
cdef const char* _last_ptr[_SLOTS]
cdef Py_ssize_t _last_len[_SLOTS]
for _i in range(_SLOTS):
    _last_ptr[_i] = ""
    _last_len[_i] = 0


cdef str _cached_utf8(int slot, const unsigned char* p, Py_ssize_t n, str field):
    if n == _last_len[slot] and memcmp(p, _last_ptr[slot], n) == 0:
        return <str>_last_str[slot]
    s = _utf8(p, n, field)
    if n <= 256:
        _last_ptr[slot] = PyUnicode_AsUTF8AndSize(s, &_last_len[slot])
        _last_str[slot] = s
    return s


cdef str _utf8(const unsigned char* p, Py_ssize_t n, str field):
    try:
        return PyUnicode_DecodeUTF8(<const char*>p, n, "strict")
    except UnicodeDecodeError as e:
        raise _DecodeError(f"envelope {field} is not valid UTF-8 ({e.reason} at byte {e.start})") from None


cdef object _limited_unpack(const unsigned char* p, Py_ssize_t n, str what):
    data = PyBytes_FromStringAndSize(<const char*>p, n)
    try:
        # every container/str/bin needs at least one byte per element, so n bounds them all
        return _unpackb(data, raw=False, strict_map_key=True, use_list=True,
                        max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n,
                        max_ext_len=n)
    except RecursionError:
        raise _DecodeError(f"envelope {what} msgpack is nested too deeply") from None
    except Exception as e:
        raise _DecodeError(f"envelope {what} is not valid msgpack: {type(e).__name__}: {e}") from None


cdef Envelope _decode(const unsigned char* p, Py_ssize_t n):
    if n < _HDR:
        if n >= 1 and p[0] != 0xFB:
            raise _DecodeError(f"not an envelope: bad magic byte 0x{p[0]:02x} (expected 0xfb)")
        raise _DecodeError(f"envelope truncated: {n} bytes, the fixed header needs {_HDR}")
    if p[0] != 0xFB:
        raise _DecodeError(f"not an envelope: bad magic byte 0x{p[0]:02x} (expected 0xfb)")
    if p[1] != 1:
        raise _DecodeError(f"unsupported envelope version {p[1]} (this reader knows version 1)")
    cdef uint8_t flags = p[2]
    if flags & ~(_FLAG_MSGPACK | _FLAG_HEADERS):
        raise _DecodeError(f"envelope has unknown flag bits 0x{flags:02x}")
    if _get16(p + 6) != 0:
        raise _DecodeError("envelope reserved field is not zero")
    cdef uint64_t lens[6]
    cdef uint64_t total = _HDR
    cdef int i
    for i in range(6):
        lens[i] = _get32(p + 24 + 4 * i)
        total += lens[i]
    # 64-bit sum of six u32 cannot overflow, so this single check bounds every slice
    if total != <uint64_t>n:
        if total > <uint64_t>n:
            raise _DecodeError(
                f"envelope truncated: its lengths need {total} bytes, got {n}")
        raise _DecodeError(f"envelope has {n - <Py_ssize_t>total} trailing bytes")
    if (lens[4] != 0) != ((flags & _FLAG_HEADERS) != 0):
        raise _DecodeError("envelope headers flag disagrees with the headers length")
    cdef Envelope env = Envelope.__new__(Envelope)
    env.priority = <int8_t>p[3]
    env.schema_ver = _get16(p + 4)
    env.corr_id = _get64(p + 8)
    env.deadline_ns = _get64(p + 16)
    cdef const unsigned char* q = p + _HDR
    env.topic = _cached_utf8(0, q, <Py_ssize_t>lens[0], "topic")
    q += lens[0]
    env.src = _cached_utf8(1, q, <Py_ssize_t>lens[1], "src")
    q += lens[1]
    env.dst = _cached_utf8(2, q, <Py_ssize_t>lens[2], "dst")
    q += lens[2]
    env.content_type = _cached_utf8(3, q, <Py_ssize_t>lens[3], "content_type")
    q += lens[3]
    if ((flags & _FLAG_MSGPACK) != 0) != (env.content_type == _MSGPACK):
        raise _DecodeError(
            f"envelope msgpack flag disagrees with content_type {env.content_type!r}")
    if lens[4]:
        h = _fast_read(q, <Py_ssize_t>lens[4])
        if h is None:
            h = _limited_unpack(q, <Py_ssize_t>lens[4], "headers")
        if type(h) is not dict or not h:
            raise _DecodeError(
                f"envelope headers must be a non-empty msgpack map, got {type(h).__name__}")
        for k in h:
            if not PyUnicode_Check(k):
                raise _DecodeError(f"envelope headers key {k!r} is not a str")
        env.headers = h
        q += lens[4]
    else:
        env.headers = {}
    if flags & _FLAG_MSGPACK:
        env.payload = _limited_unpack(q, <Py_ssize_t>lens[5], "payload")
    else:
        env.payload = PyBytes_FromStringAndSize(<const char*>q, <Py_ssize_t>lens[5])
    env.ts_ns = None
    env.seq = None
    return env



def decode_frames(list frames, object env_topic, bint drop_late, uint64_t now_ns,
                  object schema_versions=None, object content_types=None):
    """Turns received frames into Envelopes (all of them, or only those whose topic is
    env_topic; the others pass through unchanged), with seq and ts_ns from the frame.

    An Envelope whose deadline_ns (nonzero) is below now_ns is a deadline miss: flagged
    (deadline_missed=True) or, with drop_late, left out. A frame that does not decode
    is left out. Returns (items, deadline misses, [(seq, DecodeError message), ...]).
    """
    cdef list out = []
    cdef list bad = []
    cdef Py_ssize_t misses = 0
    cdef Envelope env
    cdef object deadline
    for f in frames:
        if env_topic is not None and f.topic != env_topic:
            out.append(f)
            continue
        try:
            env = Envelope.decode(f.payload, schema_versions=schema_versions,
                                  content_types=content_types)
        except _DecodeError as exc:
            bad.append((f.seq, str(exc)))
            continue
        env.seq = f.seq
        env.ts_ns = f.ts_ns
        deadline = env.deadline_ns
        if deadline and deadline < now_ns:
            misses += 1
            if drop_late:
                continue
            env.deadline_missed = True
        out.append(env)
    return out, misses, bad
