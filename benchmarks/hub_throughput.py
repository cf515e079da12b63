#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cold-sync throughput of model_sync's hub sources against huggingface_hub's own download and
hf_transfer, on a fake Hugging Face hub served from 127.0.0.1.

The fake hub (``--serve``, its own process) answers the routes huggingface_hub calls
(``/api/models/{repo}[/revision/{rev}]``, ``/api/models/{repo}/tree/{rev}``, HEAD / GET
``/{repo}/resolve/{rev}/{file}`` with ``X-Linked-Etag`` / ``X-Linked-Size``), serves Range
(206 + Content-Range) with ``os.sendfile`` from a thread per connection, and can cap each
connection's rate (``--per-connection-mib``, as a CDN does per stream: 25 MiB/s in issue 19).

Every peer runs in its own process on the same files, cold (a fresh, empty destination), in
interleaved rounds (the order rotates every round); the figures are min and median MiB/s and
the client's CPU seconds per GiB (user + system of the peer's process tree, from ``wait4``),
with the load average before and after. Peers that are not installed are skipped and named.

  model_sync          this collection's engine as a host runs it (defaults: files >= 128 MiB in
                      64 MiB ranges over a shared pool of connections, pwrite into the part file,
                      sha256 hashed in file order as the ranges complete, overlapped)
  model_sync-1conn    ``connections: 1``: one GET per file, hashed while it streams
  model_sync-hf_transfer  ``hf_transfer: true``: hf_transfer writes each file of 16 MiB or more
                      (parallel ranges, Rust), then model_sync reads it back whole to hash it
                      (the default before this benchmark, whenever hf_transfer was installed)
  hf_transfer         hf_transfer.download alone, files at a time as the others: no verification
  snapshot_download   huggingface_hub's ``snapshot_download(local_dir=...)`` (hf_hub_download per
                      file, one stream each, ``max_workers`` = concurrency)

    python benchmarks/hub_throughput.py                        # 1 GiB: 4 x 240 MiB + small files
    python benchmarks/hub_throughput.py --per-connection-mib 25 --rounds 3
    python benchmarks/hub_throughput.py --peers model_sync,hf_transfer --large 8 --large-mib 256

hf_transfer holds Python's GIL for the whole of each ``download`` call: the ``hf_transfer`` peer
(a thread per file, as a Python caller would) moves one file at a time, 8 connections each.

On a shared machine run it under the lab lock (``flock /work/lab.lock ...``): it is CPU-heavy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

from _bench import remove_published, rotated, startup_cost, timed_run, tree_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1024 * 1024
GiB = 1024 * MiB
REPO = "bench-org/Bench-1B"
COMMIT = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
TOKEN = "hf_benchTOKENnotasecret"
PEERS = ("model_sync", "model_sync-1conn", "model_sync-hf_transfer", "hf_transfer", "snapshot_download")
SMALL = ["config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
         "tokenizer_config.json", "README.md"]


# ---------------------------------------------------------------------------------------
# the fake hub, in its own process
# ---------------------------------------------------------------------------------------
class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, data, status=200):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = unquote(urlparse(self.path).path)
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self._json({"error": "Invalid credentials"}, 401)
        files = self.server.manifest["files"]
        if path.startswith("/api/models/%s" % REPO):
            tail = path[len("/api/models/%s" % REPO):].strip("/").split("/")
            if tail == [""] or tail[0] == "revision":
                return self._json({"id": REPO, "modelId": REPO, "sha": COMMIT, "private": False, "tags": [],
                                   "siblings": [{"rfilename": p} for p in sorted(files)]})
            if tail[0] == "tree":
                out = []
                for p, f in sorted(files.items()):
                    entry = {"type": "file", "path": p, "size": f["size"], "oid": f["git_sha1"]}
                    if f["lfs"]:
                        entry["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": 134}
                    out.append(entry)
                return self._json(out)
        marker = "/%s/resolve/" % REPO
        if path.startswith(marker):
            name = path[len(marker):].split("/", 1)[1]
            if name in files:
                return self._send_file(name, files[name])
        return self._json({"error": "Entry not found"}, 404)

    def _send_file(self, name, f):
        size = f["size"]
        start, stop, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, dummy, last = rng[6:].partition("-")
            start = int(first or 0)
            stop = min(size, int(last) + 1) if last else size
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"%s"' % f["git_sha1"])
        if f["lfs"]:
            self.send_header("X-Linked-Etag", '"%s"' % f["sha256"])
            self.send_header("X-Linked-Size", str(size))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, stop - 1, size))
        self.end_headers()
        if self.command == "HEAD":
            return
        rate = self.server.rate  # bytes/s for this connection (0: as fast as it goes)
        slice_ = 4 * MiB if not rate else max(64 * 1024, rate // 20)
        sock = self.connection.fileno()
        t0, sent = time.monotonic(), 0
        with open(os.path.join(self.server.repo_dir, name), "rb") as fh:
            pos = start
            while pos < stop:
                n = os.sendfile(sock, fh.fileno(), pos, min(slice_, stop - pos))
                if n == 0:
                    break
                pos += n
                sent += n
                if rate:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)


