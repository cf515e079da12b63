# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: model weight sources for ``model_sync`` (s3, huggingface,
modelscope, peer, local).  Not a public API; it may change without notice.

A source has ``listing() -> (revision, [RemoteFile])``, ``fetch(rf, offset, sink)`` that
streams the bytes of ``rf`` from ``offset`` into ``sink(chunk)`` (or ``batch_fetch`` for
rsync), ``describe()`` (no secret in it) and ``redact(text)``; with ``fetch_range(rf, start,
end, sink)`` (S3, the hubs) the engine fetches large files in parallel ranges.  Client libraries are imported
lazily so that the module can report a missing one with ``missing_required_lib``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from urllib.parse import quote_plus, urljoin, urlparse

from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import (
    ALL_CRCS,
    CHUNK,
    CRC_ALGOS,
    OSS_CRC,
    STATE_NAME,
    RemoteFile,
    SyncError,
    crc_available,
    default_connections,
    load_state,
)

REDACTED = "********"


class BaseSource(object):
    name = "base"

    def __init__(self, secrets=None):
        self.secrets = [s for s in (secrets or []) if s and len(s) >= 4]

    def redact(self, text):
        text = "%s" % (text,)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def describe(self):
        return {"type": self.name}

    def resolve(self, rf):
        """Fill in what verifying ``rf`` needs and listing did not give (S3 part size)."""
        return rf


def _stream_into(chunks, offset_requested, offset_served, sink):
    """Feed ``chunks`` to ``sink``, dropping bytes a server sent before ``offset_requested``
    (a server that ignored the Range header answers 200 from byte 0)."""
    skip = offset_requested - offset_served
    for chunk in chunks:
        if not chunk:
            continue
        if skip > 0:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk = chunk[skip:]
            skip = 0
        sink(chunk)


# ---------------------------------------------------------------------------------------
# ranged GETs for the hubs: the redirect resolved once per file, the token kept on the endpoint
# ---------------------------------------------------------------------------------------
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_REDIRECTS = 10


def _origin(url):
    parsed = urlparse(url)
    return (parsed.scheme, (parsed.hostname or "").lower(), parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0))


def _norm_etag(value):
    """``W/"abc"`` / ``"abc"`` -> ``abc`` (None when absent)."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"').lower() or None


_CREDENTIAL_HEADERS = ("authorization", "cookie")


@contextlib.contextmanager
def _http_open(session, url, headers, timeout=60):
    """One GET (redirects not followed) with a requests- or httpx-like session; yields
    ``(response, iter_chunks)``; the connection is released (or dropped) on exit."""
    if callable(getattr(session, "stream", None)):  # httpx / httpx2 (huggingface_hub >= 1.0)
        with session.stream("GET", url, headers=headers, follow_redirects=False, timeout=timeout) as resp:
            yield resp, lambda: resp.iter_bytes(CHUNK)
        return
    resp = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=False)
    try:
        yield resp, lambda: resp.iter_content(CHUNK)
    finally:
        resp.close()


class _RawHttp(object):
    """Keep-alive ``http.client`` connections, one per thread and origin, for the bulk bytes of
    the ranged GETs: about 0.25 CPU seconds a GiB where httpx (huggingface_hub >= 1.0) costs
    about 2 (benchmarks/hub_throughput.py).  Where a proxy applies to the URL (``HTTPS_PROXY``,
    ``NO_PROXY``...) the library's own session is used instead."""

    def __init__(self, timeout=60):
        self.timeout = timeout
        self.local = threading.local()
        self.context = None
        self.lock = threading.Lock()

    def _ssl_context(self):
        """The system's CAs plus certifi's (what httpx and requests trust), or the bundle named
        by ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``."""
        import ssl

        with self.lock:
            if self.context is None:
                cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
                context = ssl.create_default_context(cafile=cafile or None)
                if not cafile:
                    try:
                        import certifi
                        context.load_verify_locations(certifi.where())
                    except (ImportError, OSError, ssl.SSLError):
                        pass
                self.context = context
            return self.context

    @staticmethod
    def proxied(url):
        from urllib.request import getproxies, proxy_bypass

        parsed = urlparse(url)
        proxies = getproxies()
        return bool(proxies.get(parsed.scheme) or proxies.get("all")) and not proxy_bypass(parsed.hostname or "")

    def _connection(self, origin):
        import http.client

        pool = getattr(self.local, "pool", None)
        if pool is None:
            pool = self.local.pool = {}
        conn = pool.get(origin)
        if conn is None:
            scheme, host, port = origin
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl_context())
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            pool[origin] = conn
        return conn

    def _drop(self, origin):
        conn = self.local.pool.pop(origin, None)
        if conn is not None:
            conn.close()

    @contextlib.contextmanager
    def open(self, url, headers):
        parsed = urlparse(url)
        origin = _origin(url)
        target = parsed.path or "/"
        if parsed.query:
            target += "?" + parsed.query
        for attempt in (0, 1):  # a kept-alive connection the server has closed meanwhile: once more
            conn = self._connection(origin)
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                break
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):  # RemoteDisconnected too
                self._drop(origin)
                if attempt:
                    raise
            except Exception:
                self._drop(origin)
                raise
        resp.status_code = resp.status
        done = [False]

        def chunks():
            while True:
                block = resp.read(CHUNK)
                if not block:
                    done[0] = True
                    return
                yield block
        try:
            yield resp, chunks
        finally:
            if not done[0]:
                if resp.length is not None and resp.length <= 65536:  # a redirect's or a probe's body
                    try:
                        resp.read()
                    except Exception:
                        self._drop(origin)
                else:  # a body left unread: the connection cannot be reused
                    self._drop(origin)


