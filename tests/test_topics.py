from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from framebus.topics import MAX_TOPIC_BYTES, TopicFilter, validate_topic


def m(text: str) -> str:
    return re.escape(text)


# Tokens as publishers write them: no ".", wildcards, whitespace or control characters.
token = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
        blacklist_characters=".*>\x1c\x1d\x1e\x1f\x85",
    ),
    min_size=1,
    max_size=8,
).filter(lambda t: not any(c.isspace() for c in t))
tokens = st.lists(token, min_size=1, max_size=6)


def join(parts: list[str]) -> str:
    return ".".join(parts)


def fits(topic: str) -> bool:
    return len(topic.encode()) <= MAX_TOPIC_BYTES


# ---------------------------------------------------------------- validate_topic


@pytest.mark.parametrize(
    ("topic", "raw"),
    [
        ("", b""),
        ("a", b"a"),
        ("sensors.t1", b"sensors.t1"),
        ("cam.0.raw", b"cam.0.raw"),
        ("caf\u00e9.\u6e29\u5ea6", "caf\u00e9.\u6e29\u5ea6".encode()),
        ("a-b_c:d/e", b"a-b_c:d/e"),
    ],
)
def test_valid_topics(topic: str, raw: bytes) -> None:
    assert validate_topic(topic) == raw


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("a..b", "topic 'a..b' has an empty token between '..' at index 1"),
        (".a", "topic '.a' starts with '.' (empty token)"),
        ("a.", "topic 'a.' ends with '.' (empty token)"),
        (".", "topic '.' starts with '.' (empty token)"),
        ("a b", "topic 'a b' contains whitespace ' ' at index 1"),
        ("a.\tb", "topic 'a.\\tb' contains whitespace '\\t' at index 2"),
        ("a\nb", "topic 'a\\nb' contains whitespace '\\n' at index 1"),
        (" ", "topic ' ' contains whitespace ' ' at index 0"),
        ("a\u00a0b", "topic 'a\\xa0b' contains whitespace '\\xa0' at index 1"),
        ("a\x00b", "topic 'a\\x00b' contains control character '\\x00' at index 1"),
        (
            "a.*",
            "topic 'a.*' contains wildcard '*' (wildcards are only allowed in filters) at index 2",
        ),
        (
            "a.>",
            "topic 'a.>' contains wildcard '>' (wildcards are only allowed in filters) at index 2",
        ),
        ("a*b", "topic 'a*b' contains wildcard '*'"),
        ("\ud800", "topic '\\ud800' is not valid UTF-8: surrogates not allowed at index 0"),
    ],
)
def test_invalid_topics(topic: str, message: str) -> None:
    with pytest.raises(ValueError, match=m(message)):
        validate_topic(topic)


def test_topic_length_limit() -> None:
    assert MAX_TOPIC_BYTES == 248
    ok = "a" * MAX_TOPIC_BYTES
    assert validate_topic(ok) == ok.encode()
    with pytest.raises(ValueError, match=m("is 249 UTF-8 bytes long: at most 248 allowed")):
        validate_topic("a" * 249)
    # The limit is in bytes, not characters: 125 two-byte characters = 250 bytes.
    with pytest.raises(ValueError, match=m("is 250 UTF-8 bytes long")):
        validate_topic("\u00e9" * 125)


@pytest.mark.parametrize(
    ("value", "name"), [(b"a", "bytes"), (None, "NoneType"), (1, "int"), (["a"], "list")]
)
def test_topic_type(value: object, name: str) -> None:
    with pytest.raises(TypeError, match=m(f"topic must be a str, not {name}")):
        validate_topic(value)


def test_topic_str_subclass() -> None:
    class S(str):
        pass

    assert validate_topic(S("a.b")) == b"a.b"


def test_invalid_topic_not_cached() -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            validate_topic("a..b")


@given(tokens)
def test_valid_topic_property(parts: list[str]) -> None:
    topic = join(parts)
    assume(fits(topic))
    assert validate_topic(topic) == topic.encode()


# ---------------------------------------------------------------- TopicFilter construction


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "topic filter '' is empty: use '>' to match every topic"),
        ("a..b", "topic filter 'a..b' has an empty token between '..' at index 1"),
        (".a", "topic filter '.a' starts with '.' (empty token)"),
        ("a.", "topic filter 'a.' ends with '.' (empty token)"),
        ("a b", "topic filter 'a b' contains whitespace ' ' at index 1"),
        ("a.\x7f", "topic filter 'a.\\x7f' contains control character '\\x7f' at index 2"),
        (
            "a*",
            "topic filter 'a*' has token 'a*' mixing '*' with other characters: "
            "a wildcard must be a whole token",
        ),
        ("a.b>", "topic filter 'a.b>' has token 'b>' mixing '>' with other characters"),
        ("**", "topic filter '**' has token '**' mixing '*'"),
        (
            "a.>.b",
            "topic filter 'a.>.b' has '>' as token 2 of 3: '>' is only allowed as the last token",
        ),
        (">.>", "topic filter '>.>' has '>' as token 1 of 2"),
        ("a" * 249, "is 249 UTF-8 bytes long: at most 248 allowed"),
    ],
)
def test_invalid_filters(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=m(message)):
        TopicFilter(pattern)


