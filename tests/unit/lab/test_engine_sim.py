# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Engine simulator, in process: tokenizer, settings, model dir checks, scheduler timing,
and the HTTP API served on 127.0.0.1 (SSE format, usage, API key, errors, metrics)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import aiohttp
import pytest
from aiohttp import web

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SRC = os.path.join(ROOT, "tests", "lab", "engine_sim", "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from engine_sim import tokenizer as tok  # noqa: E402
from engine_sim.config import SimConfig, parse_faults  # noqa: E402
from engine_sim.engine import DeadlineScheduler, Slots, TimerfdScheduler, make_scheduler  # noqa: E402
from engine_sim.lateness import lateness_round  # noqa: E402
from engine_sim.modelcheck import ModelDirError, check_model_dir  # noqa: E402
from engine_sim.server import ServerSpec, SimServer  # noqa: E402

KEY = "sk-test-0123456789"


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_counts_four_bytes_per_token_and_round_trips():
    text = "Hello world, ünïcödé and emoji \U0001F600!"
    ids = tok.encode(text)
    assert len(ids) == tok.count(text) == (len(text.encode("utf-8")) + 3) // 4
    assert tok.decode(ids) == text
    assert tok.encode("Hell") == [0x48656C6C]
    assert tok.count("") == 0


def test_tokenizer_rejects_out_of_vocabulary_ids():
    with pytest.raises(ValueError) as exc:
        tok.decode([2 ** 32])
    assert "out of vocabulary" in str(exc.value)
    with pytest.raises(ValueError):
        tok.decode([-1])


def test_generated_text_retokenizes_to_its_token_count():
    for n in (1, 7, 64):
        assert tok.count(tok.generated_text(0, n)) == n
        assert tok.generated_text(0, n) == tok.generated_text(0, 3) + tok.generated_text(3, n - 3) \
            if n > 3 else True


def test_chat_template_render():
    text = tok.render_chat([{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    assert text == "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"
    with pytest.raises(ValueError):
        tok.render_chat([])


# ----------------------------------------------------------------------------- settings
def test_config_defaults_and_env_override():
    cfg = SimConfig({})
    assert cfg.load_delay_s == 2.0 and cfg.tokens_per_chunk == 1 and cfg.faults == {}
    cfg = SimConfig({"LLMFLEET_SIM_ITL_BASE_MS": "5", "LLMFLEET_SIM_ITL_PER_RUNNING_MS": "1",
                     "LLMFLEET_SIM_TTFT_BASE_MS": "10", "LLMFLEET_SIM_TTFT_PER_PROMPT_TOKEN_MS": "0.5"})
    assert cfg.itl_s(1) == pytest.approx(0.005)
    assert cfg.itl_s(11) == pytest.approx(0.015)
    assert cfg.ttft_s(100) == pytest.approx(0.060)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError) as exc:
        SimConfig({"LLMFLEET_SIM_ITL_BASE_MS": "fast"})
    assert "LLMFLEET_SIM_ITL_BASE_MS" in str(exc.value)
    with pytest.raises(ValueError):
        SimConfig({"LLMFLEET_SIM_TOKENS_PER_CHUNK": "0"})


def test_fault_spec_parsing():
    assert parse_faults("oom, crash_after_s=2.5") == {"oom": True, "crash_after_s": 2.5}
    with pytest.raises(ValueError) as exc:
        parse_faults("meteor")
    assert "unknown fault 'meteor'" in str(exc.value)
    with pytest.raises(ValueError):
        parse_faults("crash_after_s=soon")


# ----------------------------------------------------------------------------- model dir
def _model(tmp_path, index=None, files=("model.safetensors",)):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"],
                                               "max_position_embeddings": 2048}))
    for f in files:
        (d / f).write_bytes(b"")
    if index is not None:
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    return str(d)