class _Location(object):
    """Where the ranges of one file come from: the URL at the end of the redirects (a CDN or
    xet bridge on the real hub), the headers to send there (credentials only to the endpoint's
    own origin) and the ETag the first answer carried (every later range must carry the same)."""

    def __init__(self, url, headers, etag, ranged=True):
        self.url, self.headers, self.etag, self.ranged = url, headers, etag, ranged


class _RangedHub(object):
    """Mixin: ``fetch_range`` over HTTP Range for a hub source.  The source provides
    ``endpoint``, ``_session()``, ``_url_headers(rf)``, ``_check_pin(rf, response)``, ``name``
    and ``redact``.  Set ``ranges = False`` to have the engine stream each file instead."""

    ranges = True
    label = "hub"

    def _init_ranges(self):
        self._raw = _RawHttp()
        self._locations = {}
        self._locations_lock = threading.Lock()
        self._file_locks = {}

    def _open(self, url, headers):
        if self._raw.proxied(url):
            return _http_open(self._session(), url, headers)
        return self._raw.open(url, headers)

    def _file_lock(self, rf):
        with self._locations_lock:
            return self._file_locks.setdefault(rf.path, threading.Lock())

    def _strip_credentials(self, headers):
        return dict((k, v) for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS)

    def _location(self, rf, refresh=False):
        """Follow the redirects of ``rf``'s download URL once (a 1-byte ranged GET: it also shows
        whether the final server honours Range), check the version the hub answers against the
        listing, and keep the result for every range of the file."""
        with self._file_lock(rf):
            loc = self._locations.get(rf.path)
            if loc is not None and not refresh:
                return loc
            url, headers = self._url_headers(rf)
            headers = dict(headers)
            headers["Accept-Encoding"] = "identity"
            home = _origin(self.endpoint)
            for _hop in range(_MAX_REDIRECTS):
                if _origin(url) != home:  # a CDN, a storage bucket, another mirror: no token there
                    headers = self._strip_credentials(headers)
                probe = dict(headers, Range="bytes=0-0")
                with self._open(url, probe) as (resp, _chunks):
                    status = resp.status_code
                    self._check_pin(rf, resp.headers, url)
                    if status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if status in (401, 403):
                        raise SyncError("%s %s refused access to %s (HTTP %d): check the token" % (
                            self.label, self.endpoint, rf.path, status))
                    if status >= 400:
                        raise SyncError("GET %s for %s answered HTTP %d" % (
                            self.redact(url.split("?")[0]), rf.path, status))
                    if status != 206:  # it ignores Range: fetch_range refuses, whole-file paths go on
                        loc = _Location(url, headers, _norm_etag(resp.headers.get("ETag")), ranged=False)
                        self._locations[rf.path] = loc
                        return loc
                    total = _content_range_total(resp.headers.get("Content-Range"))
                    if total is not None and total != rf.size:
                        raise SyncError("%s: the server holds %d bytes, the listing says %d: the file "
                                        "changed since the listing; run again" % (rf.path, total, rf.size))
                    loc = _Location(url, headers, _norm_etag(resp.headers.get("ETag")))
                    self._locations[rf.path] = loc
                    return loc
            raise SyncError("%s: more than %d redirects from %s" % (rf.path, _MAX_REDIRECTS, self.endpoint))

    def forget(self, rf):
        with self._locations_lock:
            self._locations.pop(rf.path, None)

    def fetch_range(self, rf, start, end, sink):
        """Bytes ``start`` to ``end - 1`` of ``rf``: one GET with ``Range`` to the URL resolved
        once for the file; the answer must be a 206 for exactly that range, of the same ETag."""
        loc = self._location(rf)
        if not loc.ranged:
            self.ranges = False  # the engine streams this and later files in one GET each
            raise SyncError("%s: %s answered a Range request with the whole file (not 206): it does not "
                            "serve ranges; fetching one stream per file instead" % (
                                rf.path, self.redact(loc.url.split("?")[0])))
        for again in (False, True):
            headers = dict(loc.headers, Range="bytes=%d-%d" % (start, end - 1))
            try:
                with self._open(loc.url, headers) as (resp, chunks):
                    status = resp.status_code
                    if status in (401, 403, 404, 410) and not again and _origin(loc.url) != _origin(self.endpoint):
                        pass  # a signed CDN URL expired: resolve again, once
                    else:
                        self._check_range(rf, loc, resp, status, start, end)
                        left = end - start
                        for chunk in chunks():
                            if not chunk:
                                continue
                            if len(chunk) > left:
                                raise SyncError("%s: range %d-%d answered more bytes than asked" % (
                                    rf.path, start, end - 1))
                            left -= len(chunk)
                            sink(chunk)
                        return
            except SyncError:
                raise
            except Exception as exc:  # network errors: the engine retries the range
                raise SyncError("%s: range %d-%d: %s" % (rf.path, start, end - 1, self.redact(exc)))
            loc = self._location(rf, refresh=True)

    def fetch_located(self, rf, offset, sink):
        """The bytes of ``rf`` from ``offset`` in one GET to the URL resolved for the file (the
        streamed path: small files, ``connections: 1``), over the same cheap connections."""
        loc = self._location(rf)
        headers = dict(loc.headers)
        if offset and loc.ranged:
            headers["Range"] = "bytes=%d-" % offset
        try:
            with self._open(loc.url, headers) as (resp, chunks):
                status = resp.status_code
                if status >= 300:
                    self.forget(rf)  # a signed URL may have expired: the next attempt resolves again
                    raise SyncError("%s: GET %s answered HTTP %d" % (
                        rf.path, self.redact(loc.url.split("?")[0]), status))
                served = 0
                if status == 206:
                    match = re.match(r"^\s*bytes\s+(\d+)-", resp.headers.get("Content-Range") or "")
                    served = int(match.group(1)) if match else -1
                    if served != offset:
                        raise SyncError("%s: asked for bytes from %d, the server answered Content-Range %r" % (
                            rf.path, offset, resp.headers.get("Content-Range")))
                etag = _norm_etag(resp.headers.get("ETag"))
                if loc.etag and etag and etag != loc.etag:
                    self.forget(rf)
                    raise SyncError("%s changed on the server while it was being fetched (ETag %s, then %s): "
                                    "refusing to mix versions; run again" % (rf.path, loc.etag, etag))
                _stream_into(chunks(), offset, served, sink)
        except SyncError:
            raise
        except Exception as exc:  # network errors: the engine retries, from what is kept
            raise SyncError("%s: %s" % (rf.path, self.redact(exc)))

    def _check_range(self, rf, loc, resp, status, start, end):
        where = self.redact(loc.url.split("?")[0])
        if status == 200:
            self.ranges = False
            raise SyncError("%s: %s answered HTTP 200 (the whole file), not 206, to a Range request; "
                            "fetching one stream per file instead" % (rf.path, where))
        if status != 206:
            raise SyncError("%s: range %d-%d from %s answered HTTP %d" % (rf.path, start, end - 1, where, status))
        got = resp.headers.get("Content-Range") or ""
        match = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", got)
        if not match or int(match.group(1)) != start or int(match.group(2)) != end - 1 \
                or match.group(3) not in ("*", str(rf.size)):
            raise SyncError("%s: asked for bytes %d-%d of %d, %s answered Content-Range %r" % (
                rf.path, start, end - 1, rf.size, where, got))
        length = resp.headers.get("Content-Length")
        if length is not None and int(length) != end - start:
            raise SyncError("%s: range %d-%d answered Content-Length %s" % (rf.path, start, end - 1, length))
        etag = _norm_etag(resp.headers.get("ETag"))
        if loc.etag and etag and etag != loc.etag:
            self.forget(rf)
            raise SyncError("%s changed on the server while it was being fetched (ETag %s, then %s): "
                            "refusing to mix versions; run again" % (rf.path, loc.etag, etag))