def serve(args):
    with open(os.path.join(args.repo_dir, "manifest.json")) as fh:
        manifest = json.load(fh)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 128
    httpd.manifest = manifest
    httpd.repo_dir = args.repo_dir
    httpd.rate = int(args.per_connection_mib * MiB)
    sys.stdout.write("http://127.0.0.1:%d\n" % httpd.server_address[1])
    sys.stdout.flush()
    httpd.serve_forever()


def start_server(repo_dir, per_connection_mib):
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", "--repo-dir", repo_dir,
                             "--per-connection-mib", str(per_connection_mib)], stdout=subprocess.PIPE)
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit("the fake hub did not start")
    return proc, url


def make_repo(repo_dir, large, large_mib, small_kib):
    """Shards of random bytes (a 1 MiB block rotated, as benchmarks/sync_throughput.py) and a few
    small files; the manifest holds what the hub lists (sizes, LFS sha256, git blob sha1)."""
    os.makedirs(repo_dir)
    files = {}
    block = os.urandom(MiB)
    for i in range(large):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, large)
        size = large_mib * MiB + 4096 * i + 7
        sha = hashlib.sha256()
        with open(os.path.join(repo_dir, name), "wb") as fh:
            for j in range(size // MiB):
                data = block[j % 7:] + block[:j % 7]
                fh.write(data)
                sha.update(data)
            tail = os.urandom(size % MiB)
            fh.write(tail)
            sha.update(tail)
        files[name] = {"size": size, "sha256": sha.hexdigest(), "lfs": True, "git_sha1": "0" * 40}
    for name in SMALL:
        data = os.urandom(small_kib * 1024 if name == "tokenizer.json" else 900)
        with open(os.path.join(repo_dir, name), "wb") as fh:
            fh.write(data)
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "lfs": False,
                       "git_sha1": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
    with open(os.path.join(repo_dir, "manifest.json"), "w") as fh:
        json.dump({"files": files}, fh)
    return sum(f["size"] for f in files.values())


# ---------------------------------------------------------------------------------------
# one peer, in its own process
# ---------------------------------------------------------------------------------------
def _hf_transfer_installed():
    try:
        import hf_transfer  # noqa: F401
    except ImportError:
        return False
    return True


def run_peer(peer, url, dest, args, work):
    """(seconds, cpu seconds) of one cold sync into the empty ``dest``; None when not installed."""
    if peer in ("model_sync-hf_transfer", "hf_transfer") and not _hf_transfer_installed():
        return None
    env = dict(os.environ, HF_ENDPOINT=url, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=os.path.join(work, "hf-home"),
               HF_TOKEN=TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--as-peer", peer, "--url", url, "--dest", dest,
           "--concurrency", str(args.concurrency)]
    os.makedirs(dest, exist_ok=True)
    wall, cpu, rc, err = timed_run(cmd, env)[:4]
    if rc != 0:
        raise SystemExit("%s failed: %s" % (peer, err[-2000:]))
    for line in err.splitlines():
        if line.startswith("path:"):
            PATHS.add("%s %s" % (peer, line))
    return wall, cpu


PATHS = set()


def as_peer(args):
    """Run inside the peer's own process."""
    if args.as_peer.startswith("model_sync"):
        sys.path.insert(0, ROOT)
        import conftest  # noqa: F401  (puts the collection on sys.path)
        if conftest.COLLECTIONS not in sys.path:
            sys.path.insert(0, conftest.COLLECTIONS)
        from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import SyncEngine
        from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import make_source

        params = {"source": "huggingface", "repo_id": REPO, "endpoint": args.url, "token": TOKEN}
        kwargs = {"concurrency": args.concurrency}
        if args.as_peer == "model_sync-1conn":
            kwargs["connections"] = 1
        elif args.as_peer == "model_sync-hf_transfer":
            params["hf_transfer"] = True
        src = make_source(params)
        res = SyncEngine(src, args.dest, **kwargs).run()
        assert res["files_fetched"] == res["files_total"], res
        sys.stderr.write("path: ranges=%s hf_transfer=%s\n" % (getattr(src, "ranges", None),
                                                               src.hf_transfer is not None))
        return
    if args.as_peer == "snapshot_download":
        from huggingface_hub import snapshot_download

        snapshot_download(REPO, revision="main", local_dir=args.dest, max_workers=args.concurrency, token=TOKEN)
        return
    if args.as_peer == "hf_transfer":
        from concurrent.futures import ThreadPoolExecutor

        import hf_transfer
        from huggingface_hub import HfApi, hf_hub_url

        api = HfApi(endpoint=args.url, token=TOKEN)
        names = [f.path for f in api.list_repo_tree(REPO, revision=COMMIT, recursive=True)]
        headers = {"authorization": "Bearer " + TOKEN}

        def one(name):
            hf_transfer.download(url=hf_hub_url(REPO, name, revision=COMMIT, endpoint=args.url),
                                 filename=os.path.join(args.dest, name), max_files=8, chunk_size=10 * MiB,
                                 headers=headers)
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, names))
        return
    raise SystemExit("unknown peer %s" % args.as_peer)


