# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils._bench_metrics import (
    RequestResult, calculate_metrics, evaluate_thresholds, normalize_goodput, parse_threshold,
    percentile, std, summarize_errors,
)


def ok(**kw):
    kw.setdefault("success", True)
    return RequestResult(**kw)


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def test_percentile_matches_numpy_linear_by_hand():
    xs = [1.0, 2.0, 3.0, 4.0]
    # rank = 3 * 0.99 = 2.97 -> 3 + 0.97 * (4 - 3)
    assert percentile(xs, 99) == approx(3.97)
    assert percentile(xs, 50) == approx(2.5)
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 99) == 0.0
    # population std of 1..4: sqrt(1.25)
    assert std(xs) == approx(1.25 ** 0.5)


def test_hand_computed_run_with_multi_token_chunks_failures_and_no_token():
    results = [
        # 5 tokens (server usage) in 3 chunks: TTFT 100 ms, chunks at 0.10, 0.15, 0.30 s
        ok(prompt_len=10, output_tokens=5, usage_from_server=True, token_chunks=3,
           ttft=0.100, itl=[0.050, 0.150], latency=0.300),
        # 1 token: no TPOT, one TTFT, no ITL
        ok(prompt_len=20, output_tokens=1, usage_from_server=True, token_chunks=1,
           ttft=0.200, itl=[], latency=0.200),
        # HTTP 500
        RequestResult(success=False, error="HTTP 500: overloaded", prompt_len=30),
        # stream ended without a token: the client marks it failed
        RequestResult(success=False, error="stream ended without a token", prompt_len=40),
    ]
    m = calculate_metrics(results, duration_s=2.0, percentiles=[50, 99],
                          goodput={"ttft": 150})
    assert m["completed"] == 2
    assert m["failed"] == 2
    assert m["total_input_tokens"] == 30          # failed requests' prompts not counted
    assert m["total_output_tokens"] == 6
    assert m["request_throughput"] == approx(1.0)
    assert m["output_throughput"] == approx(3.0)
    assert m["total_token_throughput"] == approx(18.0)
    # only request 1 meets TTFT <= 150 ms
    assert m["request_goodput"] == approx(0.5)
    assert m["mean_ttft_ms"] == approx(150.0)
    assert m["median_ttft_ms"] == approx(150.0)
    assert m["std_ttft_ms"] == approx(50.0)
    assert m["p99_ttft_ms"] == approx(199.0)
    # TPOT only for output_len > 1: (300 - 100) / (5 - 1) = 50 ms; the chunk count (3) is not used
    assert m["mean_tpot_ms"] == approx(50.0)
    assert m["p99_tpot_ms"] == approx(50.0)
    # ITL: one value per gap between chunks, not per token
    assert m["mean_itl_ms"] == approx(100.0)
    assert m["median_itl_ms"] == approx(100.0)
    assert m["p99_itl_ms"] == approx(50.0 + 0.99 * 100.0)
    assert m["mean_e2el_ms"] == approx(250.0)
    assert m["output_lens"] == [5, 1, 0, 0]
    assert m["errors"][2] == "HTTP 500: overloaded"
    assert m["usage_source"] == "server"
    assert summarize_errors(m["errors"]) == [
        {"error": "HTTP 500: overloaded", "count": 1},
        {"error": "stream ended without a token", "count": 1}]


def test_without_usage_counts_token_chunks_not_empty_chunks():
    # 4 JSON chunks were seen, 3 carried text (an empty one in between does not count)
    r = ok(prompt_len=8, output_tokens=None, chunk_count=4, token_chunks=3,
           ttft=0.010, itl=[0.020, 0.030], latency=0.060)
    m = calculate_metrics([r], duration_s=1.0, percentiles=[99])
    assert m["total_output_tokens"] == 3
    assert m["mean_tpot_ms"] == approx(25.0)       # (60 - 10) / 2
    assert m["usage_source"] == "counted_chunks"
    assert m["request_goodput"] is None


def test_tpot_zero_for_single_token_counts_for_goodput_but_not_in_stats():
    rs = [ok(output_tokens=1, usage_from_server=True, token_chunks=1, ttft=0.5, latency=0.5),
          ok(output_tokens=3, usage_from_server=True, token_chunks=3, ttft=0.1,
             itl=[0.1, 0.1], latency=0.3)]
    m = calculate_metrics(rs, 1.0, [99], goodput={"tpot_ms": 50})
    # request 1: tpot 0 <= 50 -> good; request 2: tpot 100 > 50 -> not good
    assert m["request_goodput"] == approx(1.0)
    assert m["mean_tpot_ms"] == approx(100.0)


def test_all_failed_gives_zeros_not_errors():
    m = calculate_metrics([RequestResult(success=False, error="x")], 1.0, [99])
    assert m["completed"] == 0 and m["failed"] == 1
    assert m["mean_ttft_ms"] == 0.0 and m["p99_itl_ms"] == 0.0
    assert m["usage_source"] == "none"


def test_fractional_percentile_key_and_client_queue_time():
    rs = [ok(output_tokens=2, usage_from_server=True, ttft=0.1, itl=[0.1], latency=0.2,
             client_queue_time=0.5)]
    m = calculate_metrics(rs, 1.0, [99.9], extra_percentile_metrics=("client_queue_time",))
    assert "p99.9_ttft_ms" in m
    assert m["mean_client_queue_time_ms"] == approx(500.0)


def test_goodput_validation():
    assert normalize_goodput({"TTFT": "500"}) == {"ttft": 500.0}
    with pytest.raises(ValueError):
        normalize_goodput({"latency": 5})
    with pytest.raises(ValueError):
        normalize_goodput({"ttft": -1})


