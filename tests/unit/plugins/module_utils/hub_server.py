# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Local servers for the model_sync tests, all on 127.0.0.1 with a free port.

* ``HubServer``: the Hugging Face and ModelScope routes their real client libraries call
  (checked against huggingface_hub's ``hf_api.py`` / ``file_download.py`` and
  modelscope_hub's ``_legacy_api.py``):
    HF   GET  /api/models/{repo}[/revision/{rev}]       -> {"id", "sha", "siblings"}
         GET  /api/models/{repo}/tree/{rev}[/{path}]    -> [{"type","path","size","oid","lfs"}]
         HEAD|GET /{repo}/resolve/{rev}/{file}          -> X-Repo-Commit, ETag, X-Linked-Etag,
                                                           X-Linked-Size, Range (206)
    MS   GET  /api/v1/models/{o}/{n}/repo/files?Revision=&Recursive=
                                                        -> {"Code":200,"Data":{"Files":[...]}}
         GET  /api/v1/models/{o}/{n}/repo?Revision=&FilePath=   (Range supported)
  Optional token check (``Authorization: Bearer``), a hook to corrupt a file's bytes, one to
  replace them mid-download (``HubRepo.change``), switches to ignore Range (200), fail ranges
  or answer a wrong Content-Range, and ``cdn``: a ``CdnServer`` (a second 127.0.0.1 server, on
  its own port) that LFS downloads are redirected to, recording which requests carried a token.
* ``start_moto()``: moto's S3 server (``ThreadedMotoServer``) and ``moto_auth()`` to make it
  check credentials.
* ``CutProxy``: a TCP proxy that resets the connection after N response bytes, to cut a
  transfer off mid-file.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubRepo(object):
    """One repository: ``files`` maps a relative path to bytes; files >= lfs_threshold are LFS."""

    def __init__(self, repo_id, files, commit="0123456789abcdef0123456789abcdef01234567", lfs_threshold=1024):
        self.repo_id = repo_id
        self.files = dict(files)
        self.commit = commit
        self.lfs_threshold = lfs_threshold
        self.served = dict.fromkeys(self.files, b"")  # what GET returns (may be corrupted)
        for k, v in self.files.items():
            self.served[k] = v
        self.sha256 = dict((k, hashlib.sha256(v).hexdigest()) for k, v in self.files.items())
        self.etags = {}  # path -> (ETag, X-Linked-Etag) served instead of the listed ones
        # path -> [ranged GETs left, new bytes]: after that many ranged GETs of the file, the
        # server serves the new bytes under their own ETags (a file replaced mid-download)
        self.change = {}
        self.ranged_gets = {}
        self.lock = threading.Lock()

    def is_lfs(self, path):
        return len(self.files[path]) >= self.lfs_threshold

    def etag_pair(self, path):
        """(ETag, X-Linked-Etag or None) that the hub answers for ``path``."""
        if path in self.etags:
            return self.etags[path]
        data = self.files[path]
        return git_blob_sha1(data), (self.sha256[path] if self.is_lfs(path) else None)

    def note_get(self, path, rng):
        """Count a ranged GET (not the 1-byte probe); apply a pending ``change``."""
        if not rng or rng == "bytes=0-0":
            return
        with self.lock:
            self.ranged_gets[path] = self.ranged_gets.get(path, 0) + 1
            pending = self.change.get(path)
            if pending is not None:
                pending[0] -= 1
                if pending[0] < 0:
                    new = pending[1]
                    self.served[path] = new
                    self.etags[path] = (git_blob_sha1(new), hashlib.sha256(new).hexdigest())
                    del self.change[path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # -- helpers ------------------------------------------------------------------------
    def _json(self, data, status=200, headers=None):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status, message="error"):
        self._json({"error": message, "Code": status, "Message": message}, status,
                   {"X-Error-Message": message})

    def _authorized(self):
        token = self.server.token
        if not token:
            return True
        auth = self.headers.get("Authorization", "")
        cookie = self.headers.get("Cookie", "")
        return auth == "Bearer " + token or ("m_session_id=" + token) in cookie

    def _send_bytes(self, data, headers):
        """Serve ``data`` honouring ``Range: bytes=a-[b]`` (206 + Content-Range), unless the
        server is set to ignore Range (200, whole body), to fail ranges from an offset on
        (``fail_from``: HTTP 500), or to shift its Content-Range (``bad_content_range``)."""
        start, stop, status = 0, len(data), 200
        rng = self.headers.get("Range")
        self._record(rng)
        if rng and rng.startswith("bytes=") and not self.server.ignore_range:
            first, dummy, last = rng[6:].partition("-")
            start = int(first or 0)
            stop = min(len(data), int(last) + 1) if last else len(data)
            status = 206
            if self.server.fail_from is not None and start >= self.server.fail_from:
                return self._error(500, "injected failure")
        chunk = data[start:stop]
        self.send_response(status)
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            shift = 1 if self.server.bad_content_range and start else 0
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start + shift, stop - 1 + shift, len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(chunk)
        self.server.requests.append((self.command, self.path, rng))

    def _record(self, rng):
        """Every data request with the credentials it carried (tests check where a token went)."""
        self.server.seen.append({"path": self.path, "range": rng,
                                 "authorization": self.headers.get("Authorization"),
                                 "cookie": self.headers.get("Cookie")})

    def _redirect(self, location, headers):
        self._record(self.headers.get("Range"))
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _repo(self, repo_id):
        return self.server.repos.get(repo_id)

    # -- routes -------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlparse(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        if path.startswith("/api/v1/models/"):
            return self._modelscope(path[len("/api/v1/models/"):], query)
        if path.startswith("/api/models/"):
            return self._hf_api(path[len("/api/models/"):], query)
        if "/resolve/" in path:
            return self._hf_resolve(path.lstrip("/"))
        return self._error(404, "no route %s" % path)

    def _hf_api(self, rest, query):
        parts = rest.split("/")
        repo = self._repo("/".join(parts[:2]))
        if repo is None:
            return self._error(404, "Repository not found")
        tail = parts[2:]
        if not tail or tail[0] == "revision":
            return self._json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
                               "private": False, "tags": [],
                               "siblings": [{"rfilename": p} for p in sorted(repo.files)]})
        if tail[0] == "tree":
            entries = []
            for p in sorted(repo.files):
                data = repo.files[p]
                entry = {"type": "file", "path": p, "size": len(data), "oid": git_blob_sha1(data)}
                if repo.is_lfs(p):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                    "pointerSize": 134}
                entries.append(entry)
            return self._json(entries)
        return self._error(404, "no route")

    def _hf_resolve(self, rest):
        before, after = rest.split("/resolve/", 1)
        repo = self._repo(before)
        if repo is None:
            return self._error(404, "Repository not found")
        rev, fname = after.split("/", 1)
        if fname not in repo.files:
            return self._error(404, "Entry not found")
        data = repo.files[fname]
        if not (repo.is_lfs(fname) and self.server.cdn is not None):
            repo.note_get(fname, self.headers.get("Range"))
        etag, linked = repo.etag_pair(fname)
        headers = {"X-Repo-Commit": repo.commit, "ETag": '"%s"' % etag}
        if repo.is_lfs(fname):
            headers["X-Linked-Etag"] = '"%s"' % linked
            headers["X-Linked-Size"] = str(len(data))
            if self.server.cdn is not None:  # the real hub: 302 to a CDN / xet bridge, signed URL
                return self._redirect(self.server.cdn.publish(repo, fname), headers)
        return self._send_bytes(repo.served[fname], headers)

    def _modelscope(self, rest, query):
        parts = rest.split("/")
        repo = self._repo("/".join(parts[:2]))
        if repo is None:
            return self._json({"Code": 10010205001, "Message": "model not found", "Success": False}, 404)
        tail = "/".join(parts[2:])
        if tail == "repo/files":
            files = [{"Name": p.rsplit("/", 1)[-1], "Path": p, "Size": len(d), "Type": "blob",
                      "Sha256": hashlib.sha256(d).hexdigest(), "Revision": repo.commit,
                      "IsLFS": repo.is_lfs(p), "CommittedDate": 1700000000}
                     for p, d in sorted(repo.files.items())]
            return self._json({"Code": 200, "Data": {"Files": files}, "Message": "success", "Success": True})
        if tail == "repo":
            fname = query.get("FilePath", [""])[0]
            if fname not in repo.files:
                return self._json({"Code": 404, "Message": "file not found", "Success": False}, 404)
            if self.server.cdn is not None and repo.is_lfs(fname):
                return self._redirect(self.server.cdn.publish(repo, fname), {})
            repo.note_get(fname, self.headers.get("Range"))
            return self._send_bytes(repo.served[fname], {"Content-Type": "application/octet-stream",
                                                         "ETag": '"%s"' % repo.etag_pair(fname)[0]})
        if tail in ("", "revisions"):
            return self._json({"Code": 200, "Data": {"Id": 1, "Name": parts[1], "Path": parts[0]},
                               "Success": True})
        return self._error(404, "no route %s" % tail)


