# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Measure the llm_benchmark client's own limit on one CPU core.

A minimal, fast SSE server runs in another process (pinned to another core with
taskset when there is one). It streams 256 tokens per request, one chunk every
10 ms exactly: a single ticker writes the next token to every open stream on each
10 ms step, like an engine's decode step, so the server stays cheap at any load.
The client (the collection's ``_bench_client``) is pinned to one core and run at
rising Poisson request rates. A rate passes when the client's p99 dispatch lag is
under 5 ms and its measured mean and median ITL are within 5 % of 10 ms.

    cd /work/main && python benchmarks/bench_client_limit.py [--rates 25,50,100,150,200] [--seconds 10]

Prints one line per rate and the highest passing rate (target: 100 req/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
ITL_S = 0.010
TOKENS = 256


# ----------------------------------------------------------------------------- server
class _Stream(object):
    __slots__ = ("transport", "left")

    def __init__(self, transport, left):
        self.transport = transport
        self.left = left


class _Proto(asyncio.Protocol):
    streams = set()

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if len(self.buf) < head_end + 4 + length:
                return
            body = json.loads(self.buf[head_end + 4:head_end + 4 + length] or b"{}")
            self.buf = self.buf[head_end + 4 + length:]
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
            # the first token goes out on the next decode step (TTFT <= 10 ms)
            self.streams.add(_Stream(self.transport, int(body.get("max_tokens", TOKENS))))

    def connection_lost(self, exc):
        for s in [s for s in self.streams if s.transport is self.transport]:
            self.streams.discard(s)


def _chunk(payload):
    return b"%x\r\n%s\r\n" % (len(payload), payload)


TOKEN = _chunk(b'data: {"choices":[{"index":0,"text":" tok","finish_reason":null}]}\n\n')


async def _ticker():
    start = time.perf_counter()
    step = 0
    while True:
        step += 1
        delay = start + step * ITL_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        done = []
        for s in list(_Proto.streams):
            s.left -= 1
            if s.left > 0:
                s.transport.write(TOKEN)
            else:
                s.transport.write(TOKEN + _chunk(
                    b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":%d}}'
                    b'\n\ndata: [DONE]\n\n' % TOKENS) + b"0\r\n\r\n")
                done.append(s)
        for s in done:
            _Proto.streams.discard(s)


def serve(port):
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_Proto, "127.0.0.1", port, backlog=4096))
    loop.create_task(_ticker())
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        loop.run_forever()
    finally:
        server.close()