def test_model_dir_ok_with_index(tmp_path):
    path = _model(tmp_path, index={"a": "model-00001-of-00002.safetensors",
                                   "b": "model-00002-of-00002.safetensors"},
                  files=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"))
    assert check_model_dir(path)["max_position_embeddings"] == 2048


def test_model_dir_missing_shard_named(tmp_path):
    path = _model(tmp_path, index={"a": "model-00001-of-00163.safetensors",
                                   "b": "model-00002-of-00163.safetensors"},
                  files=("model-00001-of-00163.safetensors",))
    with pytest.raises(ModelDirError) as exc:
        check_model_dir(path)
    assert "FileNotFoundError: [Errno 2] No such file or directory: " in str(exc.value)
    assert "model-00002-of-00163.safetensors" in str(exc.value)


def test_model_dir_missing_config_and_weights(tmp_path):
    with pytest.raises(ModelDirError) as exc:
        check_model_dir(str(tmp_path))
    assert "does not appear to have a file named config.json" in str(exc.value)
    path = _model(tmp_path, files=())
    with pytest.raises(ModelDirError) as exc:
        check_model_dir(path)
    assert "Cannot find any model weights" in str(exc.value)


# ----------------------------------------------------------------------------- scheduler
@pytest.mark.parametrize("kind", [DeadlineScheduler, TimerfdScheduler])
def test_scheduler_meets_absolute_deadlines(kind):
    late = lateness_round(kind)
    assert len(late) == 200
    assert min(late) >= -0.0001          # released at most EARLY_S (50 us) early
    # How late is a figure of the machine (busy: tens of ms), not a test:
    # benchmarks/sim_scheduler.py measures it.


def test_scheduler_choice(monkeypatch):
    async def main():
        loop = asyncio.get_running_loop()
        first = make_scheduler(loop)
        monkeypatch.setenv("LLMFLEET_SIM_SCHEDULER", "sleep")
        second = make_scheduler(loop)
        first.stop()
        second.stop()
        return type(first), type(second)
    first, second = asyncio.run(main())
    assert first is TimerfdScheduler      # Linux
    assert second is DeadlineScheduler


def test_slots_queue_fifo_and_count_waiting():
    async def main():
        slots = Slots(2, asyncio.get_running_loop())
        order = []

        async def req(i):
            await slots.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            slots.release()

        tasks = [asyncio.ensure_future(req(i)) for i in range(5)]
        await asyncio.sleep(0.002)
        seen = (slots.running, slots.waiting)
        await asyncio.gather(*tasks)
        return seen, order, slots.running

    seen, order, running = asyncio.run(main())
    assert seen == (2, 3)
    assert order == [0, 1, 2, 3, 4]
    assert running == 0


# ----------------------------------------------------------------------------- HTTP API
def _env(**kw):
    base = {"LLMFLEET_SIM_TTFT_BASE_MS": "20", "LLMFLEET_SIM_TTFT_PER_PROMPT_TOKEN_MS": "0",
            "LLMFLEET_SIM_ITL_BASE_MS": "5", "LLMFLEET_SIM_ITL_PER_RUNNING_MS": "0"}
    base.update({"LLMFLEET_SIM_" + k.upper(): str(v) for k, v in kw.items()})
    return base


def serve(test, engine="vllm", api_key=None, env=None, names=("org/tiny",), max_model_len=256,
          max_num_seqs=256, ready=True, version="0.32.0"):
    """Run ``test(session, base_url, server)`` against a simulator on 127.0.0.1."""
    async def main():
        spec = ServerSpec(engine, version, "/models/tiny", list(names), max_model_len, api_key,
                          max_num_seqs, enable_metrics=True)
        server = SimServer(spec, SimConfig(env or _env()), asyncio.get_running_loop())
        server.ready = ready
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:
                return await test(session, "http://127.0.0.1:%d" % port, server)
        finally:
            await runner.cleanup()
    return asyncio.run(main())


def parse_sse(raw):
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


AUTH = {"Authorization": "Bearer " + KEY}


def test_api_key_enforced_on_v1_only():
    async def t(s, url, _srv):
        out = {}
        async with s.get(url + "/v1/models") as r:
            out["no_key"] = (r.status, await r.json())
        async with s.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}) as r:
            out["bad_key"] = r.status
        async with s.get(url + "/v1/models", headers=AUTH) as r:
            out["key"] = (r.status, await r.json())
        async with s.get(url + "/health") as r:
            out["health"] = r.status
        async with s.get(url + "/metrics") as r:
            out["metrics"] = r.status
        return out
    out = serve(t, api_key=KEY)
    assert out["no_key"] == (401, {"error": "Unauthorized"})
    assert out["bad_key"] == 401
    assert out["key"][0] == 200
    assert [m["id"] for m in out["key"][1]["data"]] == ["org/tiny"]
    assert out["key"][1]["object"] == "list" and out["key"][1]["data"][0]["max_model_len"] == 256
    assert out["health"] == 200 and out["metrics"] == 200


