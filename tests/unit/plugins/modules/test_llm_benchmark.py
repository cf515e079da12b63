# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest
from aiohttp import web
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmfleet.serving.plugins.module_utils import _bench_client as bc
from ansible_collections.llmfleet.serving.plugins.modules import llm_benchmark

# Field names of `vllm bench serve --save-result` (vllm/benchmarks/serve.py, main @ 009e6d4a)
VLLM_FIELDS = [
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
    "request_rate", "burstiness", "max_concurrency", "duration", "completed", "failed",
    "total_input_tokens", "total_output_tokens", "request_throughput", "request_goodput",
    "output_throughput", "total_token_throughput", "latencies", "queue_times",
    "max_output_tokens_per_s", "max_concurrent_requests", "rtfx",
    "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p99_ttft_ms",
    "mean_tpot_ms", "median_tpot_ms", "std_tpot_ms", "p99_tpot_ms",
    "mean_itl_ms", "median_itl_ms", "std_itl_ms", "p99_itl_ms",
    "mean_e2el_ms", "median_e2el_ms", "std_e2el_ms", "p99_e2el_ms",
]


class Exit(Exception):
    pass


class Fail(Exception):
    pass


@pytest.fixture(scope="module")
def server():
    """OpenAI-style completions stream on 127.0.0.1; 'strict' rejects ignore_eos with 422."""
    seen = []

    async def completions(request):
        body = await request.json()
        seen.append((body, request.headers.get("Authorization")))
        if body["model"] == "strict" and "ignore_eos" in body:
            return web.json_response({"detail": "ignore_eos: extra inputs are not permitted"},
                                     status=422)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(body["max_tokens"]):
            await asyncio.sleep(0.002)
            await resp.write(b'data: {"choices": [{"index": 0, "text": " a"}]}\n\n')
        await resp.write(('data: {"choices": [], "usage": {"prompt_tokens": 4, '
                          '"completion_tokens": %d}}\n\ndata: [DONE]\n\n'
                          % body["max_tokens"]).encode())
        return resp

    async def tokenize(request):
        body = await request.json()
        return web.json_response({"count": len(body["prompt"].split())})

    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()

    async def start():
        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        app.router.add_post("/tokenize", tokenize)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield "http://127.0.0.1:%d" % port, seen
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


def run_module(monkeypatch, args):
    monkeypatch.setattr(basic.AnsibleModule, "exit_json",
                        lambda self, **kw: (dummy for dummy in ()).throw(Exit(kw)))
    monkeypatch.setattr(basic.AnsibleModule, "fail_json",
                        lambda self, **kw: (dummy for dummy in ()).throw(Fail(kw)))
    with patch_module_args(args):
        try:
            llm_benchmark.main()
        except Exit as e:
            return "exit", e.args[0]
        except Fail as e:
            return "fail", e.args[0]
    raise AssertionError("module returned without exit_json/fail_json")


def base_args(url, tmp_path, **kw):
    a = {"base_url": url, "model": "m", "num_prompts": 6, "request_rate": "100",
         "dataset_options": {"input_len": 10, "output_len": 3},
         "result_dir": str(tmp_path), "api_key": "sk-secret-123"}
    a.update(kw)
    return dict((k, v) for k, v in a.items() if v is not None)


def test_result_file_has_vllm_field_names_and_no_secret(monkeypatch, tmp_path, server):
    url, seen = server
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, goodput={"ttft": 1000},
                                                  thresholds=["p99_ttft_ms < 5000",
                                                              "goodput >= 0.1"]))
    assert kind == "exit", res
    with open(res["result_file"]) as f:
        data = json.load(f)
    missing = [k for k in VLLM_FIELDS if k not in data]
    assert missing == []
    assert data["completed"] == 6 and data["total_output_tokens"] == 18
    assert data["request_rate"] == 100.0 and data["backend"] == "openai"
    assert data["p90_ttft_ms"] >= data["median_ttft_ms"]
    assert "ttfts" not in data and "itls" not in data          # vLLM drops them without --save-detailed
    assert os.path.basename(res["result_file"]).startswith("openai-100.0qps-m-")
    assert data["llmfleet"]["usage_source"] == "server"
    assert data["llmfleet"]["event_loop"] in ("asyncio", "uvloop")
    assert all(t["passed"] for t in res["thresholds"])
    assert res["usage_source"] == "server" and res["unsupported_fields"] == []
    assert seen[-1][1] == "Bearer sk-secret-123" and seen[-1][0]["ignore_eos"] is True
    for path in res["report_files"]:
        with open(path) as f:
            assert "sk-secret-123" not in f.read()
    with open(res["result_file"]) as f:
        assert "sk-secret-123" not in f.read()
    assert any(p.endswith(".svg") for p in res["report_files"])


def test_save_detailed_keeps_vllm_per_request_lists_with_generated_texts(monkeypatch, tmp_path, server):
    url, seen = server
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, save_detailed=True))
    assert kind == "exit", res
    with open(res["result_file"]) as f:
        data = json.load(f)
    for k in ("input_lens", "output_lens", "ttfts", "itls", "start_times", "errors", "generated_texts"):
        assert len(data[k]) == 6, k
    assert data["generated_texts"] == [" a a a"] * 6   # what the server streamed, as vLLM saves it


def test_broken_threshold_fails_with_numbers(monkeypatch, tmp_path, server):
    url, dummy = server
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, thresholds=[
        "p99_ttft_ms < 0.001", "completed >= 6"]))
    assert kind == "fail"
    assert "p99_ttft_ms < 0.001: p99_ttft_ms = " in res["msg"]
    assert "completed" not in res["msg"].split("broken:")[1]
    assert [t["passed"] for t in res["thresholds"]] == [False, True]
    assert os.path.exists(res["result_file"])      # results are kept for the post-mortem