def _content_range_total(value):
    match = re.match(r"^\s*bytes\s+\d+-\d+/(\d+)\s*$", value or "")
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------
# S3 (AWS, MinIO, Alibaba OSS through its S3-compatible endpoint, any S3 API)
# ---------------------------------------------------------------------------------------
_S3_AUTH_CODES = {
    "InvalidAccessKeyId": "the access key id is not known to the endpoint",
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "AccessDenied": "access denied for these credentials",
    "InvalidToken": "the session token is invalid",
    "ExpiredToken": "the session token has expired",
    "InvalidSecurity": "the security token is invalid",
    "AuthorizationHeaderMalformed": "the authorization header is malformed (check region)",
    "403": "access denied for these credentials",
}


def oss_crc64(head):
    """Alibaba OSS's ``x-oss-hash-crc64ecma`` (an unsigned decimal) from a HEAD's response
    headers, as 16 hex digits; ``None`` when absent (objects older than OSS's CRC support, other
    stores) or not a 64-bit unsigned number."""
    headers = (head.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    value = str(headers.get("x-oss-hash-crc64ecma", "")).strip()
    if not re.match(r"^[0-9]{1,20}$", value) or int(value) >= 1 << 64:  # ASCII digits only
        return None
    return "%016x" % int(value)


class S3Source(BaseSource):
    name = "s3"

    def __init__(self, bucket, prefix="", endpoint_url=None, region=None, addressing_style="auto",
                 access_key=None, secret_key=None, session_token=None, profile=None,
                 multipart_part_size=0, concurrency=8, connections=0):
        super(S3Source, self).__init__([access_key, secret_key, session_token])
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = (prefix or "").lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.endpoint_url = endpoint_url
        self.region = region
        self.addressing_style = addressing_style or "auto"
        self.multipart_part_size = int(multipart_part_size or 0)
        self._credentials = {"access_key": access_key, "secret_key": secret_key, "session_token": session_token}
        self.profile = profile
        kwargs = {"s3": {"addressing_style": self.addressing_style},
                  # file streams + ranged GETs + listing / HEADs
                  "max_pool_connections": int(concurrency) + (int(connections or 0) or default_connections()) + 4,
                  "retries": {"max_attempts": 5, "mode": "standard"},
                  "signature_version": "s3v4"}
        try:  # botocore >= 1.36 adds CRC checksums that S3-compatible stores may reject
            config = Config(request_checksum_calculation="when_required",
                            response_checksum_validation="when_required", **kwargs)
        except TypeError:
            config = Config(**kwargs)
        session = boto3.session.Session(
            aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
            aws_session_token=session_token or None, profile_name=profile or None)
        self.client = session.client("s3", endpoint_url=endpoint_url or None,
                                     region_name=region or None, config=config)

    def describe(self):
        return {"type": self.name, "bucket": self.bucket, "prefix": self.prefix,
                "endpoint_url": self.endpoint_url, "region": self.region}

    def _where(self):
        return "s3://%s/%s at %s" % (self.bucket, self.prefix, self.endpoint_url or "the default AWS endpoint")

    def translate(self, exc):
        """Turn a botocore exception into a SyncError without any secret in it."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return SyncError("no S3 credentials found for %s: set access_key and secret_key "
                             "(or a profile / instance role)" % self._where())
        if isinstance(exc, EndpointConnectionError):
            return SyncError("cannot reach the S3 endpoint for %s: %s" % (self._where(), self.redact(exc)))
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            if code in _S3_AUTH_CODES:
                return SyncError("S3 credentials rejected for %s (%s: %s); check access_key / "
                                 "secret_key / session_token / profile" % (
                                     self._where(), code, _S3_AUTH_CODES[code]))
            if code in ("NoSuchBucket", "404"):
                return SyncError("bucket %r not found at %s" % (self.bucket, self.endpoint_url or "AWS"))
            if code in ("PreconditionFailed", "412"):
                return SyncError("an object changed on %s while it was being fetched; run again" % self._where())
            return SyncError("S3 error on %s: %s %s" % (self._where(), code, self.redact(err.get("Message", ""))))
        return SyncError(self.redact(exc))

    def listing(self):
        files = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue
                    rel = key[len(self.prefix):]
                    listed = obj.get("ETag", "").strip('"')
                    etag = listed.lower()
                    # If-Match sends the ETag as the store wrote it (OSS writes upper case hex)
                    meta = {"key": key, "etag": listed}
                    if re.match(r"^[0-9a-f]{32}-\d+$", etag):
                        algo, part_size = "s3-multipart", self.multipart_part_size or None
                    elif re.match(r"^[0-9a-f]{32}$", etag):
                        algo, part_size = "md5", None
                    else:  # SSE-KMS / SSE-C objects: the ETag is not an md5
                        algo, part_size = "none", None
                    files.append(RemoteFile(rel, obj["Size"], algo, etag if algo != "none" else None,
                                            part_size, version=etag, meta=meta))
        except Exception as exc:
            raise self.translate(exc)
        if not files:
            raise SyncError("no object found under %s" % self._where())
        return None, files

    def resolve(self, rf):
        """Before the first byte (in parallel, for the files to fetch or re-hash only): use the
        object's full-object CRC (S3 additional checksums: CRC64NVME, CRC32C, CRC32; many GB/s
        to verify) when the store has one, else find the part size of a multipart object
        (HEAD partNumber=1) to recompute its ETag (md5, about 0.5-0.8 GB/s a core)."""
        if rf.meta.get("resolved"):
            return rf
        rf.meta["resolved"] = True
        if any(crc_available(a) for a in ALL_CRCS):
            pin = {"IfMatch": '"%s"' % rf.meta["etag"]} if rf.meta.get("etag") else {}
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=rf.meta["key"], ChecksumMode="ENABLED", **pin)
            except Exception:
                try:  # a store that refuses the checksum mode header still answers a plain HEAD
                    head = self.client.head_object(Bucket=self.bucket, Key=rf.meta["key"], **pin)
                except Exception:
                    head = {}
            # a single-part object's checksum is of the whole object; a multipart one's only when the
            # store says FULL_OBJECT (else it is a checksum of part checksums)
            kind = str(head.get("ChecksumType") or ("COMPOSITE" if rf.algo == "s3-multipart" else "FULL_OBJECT"))
            kind = kind.upper()
            for algo in CRC_ALGOS:
                value = head.get("Checksum" + algo.upper())
                if value and kind == "FULL_OBJECT" and crc_available(algo) and "-" not in value:
                    try:
                        raw = base64.b64decode(value)
                    except ValueError:
                        continue
                    rf.meta["md5_etag"] = (rf.algo, rf.digest)
                    rf.algo, rf.digest, rf.part_size = algo, raw.hex(), None
                    return rf
            oss = oss_crc64(head)
            if oss is not None and crc_available(OSS_CRC):
                # Alibaba OSS: the whole object's CRC-64/XZ, for every upload method (its ETag is an
                # md5 only for PutObject), about 20 GB/s a core to check against 0.5-0.8 for md5
                rf.meta["md5_etag"] = (rf.algo, rf.digest)
                rf.algo, rf.digest, rf.part_size = OSS_CRC, oss, None
                return rf
        if rf.algo != "s3-multipart" or rf.part_size:
            return rf
        parts = int(rf.digest.rsplit("-", 1)[1])
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=rf.meta["key"], PartNumber=1)
            part_size = int(head["ContentLength"])
        except Exception:
            part_size = 0
        if part_size and -(-rf.size // part_size) == parts:
            rf.part_size = part_size
        else:  # cannot recompute: size checks only, sha256 recorded (documented)
            rf.algo = "etag-multipart"
        return rf

    def needs_resolve(self, rf):
        return not rf.meta.get("resolved")

    def bulk_mover(self, binary, files_at_once, parts_per_file, part_size):
        """``(S5cmdRun, None)`` to move this source's bytes with s5cmd, or ``(None, why not)``."""
        from ansible_collections.llmfleet.serving.plugins.module_utils._sync_s5cmd import S5cmdRun

        if self.addressing_style == "virtual" and self.endpoint_url:
            return None, "addressing_style=virtual with endpoint_url (s5cmd uses path style there)"
        return S5cmdRun(binary, self.bucket, self.endpoint_url, self.region or self.client.meta.region_name,
                        self._credentials if self._credentials.get("access_key") else None, self.profile,
                        files_at_once, parts_per_file, part_size, self.redact), None

    def fetch_range(self, rf, start, end, sink):
        """Bytes ``start`` to ``end - 1`` of ``rf`` (one ranged GET, pinned to the listed ETag)."""
        kwargs = {"Bucket": self.bucket, "Key": rf.meta["key"], "Range": "bytes=%d-%d" % (start, end - 1)}
        if rf.meta.get("etag"):
            kwargs["IfMatch"] = '"%s"' % rf.meta["etag"]
        try:
            resp = self.client.get_object(**kwargs)
        except Exception as exc:
            raise self.translate(exc)
        body = resp["Body"]
        ranged = "ContentRange" in resp or resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 206
        left = [end - start]

        def bounded(data):
            if left[0] <= 0:
                return
            data = data[:left[0]]
            left[0] -= len(data)
            sink(data)
        try:
            _stream_into(body.iter_chunks(CHUNK), start, start if ranged else 0, bounded)
        finally:
            body.close()

    def fetch(self, rf, offset, sink):
        kwargs = {"Bucket": self.bucket, "Key": rf.meta["key"]}
        if rf.meta.get("etag"):
            kwargs["IfMatch"] = '"%s"' % rf.meta["etag"]
        if offset:
            kwargs["Range"] = "bytes=%d-" % offset
        try:
            resp = self.client.get_object(**kwargs)
        except Exception as exc:
            raise self.translate(exc)
        body = resp["Body"]
        served = offset if "ContentRange" in resp or resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 206 else 0
        try:
            _stream_into(body.iter_chunks(CHUNK), offset, served, sink)
        finally:
            body.close()