def test_threshold_parsing_and_evaluation():
    assert parse_threshold("p99_ttft_ms<500") == ("p99_ttft_ms", "<", 500.0)
    assert parse_threshold(" goodput >= 2e1 ") == ("request_goodput", ">=", 20.0)
    for bad in ["p99_ttft_ms < __import__('os')", "p99 << 5", "x < ", "1 < 2"]:
        with pytest.raises(ValueError):
            parse_threshold(bad)
    res = evaluate_thresholds(["p99_ttft_ms < 500", "request_goodput >= 20", "nope > 1"],
                              {"p99_ttft_ms": 612.5, "request_goodput": 20.0})
    assert [r["passed"] for r in res] == [False, True, False]
    assert res[0]["value"] == 612.5 and res[2]["value"] is None


def test_peak_output_tokens_per_second_and_concurrency():
    rs = [ok(start_time=10.0, ttft=0.2, itl=[0.3, 0.3, 0.5], latency=1.3,
             output_tokens=4, usage_from_server=True),
          ok(start_time=10.5, ttft=0.1, itl=[0.2], latency=0.3,
             output_tokens=2, usage_from_server=True),
          ok(start_time=12.0, ttft=0.1, itl=[], latency=0.1,
             output_tokens=1, usage_from_server=True)]
    m = calculate_metrics(rs, 3.0, [99])
    # chunk times (s after 10.0): 0.2 0.5 0.8 1.3 | 0.6 0.8 | 2.1 -> bucket 0 holds 5
    assert m["max_output_tokens_per_s"] == 5.0
    # [10.0, 11.3) and [10.5, 10.8) overlap; [12.0, 12.1) alone
    assert m["max_concurrent_requests"] == 2


def test_compare_baseline_directions_and_missing_metrics():
    from ansible_collections.llmfleet.serving.plugins.module_utils._bench_metrics import compare_baseline
    base = {"median_ttft_ms": 100.0, "output_throughput": 200.0, "request_goodput": 10.0}
    rows = compare_baseline({"median_ttft_ms": 124.0, "output_throughput": 171.0, "request_goodput": 8.9},
                            base, {"median_ttft_ms": 25, "output_throughput": 15, "goodput": 10})
    by = {r["metric"]: r for r in rows}
    assert by["median_ttft_ms"]["passed"] and by["median_ttft_ms"]["limit"] == 125.0
    assert by["output_throughput"]["passed"] and by["output_throughput"]["higher_is_better"]
    assert not by["request_goodput"]["passed"] and round(by["request_goodput"]["change_pct"], 1) == -11.0
    rows = compare_baseline({"median_ttft_ms": 126.0}, base, {"median_ttft_ms": 25, "p99_itl_ms": 5})
    assert [(r["metric"], r["passed"]) for r in rows] == [("median_ttft_ms", False), ("p99_itl_ms", False)]
    assert rows[1]["value"] is None and rows[1]["limit"] is None
    with pytest.raises(ValueError) as e:
        compare_baseline({}, base, {"median_ttft_ms": -1})
    assert "must be >= 0" in str(e.value)


def test_timeline_windows_show_a_slow_stretch_and_failures():
    from ansible_collections.llmfleet.serving.plugins.module_utils._bench_metrics import timeline
    # 60 requests, one per second; seconds 20-29 slow (a replica restarting), two failed at 25, 26.
    starts = [100.0 + i for i in range(60)]
    ttfts = [0.5 if 20 <= i < 30 else 0.05 for i in range(60)]
    errors = ["boom" if i in (25, 26) else "" for i in range(60)]
    level = {"start_times": starts, "ttfts": ttfts, "latencies": [t + 1.0 for t in ttfts], "errors": errors}
    rows = timeline(level)
    assert [r["start_s"] for r in rows] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38,
                                            40, 42, 44, 46, 48, 50, 52, 54, 56, 58]
    assert sum(r["requests"] for r in rows) == 60 and sum(r["failed"] for r in rows) == 2
    slow = [r for r in rows if r["median_ttft_ms"] > 100]
    assert [r["start_s"] for r in slow] == [20, 22, 24, 26, 28]
    assert rows[0]["median_e2el_ms"] == pytest.approx(1050.0)
    rows = timeline(level, window_s=30)
    assert [(r["start_s"], r["requests"], r["failed"]) for r in rows] == [(0, 30, 2), (30, 30, 0)]
    assert timeline({"start_times": []}) == []


def test_report_has_the_latency_timeline(tmp_path):
    from ansible_collections.llmfleet.serving.plugins.module_utils._bench_metrics import RequestResult, calculate_metrics
    from ansible_collections.llmfleet.serving.plugins.module_utils._bench_report import write_report
    results = [RequestResult(success=i != 7, error="" if i != 7 else "HTTP 502", prompt_len=4, output_tokens=3,
                             usage_from_server=True, ttft=0.01 * (1 + i % 3), itl=[0.01, 0.01], latency=0.05,
                             start_time=10.0 + i) for i in range(12)]
    level = calculate_metrics(results, 12.0)
    level.update(request_rate=1.0, error_summary=[])
    files = write_report(str(tmp_path / "r.md"), [level], {"model_id": "m"}, [50, 99])
    text = (tmp_path / "r.md").read_text()
    assert "### Latency over time (requests by start time, 1 s windows)" in text
    assert "| 7 | 1 | 1 | - | - | - | - |" in text
    assert any(f.endswith("-run-timeline.svg") for f in files)