def test_health_503_until_ready():
    async def t(s, url, srv):
        async with s.get(url + "/health") as r:
            before = r.status
        async with s.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}) as r:
            gen_before = r.status
        srv.ready = True
        async with s.get(url + "/health") as r:
            after = r.status
        return before, gen_before, after
    assert serve(t, ready=False) == (503, 503, 200)


def test_chat_stream_format_with_usage_chunk():
    async def t(s, url, _srv):
        body = {"model": "org/tiny", "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}}
        async with s.post(url + "/v1/chat/completions", json=body, headers=AUTH) as r:
            return r.status, r.headers["Content-Type"], await r.text()
    status, ctype, raw = serve(t, api_key=KEY)
    assert status == 200 and ctype.startswith("text/event-stream")
    ev = parse_sse(raw)
    assert ev[-1] == "[DONE]"
    chunks = ev[:-1]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "org/tiny" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = chunks[1:5]
    assert [c["choices"][0]["finish_reason"] for c in content] == [None, None, None, "length"]
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert tok.count(text) == 4
    usage = chunks[5]
    assert usage["choices"] == []
    prompt_tokens = tok.count(tok.render_chat([{"role": "user", "content": "Say hi"}]))
    assert usage["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 4,
                              "total_tokens": prompt_tokens + 4, "prompt_tokens_details": None}
    assert len(chunks) == 6


def test_completion_stream_without_usage_and_tokens_per_chunk():
    async def t(s, url, _srv):
        body = {"prompt": "abcdefgh", "max_tokens": 7, "stream": True}
        async with s.post(url + "/v1/completions", json=body) as r:
            return await r.text()
    ev = parse_sse(serve(t, env=_env(tokens_per_chunk=3)))
    assert ev[-1] == "[DONE]"
    texts = [c["choices"][0]["text"] for c in ev[:-1]]
    assert [tok.count(x) for x in texts] == [3, 3, 1]
    assert ev[-2]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in ev[:-1])
    assert ev[0]["object"] == "text_completion"


def test_non_streaming_and_eos_min_tokens_ignore_eos():
    async def t(s, url, _srv):
        out = []
        for extra in ({}, {"min_tokens": 5}, {"ignore_eos": True}):
            body = dict({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}, **extra)
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                out.append(await r.json())
        async with s.post(url + "/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 2}) as r:
            out.append(await r.json())
        return out
    plain, min_tok, ignore, ids = serve(t, env=_env(eos_after=3))
    assert plain["object"] == "chat.completion"
    assert plain["choices"][0]["finish_reason"] == "stop" and plain["usage"]["completion_tokens"] == 3
    assert plain["choices"][0]["message"]["role"] == "assistant"
    assert tok.count(plain["choices"][0]["message"]["content"]) == 3
    assert min_tok["usage"]["completion_tokens"] == 5 and min_tok["choices"][0]["finish_reason"] == "stop"
    assert ignore["usage"]["completion_tokens"] == 8 and ignore["choices"][0]["finish_reason"] == "length"
    assert ids["usage"]["prompt_tokens"] == 3 and ids["choices"][0]["text"] == tok.generated_text(0, 2)


def test_errors_too_long_prompt_unknown_model_bad_json():
    async def t(s, url, _srv):
        out = []
        async with s.post(url + "/v1/completions", json={"prompt": "x" * 4 * 300, "max_tokens": 1}) as r:
            out.append((r.status, await r.json()))
        async with s.post(url + "/v1/completions", json={"prompt": "x" * 4 * 200, "max_tokens": 100}) as r:
            out.append((r.status, await r.json()))
        async with s.post(url + "/v1/completions", json={"model": "nope", "prompt": "x"}) as r:
            out.append((r.status, await r.json()))
        async with s.post(url + "/v1/completions", data=b"{not json",
                          headers={"Content-Type": "application/json"}) as r:
            out.append((r.status, await r.json()))
        return out
    too_long, too_many, unknown, bad = serve(t)
    assert too_long[0] == 400
    assert "maximum context length is 256 tokens. However, your request has 300 input tokens" in \
        too_long[1]["error"]["message"]
    assert too_long[1]["error"]["type"] == "BadRequestError" and too_long[1]["error"]["code"] == 400
    assert too_many[0] == 400 and "(100 > 256 - 200)" in too_many[1]["error"]["message"]
    assert unknown[0] == 404 and unknown[1]["error"]["message"] == "The model `nope` does not exist."
    assert bad[0] == 400


def test_tokenize_detokenize_version():
    async def t(s, url, _srv):
        async with s.post(url + "/tokenize", json={"prompt": "Hello world"}) as r:
            a = await r.json()
        async with s.post(url + "/detokenize", json={"tokens": a["tokens"]}) as r:
            b = await r.json()
        async with s.post(url + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}) as r:
            c = await r.json()
        async with s.get(url + "/version") as r:
            d = await r.json()
        return a, b, c, d
    a, b, c, d = serve(t, api_key=KEY)
    assert a["count"] == 3 and a["max_model_len"] == 256 and a["tokens"] == tok.encode("Hello world")
    assert b == {"prompt": "Hello world"}
    assert c["count"] == tok.count("<|user|>\nhi\n<|assistant|>\n")
    assert d == {"version": "0.32.0"}


