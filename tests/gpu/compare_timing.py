"""Client (llm_benchmark) vs server (tf_serve_timed.py) TTFT and inter-token latency.

    python3 tests/gpu/compare_timing.py BENCH_DIR SERVER_TIMING.jsonl OUT_PREFIX

Each client request (llm_benchmark with save_detailed: generated_texts, ttfts, itls) is paired with
the server record that streamed the same text (the earliest unused one when two texts are equal;
warm-up and readiness requests stay unpaired). Client and server clocks differ, so only
durations are compared. Writes OUT_PREFIX.json and OUT_PREFIX.md."""
import glob
import json
import math
import sys


def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100.0
    f, c = math.floor(k), math.ceil(k)
    return v[int(k)] if f == c else v[f] + (v[c] - v[f]) * (k - f)


def ms(x):
    return None if x is None else round(x * 1000.0, 3)


def main(bench_dir, timing_path, out_prefix):
    levels = []
    for path in glob.glob(bench_dir + "/*.json"):
        with open(path) as f:
            d = json.load(f)
        if "ttfts" in d:
            levels.append(d)
    levels.sort(key=lambda d: float("inf") if str(d["request_rate"]) in ("inf", "Infinity") else float(d["request_rate"]))
    with open(timing_path) as f:
        server = [json.loads(line) for line in f if line.strip()]
    ok = [r for r in server if r.get("status") == 200 and r.get("t_events")]
    ok.sort(key=lambda r: r["t_request"])
    by_text = {}
    for i, r in enumerate(ok):
        by_text.setdefault(r.get("text", ""), []).append(i)
    used = set()
    rows = []
    for d in levels:
        texts = d.get("generated_texts") or [None] * len(d["ttfts"])
        order = sorted(range(len(d["ttfts"])), key=lambda i: d["start_times"][i])
        pairs = []  # (client index, server record)
        for i in order:
            if not d["ttfts"][i] or d["ttfts"][i] <= 0:
                continue
            cands = [j for j in by_text.get(texts[i], []) if j not in used]
            if cands:  # the same text twice: the earliest unused (arrival order)
                used.add(cands[0])
                pairs.append((i, ok[cands[0]]))
        c_ttft = [d["ttfts"][i] for i, r in pairs]
        c_itl = [x for i, r in pairs for x in (d["itls"][i] or [])]
        s_ttft = [r["t_events"][0] - r["t_request"] for i, r in pairs]
        s_itl = [b - a for i, r in pairs for a, b in zip(r["t_events"], r["t_events"][1:])]
        diffs = [c - s for c, s in zip(c_ttft, s_ttft)]
        n_client = len([t for t in d["ttfts"] if t and t > 0])
        rows.append({
            "request_rate": d["request_rate"], "client_requests": n_client, "paired": len(pairs),
            "client_median_ttft_ms": ms(pct(c_ttft, 50)), "server_median_ttft_ms": ms(pct(s_ttft, 50)),
            "client_p90_ttft_ms": ms(pct(c_ttft, 90)), "server_p90_ttft_ms": ms(pct(s_ttft, 90)),
            "paired_ttft_diff_median_ms": ms(pct(diffs, 50)), "paired_ttft_diff_p90_ms": ms(pct(diffs, 90)),
            "paired_ttft_diff_min_ms": ms(min(diffs)) if diffs else None,
            "paired_ttft_diff_max_ms": ms(max(diffs)) if diffs else None,
            "client_median_itl_ms": ms(pct(c_itl, 50)), "server_median_itl_ms": ms(pct(s_itl, 50)),
            "client_p90_itl_ms": ms(pct(c_itl, 90)), "server_p90_itl_ms": ms(pct(s_itl, 90)),
            "client_itl_count": len(c_itl), "server_itl_count": len(s_itl),
            "module_median_ttft_ms": d.get("median_ttft_ms"), "module_median_itl_ms": d.get("median_itl_ms"),
            "module_median_tpot_ms": d.get("median_tpot_ms"), "output_throughput": d.get("output_throughput"),
            "completed": d.get("completed"), "failed": d.get("failed"),
        })
    end = len(ok) - len(used)
    with open(out_prefix + ".json", "w") as f:
        json.dump({"levels": rows, "server_records": len(server), "server_ok_records": len(ok),
                   "unpaired_server_records": end}, f, indent=2)
    head = ("| rate (req/s) | requests / paired | median TTFT client / server (ms) | p90 TTFT client / server "
            "(ms) | paired TTFT diff median / p90 (ms) | median ITL client / server (ms) | p90 ITL client / server "
            "(ms) | ITLs client / server |")
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append("| %s | %d / %d | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s | %d / %d |" % (
            r["request_rate"], r["client_requests"], r["paired"], r["client_median_ttft_ms"],
            r["server_median_ttft_ms"], r["client_p90_ttft_ms"], r["server_p90_ttft_ms"],
            r["paired_ttft_diff_median_ms"], r["paired_ttft_diff_p90_ms"], r["client_median_itl_ms"],
            r["server_median_itl_ms"], r["client_p90_itl_ms"], r["server_p90_itl_ms"], r["client_itl_count"],
            r["server_itl_count"]))
    with open(out_prefix + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