class _CdnHandler(_Handler):
    """``/blobs/<n>?sig=...``: the bytes of one published file, no token checked (a signed URL)."""

    def do_GET(self):
        key = urlparse(self.path).path.rsplit("/", 1)[-1]
        blob = self.server.blobs.get(key)
        if blob is None:
            return self._error(404, "no such blob")
        repo, fname = blob
        repo.note_get(fname, self.headers.get("Range"))
        etag = repo.etag_pair(fname)[1] or repo.etag_pair(fname)[0]
        return self._send_bytes(repo.served[fname], {"ETag": '"%s"' % etag})


def _server(handler, bind="127.0.0.1"):
    """A threading server for ``handler`` with every switch the handlers read (the lab tests
    serve the same handlers on their lab gateway: ``bind``)."""
    httpd = ThreadingHTTPServer((bind, 0), handler)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.seen = []
    httpd.ignore_range = False
    httpd.fail_from = None
    httpd.bad_content_range = False
    httpd.cdn = None
    return httpd


class _Serving(object):
    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    @property
    def requests(self):
        return self.httpd.requests

    @property
    def seen(self):
        return self.httpd.seen

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class CdnServer(_Serving):
    """A second server on 127.0.0.1 (its own port: another origin) that a ``HubServer`` with
    ``cdn`` set redirects LFS downloads to, as the real hub does to its CDN or xet bridge."""

    def __init__(self):
        self.httpd = _server(_CdnHandler)
        self.httpd.blobs = {}
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def publish(self, repo, fname):
        key = repo.sha256[fname]
        self.httpd.blobs[key] = (repo, fname)
        return "%s/blobs/%s?sig=signed" % (self.url, key)