def _metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("%s not in metrics" % name)


def test_metrics_names_counts_and_queue():
    async def t(s, url, _srv):
        async def one():
            body = {"prompt": "abcd", "max_tokens": 10, "stream": True}
            async with s.post(url + "/v1/completions", json=body) as r:
                await r.text()
        tasks = [asyncio.ensure_future(one()) for dummy in range(3)]
        await asyncio.sleep(0.05)
        async with s.get(url + "/metrics") as r:
            during = await r.text()
        await asyncio.gather(*tasks)
        async with s.get(url + "/metrics") as r:
            after = await r.text()
        return during, after
    during, after = serve(t, max_num_seqs=2)
    assert _metric(during, "vllm:num_requests_running") == 2
    assert _metric(during, "vllm:num_requests_waiting") == 1
    assert 0 < _metric(during, "vllm:kv_cache_usage_perc") < 1
    assert _metric(after, "vllm:num_requests_running") == 0
    assert _metric(after, "vllm:prompt_tokens_total") == 3
    assert _metric(after, "vllm:generation_tokens_total") == 30
    assert _metric(after, "vllm:time_to_first_token_seconds_count") == 3
    assert _metric(after, "vllm:inter_token_latency_seconds_count") == 27
    assert _metric(after, "vllm:e2e_request_latency_seconds_count") == 3
    assert 'model_name="org/tiny"' in after
    assert "# TYPE vllm:time_to_first_token_seconds histogram" in after
    assert 'vllm:request_success_total{engine="0",model_name="org/tiny",finished_reason="length"} 3.0' in after


def test_metrics_old_vllm_and_sglang_names():
    async def t(s, url, _srv):
        async with s.get(url + "/metrics") as r:
            return await r.text()
    old = serve(t, version="0.8.5")
    assert "vllm:gpu_cache_usage_perc{" in old and "vllm:time_per_output_token_seconds_count{" in old
    assert "vllm:kv_cache_usage_perc" not in old
    sg = serve(t, engine="sglang")
    for name in ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
                 "sglang:prompt_tokens_total", "sglang:generation_tokens_total",
                 "sglang:time_to_first_token_seconds_count", "sglang:inter_token_latency_seconds_count",
                 "sglang:e2e_request_latency_seconds_count"):
        assert name + "{" in sg, name
    assert "vllm:" not in sg


def test_sglang_api_key_protects_everything_but_health_and_metrics():
    async def t(s, url, _srv):
        out = []
        for path in ("/health", "/metrics", "/v1/models", "/get_model_info"):
            async with s.get(url + path) as r:
                out.append(r.status)
        return out
    assert serve(t, engine="sglang", api_key=KEY) == [200, 200, 401, 401]


