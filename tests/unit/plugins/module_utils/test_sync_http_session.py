"""model_sync's library-session GET for the hubs (``_http_open``: where a proxy applies) works with
both kinds of session huggingface_hub hands out:
httpx2 (huggingface_hub >= 1.0, the pinned set for Python >= 3.11) and requests (huggingface_hub
0.x, the pinned set for Python 3.9/3.10: a requests.Session has a ``stream`` attribute that is a
bool, not a method). Served by a file server on 127.0.0.1 that honours Range."""
from __future__ import annotations

import http.server
import threading

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import _http_open

BODY = bytes(range(256)) * 4096  # 1 MiB


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/f":
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(BODY) - 1, len(BODY)))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(BODY) - start))
        self.end_headers()
        self.wfile.write(BODY[start:])


@pytest.fixture(scope="module")
def url():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def sessions():
    import requests
    out = [pytest.param(requests.Session, id="requests")]
    try:
        import httpx2
        out.append(pytest.param(httpx2.Client, id="httpx2"))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("make", sessions())
@pytest.mark.parametrize("offset", [0, 12345])
def test_get_from_offset(url, make, offset):
    headers = {"Range": "bytes=%d-" % offset} if offset else {}
    with make() as session, _http_open(session, url + "/f", headers) as (resp, chunks):
        assert resp.status_code == (206 if offset else 200)
        got = list(chunks())
    assert b"".join(got) == BODY[offset:]


@pytest.mark.parametrize("make", sessions())
def test_http_error_shows_its_status(url, make):
    with make() as session, _http_open(session, url + "/missing", {}) as (resp, chunks):
        assert resp.status_code == 404  # the callers name it (fetch_located, _location)
