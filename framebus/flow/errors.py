"""The flow layer's error."""

from __future__ import annotations

from framebus.errors import FrameBusError

__all__ = ["FlowError"]


class FlowError(FrameBusError, ValueError):
    """A malformed graph, graph file or run request; the message names the node, edge,
    option or file at fault."""
