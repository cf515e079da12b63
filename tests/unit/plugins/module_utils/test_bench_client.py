# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tiny OpenAI-compatible streaming server on 127.0.0.1 for the client tests.

The ``model`` field picks the behaviour:

* ``vllm``: ``data: `` events, ``[DONE]``, usage in a ``choices: []`` chunk when
  ``stream_options.include_usage`` is set, events split across TCP writes.
* ``tfserve``: like ``transformers serve``: ``data:`` without space, no ``[DONE]``,
  usage in the last chunk together with ``finish_reason``, 422 for ``ignore_eos``.
* ``error``: one token, then an error event inside the HTTP 200 stream.
* ``notoken``: only a role chunk and ``[DONE]``.
* ``multi``: chunks carrying two tokens each (speculative decoding), usage given.

Timing assertions hold on a busy machine: the server's delays give lower bounds (a token cannot
arrive before the server sent it), never upper ones; what must not be counted (a role chunk, a
late ``[DONE]``) is checked through the structure of the measurement (which chunk starts TTFT,
E2EL = TTFT + the ITLs). Events a test waits for come from the server (``on_request``), not timers.
"""
from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

TTFT = 0.040
ITL = 0.010
ROLE_DELAY = 0.005


class Server(object):
    def __init__(self):
        self.requests = []
        self.on_request = None  # called with the number of requests seen so far
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        self.port = fut.result(10)
        self.base_url = "http://127.0.0.1:%d" % self.port

    async def _start(self):
        app = web.Application()
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/tokenize", self.tokenize)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def tokenize(self, request):
        body = await request.json()
        return web.json_response({"count": len(body["prompt"].split()), "tokens": []})

    async def handle(self, request):
        body = await request.json()
        self.requests.append({"path": request.path, "body": body,
                              "auth": request.headers.get("Authorization")})
        if self.on_request is not None:
            self.on_request(len(self.requests))
        model = body.get("model")
        chat = request.path.endswith("chat/completions")
        n = int(body.get("max_tokens", 4))
        if model == "tfserve" and "ignore_eos" in body:
            return web.json_response(
                {"detail": [{"loc": ["body", "ignore_eos"], "msg": "Extra inputs are not permitted",
                             "type": "extra_forbidden"}]}, status=422)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sep = "data:" if model == "tfserve" else "data: "

        def chunk(text=None, finish=None, role=False, reasoning=False):
            if chat:
                delta = {"role": "assistant", "content": ""} if role else (
                    {"reasoning_content": text} if reasoning else {"content": text})
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish}
            return {"id": "x", "object": "chunk", "choices": [choice]}

        async def send(obj, split=False):
            raw = ("%s%s\n\n" % (sep, json.dumps(obj))).encode()
            if split:  # one event over three writes, cutting inside the line
                for part in (raw[:3], raw[3:len(raw) // 2], raw[len(raw) // 2:]):
                    await resp.write(part)
            else:
                await resp.write(raw)

        usage_wanted = (body.get("stream_options") or {}).get("include_usage")
        if chat:
            await asyncio.sleep(ROLE_DELAY)
            await send(chunk(role=True))
            await asyncio.sleep(TTFT - ROLE_DELAY)
        else:
            await asyncio.sleep(TTFT)
        if model == "notoken":
            await resp.write(b"data: [DONE]\n\n")
            return resp
        per_chunk = 2 if model == "multi" else 1
        n_chunks = (n + per_chunk - 1) // per_chunk
        for i in range(n_chunks):
            if i:
                await asyncio.sleep(ITL)
            if model == "error" and i == 1:
                await resp.write(b'event: error\ndata: {"error": {"message": "engine died",'
                                 b' "code": 500}}\n\n')
                return resp
            last = i == n_chunks - 1
            obj = chunk(" tok" * per_chunk, reasoning=(chat and i == 0))
            if model == "tfserve" and last:
                obj["choices"][0]["finish_reason"] = "length"
                obj["usage"] = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}
            await send(obj, split=(model == "vllm"))
        if model == "tfserve":
            return resp
        if usage_wanted:
            await send({"id": "x", "choices": [], "usage": {
                "prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}})
        await asyncio.sleep(0.05)  # a slow [DONE] must not count in E2EL
        await resp.write(b"data: [DONE]\n\n")
        return resp


# ---------------------------------------------------------------------------- tests

import math  # noqa: E402
import statistics  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.module_utils._bench_client import (  # noqa: E402
    BenchConfig, BenchmarkError, arrival_offsets, duration_offsets, make_token_counter,
    run_benchmark,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._bench_datasets import (  # noqa: E402
    Sample,
)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


def samples(n=4, out=5):
    return [Sample("hello world %d" % i, 3, out) for i in range(n)]


def run(server, model, endpoint="completions", n=4, out=5, **kw):
    kw.setdefault("request_rate", 50.0)
    cfg = BenchConfig(server.base_url, model, endpoint=endpoint, num_prompts=n,
                      api_key="sk-test", seed=1, **kw)
    return run_benchmark(cfg, samples(n, out))[0]


def test_vllm_style_stream_with_done_and_usage_chunk(server):
    m = run(server, "vllm", ignore_eos=True, temperature=0.0)
    assert m["completed"] == 4 and m["failed"] == 0
    assert m["total_output_tokens"] == 20 and m["usage_source"] == "server"
    assert m["total_input_tokens"] == 12
    # TTFT >= 40 ms, ITL >= 10 ms (the server's sleeps); TTFT at the first token, one ITL per
    # later token; E2EL ends at the last token, not the late [DONE] (+50 ms)
    assert m["median_ttft_ms"] >= 38 and m["median_itl_ms"] >= 9
    assert [len(x) for x in m["itls"]] == [4] * 4
    assert_e2el_ends_at_last_token(m)
    assert m["unsupported_fields"] == []
    body = server.requests[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["temperature"] == 0.0 and body["max_tokens"] == 5
    assert server.requests[-1]["auth"] == "Bearer sk-test"


def assert_e2el_ends_at_last_token(m):
    e2el = statistics.median(t + sum(gaps) for t, gaps in zip(m["ttfts"], m["itls"])) * 1000
    assert m["median_e2el_ms"] == pytest.approx(e2el, abs=0.01)


def test_transformers_serve_style_no_done_usage_in_last_chunk_and_422(server):
    m = run(server, "tfserve", ignore_eos=True, warmup_requests=2)
    assert m["completed"] == 4 and m["failed"] == 0
    assert m["unsupported_fields"] == ["ignore_eos"]
    assert m["usage_source"] == "server" and m["total_output_tokens"] == 20
    # once learnt (on the probe request), the field is left out of every later request
    assert "ignore_eos" not in server.requests[-1]["body"]


def test_error_event_inside_200_stream_is_a_failure(server):
    m = run(server, "error", probe=False, n=2)
    assert m["completed"] == 0 and m["failed"] == 2
    assert "engine died" in m["errors"][0]


def test_probe_failure_stops_the_run(server):
    with pytest.raises(BenchmarkError) as exc:
        run(server, "error", n=1)
    assert "engine died" in str(exc.value)


def test_stream_without_a_token_fails(server):
    m = run(server, "notoken", probe=False, n=1)
    assert m["failed"] == 1 and m["errors"][0] == "stream ended without a token"


def test_chat_role_chunk_is_not_ttft_reasoning_is(server):
    m = run(server, "vllm", endpoint="chat", n=2, out=3)
    assert m["completed"] == 2
    # the role-only chunk arrives after 5 ms; the first (reasoning) token after 40 ms
    assert m["median_ttft_ms"] >= 38
    assert [len(x) for x in m["itls"]] == [2, 2]
    assert server.requests[-1]["body"]["messages"][0]["role"] == "user"


def test_multi_token_chunks_use_server_count_for_tpot(server):
    m = run(server, "multi", n=2, out=6)
    assert m["total_output_tokens"] == 12
    assert [len(x) for x in m["itls"]] == [2, 2]       # 3 chunks -> 2 gaps
    # TPOT = (E2EL - TTFT) / 5 ~ 20 ms / 5 = 4 ms, not ITL (~10 ms)
    assert m["median_tpot_ms"] < m["median_itl_ms"]


def test_max_concurrency_reports_client_queue_time(server):
    m = run(server, "vllm", n=4, out=2, request_rate=float("inf"), max_concurrency=1)
    assert m["completed"] == 4
    assert m["max_concurrency"] == 1 and m["request_rate"] == "inf"
    # the 4th request waited for three others (~50 ms + 10 ms + late [DONE] each)
    assert max(m["queue_times"]) > 0.1
    assert m["p99_client_queue_time_ms"] > 100
    assert set(m["dispatch_lag_ms"]) >= {"p99"}


def test_connection_refused_fails_the_probe():
    with pytest.raises(BenchmarkError) as exc:
        run_benchmark(BenchConfig("http://127.0.0.1:9", "m", num_prompts=1), samples(1))
    assert "initial test request" in str(exc.value)


def test_sweep_runs_each_rate(server):
    cfg = BenchConfig(server.base_url, "vllm", num_prompts=3, seed=2)
    levels = run_benchmark(cfg, samples(3, 2), rates=[20, 40])
    assert [lv["request_rate"] for lv in levels] == [20.0, 40.0]
    assert all(lv["completed"] == 3 for lv in levels)


def test_arrival_schedule_like_vllm():
    offs = arrival_offsets(200, 10.0, 1.0, random.Random(0))
    assert offs[-1] == pytest.approx(20.0)     # rescaled to num_prompts / rate
    assert all(b >= a for a, b in zip(offs, offs[1:]))
    assert arrival_offsets(3, float("inf")) == [0.0, 0.0, 0.0]
    uniform = arrival_offsets(4, 2.0, float("inf"))
    assert uniform == pytest.approx([0.5, 1.0, 1.5, 2.0])

    # burstiness < 1 gives more variable gaps than Poisson
    def cv(o):
        gaps = [b - a for a, b in zip([0.0] + o, o)]
        mu = sum(gaps) / len(gaps)
        return math.sqrt(sum((g - mu) ** 2 for g in gaps) / len(gaps)) / mu
    assert cv(arrival_offsets(2000, 10, 0.25, random.Random(1))) > \
        1.5 * cv(arrival_offsets(2000, 10, 1.0, random.Random(1)))
    d = duration_offsets(10.0, 5.0, 1.0, random.Random(3))
    assert 25 < len(d) < 80 and d[-1] <= 10.0


def test_config_validation():
    for kw in ({"burstiness": 0}, {"request_rate": 0}, {"max_concurrency": 0},
               {"endpoint": "embeddings"}, {"duration_s": 5}):
        with pytest.raises(BenchmarkError):
            BenchConfig("http://127.0.0.1:1", "m", **kw)


def test_token_counter(server):
    count = make_token_counter(server.base_url, "m")
    assert count("a b c d") == 4
    assert make_token_counter("http://127.0.0.1:9", "m") is None


# ------------------------------------------------------------- lean stream path, dispatcher

import aiohttp  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.module_utils import _bench_client as bc  # noqa: E402
from ansible_collections.llmfleet.serving.plugins.module_utils._bench_metrics import (  # noqa: E402
    RequestResult,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._sse import SSEEvent  # noqa: E402


def test_fast_text_only_for_plain_content_deltas():
    f = bc._fast_text
    assert f('{"id":"c","choices":[{"index":0,"text":" tok","finish_reason":null}]}', False) == " tok"
    assert f('{"choices":[{"index":0,"delta":{"content":"ab"},"logprobs":null}]}', True) == "ab"
    # everything else goes to json.loads + classify
    assert f('{"choices":[{"index":0,"text":"","finish_reason":null}]}', False) == ""
    assert f('{"choices":[],"usage":{"completion_tokens":3}}', False) == ""
    assert f('{"choices":[{"text":"x","finish_reason":"length"}],"usage":{"a":1}}', False) == ""
    assert f('{"error":{"message":"x"},"text":"y"}', False) == ""
    assert f('{"object":"error","text":"y"}', False) == ""
    assert f('{"choices":[{"delta":{"role":"assistant","content":"x"}}]}', True) == ""
    assert f('{"choices":[{"delta":{"reasoning_content":"r","content":"x"}}]}', True) == ""
    assert f('{"choices":[{"delta":{"content":"a\\"b"}}]}', True) == ""       # escapes
    assert f('{"choices":[{"text":"a"},{"text":"b"}]}', False) == ""          # two choices
    assert f('{"choices":[{"delta":{"content":"x"}}]}', False) == ""          # wrong endpoint
    assert f('[DONE]', False) == ""


PAYLOADS = [
    '{"choices":[{"index":0,"text":" tok","finish_reason":null}]}',
    '{"choices":[{"index":0,"text":"","finish_reason":null}]}',
    '{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
    '{"choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null}]}',
    '{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}',
    '{"choices":[{"index":0,"delta":{"content":"a\\nb"}}]}',
    '{"choices":[{"index":0,"text":"x","finish_reason":"length"}],'
    '"usage":{"prompt_tokens":3,"completion_tokens":7}}',
    '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}',
    '{"error":{"message":"boom","code":500}}',
    '[DONE]',
]


def _slow_reference(events, chat):
    # the same events with the fast check disabled
    r = RequestResult()
    acc = bc._Accumulator(r, 0.0, chat, keep_texts=True)
    saved = bc._fast_text
    bc._fast_text = lambda data, chat: ""
    try:
        for i, ev in enumerate(events):
            acc._events([ev], float(i + 1))
    finally:
        bc._fast_text = saved
    acc.finish()
    return r


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_fast_path_gives_what_full_decoding_gives(chat, seed):
    rng = random.Random(seed)
    events = [SSEEvent(data=rng.choice(PAYLOADS)) for dummy in range(rng.randint(1, 12))]
    r = RequestResult()
    acc = bc._Accumulator(r, 0.0, chat, keep_texts=True)
    for i, ev in enumerate(events):
        acc._events([ev], float(i + 1))
    acc.finish()
    ref = _slow_reference(events, chat)
    for k in ("success", "error", "prompt_len", "output_tokens", "chunk_count", "token_chunks",
              "ttft", "itl", "latency", "generated_chars", "usage_from_server", "generated_text"):
        assert getattr(r, k) == getattr(ref, k), k
    assert len(r.generated_text) == r.generated_chars


def test_texts_kept_only_when_asked():
    ev = SSEEvent(data='{"choices":[{"index":0,"text":" tok","finish_reason":null}]}')
    plain, kept = RequestResult(), RequestResult()
    for r, keep in ((plain, False), (kept, True)):
        acc = bc._Accumulator(r, 0.0, False, keep_texts=keep)
        acc._events([ev, ev], 1.0)
        acc.finish()
    assert plain.generated_text is None and plain.generated_chars == 8
    assert kept.generated_text == " tok tok"


class _Proto(object):
    def pause_reading(self):
        pass

    def resume_reading(self, resume_parser=True):
        pass


def test_tap_hands_buffered_and_later_bytes_to_the_accumulator():
    async def go():
        reader = aiohttp.StreamReader(_Proto(), 1 << 16, loop=asyncio.get_event_loop())
        reader.feed_data(b'data: {"choices":[{"text":"a"}]}\n\n')    # before the tap
        r = RequestResult()
        acc = bc._Accumulator(r, time.perf_counter(), False)
        assert bc._tap(reader, acc)
        assert r.token_chunks == 1
        reader.feed_data(b'data: {"choices":[{"text":"bc"}]}\n\ndata: {"choi')
        reader.feed_data(b'ces":[{"text":"d"}]}\n\ndata: [DONE]\n\n')
        assert reader.read_nowait(-1) == b""        # nothing buffered in aiohttp
        reader.feed_eof()
        await asyncio.wait_for(reader.wait_eof(), 1)
        bc._untap(reader)
        acc.close(time.perf_counter())
        acc.finish()
        return r, reader
    loop = asyncio.new_event_loop()
    try:
        r, reader = loop.run_until_complete(go())
    finally:
        loop.close()
    assert r.success and r.token_chunks == 3 and r.generated_chars == 4
    assert len(r.itl) == 2 and all(x >= 0 for x in r.itl)
    assert reader.total_bytes > 0 and id(reader) not in bc._TAPS


def test_tap_refuses_other_readers():
    assert bc._tap(object(), None) is False


import time  # noqa: E402


@pytest.mark.parametrize("tap", [True, False])
def test_readany_and_tap_paths_measure_the_same(server, tap):
    m = run(server, "vllm", ignore_eos=True, tap_stream=tap)
    assert m["completed"] == 4 and m["failed"] == 0
    assert m["total_output_tokens"] == 20 and [len(x) for x in m["itls"]] == [4] * 4
    assert m["median_itl_ms"] >= 9 and m["median_ttft_ms"] >= 38
    assert_e2el_ends_at_last_token(m)
    assert not bc._TAPS


def test_event_loop_choice():
    loop, name = bc.new_event_loop("asyncio")
    loop.close()
    assert name == "asyncio"
    with pytest.raises(BenchmarkError):
        bc.new_event_loop("trio")
    with pytest.raises(BenchmarkError):
        BenchConfig("http://127.0.0.1:1", "m", event_loop="trio")
    if bc.HAS_UVLOOP:
        loop, name = bc.new_event_loop("auto")
        loop.close()
        assert name == "uvloop"


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_dispatcher_never_sends_early_and_reports_the_loop(server, event_loop):
    if event_loop == "uvloop" and not bc.HAS_UVLOOP:
        pytest.skip("uvloop not installed")
    cfg = BenchConfig(server.base_url, "vllm", num_prompts=12, request_rate=300.0, seed=3,
                      probe=False, event_loop=event_loop)
    runner = bc.Runner(cfg, samples(12, 2))
    runner._headers = cfg.headers()

    async def go():
        async with aiohttp.ClientSession() as session:
            runner.session = session
            return await runner.run_level(300.0)
    loop, name = bc.new_event_loop(event_loop)
    try:
        results, duration, lags, delays = loop.run_until_complete(go())
    finally:
        loop.close()
    assert name == event_loop and len(results) == 12
    scheduled = [x.scheduled_time for x in results]
    assert scheduled == sorted(scheduled) and len(set(scheduled)) == 12
    for x in results:
        assert x.success
        # the request really started at or after its scheduled time (uvloop's timers
        # have 1 ms resolution: a timer that fires early must re-arm, not send)
        assert x.start_time >= x.scheduled_time
        assert x.dispatch_lag >= 0 and x.dispatch_lag <= x.start_time - x.scheduled_time
    m = run(server, "vllm", n=2, event_loop=event_loop)
    assert m["event_loop"] == event_loop


@pytest.mark.parametrize("closed_loop", [False, True])
def test_stop_file_ends_a_long_run_early(server, tmp_path, closed_loop):
    stop = tmp_path / "stop"
    first = len(server.requests)

    def on_request(seen):  # the stop file appears when the server sees the 4th request of this run
        if seen - first == 4:
            stop.touch()
    server.on_request = on_request
    kw = dict(request_rate=float("inf"), max_concurrency=2) if closed_loop else dict(request_rate=20.0)
    cfg = BenchConfig(server.base_url, "vllm", duration_s=60, seed=1, stop_file=str(stop), **kw)
    try:
        m = run_benchmark(cfg, samples(4, 2))[0]
    finally:
        server.on_request = None
    # 60 s would be about 1,200 requests; the run stopped at the file: the probe, the 3 requests
    # sent before it appeared and those already in flight, each completed
    assert 3 <= m["completed"] < 100 and m["failed"] == 0
    assert m["num_prompts"] == m["completed"] == len(server.requests) - first - 1