def test_timing_ttft_itl_and_load_slowdown():
    """The timing model, read from the engine's own timeline (GET /sim/timeline): what it
    planned for each chunk and when it sent it. No wall-clock bound: on a busy machine chunks
    go out late, but never early, and the plan itself does not move."""
    async def t(s, url, _srv):
        async def one(prompt_chars):
            body = {"prompt": "x" * prompt_chars, "max_tokens": 12, "stream": True}
            chunks = 0
            async with s.post(url + "/v1/completions", json=body) as r:
                async for line in r.content:
                    chunks += line.startswith(b"data: {")
            return chunks
        counts = [await one(4), await one(4 * 400)]
        counts += await asyncio.gather(*(one(4) for dummy in range(20)))
        async with s.get(url + "/sim/timeline") as r:
            assert r.status == 200
            return counts, (await r.json())["requests"]
    env = _env(ttft_base_ms=30, ttft_per_prompt_token_ms=0.1, itl_base_ms=8, itl_per_running_ms=0.5)
    counts, timeline = serve(t, env=env, max_model_len=4096)
    assert len(timeline) == 22
    short, long_, many = timeline[0], timeline[1], timeline[2:]
    for rec in timeline:
        # every chunk the client read was planned and sent by the engine, none before its deadline
        assert len(rec["planned"]) == len(rec["sent"]) == 12
        assert all(sent >= due - 0.00005 for due, sent in zip(rec["planned"], rec["sent"]))  # EARLY_S
        assert rec["admitted"] >= rec["arrival"]
    assert counts == [12] * 22
    assert short["prompt_tokens"] == 1 and long_["prompt_tokens"] == 400
    # TTFT: 30 ms + 0.1 ms per prompt token after admission
    assert short["planned"][0] - short["admitted"] == pytest.approx(0.0301, abs=1e-9)
    assert long_["planned"][0] - long_["admitted"] == pytest.approx(0.070, abs=1e-9)
    # ITL: 8 ms alone; 8 ms + 0.5 ms per other running request under load
    gaps = [b - a for a, b in zip(short["planned"], short["planned"][1:])]
    assert short["running"][:-1] == [1] * 11 and gaps == pytest.approx([0.008] * 11, abs=1e-9)
    for rec in many:
        gaps = [b - a for a, b in zip(rec["planned"], rec["planned"][1:])]
        assert gaps == pytest.approx([0.008 + 0.0005 * (n - 1) for n in rec["running"][:-1]], abs=1e-9)
    # the 20 concurrent requests overlapped (each lasts at least 30 + 11 * 8 ms of engine time),
    # so the engine planned slower gaps for them than for a request alone
    assert max(n for rec in many for n in rec["running"]) > 1


def test_client_disconnect_frees_the_slot():
    async def t(s, url, _srv):
        body = {"prompt": "abcd", "max_tokens": 200, "stream": True}
        resp = await s.post(url + "/v1/completions", json=body)
        assert resp.status == 200
        await resp.content.readline()
        async with s.get(url + "/metrics") as r:
            during = _metric(await r.text(), "vllm:num_requests_running")
        resp.close()
        for dummy in range(100):
            await asyncio.sleep(0.01)
            async with s.get(url + "/metrics") as r:
                text = await r.text()
            if _metric(text, "vllm:num_requests_running") == 0:
                break
        return during, text
    during, after = serve(t, env=_env(itl_base_ms=2))
    assert during == 1
    assert _metric(after, "vllm:num_requests_running") == 0
    assert _metric(after, "vllm:kv_cache_usage_perc") == 0
    assert 'finished_reason="abort"} 1.0' in after


def test_vllm_key_covers_v1_only_so_invocations_and_tokenize_answer_without_it():
    """vLLM's real auth scope (its key guards /v1 paths only): /invocations serves a completion
    and /tokenize answers without the key; the lab's listener test relies on this being true."""
    async def t(s, url, _srv):
        out = {}
        async with s.post(url + "/invocations", json={"model": "org/tiny", "prompt": "hi", "max_tokens": 2}) as r:
            out["invocations"] = (r.status, (await r.json()).get("object"))
        async with s.post(url + "/invocations", json={"model": "org/tiny", "max_tokens": 2,
                                                      "messages": [{"role": "user", "content": "hi"}]}) as r:
            out["invocations_chat"] = (r.status, (await r.json()).get("object"))
        async with s.post(url + "/tokenize", json={"prompt": "Hello"}) as r:
            out["tokenize"] = r.status
        async with s.post(url + "/v1/completions", json={"model": "org/tiny", "prompt": "hi", "max_tokens": 2}) as r:
            out["v1"] = r.status
        return out
    out = serve(t, api_key=KEY)
    assert out == {"invocations": (200, "text_completion"), "invocations_chat": (200, "chat.completion"),
                   "tokenize": 200, "v1": 401}
