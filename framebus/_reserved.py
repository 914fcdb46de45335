"""Everything the layers on the ring reserve in it, in one place: the ring header's
user counters and the prefixes of the topics (and topic-table names) they use for
themselves. Every module takes its names from here; tests/test_reserved.py checks
that no two users share one and that no module spells one out on its own.

Topics under these prefixes belong to their owners: a frame published on ``_ev.x``
is taken for an EventBus event, whoever sent it.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "EVENTS",
    "EVENT_REPLIES",
    "EVENT_RESPONDERS",
    "FLOW",
    "PORT",
    "PREFIXES",
    "USER_COUNTERS",
    "WAL_COMMIT_ASK",
    "WAL_COMMIT_DONE",
    "Counter",
    "port_topics",
]

USER_COUNTERS = 4  # FB_RING_USER_COUNTERS: the ring header holds this many


class Counter(IntEnum):
    """The ring header's user counters (shared by every process on the bus)."""

    QUEUE_UNFINISHED = 0  # framebus.Queue (joinable): items put and not yet task_done
    WAL_DURABLE = 1  # the WAL's highest durable sequence number + 1 (0: none)
    WAL_STATE = 2  # the WAL writer's state (framebus._walbus STATE_*)
    DEADLINE_MISSES = 3  # envelopes received after their deadline, every process


# Topic prefixes. Ring topics of EventBus events; of per-EventBus reply inboxes
# (outside EVENTS, so ">" event subscribers never see replies); topic-table names
# whose counters count open event subscriptions per pattern.
EVENTS = "_ev."
EVENT_REPLIES = "_evr."
EVENT_RESPONDERS = "_evs."
# Names whose counters carry durable-group commits from attached processes to the
# WAL's writer: the offset asked for (+ group), the offset stored (+ group).
WAL_COMMIT_ASK = "_walc."
WAL_COMMIT_DONE = "_walk."
# DataPort <name>: topics <PORT><name>.b (bytes frames; its counter is the credit
# pool) and <PORT><name>.e (Envelopes); its receiver is the group <PORT><name>.
PORT = "_port."
# framebus.flow graph <g>: the topic of its edge a -> b is <FLOW><g>.<a>.<b>.
FLOW = "_flow."

PREFIXES = {
    "EVENTS": EVENTS,
    "EVENT_REPLIES": EVENT_REPLIES,
    "EVENT_RESPONDERS": EVENT_RESPONDERS,
    "WAL_COMMIT_ASK": WAL_COMMIT_ASK,
    "WAL_COMMIT_DONE": WAL_COMMIT_DONE,
    "PORT": PORT,
    "FLOW": FLOW,
}


def port_topics(name: str) -> tuple[str, str, str]:
    """DataPort ``name``'s bytes topic, envelope topic and receiver group (also the
    receiver's filter prefix: ``<group>.*``)."""
    group = PORT + name
    return group + ".b", group + ".e", group
