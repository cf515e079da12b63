# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: a tiny OpenAI-compatible engine on 127.0.0.1 (http.server in a thread).

Behaviour knobs (attributes of ``EngineState``): health 503 for the first N calls, models listed,
SSE stream content, API key (401 otherwise), stream that breaks, error event.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EngineState(object):
    def __init__(self):
        self.health_503 = 0          # number of /health calls answered 503 first
        self.models_after = 0        # number of /v1/models calls answered with an empty list first
        self.model = "Qwen/QwQ-32B"
        self.api_key = "sk-test"
        self.tokens = ["Hel", "lo", "!"]
        self.reasoning = []          # delta.reasoning_content chunks sent before content
        self.finish = True           # send finish_reason on the last chunk
        self.done = True             # send data: [DONE]
        self.error_event = None      # send an error event instead of tokens
        self.ttft = 0.05
        self.calls = []
        self.auth_seen = []


def make_handler(state):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _json(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self):
            auth = self.headers.get("Authorization")
            state.auth_seen.append(auth)
            if state.api_key and auth != "Bearer %s" % state.api_key:
                self._json(401, {"error": "Unauthorized"})
                return False
            return True

        def do_GET(self):
            state.calls.append(("GET", self.path))
            if self.path == "/health":
                n = sum(1 for c in state.calls if c == ("GET", "/health"))
                if n <= state.health_503:
                    return self._json(503, {"status": "loading"})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/v1/models":
                if not self._authorized():
                    return
                n = sum(1 for c in state.calls if c == ("GET", "/v1/models"))
                data = [] if n <= state.models_after else [{"id": state.model, "object": "model"}]
                return self._json(200, {"object": "list", "data": data})
            self._json(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(length) or b"{}")
            state.calls.append(("POST", self.path))
            if not self._authorized():
                return
            if req.get("model") != state.model:
                return self._json(404, {"object": "error", "message": "model not found"})
            chat = self.path == "/v1/chat/completions"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            time.sleep(state.ttft)

            def send(obj):
                payload = obj if isinstance(obj, str) else json.dumps(obj)
                self.wfile.write(("data: %s\n\n" % payload).encode())
                self.wfile.flush()

            self.wfile.write(b": keep-alive\n\n")
            if state.error_event:
                send({"object": "error", "message": state.error_event, "code": 500})
                return
            pieces = [("reasoning", r) for r in state.reasoning] + [("content", t) for t in state.tokens]
            if chat:
                send({"id": "c1", "object": "chat.completion.chunk",
                      "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            for i, (kind, t) in enumerate(pieces):
                last = i == len(pieces) - 1
                fin = "stop" if (last and state.finish) else None
                if chat:
                    delta = {"content": t} if kind == "content" else {"reasoning_content": t}
                    send({"id": "c1", "object": "chat.completion.chunk",
                          "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]})
                else:
                    send({"id": "c1", "object": "text_completion",
                          "choices": [{"index": 0, "text": t, "finish_reason": fin}]})
            if state.done:
                send("[DONE]")
            self.close_connection = True

    return H


class EngineServer(object):
    def __init__(self, state=None):
        self.state = state or EngineState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
