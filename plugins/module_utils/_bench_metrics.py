# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: serving-benchmark metrics computed like vLLM's.

Not a public API; it may change without notice.

The arithmetic and the result field names follow ``vllm bench serve`` /
``benchmarks/benchmark_serving.py`` (``calculate_metrics`` and ``benchmark`` in
``vllm/benchmarks/serve.py``, vLLM main at commit 009e6d4a, the 0.1x line):

* TTFT: first token chunk minus send time; ITL: the gaps between token chunks
  (one value per gap, so a chunk carrying several tokens gives one gap);
  E2EL: last token chunk minus send time.
* TPOT (excluding the first token) = (E2EL - TTFT) / (output_len - 1), only for
  requests with ``output_len > 1``; for goodput a request with ``output_len <= 1``
  has TPOT 0.
* ``output_len`` comes from the server's usage (``completion_tokens``) when it sent
  one, otherwise from the number of token chunks.
* Percentiles are numpy's default (linear interpolation), ``std`` is the population
  standard deviation; an empty list gives 0 like ``np.mean([] or 0)``.
* Goodput: completed requests meeting every SLO (``ttft``/``tpot``/``e2el`` in ms,
  ``value <= slo``) per second of benchmark duration.

Pure Python (no numpy) so the module runs on any host it is delegated to.
"""

from __future__ import annotations

import math
import re

GOODPUT_METRICS = ("ttft", "tpot", "e2el")
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)


class RequestResult(object):
    """What the client measured for one request (times in seconds, perf_counter based)."""

    __slots__ = (
        "success", "error", "prompt_len", "output_tokens", "chunk_count", "token_chunks",
        "ttft", "itl", "latency", "start_time", "scheduled_time", "dispatch_lag",
        "client_queue_time", "generated_chars", "usage_from_server", "status", "generated_text",
    )

    def __init__(self, **kw):
        self.success = False
        self.error = ""
        self.prompt_len = 0
        self.output_tokens = None     # server usage completion_tokens, None when not sent
        self.chunk_count = 0          # all JSON chunks seen
        self.token_chunks = 0         # chunks that carried generated text
        self.ttft = 0.0
        self.itl = []
        self.latency = 0.0
        self.start_time = 0.0
        self.scheduled_time = 0.0
        self.dispatch_lag = 0.0
        self.client_queue_time = 0.0
        self.generated_chars = 0
        self.usage_from_server = False
        self.status = None
        self.generated_text = None   # only when the run keeps texts
        for k, v in kw.items():
            setattr(self, k, v)

    def output_len(self):
        if not self.success:
            return 0
        if self.output_tokens:
            return int(self.output_tokens)
        return self.token_chunks


def percentile(values, p):
    """numpy.percentile(values, p) with the default 'linear' method."""
    if not values:
        return 0.0
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    rank = (len(xs) - 1) * (float(p) / 100.0)
    lo = int(math.floor(rank))
    hi = min(lo + 1, len(xs) - 1)
    frac = rank - lo
    return float(xs[lo] + (xs[hi] - xs[lo]) * frac)


def mean(values):
    return float(sum(values)) / len(values) if values else 0.0


def median(values):
    return percentile(values, 50.0)


def std(values):
    if not values:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def percentile_key(p):
    """vLLM's key word for a percentile: 99 -> '99', 99.9 -> '99.9'."""
    p = float(p)
    return str(int(p)) if int(p) == p else str(p)


def add_stats(result, name, values_s, percentiles):
    """Add mean/median/std/pNN of ``values_s`` (seconds) as ``*_<name>_ms`` fields."""
    ms = [v * 1000.0 for v in values_s]
    result["mean_%s_ms" % name] = mean(ms)
    result["median_%s_ms" % name] = median(ms)
    result["std_%s_ms" % name] = std(ms)
    for p in percentiles:
        result["p%s_%s_ms" % (percentile_key(p), name)] = percentile(ms, p)


def normalize_goodput(goodput):
    """Validate an SLO dict ``{ttft|tpot|e2el: ms}``; raise ValueError on bad input."""
    out = {}
    for k, v in (goodput or {}).items():
        key = str(k).lower()
        if key.endswith("_ms"):
            key = key[:-3]
        if key not in GOODPUT_METRICS:
            raise ValueError("goodput SLO %r is not one of %s" % (k, ", ".join(GOODPUT_METRICS)))
        try:
            val = float(v)
        except (TypeError, ValueError):
            raise ValueError("goodput SLO %s must be a number of milliseconds, got %r" % (k, v))
        if val < 0:
            raise ValueError("goodput SLO %s must not be negative" % k)
        out[key] = val
    return out