# ---------------------------------------------------------------------------------------
# Hugging Face (huggingface_hub; HF_ENDPOINT mirrors; hf_transfer when asked for and installed)
# ---------------------------------------------------------------------------------------
class HuggingFaceSource(_RangedHub, BaseSource):
    name = "huggingface"
    label = "Hugging Face"

    def __init__(self, repo_id, revision=None, endpoint=None, token=None, use_hf_transfer=None):
        super(HuggingFaceSource, self).__init__([token])
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self.revision = revision or "main"
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self.token = token or None
        self.api = HfApi(endpoint=self.endpoint, token=self.token)
        self.commit = None
        self._init_ranges()
        # Large files: the ranged engine (fetch_range) unless hf_transfer is asked for
        # (use_hf_transfer=True, and installed): then hf_transfer writes each file of 16 MiB or
        # more whole, read back once to hash. benchmarks/hub_throughput.py: the ranged engine
        # moved the bytes faster with less CPU, and hf_transfer holds the GIL for a whole file.
        self.hf_transfer = None
        if use_hf_transfer:
            try:
                import hf_transfer  # noqa: F401
                self.hf_transfer = hf_transfer
                self.ranges = False
            except ImportError:
                pass

    def describe(self):
        return {"type": self.name, "repo_id": self.repo_id, "revision": self.revision,
                "endpoint": self.endpoint}

    def translate(self, exc):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        text = self.redact(exc)
        if status in (401, 403):
            return SyncError("Hugging Face %s refused access to %s (HTTP %d): check the token, and that "
                             "the license of a gated model was accepted" % (self.endpoint, self.repo_id, status))
        if status == 404:
            return SyncError("%s (revision %s) not found on %s" % (self.repo_id, self.revision, self.endpoint))
        return SyncError("Hugging Face error for %s on %s: %s" % (self.repo_id, self.endpoint, text))

    def listing(self):
        try:
            info = self.api.model_info(self.repo_id, revision=self.revision)
            self.commit = info.sha or self.revision
            tree = list(self.api.list_repo_tree(self.repo_id, revision=self.commit, recursive=True))
        except SyncError:
            raise
        except Exception as exc:
            raise self.translate(exc)
        files = []
        for item in tree:
            if not hasattr(item, "blob_id") or getattr(item, "size", None) is None:
                continue  # folders
            lfs = getattr(item, "lfs", None)
            if lfs is not None:
                sha = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
                files.append(RemoteFile(item.path, item.size, "sha256", sha, version=sha))
            else:
                files.append(RemoteFile(item.path, item.size, "git-sha1", item.blob_id, version=item.blob_id))
        return self.commit, files

    def _url_headers(self, rf):
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(self.repo_id, rf.path, revision=self.commit or self.revision, endpoint=self.endpoint)
        return url, build_hf_headers(token=self.token)

    def _session(self):
        from huggingface_hub.utils import get_session

        return get_session()

    def _check_pin(self, rf, headers, url):
        """The hub's own answer names the version it serves: X-Linked-Etag (LFS: the sha256
        oid) or ETag (git blob sha1).  A mismatch with the listing is refused."""
        if _origin(url) != _origin(self.endpoint):
            return
        served = _norm_etag(headers.get("X-Linked-Etag") or headers.get("ETag"))
        expect = rf.digest if rf.algo in ("sha256", "git-sha1") else None
        if not served or not expect or len(served) != len(expect) or not re.match(r"^[0-9a-f]+$", served):
            return
        if served != expect.lower():
            raise SyncError("%s: the hub serves version %s, the listing of commit %s says %s: refusing to "
                            "mix versions; run again" % (rf.path, served, self.commit or self.revision, expect))

    def fetch_to_file(self, rf, part, callback):
        """Whole-file download through hf_transfer (parallel ranges); False when not in use."""
        if self.hf_transfer is None or rf.size < 16 * CHUNK:
            return False
        loc = self._location(rf)  # the redirect resolved here: no token to another host
        if not loc.ranged:  # hf_transfer needs ranges: stream it in Python instead
            return False
        url, headers = loc.url, loc.headers
        try:
            self.hf_transfer.download(url=url, filename=part, max_files=8, chunk_size=10 * CHUNK,
                                      headers=headers, callback=callback)
        except Exception as exc:
            raise SyncError("hf_transfer download of %s failed: %s" % (rf.path, self.redact(exc)))
        return True

    def fetch(self, rf, offset, sink):
        self.fetch_located(rf, offset, sink)


