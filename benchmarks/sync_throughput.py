#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""model_sync throughput and no-op re-run time, against moto's S3 server on 127.0.0.1.

1. Cold sync: the same objects fetched (a) by boto3's own transfer manager (``download_file``
   per object, ``concurrency`` objects at a time, each with max_concurrency=1 so the total
   number of connections is the same) and (b) by model_sync's engine (``concurrency`` files
   at a time, hashing and verifying as it writes).  Reported as MiB/s and the ratio b/a.
2. No-op re-run over a synthetic DeepSeek-R1-shaped model: 163 small shards named like R1's
   plus its config/tokenizer files; the second run must only list and stat.

    python benchmarks/sync_throughput.py [--files 16 --size-mib 8 --concurrency 8 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "unit", "plugins", "module_utils"))
import conftest  # noqa: E402  (puts the collection on sys.path)

if conftest.COLLECTIONS not in sys.path:  # conftest puts it there when first imported
    sys.path.insert(0, conftest.COLLECTIONS)

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from hub_server import start_moto  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import SyncEngine  # noqa: E402
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import S3Source  # noqa: E402

MiB = 1024 * 1024
R1_EXTRA = ["config.json", "configuration_deepseek.py", "generation_config.json", "model.safetensors.index.json",
            "modeling_deepseek.py", "tokenizer.json", "tokenizer_config.json", "LICENSE", "README.md"]


def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench")


def boto3_download(endpoint, bucket, keys, dest, concurrency):
    c = client(endpoint)
    cfg = TransferConfig(max_concurrency=1, multipart_threshold=8 * 1024 * MiB, use_threads=False)
    os.makedirs(dest, exist_ok=True)
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda k: c.download_file(bucket, k, os.path.join(dest, k.rsplit("/", 1)[-1]), Config=cfg),
                      keys))


def start_moto_process():
    """moto in its own process: its CPU and GIL are not shared with the client under test."""
    import socket
    import subprocess

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = "http://127.0.0.1:%d" % port
    for dummy in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, endpoint


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--size-mib", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--in-process", action="store_true", help="moto in this process (ThreadedMotoServer)")
    args = ap.parse_args()
    if args.in_process:
        server, endpoint = start_moto()
    else:
        server, endpoint = start_moto_process()
        server.stop = lambda: (server.terminate(), server.wait())
    work = tempfile.mkdtemp(prefix="llmfleet-bench-")
    try:
        c = client(endpoint)
        c.create_bucket(Bucket="bench")
        blob = os.urandom(args.size_mib * MiB)
        keys = []
        for i in range(args.files):
            key = "tp/shard-%03d.safetensors" % i
            c.put_object(Bucket="bench", Key=key, Body=blob[i:] + blob[:i])
            keys.append(key)
        total = args.files * args.size_mib * MiB

        def sync_mib_s(d):
            """One cold sync of the bucket into d with model_sync's engine, in MiB/s; d removed after."""
            t = time.perf_counter()
            SyncEngine(S3Source("bench", "tp", endpoint, "us-east-1", "path", "bench", "bench",
                                concurrency=args.concurrency), d, concurrency=args.concurrency).run()
            rate = total / MiB / (time.perf_counter() - t)
            shutil.rmtree(d)
            return rate

        ref, ours = [], []
        for r in range(args.rounds):  # interleaved so both see the same server state
            d = os.path.join(work, "ref%d" % r)
            t = time.perf_counter()
            boto3_download(endpoint, "bench", keys, d, args.concurrency)
            ref.append(total / MiB / (time.perf_counter() - t))
            shutil.rmtree(d)
            ours.append(sync_mib_s(os.path.join(work, "ours%d" % r)))
        # diagnostic: the same engine with hashing replaced by a no-op, to show what the
        # verification costs on this machine (not a mode model_sync offers)
        from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_core

        class _Null(object):
            def update(self, data):
                pass

            def hexdigest(self):
                return None

        real = _sync_core.new_hasher
        real_match = _sync_core.digest_matches
        _sync_core.new_hasher = lambda *a, **k: _Null()
        _sync_core.digest_matches = lambda rf, d: True
        nohash = []
        try:
            for r in range(args.rounds):
                nohash.append(sync_mib_s(os.path.join(work, "nohash%d" % r)))
        finally:
            _sync_core.new_hasher = real
            _sync_core.digest_matches = real_match
        best_ref, best_ours = max(ref), max(ours)
        print("cold sync %d x %d MiB, concurrency %d, best of %d:"
              % (args.files, args.size_mib, args.concurrency, args.rounds))
        print("  boto3 download_file  %.1f MiB/s" % best_ref)
        print("  model_sync           %.1f MiB/s  (%.0f%% of boto3; target >= 90%%)" % (
            best_ours, 100 * best_ours / best_ref))
        print("  (diagnostic) model_sync without md5: %.1f MiB/s (%.0f%%); %d CPU core(s) shared with the server" % (
            max(nohash), 100 * max(nohash) / best_ref, os.cpu_count()))

        names = ["model-%05d-of-000163.safetensors" % i for i in range(1, 164)] + R1_EXTRA
        for n in names:
            c.put_object(Bucket="bench", Key="r1/" + n, Body=n.encode() * 64)
        d = os.path.join(work, "r1")
        src = S3Source("bench", "r1", endpoint, "us-east-1", "path", "bench", "bench")
        SyncEngine(src, d).run()
        times = []
        for dummy in range(args.rounds):
            t = time.perf_counter()
            res = SyncEngine(S3Source("bench", "r1", endpoint, "us-east-1", "path", "bench", "bench"), d).run()
            times.append(time.perf_counter() - t)
            assert res["files_fetched"] == 0 and res["files_up_to_date"] == len(names)
        print("no-op re-run over %d files (163 R1 shards): best %.3f s, worst %.3f s (target < 2 s), "
              "including client creation and the listing" % (len(names), min(times), max(times)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    main()