def calculate_metrics(results, duration_s, percentiles=DEFAULT_PERCENTILES, goodput=None,
                      extra_percentile_metrics=()):
    """Aggregate a list of :class:`RequestResult` into vLLM's result fields.

    ``extra_percentile_metrics`` may name ``client_queue_time`` to add its stats
    (vLLM adds them when ``max_concurrency`` is set).
    """
    goodput = normalize_goodput(goodput)
    percentiles = sorted(set(float(p) for p in percentiles))
    dur = float(duration_s) if duration_s and duration_s > 0 else float("nan")
    total_input = 0
    output_lens = []
    ttfts, tpots, all_tpots, itls, e2els, queue_times = [], [], [], [], [], []
    completed = 0
    good = 0
    errors = []
    counted_by_chunks = 0
    for r in results:
        if not r.success:
            output_lens.append(0)
            errors.append(r.error or "unknown error")
            continue
        out_len = r.output_len()
        if not r.usage_from_server:
            counted_by_chunks += 1
        output_lens.append(out_len)
        total_input += int(r.prompt_len or 0)
        tpot = 0.0
        if out_len > 1:
            tpot = (r.latency - r.ttft) / (out_len - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)
        itls.extend(r.itl)
        ttfts.append(r.ttft)
        e2els.append(r.latency)
        queue_times.append(r.client_queue_time)
        completed += 1
        if goodput:
            values = {"ttft": r.ttft, "tpot": tpot, "e2el": r.latency}
            if all(values[k] <= slo / 1000.0 for k, slo in goodput.items()):
                good += 1
    total_output = sum(output_lens)
    res = {
        "duration": duration_s,
        "completed": completed,
        "failed": len(results) - completed,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": completed / dur,
        "request_goodput": (good / dur) if goodput else None,
        "output_throughput": total_output / dur,
        "total_token_throughput": (total_input + total_output) / dur,
    }
    for key in ("request_throughput", "request_goodput", "output_throughput",
                "total_token_throughput"):
        if res[key] is not None and res[key] != res[key]:  # NaN: no duration
            res[key] = 0.0
    add_stats(res, "ttft", ttfts, percentiles)
    add_stats(res, "tpot", tpots, percentiles)
    add_stats(res, "itl", itls, percentiles)
    add_stats(res, "e2el", e2els, percentiles)
    if "client_queue_time" in extra_percentile_metrics:
        add_stats(res, "client_queue_time", queue_times, percentiles)
    if "e2el_including_client_queue" in extra_percentile_metrics:
        add_stats(res, "e2el_including_client_queue",
                  [r.latency + r.client_queue_time for r in results if r.success], percentiles)
    res["max_output_tokens_per_s"], res["max_concurrent_requests"] = peak_stats(results)
    res["rtfx"] = 0.0
    res["input_lens"] = [int(r.prompt_len or 0) for r in results]
    res["output_lens"] = output_lens
    res["ttfts"] = [r.ttft for r in results]
    res["itls"] = [list(r.itl) for r in results]
    res["latencies"] = [r.latency for r in results]
    res["start_times"] = [r.start_time for r in results]
    res["queue_times"] = [r.client_queue_time for r in results]
    res["errors"] = [r.error for r in results]
    if any(r.generated_text is not None for r in results):
        res["generated_texts"] = [r.generated_text or "" for r in results]
    res["usage_source"] = ("server" if completed and counted_by_chunks == 0
                           else "counted_chunks" if completed else "none")
    res["requests_counted_by_chunks"] = counted_by_chunks
    return res


def peak_stats(results):
    """vLLM's ``max_output_tokens_per_s`` (token chunks per 1 s bucket, as vLLM counts
    them from TTFT and ITLs) and ``max_concurrent_requests`` (sweep over [start, end))."""
    ok = [r for r in results if r.success]
    if not ok:
        return 0.0, 0
    t0 = min(r.start_time for r in ok)
    t1 = max(r.start_time + r.latency for r in ok)
    n = int(math.ceil(t1 - t0)) + 1
    buckets = [0] * n
    for r in ok:
        t = r.start_time + r.ttft
        times = [t]
        for g in r.itl:
            t += g
            times.append(t)
        for t in times:
            b = int(t - t0)
            if 0 <= b < n:
                buckets[b] += 1
    events = sorted([(r.start_time, 1) for r in ok] + [(r.start_time + r.latency, -1) for r in ok])
    cur = peak = 0
    for dummy, d in events:
        cur += d
        peak = max(peak, cur)
    return float(max(buckets)), peak


def summarize_errors(errors, limit=10):
    """Distinct non-empty error messages with their counts, most frequent first."""
    counts = {}
    for e in errors:
        if e:
            counts[e] = counts.get(e, 0) + 1
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"error": k, "count": v} for k, v in items[:limit]]


# ---------------------------------------------------------------------------
# Thresholds: "p99_ttft_ms < 500", "request_goodput >= 20" (parsed, never eval'd)

_THRESHOLD_RE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|==|!=|<|>)\s*"
    r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_ALIASES = {"goodput": "request_goodput", "throughput": "request_throughput"}


def parse_threshold(text):
    """Parse ``"<metric> <op> <number>"``; return (metric, op, value) or raise ValueError."""
    m = _THRESHOLD_RE.match(str(text))
    if not m:
        raise ValueError("threshold %r is not of the form '<metric> <op> <number>' "
                         "with op one of < <= > >= == !=" % (text,))
    metric, op, value = m.group(1), m.group(2), float(m.group(3))
    return _ALIASES.get(metric, metric), op, value


