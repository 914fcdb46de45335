"""framebus: a high-performance frame bus for Python.

A lock-free C ring under thin Cython bindings: publish/subscribe with NATS-style
topic filters, batching, hysteresis backpressure and overflow policies.
"""

from .bus import Frame, FrameBatch, FrameBus, Subscription
from .config import PRESETS, BusConfig
from .dataport import DataPort
from .envelope import Envelope
from .errors import (
    BusClosed,
    ConfigError,
    DecodeError,
    FrameBusError,
    FrameTooLarge,
    HandlerError,
    NoResponders,
    RequestTimeout,
    WalError,
    WouldBlock,
)
from .eventbus import Event, EventBus, EventSubscription
from .queue import JoinableQueue, Queue
from .topics import TopicFilter

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Queue",
    "BusClosed",
    "BusConfig",
    "ConfigError",
    "DataPort",
    "DecodeError",
    "Envelope",
    "Event",
    "EventBus",
    "EventSubscription",
    "Frame",
    "FrameBatch",
    "FrameBus",
    "FrameBusError",
    "FrameTooLarge",
    "HandlerError",
    "JoinableQueue",
    "NoResponders",
    "RequestTimeout",
    "Subscription",
    "TopicFilter",
    "WalError",
    "WouldBlock",
    "__version__",
]
