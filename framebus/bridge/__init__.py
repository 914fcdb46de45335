"""Bridges that carry framebus topics past one machine.

``framebus.bridge.nats``: :class:`~framebus.bridge.nats.NatsBridge`, topics to and from
NATS JetStream (needs the ``nats`` extra: ``pip install 'framebus[nats]'``). Nothing
here is imported by the layers below (bus, ports, metrics).
"""

from __future__ import annotations
