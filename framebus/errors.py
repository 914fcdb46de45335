"""Exceptions raised by framebus.

Each error also derives from the standard exception a caller would already
catch for that situation (ValueError, queue.Full, OSError), so framebus can
replace queue.Queue and friends without changing callers' except clauses.
"""

from __future__ import annotations

import queue

__all__ = [
    "BusClosed",
    "ConfigError",
    "DecodeError",
    "FrameBusError",
    "FrameTooLarge",
    "HandlerError",
    "NoResponders",
    "RequestTimeout",
    "WalError",
    "WouldBlock",
]


class FrameBusError(Exception):
    """Base class of every error framebus raises on purpose."""


class ConfigError(FrameBusError, ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


class WouldBlock(FrameBusError, queue.Full):
    """The operation would have to wait (ring full, no credit, timeout expired)."""


class FrameTooLarge(FrameBusError, ValueError):
    """A payload is larger than the ring's max_frame; frames are refused, never truncated."""

    def __init__(self, size: int, max_frame: int) -> None:
        self.size = size
        self.max_frame = max_frame
        super().__init__(f"frame of {size} bytes exceeds max_frame={max_frame} bytes")

    # args holds the formatted message, not (size, max_frame), so the default
    # pickling would call __init__ with the wrong arguments across processes.
    def __reduce__(self) -> tuple[type[FrameTooLarge], tuple[int, int]]:
        return (type(self), (self.size, self.max_frame))


class BusClosed(FrameBusError):
    """The bus or subscription was closed."""


class DecodeError(FrameBusError, ValueError):
    """Bytes could not be decoded (truncated, corrupt or foreign data)."""


class WalError(FrameBusError, OSError):
    """The write-ahead log could not persist or read data."""


class NoResponders(FrameBusError):
    """An EventBus request found no subscription for its topic (raised at once)."""


class RequestTimeout(FrameBusError, TimeoutError):
    """An EventBus request got no reply within its timeout."""


class HandlerError(FrameBusError):
    """The handler answering an EventBus request raised; the message carries its error."""