# ---------------------------------------------------------------------------------------
# ModelScope (the modelscope package; MODELSCOPE_ENDPOINT)
# ---------------------------------------------------------------------------------------
class ModelScopeSource(_RangedHub, BaseSource):
    name = "modelscope"
    label = "ModelScope"

    def __init__(self, repo_id, revision=None, endpoint=None, token=None):
        super(ModelScopeSource, self).__init__([token])
        self.repo_id = repo_id
        self.revision = revision or "master"
        if endpoint:
            os.environ["MODELSCOPE_ENDPOINT"] = endpoint.rstrip("/")
        self.endpoint = os.environ.get("MODELSCOPE_ENDPOINT", "https://www.modelscope.cn").rstrip("/")
        self.token = token or None
        self.lock = threading.Lock()
        self._init_ranges()
        self._http = None
        try:  # modelscope >= 1.3x delegates to modelscope_hub
            from modelscope_hub import HubApi as NewApi
            self.api = NewApi(endpoint=self.endpoint, token=self.token)
            self.new = True
        except ImportError:
            from modelscope.hub.api import HubApi as OldApi
            self.api = OldApi(endpoint=self.endpoint)  # the old API reads MODELSCOPE_DOMAIN, not _ENDPOINT
            if self.token:
                self.api.login(self.token)
            self.new = False

    def describe(self):
        return {"type": self.name, "repo_id": self.repo_id, "revision": self.revision,
                "endpoint": self.endpoint}

    def translate(self, exc):
        text = self.redact(exc)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403) or "401" in text or "403" in text:
            return SyncError("ModelScope %s refused access to %s: check the token" % (self.endpoint, self.repo_id))
        return SyncError("ModelScope error for %s on %s: %s" % (self.repo_id, self.endpoint, text))

    def listing(self):
        files = []
        try:
            if self.new:
                for f in self.api.list_repo_files(self.repo_id, "model", revision=self.revision, recursive=True):
                    if getattr(f, "type", "blob") == "tree" or not f.path:
                        continue
                    files.append((f.path, f.size, f.sha256))
            else:
                for f in self.api.get_model_files(self.repo_id, revision=self.revision, recursive=True):
                    if f.get("Type") == "tree":
                        continue
                    files.append((f["Path"], f["Size"], f.get("Sha256")))
        except Exception as exc:
            raise self.translate(exc)
        out = []
        for path, size, sha in files:
            out.append(RemoteFile(path, size, "sha256" if sha else "none", sha or None,
                                  version=sha or "%s:%s" % (self.revision, size)))
        return self.revision, out

    def _session(self):
        with self.lock:
            if self._http is None:
                import requests
                from requests.adapters import HTTPAdapter

                session = requests.Session()
                adapter = HTTPAdapter(pool_connections=4, pool_maxsize=128)  # one per ranged connection
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                self._http = session
            return self._http

    def _url_headers(self, rf):
        url = "%s/api/v1/models/%s/repo?Revision=%s&FilePath=%s" % (
            self.endpoint, self.repo_id, quote_plus(self.revision), quote_plus(rf.path))
        headers = {}
        if self.token:  # both, as modelscope_hub sends them; never beyond the endpoint's origin
            headers["Authorization"] = "Bearer %s" % self.token
            headers["Cookie"] = "m_session_id=%s" % self.token
        return url, headers

    def _check_pin(self, rf, headers, url):
        """ModelScope names no version on a download answer: the ETag of the first range is
        pinned for the others, and the sha256 of the whole file is checked against the listing."""
        return

    def fetch(self, rf, offset, sink):
        headers = {"Range": "bytes=%d-" % offset} if offset else {}
        try:
            if self.new:
                resp = self.api.legacy.download_stream(self.repo_id, "model", rf.path, self.revision, headers=headers)
            else:
                import requests
                from modelscope.hub.file_download import get_file_download_url
                url = get_file_download_url(self.repo_id, rf.path, self.revision, endpoint=self.endpoint)
                cookies = self.api.get_cookies() if hasattr(self.api, "get_cookies") else None
                resp = requests.get(url, headers=headers, cookies=cookies, stream=True, timeout=60)
                if resp.status_code >= 400:
                    raise SyncError("GET %s answered HTTP %d" % (url.split("?")[0], resp.status_code))
            try:
                served = offset if resp.status_code == 206 else 0
                _stream_into(resp.iter_content(CHUNK), offset, served, sink)
            finally:
                resp.close()
        except SyncError:
            raise
        except Exception as exc:
            raise self.translate(exc)


