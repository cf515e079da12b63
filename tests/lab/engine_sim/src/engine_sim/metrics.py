"""Prometheus text exposition with vLLM's (or SGLang's) metric names, no client library.

Names and bucket bounds follow vLLM's v1 ``PrometheusStatLogger`` and SGLang's
``metrics/collector.py``; see docs/engine-simulator.md for the list.
"""

from __future__ import annotations

from bisect import bisect_left

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000,
                 100000)


class Histogram(object):
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name, labels, out):
        acc = 0
        for bound, n in zip(self.bounds, self.counts):
            acc += n
            out.append('%s_bucket{%s,le="%s"} %s' % (name, labels, _fmt(float(bound)), _fmt(float(acc))))
        out.append('%s_bucket{%s,le="+Inf"} %s' % (name, labels, _fmt(float(self.count))))
        out.append("%s_count{%s} %s" % (name, labels, _fmt(float(self.count))))
        out.append("%s_sum{%s} %s" % (name, labels, _fmt(float(self.sum))))


def _fmt(v):
    return repr(float(v))


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def version_tuple(version):
    out = []
    for part in str(version).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if digits != part:
            break
    return tuple(out)


def _writers(out, labels):
    """gauge(name, doc, value, typ) and hist(name, doc, histogram) appending Prometheus text to out."""
    def gauge(name, doc, value, typ="gauge"):
        out.append("# HELP %s %s" % (name, doc))
        out.append("# TYPE %s %s" % (name, typ))
        out.append("%s{%s} %s" % (name, labels, _fmt(value)))

    def hist(name, doc, h):
        out.append("# HELP %s %s" % (name, doc))
        out.append("# TYPE %s histogram" % name)
        h.render(name, labels, out)

    return gauge, hist


class Metrics(object):
    """Counters and histograms the engine updates; :meth:`render` writes the exposition."""

    def __init__(self, engine, version, model_name):
        self.engine = engine
        self.version = version
        self.model_name = model_name
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success = {"stop": 0, "length": 0, "abort": 0}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.tpot = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.queue = Histogram(E2E_BUCKETS)
        self.req_prompt = Histogram(TOKEN_BUCKETS)
        self.req_gen = Histogram(TOKEN_BUCKETS)

    def render(self, running, waiting, kv_usage):
        if self.engine == "sglang":
            return self._render_sglang(running, waiting, kv_usage)
        return self._render_vllm(running, waiting, kv_usage)

    def _render_vllm(self, running, waiting, kv_usage):
        new_names = version_tuple(self.version) >= (0, 10)
        lab = 'engine="0",model_name="%s"' % _escape(self.model_name)
        out = []
        gauge, hist = _writers(out, lab)

        gauge("vllm:num_requests_running", "Number of requests in model execution batches.", running)
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting)
        if new_names:
            gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage)
        else:
            gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", kv_usage)
        gauge("vllm:prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens, "counter")
        gauge("vllm:generation_tokens_total", "Number of generation tokens processed.",
              self.generation_tokens, "counter")
        out.append("# HELP vllm:request_success_total Count of successfully processed requests.")
        out.append("# TYPE vllm:request_success_total counter")
        for reason, n in sorted(self.success.items()):
            out.append('vllm:request_success_total{%s,finished_reason="%s"} %s' % (lab, reason, _fmt(n)))
        hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", self.req_prompt)
        hist("vllm:request_generation_tokens", "Number of generation tokens processed.", self.req_gen)
        hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft)
        if new_names:
            hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", self.itl)
            hist("vllm:request_time_per_output_token_seconds",
                 "Histogram of time_per_output_token_seconds per request.", self.tpot)
        else:
            hist("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.",
                 self.itl)
        hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", self.e2e)
        hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
             self.queue)
        return "\n".join(out) + "\n"

    def _render_sglang(self, running, waiting, kv_usage):
        lab = 'model_name="%s"' % _escape(self.model_name)
        out = []
        gauge, hist = _writers(out, lab)

        gauge("sglang:num_running_reqs", "The number of running requests.", running)
        gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", waiting)
        gauge("sglang:token_usage", "The token usage.", kv_usage)
        gauge("sglang:prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens, "counter")
        gauge("sglang:generation_tokens_total", "Number of generation tokens processed.",
              self.generation_tokens, "counter")
        gauge("sglang:num_requests_total", "Number of requests processed.",
              sum(self.success.values()), "counter")
        hist("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft)
        hist("sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", self.itl)
        hist("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds",
             self.e2e)
        return "\n".join(out) + "\n"