class HubServer(_Serving):
    def __init__(self, token=None, cdn=None):
        self.httpd = _server(_Handler)
        self.httpd.repos = {}
        self.httpd.token = token
        self.httpd.cdn = cdn
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, repo):
        self.httpd.repos[repo.repo_id] = repo
        return repo


# ---------------------------------------------------------------------------------------
# S3: moto server, auth switch
# ---------------------------------------------------------------------------------------
def start_moto():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server, "http://127.0.0.1:%d" % server._server.server_port


def moto_auth(endpoint):
    """Create an IAM user allowed s3:*, then make the server check every request's signature.
    Returns (access_key, secret_key); call ``moto_auth_off`` afterwards (process-wide setting)."""
    import boto3
    import requests

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    user = "sync-%s" % uuid.uuid4().hex[:8]  # moto's backends are process-wide
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    requests.post(endpoint + "/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    return key["AccessKeyId"], key["SecretAccessKey"]


def moto_auth_off():
    from moto import settings

    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")


# ---------------------------------------------------------------------------------------
# a proxy that cuts responses off
# ---------------------------------------------------------------------------------------
class CutProxy(object):
    """Forward <bind>:<port> to ``upstream``; while ``cut_after`` is set, the first response
    stream to pass more than that many bytes is reset there (once per arm). ``bind`` is
    loopback for the unit tests; the lab tests bind their lab network's gateway address."""

    def __init__(self, upstream_host, upstream_port, cut_after=None, bind="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.cut_after = cut_after
        self.cuts = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, 0))
        self.sock.listen(64)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://%s:%d" % self.sock.getsockname()[:2]

    def _accept(self):
        while self.running:
            try:
                client, dummy = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, is_response):
        passed = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if is_response and self.cut_after is not None and passed + len(data) > self.cut_after:
                    with self.lock:
                        armed = self.cut_after is not None
                        limit = self.cut_after
                        self.cut_after = None
                        if armed:
                            self.cuts += 1
                    if armed:
                        dst.sendall(data[:max(0, limit - passed)])
                        self.shut(dst, src)  # shutdown wakes the other pipe thread at once
                        dst.close()
                        src.close()
                        return
                passed += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self.shut(src, dst)

    @staticmethod
    def shut(*socks):
        """Shut both directions of each socket (the pipe thread reading it wakes at once)."""
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.running = False
        self.sock.close()