# ---------------------------------------------------------------------------------------
# local directory and peer (rsync over SSH from a host that has a verified copy)
# ---------------------------------------------------------------------------------------
class LocalSource(BaseSource):
    """A directory on the host.  When it holds a state file (a copy published by model_sync),
    its recorded hashes are used; otherwise files are compared by size and mtime and the
    sha256 computed during the copy is recorded."""

    name = "local"

    def __init__(self, src_path):
        super(LocalSource, self).__init__()
        self.src = os.path.abspath(src_path)

    def describe(self):
        return {"type": self.name, "src_path": self.src}

    def listing(self):
        if not os.path.isdir(self.src):
            raise SyncError("local source %s is not a directory on this host: set src_path "
                            "(model_weights_src_path in the model_weights role) to the folder that holds "
                            "the model here, or use another source" % self.src)
        state = load_state(os.path.join(self.src, STATE_NAME))
        entries = state.get("files", {})
        files = []
        for root, dirs, names in os.walk(self.src):
            dirs[:] = [d for d in dirs if not d.startswith(".llmfleet")]
            for name in names:
                full = os.path.join(root, name)
                rel = os.path.relpath(full, self.src).replace(os.sep, "/")
                if rel == STATE_NAME or name.endswith(".part"):
                    continue
                st = os.stat(full)
                entry = entries.get(rel)
                if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns \
                        and entry.get("algo") not in (None, "none", "etag-multipart"):
                    algo = entry["algo"]
                    if algo in ALL_CRCS and not crc_available(algo):  # no awscrt / fastcrc here: size, sha256
                        files.append(RemoteFile(rel, st.st_size, "none", None,
                                                version="%d:%d" % (st.st_size, st.st_mtime_ns)))
                        continue
                    files.append(RemoteFile(rel, st.st_size, algo, entry["digest"],
                                            entry.get("part_size"), version=entry["digest"]))
                else:
                    files.append(RemoteFile(rel, st.st_size, "none", None,
                                            version="%d:%d" % (st.st_size, st.st_mtime_ns)))
        return state.get("revision"), files

    def fetch(self, rf, offset, sink):
        with open(os.path.join(self.src, rf.path), "rb") as fh:
            fh.seek(offset)
            while True:
                block = fh.read(CHUNK)
                if not block:
                    break
                sink(block)


