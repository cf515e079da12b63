#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: llm_benchmark
short_description: Benchmark an OpenAI-compatible LLM endpoint like C(vllm bench serve)
description:
  - Sends streaming C(/v1/completions) or C(/v1/chat/completions) requests with Poisson
    (or gamma, O(burstiness)) arrivals at O(request_rate), at a fixed O(max_concurrency),
    or for each rate of a sweep (O(request_rates)), and measures TTFT, TPOT, ITL and
    end-to-end latency, throughputs and goodput with vLLM's definitions.
  - Writes a JSON result per load level whose field names match C(vllm bench serve --save-result),
    and a Markdown report with SVG plots.
  - Measures its own dispatch lag and event-loop delay and warns when they could distort
    the results.
  - Fails with the numbers when a O(thresholds) entry is broken.
  - Runs on the host it is delegated to; needs C(aiohttp) there.
version_added: 0.1.0
author: llmfleet developers (@llmfleet)
requirements:
  - aiohttp >= 3.8 on the host running the module
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
attributes:
  check_mode:
    support: none
    details:
      - Sending the load is the whole point; the task is skipped in check mode.
  diff_mode:
    support: none
  idempotent:
    support: none
options:
  base_url:
    description: Server base URL without C(/v1), for example C(http://10.0.0.11:8000).
    type: str
    required: true
  endpoint:
    description: Which streaming API to call.
    type: str
    choices: [completions, chat]
    default: completions
  model:
    description: Model name sent in every request (the served model name).
    type: str
    required: true
  api_key:
    description: Bearer token. Never logged or written to the result.
    type: str
  api_key_file:
    description: File on the host running the module holding the API key (first line).
    type: path
  dataset:
    description: Prompt set.
    type: str
    choices: [random, sharegpt, jsonl, prefix]
    default: random
  dataset_options:
    description:
      - C(random) - C(input_len) (1024), C(output_len) (128), C(range_ratio) (0.0).
      - C(sharegpt) - C(path) to the ShareGPT_V3 JSON, C(output_len) (fixed, else from the answer).
      - C(jsonl) - C(path), C(output_len), C(shuffle).
      - C(prefix) - C(prefix_len) (256), C(suffix_len) (256), C(num_prefixes) (10), C(output_len) (128).
    type: dict
    default: {}
  tokenize:
    description: Count prompt tokens with the server's C(/tokenize) when it has one (random text is calibrated with it).
    type: bool
    default: true
  seed:
    description: Seed for the dataset and the arrival times.
    type: int
    default: 0
  request_rate:
    description: Requests per second, or C(inf) to send all at once (bounded by O(max_concurrency)).
    type: str
    default: inf
  burstiness:
    description: Gamma shape of the inter-arrival times; 1 is Poisson, lower is burstier.
    type: float
    default: 1.0
  max_concurrency:
    description: Most requests in flight; waiting time is reported as C(client_queue_time).
    type: int
  request_rates:
    description: Sweep these request rates (one load level each, same prompts); overrides O(request_rate).
    type: list
    elements: str
  num_prompts:
    description: Requests per load level (ignored with O(duration_s)).
    type: int
    default: 1000
  duration_s:
    description: Run each load level for this many seconds instead of O(num_prompts) requests.
    type: float
  warmup_requests:
    description: Requests sent before each load level and left out of the results.
    type: int
    default: 0
  extra_body:
    description: Extra JSON fields merged into every request body.
    type: dict
    default: {}
  ignore_eos:
    description: Send C(ignore_eos) so every request generates its full length; default true for C(random) and C(prefix) like vLLM.
    type: bool
  temperature:
    description: Sampling temperature sent with every request (server default when unset).
    type: float
  max_tokens:
    description: Output tokens per request for every prompt, overriding the dataset's lengths.
    type: int
  percentiles:
    description: Percentiles reported for every latency metric.
    type: list
    elements: float
    default: [50, 90, 99]
  goodput:
    description: SLOs in milliseconds for goodput; keys C(ttft), C(tpot), C(e2el).
    type: dict
  thresholds:
    description:
      - Conditions such as C(p99_ttft_ms < 500) or C(request_goodput >= 20); any result field name,
        one of C(< <= > >= == !=), a number. C(goodput) means C(request_goodput). Broken ones fail the task.
    type: list
    elements: str
    default: []
  stop_file:
    description:
      - Stop sending new requests once this file exists on the runner; requests in flight finish
        and the run is measured over its real duration. For load that lasts as long as an outside
        event, for example a rolling reconfiguration (set a long O(duration_s) with it).
    type: path
  baseline:
    description:
      - A result JSON to compare with (this module's or C(vllm bench serve --save-result)'s), for
        example the recorded result of the same model on the same hardware. The last request rate
        is compared, metric by metric as C(tolerance) says; a regression fails the task.
    type: path
  tolerance:
    description:
      - With O(baseline), the allowed change in percent per metric, in the bad direction only
        (a latency may grow by that much, a throughput or goodput may fall by that much).
    type: dict
    default: {median_ttft_ms: 25, median_tpot_ms: 25, output_throughput: 15}
  event_loop:
    description:
      - Event loop of the load generator. V(auto) uses uvloop when it is installed on the
        runner (recommended, the client then keeps its schedule at higher request rates) and
        asyncio's own loop otherwise; V(uvloop) fails when uvloop is missing.
      - The loop used is recorded as C(llmfleet.event_loop) in the result file.
    type: str
    choices: [auto, asyncio, uvloop]
    default: auto
  request_timeout_s:
    description: Read timeout of one request.
    type: float
    default: 600
  result_dir:
    description: Directory for the result JSON, the report and its plots (created).
    type: path
    required: true
  result_filename:
    description:
      - Name of the result JSON; default like vLLM C(<label>-<rate>qps[-concurrencyN]-<model>-<date>.json).
      - In a sweep the rate is inserted before C(.json).
    type: str
  label:
    description: Result label (vLLM's C(--label)); default C(openai) or C(openai-chat).
    type: str
  save_detailed:
    description: Keep the per-request lists in the JSON (vLLM's C(--save-detailed)).
    type: bool
    default: false
  report:
    description: Write the Markdown report and SVG plots.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: ShareGPT at the guides' rates, fail on regression
  llmfleet.serving.llm_benchmark:
    base_url: http://10.0.0.11:8000
    model: deepseek-ai/DeepSeek-R1
    api_key_file: /etc/llmfleet/keys/r1
    dataset: sharegpt
    dataset_options:
      path: /data/ShareGPT_V3_unfiltered_cleaned_split.json
    num_prompts: 500
    request_rates: [1, 10, 20, 50, 75]
    goodput: {ttft: 2000, tpot: 100}
    thresholds:
      - p99_ttft_ms < 5000
      - goodput >= 5
    result_dir: /tmp/llmfleet-bench

- name: Random 1000/1000 tokens at 32 concurrent requests
  llmfleet.serving.llm_benchmark:
    base_url: http://127.0.0.1:8000
    model: Qwen/QwQ-32B
    endpoint: chat
    dataset_options: {input_len: 1000, output_len: 1000}
    max_concurrency: 32
    num_prompts: 320
    result_dir: /tmp/llmfleet-bench
"""

RETURN = r"""
metrics:
  description: Result fields of the (last) load level, named like C(vllm bench serve --save-result), per-request lists left out.
  returned: success or broken threshold
  type: dict
  sample: {completed: 100, failed: 0, request_throughput: 9.8, median_ttft_ms: 52.1, p99_itl_ms: 12.4}
sweep:
  description: The metrics of every load level, in O(request_rates) order.
  returned: always
  type: list
  elements: dict
result_file:
  description: Path of the (first) result JSON on the host that ran the module.
  returned: success or broken threshold
  type: str
result_files:
  description: One result JSON per load level.
  returned: success or broken threshold
  type: list
  elements: str
report_file:
  description: The Markdown report, or null when O(report=false).
  returned: success or broken threshold
  type: str
report_files:
  description: The report and its SVG plots.
  returned: success or broken threshold
  type: list
  elements: str
warnings_client:
  description: Client-side problems (dispatch lag, event-loop delay) that may distort the results; also emitted as warnings.
  returned: always
  type: list
  elements: str
unsupported_fields:
  description: Request fields the server rejected and that were left out (for example C(ignore_eos)).
  returned: always
  type: list
  elements: str
usage_source:
  description: C(server) when output tokens came from the server's usage, C(counted_chunks) when counted from stream chunks.
  returned: always
  type: str
thresholds:
  description: Every threshold with its load level, value and C(passed).
  returned: always
  type: list
  elements: dict
baseline_checks:
  description:
    - With O(baseline), one entry per compared metric - C(metric), C(baseline), C(value), C(limit),
      C(tolerance_pct), C(change_pct), C(higher_is_better), C(passed).
  returned: when baseline is set
  type: list
  elements: dict
  sample: [{metric: median_ttft_ms, baseline: 41.2, value: 43.0, limit: 51.5, tolerance_pct: 25,
            change_pct: 4.4, higher_is_better: false, passed: true}]
"""

import json
import math
import os
import traceback
from datetime import datetime

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmfleet.serving.plugins.module_utils._api_key import KeyFileError, read_key_file
from ansible_collections.llmfleet.serving.plugins.module_utils import _bench_client as bc
from ansible_collections.llmfleet.serving.plugins.module_utils._bench_datasets import build_dataset
from ansible_collections.llmfleet.serving.plugins.module_utils._bench_metrics import (
    DEFAULT_TOLERANCE, compare_baseline, evaluate_thresholds, normalize_goodput, parse_threshold, parse_tolerance,
    summarize_errors, timeline,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._bench_report import write_report

# vLLM drops these without --save-detailed (latencies and queue_times stay).
DETAILED_FIELDS = ("input_lens", "output_lens", "start_times", "ttfts", "itls",
                   "generated_texts", "errors")
# Our additions live under one key so vLLM's top-level names stay untouched.
EXTRA_FIELDS = ("dispatch_lag_ms", "event_loop_delay_ms", "client_warnings",
                "unsupported_fields", "usage_source", "requests_counted_by_chunks",
                "event_loop", "timeline")


def parse_rate(value):
    text = str(value).strip().lower()
    if text in ("inf", "infinity", "+inf"):
        return float("inf")
    rate = float(text)
    if rate <= 0 or math.isnan(rate):
        raise ValueError("request rate must be positive, got %r" % (value,))
    return rate


def rate_word(rate):
    return "inf" if math.isinf(rate) else str(float(rate))


def result_json(level, meta, save_detailed):
    out = {"date": meta["date"], "endpoint_type": meta["backend"], "backend": meta["backend"],
           "label": meta["label"], "model_id": meta["model_id"], "tokenizer_id": None,
           "num_prompts": level["num_prompts"], "request_rate": level["request_rate"],
           "burstiness": level["burstiness"], "max_concurrency": level["max_concurrency"]}
    extras = {"base_url": meta["base_url"], "endpoint": meta["endpoint"],
              "dataset": meta["dataset"], "error_summary": level["error_summary"]}
    for k, v in level.items():
        if k in ("request_rate", "burstiness", "max_concurrency", "num_prompts", "error_summary"):
            continue
        if k in EXTRA_FIELDS:
            extras[k] = v
        elif save_detailed or k not in DETAILED_FIELDS:
            out[k] = v
    out["llmfleet"] = extras
    return out


def public_metrics(level):
    return dict((k, v) for k, v in level.items()
                if k not in DETAILED_FIELDS and k not in ("latencies", "queue_times"))


def _num(v):
    return ("%.3f" % v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "missing"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            base_url=dict(type="str", required=True),
            endpoint=dict(type="str", default="completions", choices=["completions", "chat"]),
            model=dict(type="str", required=True),
            api_key=dict(type="str", no_log=True),
            api_key_file=dict(type="path", no_log=False),
            dataset=dict(type="str", default="random",
                         choices=["random", "sharegpt", "jsonl", "prefix"]),
            dataset_options=dict(type="dict", default={}),
            tokenize=dict(type="bool", default=True),
            seed=dict(type="int", default=0),
            request_rate=dict(type="str", default="inf"),
            burstiness=dict(type="float", default=1.0),
            max_concurrency=dict(type="int"),
            request_rates=dict(type="list", elements="str"),
            num_prompts=dict(type="int", default=1000),
            duration_s=dict(type="float"),
            warmup_requests=dict(type="int", default=0),
            extra_body=dict(type="dict", default={}),
            ignore_eos=dict(type="bool"),
            temperature=dict(type="float"),
            max_tokens=dict(type="int", no_log=False),
            percentiles=dict(type="list", elements="float", default=[50, 90, 99]),
            goodput=dict(type="dict"),
            thresholds=dict(type="list", elements="str", default=[]),
            baseline=dict(type="path"),
            stop_file=dict(type="path"),
            tolerance=dict(type="dict", default=dict(DEFAULT_TOLERANCE)),
            request_timeout_s=dict(type="float", default=600),
            event_loop=dict(type="str", default="auto", choices=["auto", "asyncio", "uvloop"]),
            result_dir=dict(type="path", required=True),
            result_filename=dict(type="str"),
            label=dict(type="str"),
            save_detailed=dict(type="bool", default=False),
            report=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("api_key", "api_key_file")],
        supports_check_mode=False,
    )
    if not bc.HAS_AIOHTTP:
        module.fail_json(msg=missing_required_lib("aiohttp"),
                         exception="".join(traceback.format_exception(
                             type(bc.AIOHTTP_IMPORT_ERROR), bc.AIOHTTP_IMPORT_ERROR, None)))
    p = module.params

    try:
        rates = [parse_rate(r) for r in (p["request_rates"] or [p["request_rate"]])]
        goodput = normalize_goodput(p["goodput"])
        for t in p["thresholds"]:
            parse_threshold(t)
    except ValueError as e:
        module.fail_json(msg=str(e))
    baseline = None
    if p["baseline"]:
        try:
            with open(p["baseline"]) as f:
                baseline = json.load(f)
            parse_tolerance(p["tolerance"])
        except (IOError, OSError, ValueError) as e:
            module.fail_json(msg="baseline %s: %s" % (p["baseline"], e))
        if not isinstance(baseline, dict):
            module.fail_json(msg="baseline %s is not a result JSON object" % p["baseline"])
    if not p["percentiles"] or any(not 0 < x <= 100 for x in p["percentiles"]):
        module.fail_json(msg="percentiles must be in (0, 100]")

    api_key = p["api_key"]
    if p["api_key_file"]:
        # one reader for every key file (module_utils/_api_key.py): an empty or whitespace-only
        # file is refused, never taken as "no authentication"
        try:
            api_key = read_key_file(p["api_key_file"])
        except KeyFileError as e:
            module.fail_json(msg="api_key_file: %s" % e)
        module.no_log_values.add(api_key)

    ignore_eos = p["ignore_eos"]
    if ignore_eos is None:
        ignore_eos = p["dataset"] in ("random", "prefix")

    count_tokens = None
    if p["tokenize"]:
        count_tokens = bc.make_token_counter(p["base_url"], p["model"], api_key)
    try:
        samples = build_dataset(p["dataset"], p["num_prompts"], p["dataset_options"],
                                seed=p["seed"], count_tokens=count_tokens)
    except (ValueError, IOError, OSError) as e:
        module.fail_json(msg="dataset %s: %s" % (p["dataset"], e))

    try:
        cfg = bc.BenchConfig(
            p["base_url"], p["model"], endpoint=p["endpoint"], api_key=api_key,
            extra_body=p["extra_body"], ignore_eos=ignore_eos, temperature=p["temperature"],
            max_tokens=p["max_tokens"], request_rate=rates[0], burstiness=p["burstiness"],
            max_concurrency=p["max_concurrency"], num_prompts=p["num_prompts"],
            duration_s=p["duration_s"], warmup_requests=p["warmup_requests"], seed=p["seed"],
            request_timeout_s=p["request_timeout_s"], percentiles=p["percentiles"],
            goodput=goodput, event_loop=p["event_loop"], stop_file=p["stop_file"],
            keep_texts=p["save_detailed"])
        levels = bc.run_benchmark(cfg, samples, rates)
    except bc.BenchmarkError as e:
        module.fail_json(msg=str(e))

    backend = "openai-chat" if p["endpoint"] == "chat" else "openai"
    label = p["label"] or backend
    date = datetime.now().strftime("%Y%m%d-%H%M%S")
    meta = {"date": date, "backend": backend, "label": label, "model_id": p["model"], "base_url": p["base_url"],
            "endpoint": p["endpoint"], "dataset": p["dataset"], "burstiness": p["burstiness"],
            "num_prompts": p["num_prompts"]}
    base_model = p["model"].split("/")[-1]
    conc = "-concurrency%d" % p["max_concurrency"] if p["max_concurrency"] else ""

    try:
        os.makedirs(p["result_dir"], exist_ok=True)
    except OSError as e:
        module.fail_json(msg="cannot create result_dir %s: %s" % (p["result_dir"], e))
    result_files = []
    checks = []
    warnings = []
    unsupported = []
    for level, rate in zip(levels, rates):
        level["error_summary"] = summarize_errors(level["errors"])
        level["timeline"] = timeline(level)
        if p["result_filename"]:
            name = p["result_filename"]
            if len(rates) > 1:
                stem, ext = os.path.splitext(name)
                name = "%s-%sqps%s" % (stem, rate_word(rate), ext or ".json")
        else:
            name = "%s-%sqps%s-%s-%s.json" % (label, rate_word(rate), conc, base_model, date)
        path = os.path.join(p["result_dir"], name)
        with open(path, "w") as f:
            json.dump(result_json(level, meta, p["save_detailed"]), f, indent=2)
        result_files.append(path)
        for c in evaluate_thresholds(p["thresholds"], level):
            c["request_rate"] = level["request_rate"]
            checks.append(c)
        warnings.extend(level["client_warnings"])
        for f in level["unsupported_fields"]:
            if f not in unsupported:
                unsupported.append(f)
    for w in warnings:
        module.warn(w)
    if unsupported:
        module.warn("the server rejected %s; requests were sent without %s"
                    % (", ".join(unsupported), "it" if len(unsupported) == 1 else "them"))
    meta["unsupported_fields"] = unsupported

    report_files = []
    if p["report"]:
        report_path = os.path.splitext(result_files[0])[0] + ".md"
        if len(rates) > 1:
            report_path = os.path.join(p["result_dir"], "%s-sweep%s-%s-%s.md"
                                       % (label, conc, base_model, date))
        report_files = write_report(report_path, levels, meta, p["percentiles"], checks)

    sources = set(lv["usage_source"] for lv in levels)
    usage_source = "server" if sources == {"server"} else (
        "counted_chunks" if "counted_chunks" in sources else "none")
    if usage_source == "counted_chunks":
        module.warn("the server sent no token usage; output tokens were counted from stream "
                    "chunks (TPOT and throughput undercount if a chunk carries several tokens)")
    result = dict(
        changed=True,
        metrics=public_metrics(levels[-1]),
        sweep=[public_metrics(lv) for lv in levels],
        result_file=result_files[0],
        result_files=result_files,
        report_file=report_files[0] if report_files else None,
        report_files=report_files,
        warnings_client=warnings,
        unsupported_fields=unsupported,
        usage_source=usage_source,
        thresholds=checks,
    )
    if baseline is not None:
        result["baseline_checks"] = compare_baseline(levels[-1], baseline, p["tolerance"])
        regressed = [c for c in result["baseline_checks"] if not c["passed"]]
        if regressed:
            module.fail_json(msg="regression against the baseline %s: %s" % (p["baseline"], "; ".join(
                "%s %s (baseline %s, limit %s, %s%% allowed)" % (
                    c["metric"], _num(c["value"]), _num(c["baseline"]), _num(c["limit"]), _num(c["tolerance_pct"]))
                for c in regressed)), **result)
    broken = [c for c in checks if not c["passed"]]
    if broken:
        parts = ["%s: %s = %s at %s req/s" % (
            c["threshold"], c["metric"],
            ("%.3f" % c["value"]) if isinstance(c["value"], (int, float)) else "missing",
            c["request_rate"]) for c in broken]
        module.fail_json(msg="benchmark threshold(s) broken: " + "; ".join(parts), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
