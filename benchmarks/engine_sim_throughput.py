# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Measure the engine simulator's streamed tokens per second on one CPU core.

The simulator (``tests/lab/engine_sim``) runs as ``vllm serve`` pinned to core 0 with
``taskset`` (when there is more than one core the load client is pinned to another one),
with a 10 ms inter-token latency and no per-request slowdown, so the offered load
(``--streams`` / 10 ms tokens per second) is far above what one core can stream. A raw asyncio
client keeps ``--streams`` streaming ``/v1/completions`` requests open (``max_tokens`` 200,
``ignore_eos``), counts the SSE ``data:`` chunks it receives, and reports tokens/s over
``--seconds``, cross-checked with the server's ``vllm:generation_tokens_total``. It
runs the load client on another core when there is one.

A second phase measures timing accuracy at a moderate load: ``--rate`` requests/s
(Poisson) with TTFT 50 ms and ITL 20 ms configured; it prints the median TTFT and ITL error.

    cd /work/main && python benchmarks/engine_sim_throughput.py [--streams 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_SRC = os.path.join(ROOT, "tests", "lab", "engine_sim", "src")
COLLECTIONS = os.path.join(ROOT, "build", "collections")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(path):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump({"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 32768}, fh)
    open(os.path.join(path, "model.safetensors"), "wb").close()


def start_sim(port, model, env_over, cpu):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SIM_SRC, COLLECTIONS, env.get("PYTHONPATH", "")])
    env.update(env_over)
    cmd = [sys.executable, "-c", "import sys; from engine_sim.cli import vllm_main; sys.exit(vllm_main())",
           "serve", model, "--host", "127.0.0.1", "--port", str(port), "--max-num-seqs", "4096"]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu)] + cmd
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=1) as r:
                if r.status == 200:
                    return proc
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("simulator did not become healthy: %s" % proc.stderr.read().decode()[-2000:])


def gen_tokens_total(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("vllm:generation_tokens_total{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def one_request(port, body, on_chunk):
    """POST a streaming request, call ``on_chunk(t)`` per SSE data chunk; return (t_send, n)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    t_send = time.monotonic()
    n = 0
    tail = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        now = time.monotonic()
        buf = tail + data
        k = buf.count(b"data: {")
        for dummy in range(k):
            on_chunk(now)
        n += k
        tail = buf[-7:]
        if b"data: [DONE]" in buf:
            break
    writer.close()
    return t_send, n


async def saturate(port, streams, seconds, max_tokens):
    stop = time.monotonic() + seconds
    count = [0]

    async def worker():
        body = {"prompt": "hello world", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        while time.monotonic() < stop:
            def on_chunk(t):
                if t < stop:
                    count[0] += 1
            await one_request(port, body, on_chunk)

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(worker()) for dummy in range(streams)]
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    got = count[0]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return got / elapsed


async def poisson(port, rate, seconds, max_tokens):
    ttfts, itls = [], []

    async def one():
        body = {"prompt": "hello world", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        times = []
        t_send, _n = await one_request(port, body, times.append)
        if times:
            ttfts.append(times[0] - t_send)
            itls.extend(b - a for a, b in zip(times, times[1:]))

    rnd = random.Random(1)
    tasks = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tasks.append(asyncio.ensure_future(one()))
        await asyncio.sleep(rnd.expovariate(rate))
    await asyncio.gather(*tasks)
    return statistics.median(ttfts), statistics.median(itls), len(tasks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    multi = (os.cpu_count() or 1) > 1
    if multi and shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    tmp = tempfile.mkdtemp(prefix="simbench-")
    model = os.path.join(tmp, "model")
    make_model(model)
    base = {"LLMFLEET_SIM_LOAD_DELAY_S": "0", "LLMFLEET_SIM_TTFT_BASE_MS": "5",
            "LLMFLEET_SIM_TTFT_PER_PROMPT_TOKEN_MS": "0", "LLMFLEET_SIM_ITL_BASE_MS": "10",
            "LLMFLEET_SIM_ITL_PER_RUNNING_MS": "0"}
    port = free_port()
    proc = start_sim(port, model, base, 0 if multi else None)
    try:
        before = gen_tokens_total(port)
        t0 = time.monotonic()
        tps = asyncio.run(saturate(port, args.streams, args.seconds, 200))
        server_tps = (gen_tokens_total(port) - before) / (time.monotonic() - t0)
        print("saturation: %d streams, offered %.0f tok/s: client received %.0f tok/s, server generated "
              "%.0f tok/s (server on %s)" % (args.streams, args.streams / 0.010, tps, server_tps,
                                             "core 0" if multi else "the only core"))
    finally:
        proc.terminate()
        proc.wait()
    acc = dict(base, LLMFLEET_SIM_TTFT_BASE_MS="50", LLMFLEET_SIM_ITL_BASE_MS="20")
    port = free_port()
    proc = start_sim(port, model, acc, 0 if multi else None)
    try:
        ttft, itl, n = asyncio.run(poisson(port, args.rate, args.seconds, 100))
        print("accuracy: %d requests at %.0f req/s (Poisson), 100 tokens each: median TTFT %.2f ms "
              "(configured 50, error %+.2f ms), median ITL %.3f ms (configured 20, error %+.3f ms)"
              % (n, args.rate, ttft * 1000, ttft * 1000 - 50, itl * 1000, itl * 1000 - 20))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