class PeerSource(BaseSource):
    """rsync (over SSH when ``host`` is set) from a host whose copy ``model_sync`` verified.

    The peer's state file travels first and is the listing: every file copied is checked
    against the size and hash recorded there.  ``--partial`` keeps interrupted files so that
    the next run continues them; ``--bwlimit`` caps the rate.
    """

    name = "peer"

    def __init__(self, path, host=None, user=None, port=None, ssh_key=None, ssh_command="ssh",
                 ssh_args=None, rsync_path="rsync"):
        super(PeerSource, self).__init__()
        self.path = path.rstrip("/")
        self.host = host
        self.user = user
        self.port = port
        self.ssh_key = ssh_key
        self.ssh_command = ssh_command or "ssh"
        self.ssh_args = list(ssh_args or [])
        self.rsync = shutil.which(rsync_path) or rsync_path
        self.bytes_transferred = 0
        self.revision = None

    def describe(self):
        return {"type": self.name, "host": self.host, "path": self.path}

    def _remote(self, rel=""):
        base = self.path + "/" + rel
        if not self.host:
            return base
        who = "%s@%s" % (self.user, self.host) if self.user else self.host
        return "%s:%s" % (who, base)

    def _base_args(self, bwlimit=0):
        # --protect-args: file names reach the remote rsync as data, not through the remote shell
        args = [self.rsync, "-a", "--protect-args", "--partial", "--partial-dir=.rsync-partial", "--stats"]
        if self.host:
            ssh = [self.ssh_command, "-o", "BatchMode=yes"]
            if os.path.basename(self.ssh_command) == "ssh":
                ssh += ["-o", "StrictHostKeyChecking=accept-new"]
            if self.port:
                ssh += ["-p", str(self.port)]
            if self.ssh_key:
                ssh += ["-i", self.ssh_key]
            ssh += self.ssh_args
            args += ["-e", " ".join(shlex.quote(a) for a in ssh)]
        if bwlimit:
            args.append("--bwlimit=%d" % max(1, bwlimit // 1024))
        return args

    def _run(self, args, what):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SyncError("rsync %s from %s failed (rc=%d): %s" % (
                what, self._remote(), proc.returncode, err.decode("utf-8", "replace").strip()[-2000:]))
        return out.decode("utf-8", "replace")

    def listing(self):
        tmp = tempfile.mkdtemp(prefix="llmfleet-peer-")
        try:
            try:
                self._run(self._base_args() + [self._remote(STATE_NAME), tmp + "/"], "of the state file")
            except SyncError as exc:
                if "No such file or directory" not in str(exc):
                    raise
                raise SyncError("the peer %s holds no model published by model_sync (no %s there): sync the "
                                "peer source first" % (self._remote(), STATE_NAME))
            state = load_state(os.path.join(tmp, STATE_NAME))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not state.get("complete") or not state.get("files"):
            raise SyncError("the peer copy %s is not a complete, verified model (state file %s says "
                            "complete=%s); sync it first" % (self._remote(), STATE_NAME, state.get("complete")))
        self.revision = state.get("revision")
        files = []
        for rel, entry in sorted(state["files"].items()):
            files.append(RemoteFile(rel, entry["size"], entry.get("algo") or "none", entry.get("digest"),
                                    entry.get("part_size"), version=entry.get("version") or entry.get("digest")))
            if files[-1].algo in ("none", "etag-multipart"):
                files[-1].algo = "sha256"  # the recorded digest is the sha256 computed on the peer
            elif files[-1].algo in ALL_CRCS and not crc_available(files[-1].algo):
                # verified on the peer by the store's CRC; this host has no awscrt / fastcrc to
                # recompute it: size checked, sha256 recorded (install them for the CRC check here too)
                files[-1].algo, files[-1].digest = "none", None
        return self.revision, files

    def batch_fetch(self, files, staging, progress, bwlimit=0):
        os.makedirs(staging, exist_ok=True)
        fd, listfile = tempfile.mkstemp(prefix="llmfleet-files-")
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(rf.path for rf in files) + "\n")
        try:
            out = self._run(self._base_args(bwlimit) + ["--files-from=" + listfile, self._remote(), staging + "/"],
                            "of %d file(s)" % len(files))
        finally:
            os.unlink(listfile)
        match = re.search(r"Total transferred file size: ([\d,.]+)", out)
        self.bytes_transferred = int(re.sub(r"[,.]", "", match.group(1))) if match else sum(f.size for f in files)
        progress.add(sum(f.size for f in files))


CREDENTIAL_KEYS = ("access_key", "secret_key", "session_token", "token")


def load_credentials_file(params, remove=True):
    """Fill the secret options of ``params`` from ``params['credentials_file']`` (JSON object,
    mode 0600, owned by this user), then remove the file: the secrets then live only in this
    process, not in the module payload that an async job keeps on disk for hours."""
    path = params.get("credentials_file")
    if not path:
        return params
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SyncError("cannot read credentials_file %s: %s" % (path, exc.strerror))
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise SyncError("credentials_file %s must be owned by this user with mode 0600 (it is %04o): "
                        "it holds secrets" % (path, st.st_mode & 0o7777))
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SyncError("credentials_file %s is not a JSON object with %s: %s" % (
            path, ", ".join(CREDENTIAL_KEYS), type(exc).__name__))
    finally:
        if remove:
            try:
                os.unlink(path)
            except OSError:
                pass
    if not isinstance(data, dict) or set(data) - set(CREDENTIAL_KEYS):
        raise SyncError("credentials_file %s: only the keys %s are allowed" % (path, ", ".join(CREDENTIAL_KEYS)))
    for key, value in data.items():
        if value and not params.get(key):
            params[key] = str(value)
    return params


def make_source(params):
    """Build the source named by ``params['source']`` from module-style parameters."""
    kind = params["source"]
    if kind == "s3":
        if not params.get("bucket"):
            raise SyncError("source=s3 needs bucket")
        return S3Source(params["bucket"], params.get("prefix") or "", params.get("endpoint_url"),
                        params.get("region"), params.get("addressing_style") or "auto",
                        params.get("access_key"), params.get("secret_key"), params.get("session_token"),
                        params.get("profile"), params.get("multipart_part_size") or 0,
                        params.get("concurrency") or 8, params.get("connections") or 0)
    if kind in ("huggingface", "modelscope"):
        if not params.get("repo_id"):
            raise SyncError("source=%s needs repo_id" % kind)
        token = params.get("token")
        if not token and params.get("token_file"):
            try:
                with open(os.path.expanduser(params["token_file"])) as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise SyncError("cannot read token_file %s: %s" % (params["token_file"], exc.strerror))
        if kind == "huggingface":
            return HuggingFaceSource(params["repo_id"], params.get("revision"), params.get("endpoint"), token,
                                     params.get("hf_transfer"))
        return ModelScopeSource(params["repo_id"], params.get("revision"), params.get("endpoint"), token)
    if kind == "peer":
        if not params.get("peer_path"):
            raise SyncError("source=peer needs peer_path")
        return PeerSource(params["peer_path"], params.get("peer_host"), params.get("peer_user"),
                          params.get("peer_port"), params.get("peer_ssh_key"),
                          params.get("peer_ssh_command") or "ssh")
    if kind == "local":
        if not params.get("src_path"):
            raise SyncError("source=local needs src_path")
        return LocalSource(params["src_path"])
    raise SyncError("unknown source %r" % kind)