# ----------------------------------------------------------------------------- client
def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def measure(base_url, rate, seconds, event_loop="auto", tap=True):
    sys.path.insert(0, COLLECTIONS)
    from ansible_collections.llmfleet.serving.plugins.module_utils._bench_client import (
        BenchConfig, run_benchmark)
    from ansible_collections.llmfleet.serving.plugins.module_utils._bench_datasets import Sample

    n = int(rate * seconds)
    cfg = BenchConfig(base_url, "m", num_prompts=n, request_rate=rate, seed=1, probe=False,
                      max_tokens=TOKENS, event_loop=event_loop, tap_stream=tap)
    m = run_benchmark(cfg, [Sample("hello", 1, TOKENS)])[0]
    return m


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--rates", default="25,50,75,100,125,150,200")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per rate; the table shows the median of each column")
    ap.add_argument("--loop", default="auto", choices=("auto", "asyncio", "uvloop"),
                    help="client event loop (auto: uvloop when installed)")
    ap.add_argument("--no-tap", action="store_true",
                    help="read the stream with readany() instead of the feed_data tap")
    ap.add_argument("--client-cpu", type=int, help="default: the first CPU we may use")
    ap.add_argument("--server-cpu", type=int,
                    help="default: the last CPU we may use (or CPU 1 when pinned to one)")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if not os.path.islink(os.path.join(COLLECTIONS, "ansible_collections", "llmfleet", "serving")):
        os.makedirs(os.path.join(COLLECTIONS, "ansible_collections", "llmfleet"), exist_ok=True)
        os.symlink(ROOT, os.path.join(COLLECTIONS, "ansible_collections", "llmfleet", "serving"))
    cpus = sorted(os.sched_getaffinity(0))
    ncpu = os.cpu_count() or 1
    client_cpu = cpus[0] if args.client_cpu is None else args.client_cpu
    server_cpu = args.server_cpu
    if server_cpu is None:
        # under `taskset -c 0` we see one CPU, but the server belongs on another one
        server_cpu = cpus[-1] if len(cpus) > 1 else (1 if ncpu > 1 and client_cpu != 1 else 0)
    port = free_port()
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", str(port)]
    shared = server_cpu == client_cpu
    if ncpu > 1 and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(server_cpu)] + cmd
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    rows = []
    try:
        srv.stdout.readline()
        os.sched_setaffinity(0, {client_cpu})
        import aiohttp
        sys.path.insert(0, COLLECTIONS)
        from ansible_collections.llmfleet.serving.plugins.module_utils import _bench_client
        loop, loop_name = _bench_client.new_event_loop(args.loop)
        loop.close()
        print("client on CPU %d, server on CPU %s; %d tokens at %.0f ms ITL, %.0f s per rate, "
              "%d run(s) each (median); Python %s, aiohttp %s, loop %s, %s"
              % (client_cpu, server_cpu if not shared else "%d (shared)" % server_cpu, TOKENS,
                 ITL_S * 1000, args.seconds, args.repeat, sys.version.split()[0],
                 aiohttp.__version__, loop_name, "readany" if args.no_tap else "tap"))
        print("%8s %9s %9s %10s %10s %10s %10s %8s %6s" % (
            "rate", "done/s", "lag_p99", "loop_p99", "itl_mean", "itl_med", "itl_p99",
            "itl_err", "pass"))
        best = 0.0
        for rate in [float(x) for x in args.rates.split(",")]:
            runs = []
            for dummy in range(args.repeat):
                m = measure("http://127.0.0.1:%d" % port, rate, args.seconds, args.loop,
                            not args.no_tap)
                runs.append({
                    "rate": rate, "done_per_s": m["request_throughput"],
                    "failed": m["failed"], "lag_p99_ms": m["dispatch_lag_ms"]["p99"],
                    "loop_p99_ms": m["event_loop_delay_ms"]["p99"],
                    "itl_mean_ms": m["mean_itl_ms"], "itl_median_ms": m["median_itl_ms"],
                    "itl_p99_ms": m["p99_itl_ms"],
                    "itl_err_pct": 100.0 * max(abs(m["mean_itl_ms"] - 10.0),
                                               abs(m["median_itl_ms"] - 10.0)) / 10.0})
            row = dict((k, _median([r[k] for r in runs])) for k in runs[0])
            row["runs"] = runs
            row["lag_p99_runs_ms"] = [round(r["lag_p99_ms"], 2) for r in runs]
            ok = row["failed"] == 0 and row["lag_p99_ms"] < 5.0 and row["itl_err_pct"] <= 5.0
            row["pass"] = ok
            rows.append(row)
            print("%8.0f %9.1f %8.2fms %8.2fms %8.2fms %8.2fms %8.2fms %7.2f%% %6s  lag runs %s" % (
                rate, row["done_per_s"], row["lag_p99_ms"], row["loop_p99_ms"],
                row["itl_mean_ms"], row["itl_median_ms"], row["itl_p99_ms"], row["itl_err_pct"],
                "yes" if ok else "NO", row["lag_p99_runs_ms"]))
            sys.stdout.flush()
            if ok:
                best = max(best, rate)
        print("highest passing rate: %.0f req/s (target 100)" % best)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"loop": loop_name, "tap": not args.no_tap, "rows": rows}, f, indent=1)
    finally:
        srv.terminate()
        srv.wait(10)


if __name__ == "__main__":
    main()
