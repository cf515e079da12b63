# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.llmfleet.serving.plugins.module_utils._sse import (
    DONE, ERROR, JSON, OTHER, SSEEvent, SSEParser, classify,
)

STREAM = (
    b": keep-alive comment\r\n"
    b"data: {\"a\": 1}\r\n\r\n"
    b"data:{\"b\": \"\xc3\xa9t\xc3\xa9\"}\n\n"
    b"event: error\ndata: {\"message\": \"boom\"}\n\n"
    b"data: line1\ndata: line2\n\n"
    b"data: [DONE]\r\r"
)
EXPECTED = [
    SSEEvent("message", '{"a": 1}'),
    SSEEvent("message", u'{"b": "\u00e9t\u00e9"}'),
    SSEEvent("error", '{"message": "boom"}'),
    SSEEvent("message", "line1\nline2"),
    SSEEvent("message", "[DONE]"),
]


def parse_in_pieces(data, size):
    p = SSEParser()
    out = []
    for i in range(0, len(data), size):
        out.extend(p.feed(data[i:i + size]))
    out.extend(p.close())
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10000])
def test_any_chunk_boundary_gives_same_events(size):
    assert parse_in_pieces(STREAM, size) == EXPECTED


def test_crlf_split_between_chunks_is_one_line_end():
    p = SSEParser()
    assert p.feed(b"data: x\r") == []
    # the LF completing the CRLF must not be read as an empty line (event dispatch)
    assert p.feed(b"\ndata: y\r\n") == []
    assert p.feed(b"\r\n") == [SSEEvent("message", "x\ny")]


def test_missing_final_blank_line_and_done_flushes_at_close():
    p = SSEParser()
    assert p.feed(b'data: {"last": true}') == []
    assert p.close() == [SSEEvent("message", '{"last": true}')]


def test_field_without_colon_and_id_and_unknown_field():
    p = SSEParser()
    evs = p.feed(b"id: 7\nretry: 10\nfoo: bar\ndata\n\n")
    assert evs == [SSEEvent("message", "", "7")]


def test_comment_only_stream_has_no_events():
    assert parse_in_pieces(b": ping\n\n: ping\n\n", 3) == []


def test_classify_done_json_error_other():
    assert classify(SSEEvent(data="[DONE]")) == [(DONE, None)]
    assert classify(SSEEvent(data='{"choices": []}')) == [(JSON, {"choices": []})]
    assert classify(SSEEvent(event="error", data='{"message": "x"}')) == [(ERROR, "x")]
    err = {"error": {"message": "out of memory", "code": 500}}
    assert classify(SSEEvent(data=json.dumps(err))) == [(ERROR, "out of memory (500)")]
    assert classify(SSEEvent(data='{"object": "error", "message": "bad"}')) == [(ERROR, "bad")]
    assert classify(SSEEvent(data="not json")) == [(OTHER, "not json")]


def test_classify_several_json_documents_in_one_event():
    ev = SSEEvent(data='{"i": 1}\n{"i": 2}\n[DONE]')
    assert classify(ev) == [(JSON, {"i": 1}), (JSON, {"i": 2}), (DONE, None)]


# The LF-only fast path (event blocks, single ``data:`` lines without per-line work) must
# give exactly what the general CR/LF line path gives, for any stream and any split.
LINES = ["data: x", 'data:{"a":1}', "data:", "data:  two spaces", "", "", ": c",
         "event: error", "id: 7", "id", "data: [DONE]", "retry: 5", "foo", "data: \u00e9"]


def _events_via_crlf_path(text):
    # a CR anywhere sends the parser down the general path, in one piece
    p = SSEParser()
    return p.feed(text.replace("\n", "\r\n").encode("utf-8")) + p.close()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=30), st.booleans(),
       st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_lf_fast_path_matches_general_path(lines, trailing_lf, cuts):
    text = "\n".join(lines) + ("\n" if trailing_lf else "")
    data = text.encode("utf-8")
    p = SSEParser()
    got = []
    pos = 0
    for c in cuts:
        got.extend(p.feed(data[pos:pos + c]))
        pos += c
    got.extend(p.feed(data[pos:]))
    got.extend(p.close())
    assert got == _events_via_crlf_path(text)


def test_fast_path_keeps_pending_event_state():
    p = SSEParser()
    assert p.feed(b"event: error\n") == []
    # a single data line after an event field belongs to that event, not a plain message
    assert p.feed(b"data: boom\n\ndata: ok\n\n") == [SSEEvent("error", "boom"),
                                                     SSEEvent("message", "ok")]
    assert p.feed(b"data: a\n") == []
    assert p.feed(b"\ndata: b\n\n") == [SSEEvent("message", "a"), SSEEvent("message", "b")]
