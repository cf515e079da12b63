# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests (hypothesis) of the SSE parser: generated valid streams, in any chunking,
give the events an independent model of the stream says; arbitrary bytes never raise.

Reproducible in CI: derandomize=True (examples derived from the test itself), no database.
"""
from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.llmfleet.serving.plugins.module_utils._sse import (
    DONE, ERROR, JSON, OTHER, SSEEvent, SSEParser, classify,
)

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# A field value: any text without CR / LF (they end a line), including ':' and non-ASCII.
VALUE = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
ENDING = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def streams(draw):
    """(encoded stream, expected events). Lines: comments, event, id, retry, unknown fields,
    one or more data lines; events separated by a blank line; each line its own ending."""
    lines, expected = [], []
    last_id = None
    for dummy in range(draw(st.integers(0, 5))):
        name = ""
        data = []
        for dummy2 in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["comment", "event", "id", "retry", "unknown"]))
            value = draw(VALUE)
            if kind == "comment":
                lines.append(":" + value)
            elif kind == "event":
                lines.append("event: " + value)
                name = value
            elif kind == "id":
                lines.append("id: " + value)
                if "\0" not in value:
                    last_id = value
            elif kind == "retry":
                lines.append("retry: 1000")
            else:
                lines.append("x-unknown: " + value)
        for value in draw(st.lists(VALUE, min_size=1, max_size=4)):
            lines.append(draw(st.sampled_from(["data: ", "data:"])) + value if not value.startswith(" ")
                         else "data: " + value)
            data.append(value)
        lines.append("")  # blank line: dispatch
        # One empty data line dispatches an event with data "" (test_sse.py pins this; WHATWG
        # would dispatch nothing for an empty data buffer; classify() drops it either way).
        expected.append(SSEEvent(name or "message", "\n".join(data), last_id))
    if lines and draw(st.booleans()):
        lines.pop()  # the stream ends without the final blank line: close() dispatches
    endings = []
    for i, line in enumerate(lines):
        ending = draw(ENDING)
        # CR then an empty line ended by LF reads as one CRLF: that is the format, not a bug
        if line == "" and endings and endings[-1] == "\r" and ending == "\n":
            ending = "\r\n"
        endings.append(ending)
    text = "".join(line + end for line, end in zip(lines, endings))
    if lines and not draw(st.booleans()):
        text = text[:-len(endings[-1])]  # no line end at all after the last line
        if lines[-1] == "":  # nothing left to mark the dispatch
            pass
    return text.encode("utf-8"), expected


def parse(chunks):
    p = SSEParser()
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    out.extend(p.close())
    return out


def split(data, cuts):
    cuts = sorted(set(c % (len(data) + 1) for c in cuts))
    pieces, start = [], 0
    for c in cuts:
        pieces.append(data[start:c])
        start = c
    pieces.append(data[start:])
    return pieces


@FUZZ
@given(streams(), st.lists(st.integers(0, 10 ** 6), max_size=12))
@example((b"data: x\r", [SSEEvent("message", "x")]), [8])
@example((b"data: \xc3\xa9\n\n", [SSEEvent("message", u"\u00e9")]), [7])  # a UTF-8 character cut in two
@example((b"data: a\r\r\ndata: b\n\n", [SSEEvent("message", "a"), SSEEvent("message", "b")]), [8, 9])
@example((b"data:\n\ndata:\r\rdata:\ndata:\n\n",
          [SSEEvent("message", ""), SSEEvent("message", ""), SSEEvent("message", "\n")]), [3])  # empty data lines
def test_valid_streams_give_the_model_events_in_any_chunking(stream, cuts):
    data, expected = stream
    assert parse([data]) == expected
    assert parse(split(data, cuts)) == expected
    assert parse([data[i:i + 1] for i in range(len(data))]) == expected


@FUZZ
@given(streams())
def test_str_chunks_same_as_bytes(stream):
    data, expected = stream
    assert parse([data.decode("utf-8")]) == expected


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=8))
@example([b"\xef\xbb", b"\xbfdata: bom split\n\n"])
@example([b"\r", b"", b"\n\n", b"data:\x00\xff\xfe\r\n\r\n"])
def test_arbitrary_bytes_never_raise(chunks):
    # The parser documents no error: invalid UTF-8 becomes U+FFFD, unknown lines are ignored.
    events = parse(chunks)
    assert all(isinstance(e, SSEEvent) and isinstance(e.data, str) and isinstance(e.event, str) for e in events)
    assert events == parse([b"".join(chunks)])
    for e in events:
        for kind, _payload in classify(e):
            assert kind in (DONE, ERROR, JSON, OTHER)


@FUZZ
@given(st.text(max_size=40), st.sampled_from(["message", "error", ""]))
def test_classify_never_raises(data, name):
    for kind, payload in classify(SSEEvent(name or "message", data)):
        assert kind in (DONE, ERROR, JSON, OTHER)
        if kind == ERROR:
            assert isinstance(payload, str)