def mib_rate(text):
    """argparse type: a finite MiB/s of 0 (no cap) or more."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("%r is not a rate in MiB/s (0: no cap)" % (text,))
    return value


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", type=int, default=4, help="large LFS shards (default 4)")
    ap.add_argument("--large-mib", type=int, default=240)
    ap.add_argument("--small-kib", type=int, default=7000, help="size of tokenizer.json (KiB)")
    ap.add_argument("--concurrency", type=int, default=8, help="files at a time, for every peer")
    ap.add_argument("--per-connection-mib", type=mib_rate, default=0,
                    help="cap each connection of the fake hub at this many MiB/s (0: none)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repo-dir", help=argparse.SUPPRESS)
    ap.add_argument("--as-peer", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--dest", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args)
    if args.as_peer:
        return as_peer(args)

    work = tempfile.mkdtemp(prefix="llmfleet-hubbench-")
    server = None
    try:
        load_before = os.getloadavg()
        t = time.perf_counter()
        repo_dir = os.path.join(work, "repo")
        total = make_repo(repo_dir, args.large, args.large_mib, args.small_kib)
        print("fake hub repo: %d x %d MiB LFS shards + %d small files = %.2f GiB, written in %.1f s; "
              "%d CPU(s), load average %s" % (args.large, args.large_mib, len(SMALL), total / GiB,
                                              time.perf_counter() - t, os.cpu_count(),
                                              "/".join("%.1f" % x for x in load_before)))
        t = time.perf_counter()
        server, url = start_server(repo_dir, args.per_connection_mib)
        print("fake hub at %s (own process, thread per connection, sendfile), per-connection cap: %s; "
              "started in %.1f s" % (url, "%g MiB/s" % args.per_connection_mib if args.per_connection_mib
                                     else "none", time.perf_counter() - t))
        start_wall, start_cpu = startup_cost(
            "import sys; sys.path.insert(0, %r); import conftest; sys.path.insert(0, conftest.COLLECTIONS); "
            "from huggingface_hub import HfApi; "
            "from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_sources" % ROOT)
        print("python start + imports (huggingface_hub, the collection; in every figure below): %.2f s, "
              "%.2f CPU s (best of 3)" % (start_wall, start_cpu))
        peers = [p for p in args.peers.split(",") if p]
        figures = dict((p, {"mib_s": [], "cpu_s_per_gib": []}) for p in peers)
        skipped = set()
        for r in range(args.rounds):
            for peer in rotated(peers, r):
                if peer in skipped:
                    continue
                dest = os.path.join(work, "dest-%s-%d" % (peer, r))
                res = run_peer(peer, url, dest, args, work)
                if res is None:
                    skipped.add(peer)
                    continue
                wall, cpu = res
                got = tree_bytes(dest, keep=lambda root, name: ".cache" not in root)
                if got != total:
                    raise SystemExit("%s wrote %d bytes, expected %d" % (peer, got, total))
                figures[peer]["mib_s"].append(total / MiB / wall)
                figures[peer]["cpu_s_per_gib"].append(cpu / (total / GiB))
                figures[peer].setdefault("mib_s_after_start", []).append(total / MiB / max(wall - start_wall, 1e-3))
                figures[peer].setdefault("cpu_after_start", []).append(max(cpu - start_cpu, 0) / (total / GiB))
                print("  round %d %-22s %6.1f s %7.0f MiB/s %6.2f CPU s/GiB" % (
                    r + 1, peer, wall, total / MiB / wall, cpu / (total / GiB)))
                sys.stdout.flush()
                remove_published(dest)
                shutil.rmtree(os.path.join(work, "hf-home"), ignore_errors=True)
        load_after = os.getloadavg()
        print("cold sync of %.2f GiB, %d rounds interleaved, concurrency %d, per-connection cap %s "
              "(load average after: %s):" % (total / GiB, args.rounds, args.concurrency,
                                             "%g MiB/s" % args.per_connection_mib if args.per_connection_mib
                                             else "none", "/".join("%.1f" % x for x in load_after)))
        print("  %-22s %9s %9s %9s   %-10s  %s" % ("peer", "min MiB/s", "median", "max", "CPU s/GiB",
                                                   "(after the Python start-up: median MiB/s, CPU s/GiB)"))
        for peer in peers:
            f = figures[peer]
            if peer in skipped or not f["mib_s"]:
                print("  %-22s not installed, skipped" % peer)
                continue
            print("  %-22s %9.0f %9.0f %9.0f   %-10.2f  (%.0f, %.2f)" % (
                peer, min(f["mib_s"]), statistics.median(f["mib_s"]), max(f["mib_s"]),
                statistics.median(f["cpu_s_per_gib"]), statistics.median(f["mib_s_after_start"]),
                statistics.median(f["cpu_after_start"])))
        for line in sorted(PATHS):
            print("  %s" % line)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"bytes": total, "figures": figures, "load_before": load_before, "load_after": load_after,
                           "per_connection_mib": args.per_connection_mib}, fh, indent=1)
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    threading.stack_size(512 * 1024)
    main()