def test_bad_threshold_is_rejected_before_any_request(monkeypatch, tmp_path, server):
    url, seen = server
    before = len(seen)
    kind, res = run_module(monkeypatch, base_args(url, tmp_path,
                                                  thresholds=["__import__('os') > 1"]))
    assert kind == "fail" and "threshold" in res["msg"]
    assert len(seen) == before


def test_sweep_writes_one_vllm_file_per_rate_and_reports_rejected_field(monkeypatch, tmp_path,
                                                                        server):
    url, dummy = server
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, model="strict",
                                                  request_rates=["50", "100"], max_concurrency=2,
                                                  api_key=None,
                                                  result_filename="run.json"))
    assert kind == "exit", res
    assert [os.path.basename(p) for p in res["result_files"]] == ["run-50.0qps.json",
                                                                  "run-100.0qps.json"]
    assert [m["request_rate"] for m in res["sweep"]] == [50.0, 100.0]
    assert res["unsupported_fields"] == ["ignore_eos"]
    with open(res["result_files"][1]) as f:
        data = json.load(f)
    assert data["request_rate"] == 100.0 and data["max_concurrency"] == 2
    assert "p99_client_queue_time_ms" in data
    assert res["report_file"].endswith(".md")
    with open(res["report_file"]) as f:
        assert "## Sweep" in f.read()


def test_api_key_file_and_missing_aiohttp(monkeypatch, tmp_path, server):
    url, seen = server
    keyfile = tmp_path / "key"
    keyfile.write_text("sk-from-file-0123456789\n")
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, api_key=None,
                                                  api_key_file=str(keyfile), num_prompts=2,
                                                  report=False))
    assert kind == "exit", res
    assert seen[-1][1] == "Bearer sk-from-file-0123456789"
    assert res["report_file"] is None
    monkeypatch.setattr(bc, "HAS_AIOHTTP", False)
    monkeypatch.setattr(bc, "AIOHTTP_IMPORT_ERROR", ImportError("no aiohttp"))
    kind, res = run_module(monkeypatch, base_args(url, tmp_path))
    assert kind == "fail" and "aiohttp" in res["msg"]


@pytest.mark.parametrize("content", ["", "   \n"])
def test_empty_or_whitespace_key_file_is_refused(monkeypatch, tmp_path, server, content):
    url, seen = server
    keyfile = tmp_path / "key"
    keyfile.write_text(content)
    n = len(seen)
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, api_key=None, api_key_file=str(keyfile)))
    assert kind == "fail" and "empty or whitespace only" in res["msg"]
    assert len(seen) == n  # no request was sent without the key


def test_event_loop_option_is_used(monkeypatch, tmp_path, server):
    url, seen = server
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, event_loop="asyncio"))
    assert kind == "exit", res
    with open(res["result_file"]) as f:
        assert json.load(f)["llmfleet"]["event_loop"] == "asyncio"


def test_baseline_within_tolerance_passes_and_regression_fails(monkeypatch, tmp_path, server):
    url, seen = server
    kind, first = run_module(monkeypatch, base_args(url, tmp_path / "a"))
    assert kind == "exit", first
    with open(first["result_file"]) as f:
        recorded = json.load(f)
    # Baselines are written so that no timing of this machine (idle or busy) decides the outcome:
    # a baseline a million times slower than the first run always holds ...
    recorded["median_ttft_ms"] = first["metrics"]["median_ttft_ms"] * 1e6
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(recorded))
    kind, res = run_module(monkeypatch, base_args(url, tmp_path / "b", baseline=str(slow),
                                                  tolerance={"completed": 0, "median_ttft_ms": 25}))
    assert kind == "exit", res
    assert [c["metric"] for c in res["baseline_checks"]] == ["completed", "median_ttft_ms"]
    assert all(c["passed"] for c in res["baseline_checks"])
    # ... and one faster than any server can be (TTFT 1 us, 10^12 tokens/s) always regresses,
    # under the default tolerance (median_tpot_ms too: its baseline is made unreachably slow).
    recorded["median_ttft_ms"] = 0.001
    recorded["output_throughput"] = 1e12
    recorded["median_tpot_ms"] = 1e9
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps(recorded))
    kind, res = run_module(monkeypatch, base_args(url, tmp_path / "c", baseline=str(fast)))
    assert kind == "fail"
    assert res["msg"].startswith("regression against the baseline %s: " % fast)
    assert "median_ttft_ms" in res["msg"] and "output_throughput" in res["msg"]
    checked = sorted(c["metric"] for c in res["baseline_checks"])
    assert checked == ["median_tpot_ms", "median_ttft_ms", "output_throughput"]
    failed = sorted(c["metric"] for c in res["baseline_checks"] if not c["passed"])
    assert failed == ["median_ttft_ms", "output_throughput"]
    assert os.path.exists(res["result_file"])


def test_unreadable_baseline_fails_before_any_request(monkeypatch, tmp_path, server):
    url, seen = server
    before = len(seen)
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, baseline=str(tmp_path / "none.json")))
    assert kind == "fail" and res["msg"].startswith("baseline %s: " % (tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    kind, res = run_module(monkeypatch, base_args(url, tmp_path, baseline=str(bad), tolerance={"median_ttft_ms": "x"}))
    assert kind == "fail" and "tolerance of median_ttft_ms must be a number" in res["msg"]
    assert len(seen) == before
