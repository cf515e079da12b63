# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: incremental Server-Sent Events parser.

Not a public API; it may change without notice.

The parser follows the WHATWG event-stream rules and is fed raw bytes in whatever
pieces the network hands over: a chunk boundary may split a line, a CRLF pair or a
multi-byte UTF-8 character. It handles ``data:`` with or without the space, comment
lines (``:``), multi-line ``data``, CR / LF / CRLF line ends, and a stream that ends
without ``data: [DONE]`` or without the final blank line.

On top of the raw events, :func:`classify` turns one event into what an
OpenAI-compatible streaming client needs: ``done``, ``error`` or ``json``.
"""

from __future__ import annotations

import codecs
import json

DONE = "done"
ERROR = "error"
JSON = "json"
OTHER = "other"


class SSEEvent(object):
    """One dispatched event: ``event`` name (default ``message``), ``data``, ``id``."""

    __slots__ = ("event", "data", "id")

    def __init__(self, event="message", data="", id=None):
        self.event = event
        self.data = data
        self.id = id

    def __eq__(self, other):
        return (isinstance(other, SSEEvent) and self.event == other.event
                and self.data == other.data and self.id == other.id)

    def __repr__(self):
        return "SSEEvent(event=%r, data=%r, id=%r)" % (self.event, self.data, self.id)


class SSEParser(object):
    """Feed bytes with :meth:`feed`, get complete events back; call :meth:`close` at EOF."""

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._pending_cr = False
        self._data = []
        self._event = ""
        self._id = None
        self._bom_checked = False

    def feed(self, chunk):
        """Parse ``chunk`` (bytes or str); return the list of events it completed."""
        if isinstance(chunk, bytes):
            text = self._decoder.decode(chunk)
        else:
            text = chunk
        if not self._bom_checked and text:
            if text.startswith(u"\ufeff"):
                text = text[1:]
            self._bom_checked = True
        if not text:
            return []
        if self._pending_cr:
            # The previous chunk ended on CR: an LF starting this one belongs to it.
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        events = []
        buf = self._buf + text
        if "\r" not in buf:
            # Fast path (LF-only streams, the usual case): split into event blocks once;
            # a block that is a single ``data:`` line (almost every chunk of an
            # OpenAI-compatible stream) becomes an event without the per-line machinery.
            blocks = buf.split("\n\n")
            rest = blocks.pop()
            line_of = self._line
            for block in blocks:
                if block[:5] == "data:" and "\n" not in block and not self._data \
                        and not self._event:
                    value = block[5:]
                    if value[:1] == " ":
                        value = value[1:]
                    events.append(SSEEvent("message", value, self._id))
                    continue
                for line in block.split("\n"):
                    ev = line_of(line)
                    if ev is not None:
                        events.append(ev)
                ev = self._dispatch()
                if ev is not None:
                    events.append(ev)
            lines = rest.split("\n")
            self._buf = lines.pop()
            for line in lines:
                ev = line_of(line)
                if ev is not None:
                    events.append(ev)
            return events
        start = 0
        n = len(buf)
        while True:
            cr = buf.find("\r", start)
            lf = buf.find("\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                line, start = buf[start:lf], lf + 1
            else:
                line = buf[start:cr]
                if cr + 1 < n:
                    start = cr + 2 if buf[cr + 1] == "\n" else cr + 1
                else:
                    start = cr + 1
                    self._pending_cr = True
            ev = self._line(line)
            if ev is not None:
                events.append(ev)
        self._buf = buf[start:]
        return events

    def close(self):
        """End of stream: flush a trailing line and a last event without a blank line."""
        events = self.feed(self._decoder.decode(b"", final=True))
        if self._buf:
            ev = self._line(self._buf)
            self._buf = ""
            if ev is not None:
                events.append(ev)
        ev = self._dispatch()
        if ev is not None:
            events.append(ev)
        return events

    def _dispatch(self):
        if not self._data:
            self._event = ""
            return None
        ev = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
        self._data = []
        self._event = ""
        return ev

    def _line(self, line):
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        # "retry" and unknown fields are ignored, as the specification says.
        return None


def _loads(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def classify(event):
    """Interpret one event of an OpenAI-compatible stream.

    Returns a list of ``(kind, payload)`` pairs; usually one. ``kind`` is
    :data:`DONE` for ``[DONE]``, :data:`ERROR` for an error event (``event: error``,
    an object with an ``error`` key or ``"object": "error"``; payload is the message),
    :data:`JSON` for an ordinary JSON object and :data:`OTHER` for anything else.
    Servers that send several ``data:`` lines without blank lines between them produce
    one event whose lines are separate JSON documents; each is returned.
    """
    data = event.data.strip()
    if data == "[DONE]":
        return [(DONE, None)]
    obj = _loads(data)
    if obj is None and "\n" in data:
        out = []
        for piece in data.split("\n"):
            out.extend(classify(SSEEvent(event.event, piece, event.id)))
        return out
    if event.event == "error":
        return [(ERROR, error_message(obj) if obj is not None else data)]
    if obj is None:
        return [(OTHER, data)] if data else []
    if isinstance(obj, dict) and (obj.get("error") is not None or obj.get("object") == "error"):
        return [(ERROR, error_message(obj))]
    return [(JSON, obj)]


def error_message(obj):
    """A short human-readable message out of an error payload."""
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or json.dumps(err, sort_keys=True)
            code = err.get("code") or err.get("type")
            return "%s (%s)" % (msg, code) if code else str(msg)
        return str(err)
    return str(obj)
