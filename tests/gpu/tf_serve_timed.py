"""`transformers serve` with the server's own per-request timing.

transformers serve logs no TTFT or inter-token latency. This starts the same server (the
`Serve` class behind the CLI, same options) with a pure ASGI wrapper around its app that writes,
for every streamed /v1/completions and /v1/chat/completions request, the moment the request
reached the app and the moment each SSE event with generated text left it, as one JSON line:

    {"path": "/v1/completions", "t_request": 1733450000.123, "t_events": [..], "n_events": 32, "status": 200,
     "text": "<the generated text>"}

    LLMFLEET_SERVER_TIMING=/tmp/timing.jsonl python3 tests/gpu/tf_serve_timed.py [transformers serve options]

Server TTFT = t_events[0] - t_request; server ITL = gaps of t_events (the client's definitions,
taken inside the server: what the client adds is the HTTP round trip and its own parsing). The
generated text lets compare_timing.py pair each server record with the client's request.
"""
import json
import os
import sys
import threading
import time

TIMED_PATHS = ("/v1/completions", "/v1/chat/completions")


def _text(event):
    """Generated text in one SSE event's JSON ('' when none)."""
    try:
        data = json.loads(event)
    except ValueError:
        return ""
    out = ""
    for c in data.get("choices") or []:
        out += c.get("text") or (c.get("delta") or {}).get("content") or ""
    return out


class TimingApp(object):
    def __init__(self, app, path):
        self.app = app
        self.lock = threading.Lock()
        self.out = open(path, "a", buffering=1)

    def __getattr__(self, name):  # FastAPI attributes (state, routes...) stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("path") not in TIMED_PATHS:
            return await self.app(scope, receive, send)
        rec = {"path": scope["path"], "t_request": time.time(), "t_events": [], "text": "", "status": None}
        buf = [b""]

        async def timed_send(message):
            if message["type"] == "http.response.start":
                rec["status"] = message.get("status")
            elif message["type"] == "http.response.body":
                buf[0] += message.get("body", b"")
                now = None
                while b"\n\n" in buf[0]:
                    raw, buf[0] = buf[0].split(b"\n\n", 1)
                    for line in raw.decode("utf-8", "replace").splitlines():
                        text = _text(line[5:].strip()) if line.startswith("data:") else ""
                        if text:
                            now = now or time.time()
                            rec["t_events"].append(now)
                            rec["text"] += text
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                rec["t_done"] = time.time()
                rec["n_events"] = len(rec["t_events"])
                with self.lock:
                    self.out.write(json.dumps(rec) + "\n")

        return await self.app(scope, receive, timed_send)


def main(argv):
    path = os.environ.get("LLMFLEET_SERVER_TIMING", "server-timing.jsonl")
    from transformers.cli.serving import server as srv

    orig = srv.build_server

    def build_server(*a, **kw):
        return TimingApp(orig(*a, **kw), path)

    srv.build_server = build_server
    from transformers.cli.transformers import app

    app(["serve"] + list(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
