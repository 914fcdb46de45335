"""Envelope: one message with routing metadata, and its binary codec.

    env = Envelope(topic="t", payload=b"x", src="a", dst="b", corr_id=7, deadline_ns=0,
                   priority=0, content_type="application/octet-stream", schema_ver=1,
                   headers={})
    Envelope.decode(env.encode()) == env

Fields (validated on construction; a bad value raises TypeError or ValueError naming
the field and the expected type or range):

- ``topic``, ``src``, ``dst``, ``content_type``: str (UTF-8, at most 2**32-1 bytes).
- ``payload``: a C-contiguous bytes-like object; or, when ``content_type`` is
  ``"application/msgpack"`` (:data:`MSGPACK`), any msgpack-serializable object, which
  travels msgpack-encoded and is decoded back to the msgpack value (lists for tuples).
  Decoding a bytes payload gives ``bytes``.
- ``corr_id``, ``deadline_ns``: int in [0, 2**64-1] (u64); ``deadline_ns`` 0 means none.
- ``priority``: int in [-128, 127] (i8), larger is more urgent; default 0.
- ``schema_ver``: int in [0, 65535] (u16); default 1.
- ``headers``: dict of str to msgpack-serializable values, copied on construction;
  default empty. Values are checked when encoding (TypeError naming the field).
- ``ts_ns``, ``seq``: None until the bus publishes the envelope; ``publish`` sets them
  on the object it was given, and a subscription sets them on what it hands back.
- ``deadline_missed``: False, or True on a received envelope whose ``deadline_ns`` had
  passed (``time.time_ns()``, CLOCK_REALTIME, as ``ts_ns``) when it was received.
  ``ts_ns``, ``seq`` and ``deadline_missed`` are delivery metadata: writable, neither
  encoded nor compared by ``==``.

Envelopes are immutable apart from the delivery metadata (``replace(**changes)`` makes
a changed copy), compare by value and are not hashable (headers is a dict).

On the bus: ``bus.publish(env)`` and ``bus.publish_batch([env, ...])`` publish each
envelope, encoded, on its own ``topic`` (a ``topic`` argument, if given, must be the
same); ``bus.subscribe(filter, envelopes=True)`` hands back Envelopes (see
``FrameBus.subscribe`` for deadline handling and undecodable frames); DataPorts carry
Envelopes as well as bytes.

Wire layout, version 1 (integers little-endian)::

    offset size  field
    0      1     magic 0xFB
    1      1     layout version (1)
    2      1     flags: bit 0 payload is msgpack, bit 1 headers present; others 0
    3      1     priority (i8)
    4      2     schema_ver (u16)
    6      2     reserved, 0
    8      8     corr_id (u64)
    16     8     deadline_ns (u64)
    24     4x6   byte lengths (u32) of topic, src, dst, content_type, headers, payload
    48     ...   topic, src, dst, content_type (UTF-8), headers (a msgpack map, absent
                 when empty), payload (raw bytes, or msgpack when flag bit 0 is set)

The buffer must be exactly 48 bytes plus the six lengths. Flag bit 0 is set exactly
when content_type is ``application/msgpack``.

``Envelope.decode(buf, *, schema_versions=None, content_types=None)`` accepts any
contiguous bytes-like object. Every problem raises :class:`~framebus.errors.DecodeError`
saying what is wrong: bad magic, unknown version or flags, lengths that disagree with
the buffer size (checked before anything is sliced, so nothing larger than the input is
allocated), invalid UTF-8, malformed msgpack (decoded with every size limit bounded by
the input's length) or headers that are not a map of str keys. When ``schema_versions``
or ``content_types`` is given, an envelope whose value is not in it is refused with a
DecodeError naming the value.
"""

from __future__ import annotations

from framebus._envelope import HEADER_SIZE, MSGPACK, OCTET_STREAM, VERSION, Envelope

__all__ = ["HEADER_SIZE", "MSGPACK", "OCTET_STREAM", "VERSION", "Envelope"]