@pytest.mark.parametrize("value", [b"a.>", None, 3])
def test_filter_type(value: object) -> None:
    with pytest.raises(
        TypeError, match=m(f"topic filter must be a str, not {type(value).__name__}")
    ):
        TopicFilter(value)  # type: ignore[arg-type]


def test_filter_attributes() -> None:
    f = TopicFilter("a.*.c")
    assert f.pattern == "a.*.c"
    assert not f.match_all and not f.literal
    assert TopicFilter(">").match_all
    assert not TopicFilter("a.>").match_all
    assert TopicFilter("a.b").literal
    assert not TopicFilter("a.>").literal


def test_filter_repr_eq_hash() -> None:
    f = TopicFilter("a.>")
    assert repr(f) == "TopicFilter('a.>')"
    assert f == TopicFilter("a.>")
    assert f != TopicFilter("a.*")
    assert f != "a.>"
    assert hash(f) == hash(TopicFilter("a.>"))
    assert len({f, TopicFilter("a.>"), TopicFilter("b")}) == 2


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.b", "a", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "a", False),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.x.d", False),
        ("a.*.c", "a.x.y.c", False),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        ("a.>", "b.a", False),
        ("a.>", "ab.c", False),
        ("*.>", "a", False),
        ("*.>", "a.b", True),
        ("*.b.>", "x.b.c", True),
        ("*.b.>", "x.c.c", False),
        (">", "a", True),
        (">", "a.b.c", True),
        (">", "", True),
        ("a.b", "", False),
        ("*", "", False),
        ("a.>", "", False),
        # Regex metacharacters in tokens are literal.
        ("a+.b", "a+.b", True),
        ("a+.*", "aa.x", False),
        ("(x).*", "(x).y", True),
        # Malformed topics never match a wildcard filter.
        ("a.>", "a..b", False),
        ("a.>", "a.", False),
        ("a.*", "a.", False),
    ],
)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert TopicFilter(pattern).matches(topic) is expected


def test_matches_rejects_non_str() -> None:
    with pytest.raises(TypeError, match=m("topic must be a str, not bytes")):
        TopicFilter("a").matches(b"a")  # type: ignore[arg-type]


@given(tokens)
def test_literal_filter_matches_exactly_itself(parts: list[str]) -> None:
    topic = join(parts)
    assume(fits(topic))
    f = TopicFilter(topic)
    assert f.literal
    assert f.matches(topic)
    assert not f.matches(topic + ".x")
    assert not f.matches("x." + topic)
    assert not f.matches("")
    if len(parts) > 1:
        assert not f.matches(join(parts[:-1]))


@given(tokens, tokens)
def test_literal_filter_vs_other_topic(a: list[str], b: list[str]) -> None:
    assume(fits(join(a)))
    assert TopicFilter(join(a)).matches(join(b)) is (a == b)


@given(tokens, tokens)
def test_tail_wildcard(prefix: list[str], rest: list[str]) -> None:
    f_pattern = join([*prefix, ">"])
    topic = join(prefix + rest)
    assume(fits(f_pattern) and fits(topic))
    f = TopicFilter(f_pattern)
    assert f.matches(topic)
    # ">" needs at least one token after the prefix.
    assert not f.matches(join(prefix))


@given(tokens, tokens)
def test_tail_wildcard_needs_prefix(prefix: list[str], topic_parts: list[str]) -> None:
    f_pattern = join([*prefix, ">"])
    assume(fits(f_pattern))
    has_prefix = len(topic_parts) > len(prefix) and topic_parts[: len(prefix)] == prefix
    assert TopicFilter(f_pattern).matches(join(topic_parts)) is has_prefix


@given(st.integers(1, 6), tokens)
def test_star_counts_tokens(n: int, parts: list[str]) -> None:
    f = TopicFilter(join(["*"] * n))
    assert f.matches(join(parts)) is (len(parts) == n)


@given(tokens, st.data())
def test_star_replaces_any_token(parts: list[str], data: st.DataObject) -> None:
    topic = join(parts)
    assume(fits(topic))
    i = data.draw(st.integers(0, len(parts) - 1))
    pattern_parts = list(parts)
    pattern_parts[i] = "*"
    f = TopicFilter(join(pattern_parts))
    assert f.matches(topic)
    other = list(parts)
    other[i] = data.draw(token)
    assert f.matches(join(other))
    assert not f.matches(join([*parts, "x"]))


@given(tokens)
def test_match_all(parts: list[str]) -> None:
    assert TopicFilter(">").matches(join(parts))
