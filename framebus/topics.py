"""NATS-style topics and topic filters.

A topic is a "."-separated list of non-empty tokens (``sensors.cam.0``); the
empty string is the default topic. A filter may use ``*`` for exactly one
token and a final ``>`` for one or more tokens (``sensors.*.0``, ``sensors.>``).
"""

from __future__ import annotations

import functools
import re

__all__ = ["MAX_TOPIC_BYTES", "TopicFilter", "validate_topic"]

# Topic strings are interned into a fixed-size slot of the ring header's topic table.
MAX_TOPIC_BYTES = 248

# Characters that make a topic invalid: whitespace, control characters and the
# filter wildcards. One regex search is the fast path; the error message is
# worked out only when it finds something.
_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f*>]")
_BAD_FILTER_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")

# Regex pieces for filters; strict about tokens so an invalid topic never matches.
_ONE_TOKEN = r"[^.]+"
_MANY_TOKENS = r"[^.]+(?:\.[^.]+)*"


def _describe_char(ch: str) -> str:
    if ch == "*" or ch == ">":
        return f"wildcard {ch!r} (wildcards are only allowed in filters)"
    if ch.isspace():
        return f"whitespace {ch!r}"
    return f"control character {ch!r}"


def _token_problem(kind: str, text: str) -> str | None:
    """Describe an empty-token problem of `text`, or None if every token is non-empty."""
    if text.startswith("."):
        return f"{kind} {text!r} starts with '.' (empty token)"
    if text.endswith("."):
        return f"{kind} {text!r} ends with '.' (empty token)"
    if ".." in text:
        return f"{kind} {text!r} has an empty token between '..' at index {text.index('..')}"
    return None


def _encode(kind: str, text: str) -> bytes:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{kind} {text!r} is not valid UTF-8: {exc.reason} at index {exc.start}"
        ) from None
    if len(raw) > MAX_TOPIC_BYTES:
        raise ValueError(
            f"{kind} {text!r} is {len(raw)} UTF-8 bytes long: at most {MAX_TOPIC_BYTES} allowed"
        )
    return raw


# Publishers reuse a handful of topics, so caching turns validation into one dict lookup.
# Only valid topics are cached (lru_cache does not store exceptions).
@functools.lru_cache(maxsize=4096)
def _validate_str(topic: str) -> bytes:
    if topic == "":
        return b""
    problem = _token_problem("topic", topic)
    if problem is not None:
        raise ValueError(problem)
    bad = _BAD_CHAR.search(topic)
    if bad is not None:
        raise ValueError(
            f"topic {topic!r} contains {_describe_char(bad.group())} at index {bad.start()}"
        )
    return _encode("topic", topic)


def validate_topic(topic: object) -> bytes:
    """Check a topic to publish on and return its UTF-8 bytes.

    ``""`` is the default topic and returns ``b""``. Raises TypeError for a
    non-str and ValueError saying what is wrong for a malformed topic.
    """
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    # str() drops a subclass so the cache key is a plain, immutable str.
    return _validate_str(str(topic))


class TopicFilter:
    """A compiled subscription filter: ``a.b``, ``a.*.c``, ``a.>`` or ``>``."""

    __slots__ = ("_pattern", "_literal", "_match_all", "_regex")

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"topic filter must be a str, not {type(pattern).__name__}")
        pattern = str(pattern)
        if pattern == "":
            raise ValueError("topic filter '' is empty: use '>' to match every topic")
        problem = _token_problem("topic filter", pattern)
        if problem is not None:
            raise ValueError(problem)
        bad = _BAD_FILTER_CHAR.search(pattern)
        if bad is not None:
            raise ValueError(
                f"topic filter {pattern!r} contains {_describe_char(bad.group())} "
                f"at index {bad.start()}"
            )
        # A filter longer than any topic could never match; that is a bug in the caller.
        _encode("topic filter", pattern)

        tokens = pattern.split(".")
        parts: list[str] = []
        for i, token in enumerate(tokens):
            if token == "*":
                parts.append(_ONE_TOKEN)
            elif token == ">":
                if i != len(tokens) - 1:
                    raise ValueError(
                        f"topic filter {pattern!r} has '>' as token {i + 1} of {len(tokens)}: "
                        "'>' is only allowed as the last token"
                    )
                parts.append(_MANY_TOKENS)
            elif "*" in token or ">" in token:
                wildcard = "*" if "*" in token else ">"
                raise ValueError(
                    f"topic filter {pattern!r} has token {token!r} mixing {wildcard!r} with "
                    f"other characters: a wildcard must be a whole token"
                )
            else:
                parts.append(re.escape(token))

        self._pattern = pattern
        self._match_all = pattern == ">"
        self._literal = "*" not in pattern and ">" not in pattern
        # Literal filters compare by equality and ">" needs no test: no regex for them.
        self._regex: re.Pattern[str] | None = None
        if not self._literal and not self._match_all:
            self._regex = re.compile(r"\.".join(parts))

    @property
    def pattern(self) -> str:
        """The filter as given."""
        return self._pattern

    @property
    def match_all(self) -> bool:
        """True for ``>``, which matches every topic, the default topic ``""`` included."""
        return self._match_all

    @property
    def literal(self) -> bool:
        """True when the filter has no wildcard and so matches exactly one topic."""
        return self._literal

    def matches(self, topic: str) -> bool:
        """Whether `topic` is selected by this filter."""
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        if self._match_all:
            return True
        if self._regex is None:
            return topic == self._pattern
        # fullmatch fails on "" because every token pattern needs at least one character.
        return self._regex.fullmatch(topic) is not None

    def __repr__(self) -> str:
        return f"TopicFilter({self._pattern!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TopicFilter):
            return NotImplemented
        return self._pattern == other._pattern

    def __hash__(self) -> int:
        return hash((TopicFilter, self._pattern))
