# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: Markdown report with self-made SVG plots.

Not a public API; it may change without notice.

No plotting library is needed: the SVG files (latency CDFs and histograms, and for a
sweep throughput and latency against request rate; latency over the run's time) are written by hand next to the
report and linked from it, so they render on any Markdown viewer.
"""

from __future__ import annotations

import math
import os
from xml.sax.saxutils import escape

from ansible_collections.llmfleet.serving.plugins.module_utils._bench_metrics import timeline

W, H = 560, 320
ML, MR, MT, MB = 64, 16, 30, 46
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _nice_max(v):
    if v <= 0 or math.isnan(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def _fmt(v):
    return ("%.0f" % v) if abs(v) >= 100 else ("%.3g" % v)


def _frame(title, xlabel, ylabel, xmax, ymax, xmin=0.0):
    pw, ph = W - ML - MR, H - MT - MB
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">' % (W, H, W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="18" font-size="13" font-weight="bold">%s</text>' % (ML, escape(title)),
           '<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>'
           % (ML, MT, pw, ph)]
    for i in range(6):
        fx = xmin + (xmax - xmin) * i / 5.0
        x = ML + pw * i / 5.0
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>' % (x, MT, x, MT + ph))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, MT + ph + 14, _fmt(fx)))
        fy = ymax * i / 5.0
        y = MT + ph - ph * i / 5.0
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>' % (ML, y, ML + pw, y))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (ML - 4, y + 4, _fmt(fy)))
    out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
               % (ML + pw / 2.0, H - 8, escape(xlabel)))
    out.append('<text x="14" y="%.1f" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>'
               % (MT + ph / 2.0, MT + ph / 2.0, escape(ylabel)))
    return out, pw, ph


def svg_cdf(series, title, xlabel):
    """``series``: list of (label, values in ms). Empirical CDFs on one chart."""
    allv = [v for dummy, vs in series for v in vs]
    xmax = _nice_max(max(allv) if allv else 1.0)
    out, pw, ph = _frame(title, xlabel, "fraction of values", xmax, 1.0)
    for k, (label, vs) in enumerate(series):
        xs = sorted(vs)
        if not xs:
            continue
        step = max(1, len(xs) // 400)
        pts = []
        for i in range(0, len(xs), step):
            pts.append((ML + pw * xs[i] / xmax, MT + ph - ph * (i + 1) / float(len(xs))))
        pts.append((ML + pw * xs[-1] / xmax, MT))
        color = COLORS[k % len(COLORS)]
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>'
                   % (color, " ".join("%.1f,%.1f" % p for p in pts)))
        out.append('<text x="%d" y="%d" fill="%s">%s</text>'
                   % (ML + pw - 150, MT + 16 + 14 * k, color, escape(label)))
    out.append("</svg>")
    return "\n".join(out)


def svg_histogram(values, title, xlabel, bins=40):
    xs = [v for v in values if not math.isnan(v)]
    xmax = _nice_max(max(xs) if xs else 1.0)
    counts = [0] * bins
    for v in xs:
        counts[min(bins - 1, int(v / xmax * bins))] += 1
    ymax = _nice_max(max(counts) if counts else 1)
    out, pw, ph = _frame(title, xlabel, "requests / values", xmax, ymax)
    bw = pw / float(bins)
    for i, c in enumerate(counts):
        if c:
            h = ph * c / ymax
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                       % (ML + i * bw, MT + ph - h, max(bw - 1, 0.5), h, COLORS[0]))
    out.append("</svg>")
    return "\n".join(out)


def svg_lines(xs, series, title, xlabel, ylabel):
    """``series``: list of (label, ys) over the same ``xs``."""
    allv = [y for dummy, ys in series for y in ys if y is not None]
    xmax = _nice_max(max(xs) if xs else 1.0)
    ymax = _nice_max(max(allv) if allv else 1.0)
    out, pw, ph = _frame(title, xlabel, ylabel, xmax, ymax)
    for k, (label, ys) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        pts = [(ML + pw * x / xmax, MT + ph - ph * y / ymax) for x, y in zip(xs, ys) if y is not None]
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                   % (color, " ".join("%.1f,%.1f" % p for p in pts)))
        for p in pts:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (p[0], p[1], color))
        out.append('<text x="%d" y="%d" fill="%s">%s</text>'
                   % (ML + 8, MT + 16 + 14 * k, color, escape(label)))
    out.append("</svg>")
    return "\n".join(out)


def _num(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.2f" % v
    return str(v)


SUMMARY_ROWS = (
    ("request_rate", "Request rate configured (req/s)"),
    ("max_concurrency", "Maximum request concurrency"),
    ("completed", "Successful requests"),
    ("failed", "Failed requests"),
    ("duration", "Benchmark duration (s)"),
    ("total_input_tokens", "Total input tokens"),
    ("total_output_tokens", "Total generated tokens"),
    ("request_throughput", "Request throughput (req/s)"),
    ("request_goodput", "Request goodput (req/s)"),
    ("output_throughput", "Output token throughput (tok/s)"),
    ("total_token_throughput", "Total token throughput (tok/s)"),
)


def _timeline_table(tl):
    win = tl[1]["start_s"] - tl[0]["start_s"] if len(tl) > 1 else 1
    lines = ["### Latency over time (requests by start time, %g s windows)" % win, "",
             "| From (s) | Requests | Failed | median TTFT (ms) | p99 TTFT (ms) | median E2EL (ms) | p99 E2EL (ms) |",
             "|---|---|---|---|---|---|---|"]
    for r in tl:
        lines.append("| %g | %d | %d | %s | %s | %s | %s |" % (
            r["start_s"], r["requests"], r["failed"], _num(r["median_ttft_ms"]), _num(r["p99_ttft_ms"]),
            _num(r["median_e2el_ms"]), _num(r["p99_e2el_ms"])))
    lines.append("")
    return lines


def _level_table(m, percentiles):
    lines = ["| Metric | Value |", "|---|---|"]
    for key, label in SUMMARY_ROWS:
        if m.get(key) is not None:
            lines.append("| %s | %s |" % (label, _num(m[key])))
    lines.append("")
    names = [("ttft", "TTFT"), ("tpot", "TPOT (excl. 1st token)"), ("itl", "ITL"),
             ("e2el", "E2E latency")]
    if "mean_client_queue_time_ms" in m:
        names.append(("client_queue_time", "Client queue time"))
    pk = [("p%s" % (str(int(p)) if int(p) == p else str(p))) for p in percentiles]
    lines.append("| Latency (ms) | mean | median | std | %s |" % " | ".join(pk))
    lines.append("|---|---|---|---|%s|" % "|".join("---" for dummy in pk))
    for key, label in names:
        row = [_num(m.get("%s_%s_ms" % (s, key), 0.0)) for s in ("mean", "median", "std")]
        row += [_num(m.get("%s_%s_ms" % (p, key), 0.0)) for p in pk]
        lines.append("| %s | %s |" % (label, " | ".join(row)))
    lines.append("")
    lag = m.get("dispatch_lag_ms") or {}
    loop = m.get("event_loop_delay_ms") or {}
    lines.append("Client: dispatch lag p50 %.2f / p99 %.2f / max %.2f ms; event-loop delay "
                 "p99 %.2f / max %.2f ms; output tokens from %s."
                 % (lag.get("p50", 0), lag.get("p99", 0), lag.get("max", 0),
                    loop.get("p99", 0), loop.get("max", 0), m.get("usage_source", "?")))
    lines.append("")
    return lines


def write_report(path, levels, meta, percentiles, thresholds=None):
    """Write the Markdown report and its SVG plots; return the list of files written."""
    base = os.path.splitext(path)[0]
    files = []

    def save(suffix, svg):
        p = "%s-%s.svg" % (base, suffix)
        with open(p, "w") as f:
            f.write(svg)
        files.append(p)
        return os.path.basename(p)

    lines = ["# Serving benchmark: %s" % meta.get("model_id", ""), ""]
    for k in ("date", "base_url", "endpoint", "dataset", "num_prompts", "burstiness"):
        if meta.get(k) is not None:
            lines.append("- **%s**: %s" % (k, meta[k]))
    if meta.get("unsupported_fields"):
        lines.append("- **fields the server rejected (left out)**: %s"
                     % ", ".join(meta["unsupported_fields"]))
    lines.append("")
    lines.append("Metrics follow vLLM's `vllm bench serve` definitions (see docs/benchmark.md).")
    lines.append("")
    warnings = [w for m in levels for w in m.get("client_warnings", [])]
    if warnings:
        lines.append("## Warnings")
        lines.extend("- %s" % w for w in warnings)
        lines.append("")
    if thresholds:
        lines.append("## Thresholds")
        lines.append("| Threshold | Request rate | Value | Result |")
        lines.append("|---|---|---|---|")
        for t in thresholds:
            lines.append("| `%s` | %s | %s | %s |" % (
                t["threshold"], t.get("request_rate", ""), _num(t["value"]),
                "pass" if t["passed"] else "**FAIL**"))
        lines.append("")
    for idx, m in enumerate(levels):
        rate = m.get("request_rate")
        tag = "rate-%s" % rate if len(levels) > 1 else "run"
        lines.append("## Request rate %s req/s" % rate if len(levels) > 1 else "## Results")
        lines.append("")
        lines.extend(_level_table(m, percentiles))
        ok = [i for i, e in enumerate(m.get("errors", [])) if not e]
        ttft = [m["ttfts"][i] * 1000 for i in ok]
        e2el = [m["latencies"][i] * 1000 for i in ok]
        itl = [g * 1000 for i in ok for g in m["itls"][i]]
        if ok:
            name = save("%s-cdf" % tag, svg_cdf([("TTFT", ttft), ("ITL", itl), ("E2E latency", e2el)],
                                                "Latency CDF (rate %s)" % rate, "milliseconds"))
            lines.append("![latency CDF](%s)" % name)
            for key, vals, title in (("ttft", ttft, "TTFT"), ("itl", itl, "ITL"),
                                     ("e2el", e2el, "E2E latency")):
                name = save("%s-%s-hist" % (tag, key),
                            svg_histogram(vals, "%s distribution (rate %s)" % (title, rate), "ms"))
                lines.append("![%s histogram](%s)" % (title, name))
            lines.append("")
        tl = timeline(m)
        if len(tl) > 1:
            lines.extend(_timeline_table(tl))
            name = save("%s-timeline" % tag, svg_lines(
                [r["start_s"] for r in tl],
                [("median TTFT", [r["median_ttft_ms"] for r in tl]), ("p99 TTFT", [r["p99_ttft_ms"] for r in tl]),
                 ("median E2E latency", [r["median_e2el_ms"] for r in tl]),
                 ("p99 E2E latency", [r["p99_e2el_ms"] for r in tl])],
                "Latency over the run (rate %s)" % rate, "seconds since the first request", "ms"))
            lines.append("![latency over time](%s)" % name)
            lines.append("")
        errs = m.get("error_summary") or []
        if errs:
            lines.append("Errors:")
            lines.extend("- %d x %s" % (e["count"], e["error"]) for e in errs)
            lines.append("")
    numeric = [m for m in levels if isinstance(m.get("request_rate"), (int, float))]
    if len(numeric) > 1:
        xs = [float(m["request_rate"]) for m in numeric]
        lines.append("## Sweep")
        lines.append("")
        lines.append("| Rate (req/s) | Throughput (req/s) | Output tok/s | p99 TTFT (ms) | "
                     "p99 ITL (ms) | p99 E2EL (ms) | Failed |")
        lines.append("|---|---|---|---|---|---|---|")
        for m in numeric:
            lines.append("| %s | %.2f | %.1f | %.1f | %.1f | %.1f | %d |" % (
                m["request_rate"], m["request_throughput"], m["output_throughput"],
                m.get("p99_ttft_ms", 0), m.get("p99_itl_ms", 0), m.get("p99_e2el_ms", 0),
                m["failed"]))
        lines.append("")
        name = save("sweep-throughput", svg_lines(
            xs, [("request throughput (req/s)", [m["request_throughput"] for m in numeric]),
                 ("requested rate", xs)], "Throughput against request rate",
            "request rate (req/s)", "req/s"))
        lines.append("![throughput](%s)" % name)
        name = save("sweep-latency", svg_lines(
            xs, [("median TTFT", [m["median_ttft_ms"] for m in numeric]),
                 ("p99 TTFT", [m.get("p99_ttft_ms") for m in numeric]),
                 ("median ITL", [m["median_itl_ms"] for m in numeric]),
                 ("p99 ITL", [m.get("p99_itl_ms") for m in numeric])],
            "Latency against request rate", "request rate (req/s)", "ms"))
        lines.append("![latency](%s)" % name)
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return [path] + files