def evaluate_thresholds(thresholds, metrics):
    """Check every threshold against ``metrics``.

    Returns a list of dicts ``{threshold, metric, op, limit, value, passed}``; a metric
    missing from ``metrics`` (or None) fails with ``value: None``. Raises ValueError for
    a threshold that does not parse, before any is evaluated.
    """
    parsed = [(t, parse_threshold(t)) for t in thresholds or []]
    out = []
    for text, (metric, op, limit) in parsed:
        value = metrics.get(metric)
        ok = _is_number(value) and _OPS[op](float(value), limit)
        out.append({"threshold": text, "metric": metric, "op": op, "limit": limit,
                    "value": value, "passed": bool(ok)})
    return out


# Metrics where a larger value is better; every other compared metric is a latency
# (lower is better).
_HIGHER_IS_BETTER = ("throughput", "goodput", "completed")

DEFAULT_TOLERANCE = {"median_ttft_ms": 25.0, "median_tpot_ms": 25.0, "output_throughput": 15.0}


def parse_tolerance(tolerance=None):
    """``tolerance`` ({metric: percent}, default DEFAULT_TOLERANCE) as a sorted list of
    (result field name, percent); raises ValueError naming the bad entry."""
    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    if not isinstance(tolerance, dict) or not tolerance:
        raise ValueError("tolerance must map metric names to a percentage, e.g. {median_ttft_ms: 25}")
    out = []
    for metric in sorted(tolerance):
        try:
            pct = float(tolerance[metric])
        except (TypeError, ValueError):
            raise ValueError("tolerance of %s must be a number (percent), not %r" % (metric, tolerance[metric]))
        if pct < 0:
            raise ValueError("tolerance of %s must be >= 0 (percent), not %s" % (metric, pct))
        out.append((_ALIASES.get(metric, metric), pct))
    return out


def compare_baseline(metrics, baseline, tolerance=None):
    """Compare one level's ``metrics`` with a ``baseline`` result (same field names, e.g. a
    result JSON of this module or of ``vllm bench serve --save-result``).

    ``tolerance`` maps a metric to the allowed change in percent, in the bad direction only:
    a latency may grow by that much, a throughput/goodput may fall by that much. Returns a list
    of dicts ``{metric, baseline, value, limit, tolerance_pct, change_pct, passed}``; a metric
    missing (or not a number) on either side fails. Raises ValueError on a bad tolerance.
    """
    out = []
    for name, pct in parse_tolerance(tolerance):
        base, value = baseline.get(name), metrics.get(name)
        higher = any(w in name for w in _HIGHER_IS_BETTER)
        row = {"metric": name, "baseline": base, "value": value, "tolerance_pct": pct,
               "higher_is_better": higher, "limit": None, "change_pct": None, "passed": False}
        if _is_number(base) and _is_number(value):
            limit = base * (1 - pct / 100.0) if higher else base * (1 + pct / 100.0)
            row["limit"] = limit
            row["change_pct"] = (value - base) / base * 100.0 if base else None
            row["passed"] = value >= limit if higher else value <= limit
        out.append(row)
    return out


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def timeline(level, window_s=None, max_windows=30):
    """Latency over the run, in windows of request start time: a list of dicts
    ``{start_s, requests, failed, median_ttft_ms, p99_ttft_ms, median_e2el_ms, p99_e2el_ms}``
    (start_s from the first request). ``window_s`` default: the run split in up to
    ``max_windows`` windows of a whole number of seconds. Shows what happens during an event,
    such as a rolling reconfiguration under load, that a whole-run percentile hides.
    """
    starts = level.get("start_times") or []
    if not starts:
        return []
    t0 = min(starts)
    span = max(starts) - t0
    if not window_s:
        window_s = max(1.0, math.ceil(span / max_windows)) if span > 0 else 1.0
    rows = {}
    errors = level.get("errors") or [""] * len(starts)
    for i, st in enumerate(starts):
        w = int((st - t0) // window_s)
        row = rows.setdefault(w, {"ttft": [], "e2el": [], "requests": 0, "failed": 0})
        row["requests"] += 1
        if errors[i]:
            row["failed"] += 1
        else:
            row["ttft"].append(level["ttfts"][i] * 1000)
            row["e2el"].append(level["latencies"][i] * 1000)
    out = []
    for w in sorted(rows):
        r = rows[w]
        out.append({"start_s": w * window_s, "requests": r["requests"], "failed": r["failed"],
                    "median_ttft_ms": median(r["ttft"]) if r["ttft"] else None,
                    "p99_ttft_ms": percentile(r["ttft"], 99) if r["ttft"] else None,
                    "median_e2el_ms": median(r["e2el"]) if r["e2el"] else None,
                    "p99_e2el_ms": percentile(r["e2el"], 99) if r["e2el"] else None})
    return out
