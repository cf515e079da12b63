# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: asyncio load generator for OpenAI-compatible servers.

Not a public API; it may change without notice.

Design points (each one a pitfall another client hit):

* Arrivals: Poisson (burstiness 1) or gamma inter-arrival times like vLLM, precomputed
  and, for a fixed number of prompts, rescaled so the whole schedule lasts
  ``num_prompts / request_rate``. The dispatcher sleeps to the absolute scheduled
  time of each request (no drift from relative sleeps) and records the dispatch lag
  (actual minus scheduled start).
* ``max_concurrency``: time waiting for a slot is ``client_queue_time``, reported on
  its own and not hidden in the latency (coordinated omission).
* One ``aiohttp.ClientSession``: ``TCPConnector(limit=0)`` (no connection cap) and a
  1 MiB read buffer.
* An event-loop monitor measures how late the loop wakes up; large lag or loop delay
  produce warnings, since then the client, not the server, shapes the numbers.
* Streaming: TTFT at the first chunk carrying generated text (``content``,
  ``reasoning_content``/``reasoning`` or tool calls; a role-only chunk is not a
  token), ITL between such chunks, E2EL at the last one (not at ``[DONE]``).
  ``choices: []`` usage chunks give the server's token counts. An error event inside
  an HTTP 200 stream, or a stream without any token, is a failed request.
* A field the server rejects (400/422 naming it, e.g. ``ignore_eos`` in
  ``transformers serve``) is dropped, the request retried once, and the field listed
  in ``unsupported_fields``; later requests leave it out.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import random
import time

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    from urlparse import urlsplit  # type: ignore

try:
    import aiohttp
    HAS_AIOHTTP = True
    AIOHTTP_IMPORT_ERROR = None
except ImportError as _e:  # pragma: no cover - exercised on hosts without aiohttp
    aiohttp = None
    HAS_AIOHTTP = False
    AIOHTTP_IMPORT_ERROR = _e

try:
    import uvloop  # optional accelerator: a faster event loop, same results
    HAS_UVLOOP = True
except ImportError:  # pragma: no cover - depends on the host
    uvloop = None
    HAS_UVLOOP = False

from ansible_collections.llmfleet.serving.plugins.module_utils._bench_metrics import (
    RequestResult, calculate_metrics, percentile,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._sse import (
    ERROR, JSON, SSEParser, classify,
)

READ_BUFSIZE = 1 << 20
LAG_WARN_MS = 5.0
LOOP_DELAY_WARN_MS = 10.0
OPTIONAL_FIELDS = ("ignore_eos", "stream_options", "temperature")
ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


class BenchmarkError(Exception):
    """The benchmark cannot run (endpoint unusable, bad configuration)."""


class BenchConfig(object):
    def __init__(self, base_url, model, endpoint="completions", api_key=None,
                 extra_body=None, ignore_eos=False, temperature=None, max_tokens=None,
                 request_rate=float("inf"), burstiness=1.0, max_concurrency=None,
                 num_prompts=None, duration_s=None, warmup_requests=0, seed=0,
                 request_timeout_s=600.0, percentiles=(50, 90, 99), goodput=None,
                 extra_headers=None, probe=True, event_loop="auto", tap_stream=True, stop_file=None,
                 keep_texts=False):
        if endpoint not in ENDPOINT_PATHS:
            raise BenchmarkError("endpoint must be one of %s" % ", ".join(ENDPOINT_PATHS))
        if burstiness is None or burstiness <= 0:
            raise BenchmarkError("burstiness must be positive")
        if request_rate is None or request_rate <= 0:
            raise BenchmarkError("request_rate must be positive (or inf)")
        if max_concurrency is not None and max_concurrency < 1:
            raise BenchmarkError("max_concurrency must be at least 1")
        if event_loop not in EVENT_LOOPS:
            raise BenchmarkError("event_loop must be one of %s" % ", ".join(EVENT_LOOPS))
        if event_loop == "uvloop" and not HAS_UVLOOP:
            raise BenchmarkError("event_loop uvloop asked for but uvloop is not installed")
        if duration_s and math.isinf(request_rate) and not max_concurrency:
            raise BenchmarkError("duration_s with an infinite request_rate needs max_concurrency")
        self.base_url = base_url.rstrip("/")
        self.keep_texts = bool(keep_texts)  # generated text per request (vLLM --save-detailed)
        self.model = model
        self.endpoint = endpoint
        self.api_key = api_key
        self.extra_body = dict(extra_body or {})
        self.ignore_eos = ignore_eos
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.request_rate = float(request_rate)
        self.burstiness = float(burstiness)
        self.max_concurrency = max_concurrency
        self.num_prompts = num_prompts
        self.duration_s = duration_s
        self.warmup_requests = int(warmup_requests or 0)
        self.seed = seed
        self.request_timeout_s = request_timeout_s
        self.percentiles = list(percentiles)
        self.goodput = goodput or {}
        self.extra_headers = dict(extra_headers or {})
        self.probe = probe
        self.event_loop = event_loop
        self.tap_stream = tap_stream
        # Stop sending new requests once this file exists (those in flight finish).
        self.stop_file = stop_file

    @property
    def url(self):
        return self.base_url + ENDPOINT_PATHS[self.endpoint]

    def headers(self):
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        h.update(self.extra_headers)
        if self.api_key:
            h["Authorization"] = "Bearer " + self.api_key
        return h


def arrival_offsets(n, rate, burstiness=1.0, rng=None):
    """Send offsets (s from start) of ``n`` requests, like vLLM's ``get_request``."""
    rng = rng or random.Random(0)
    if math.isinf(rate):
        return [0.0] * n
    offsets = []
    t = 0.0
    for dummy in range(n):
        if math.isinf(burstiness):
            t += 1.0 / rate
        else:
            t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        offsets.append(t)
    if offsets and offsets[-1] > 0:
        scale = (n / rate) / offsets[-1]
        offsets = [o * scale for o in offsets]
    return offsets


def duration_offsets(duration_s, rate, burstiness=1.0, rng=None):
    """Offsets of a ``duration_s`` run at ``rate`` (no rescaling: the count is random)."""
    rng = rng or random.Random(0)
    out = []
    t = 0.0
    while True:
        if math.isinf(burstiness):
            t += 1.0 / rate
        else:
            t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        if t > duration_s:
            return out
        out.append(t)


def summarize(values_s):
    ms = [v * 1000.0 for v in values_s]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99),
            "max": max(ms) if ms else 0.0, "mean": sum(ms) / len(ms) if ms else 0.0}


def _rejected_fields(status, text, candidates):
    if status not in (400, 422):
        return []
    low = text.lower()
    return [f for f in candidates if f.lower() in low]


class _Accumulator(object):
    """Turns the bytes of one streamed response into a :class:`RequestResult`.

    ``feed`` is called once per network read with one clock reading taken for that read;
    every event in the read gets that arrival time (TTFT, ITL and E2EL are arrival
    gaps as the client sees them). A plain content delta is recognised by a prefix
    check and counted without ``json.loads``; anything else (usage, role-only and
    reasoning chunks, errors, tool calls, unusual shapes) is decoded and classified.
    """

    __slots__ = ("r", "st", "chat", "parser", "last", "error", "itl", "texts")

    def __init__(self, r, st, chat, keep_texts=False):
        self.r = r
        self.texts = [] if keep_texts else None
        self.st = st
        self.chat = chat
        self.parser = SSEParser()
        self.last = None
        self.error = None
        self.itl = r.itl

    def feed(self, chunk, now):
        self._events(self.parser.feed(chunk), now)

    def close(self, now):
        self._events(self.parser.close(), now)

    def _events(self, events, now):
        r = self.r
        for ev in events:
            data = ev.data
            if ev.event == "message":
                text = _fast_text(data, self.chat)
                if text:
                    r.chunk_count += 1
                    self._token(now, text)
                    continue
            for kind, payload in classify(ev):
                if kind == JSON:
                    if not isinstance(payload, dict):
                        continue
                    r.chunk_count += 1
                    usage = payload.get("usage")
                    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                        r.output_tokens = int(usage["completion_tokens"])
                        r.usage_from_server = True
                        if usage.get("prompt_tokens"):
                            r.prompt_len = int(usage["prompt_tokens"])
                    choices = payload.get("choices")
                    if not choices:
                        continue
                    c = choices[0] or {}
                    if self.chat:
                        d = c.get("delta") or {}
                        text = (d.get("content") or d.get("reasoning_content")
                                or d.get("reasoning") or "")
                        if not text and d.get("tool_calls"):
                            text = json.dumps(d["tool_calls"])
                    else:
                        text = c.get("text") or ""
                    if text:
                        self._token(now, text)
                elif kind == ERROR:
                    self.error = "error event in stream: %s" % (payload,)

    def _token(self, now, text):
        r = self.r
        if self.last is None:
            r.ttft = now - self.st
        else:
            self.itl.append(now - self.last)
        self.last = now
        r.token_chunks += 1
        r.generated_chars += len(text)
        if self.texts is not None:
            self.texts.append(text)

    def finish(self):
        r = self.r
        if self.error:
            r.error = self.error
        elif self.last is None:
            r.error = "stream ended without a token"
        else:
            r.success = True
        if self.last is not None:
            r.latency = self.last - self.st
        if self.texts is not None:
            r.generated_text = "".join(self.texts)


# A plain content delta, as vLLM, SGLang and most OpenAI-compatible servers write it:
#   {"id":...,"choices":[{"index":0,"text":"...","logprobs":null,"finish_reason":null,...}]}
#   {"id":...,"choices":[{"index":0,"delta":{"content":"..."},"logprobs":null,...}]}
# Only such a chunk, whose text is an ordinary JSON string and which names no usage,
# error or tool call, is counted without json.loads; all others take the full path.
_SLOW_MARKERS = ('"usage"', '"error"', '"tool_calls"', '"reasoning', '"object":"error"',
                 '"role"')


def _fast_text(data, chat):
    """The generated text of a plain content delta (its JSON string holds no escape), or "" to decode fully."""
    key = '"content":"' if chat else '"text":"'
    i = data.find(key)
    if i < 0 or data[:1] != "{" or data.count(key) != 1:
        return ""
    start = i + len(key)
    end = data.find('"', start)
    if end <= start or "\\" in data[start:end]:
        return ""
    for marker in _SLOW_MARKERS:
        if marker in data:
            return ""
    return data[start:end]


_TAPS = {}


if HAS_AIOHTTP:
    class _TapReader(aiohttp.StreamReader):
        """aiohttp's StreamReader, except that body bytes go straight to a handler.

        The response parser calls ``feed_data`` from the protocol's ``data_received``;
        handing the bytes over right there (with one clock reading per network read)
        saves a future, a task wake-up and a buffer copy per chunk. Same memory layout
        as the base class, so an existing reader can be switched to it.
        """

        __slots__ = ()

        def feed_data(self, data, size=0):
            acc = _TAPS.get(id(self))
            if acc is None:
                return aiohttp.StreamReader.feed_data(self, data, size)
            if data:
                self.total_bytes += len(data)
                try:
                    acc.feed(data, time.perf_counter())
                except Exception as e:  # never let a parse error kill the connection
                    acc.error = "%s: %s" % (type(e).__name__, e)
            return False


def _tap(stream, acc):
    """Switch ``stream`` (an aiohttp StreamReader) to :class:`_TapReader`; False if not."""
    if not HAS_AIOHTTP or type(stream) is not aiohttp.StreamReader:  # pylint: disable=unidiomatic-typecheck
        return False
    try:
        stream.__class__ = _TapReader
    except TypeError:  # pragma: no cover - a different aiohttp layout
        return False
    _TAPS[id(stream)] = acc
    pending = stream.read_nowait(-1) if not stream.at_eof() else b""
    if pending:
        acc.feed(pending, time.perf_counter())
    return True


def _untap(stream):
    _TAPS.pop(id(stream), None)


class _State(object):
    def __init__(self):
        self.unsupported = []


class Runner(object):
    """Runs one or several load levels over one HTTP session."""

    def __init__(self, cfg, samples):
        if not HAS_AIOHTTP:
            raise BenchmarkError("aiohttp is required")
        if not samples:
            raise BenchmarkError("no samples")
        self.cfg = cfg
        self.samples = samples
        self.state = _State()
        self.session = None

    # -- request ----------------------------------------------------------------
    def body(self, sample, drop=()):
        cfg = self.cfg
        b = {"model": cfg.model, "stream": True,
             "max_tokens": int(cfg.max_tokens or sample.output_len),
             "stream_options": {"include_usage": True}}
        if cfg.endpoint == "chat":
            b["messages"] = [{"role": "user", "content": sample.prompt}]
        else:
            b["prompt"] = sample.prompt
        if cfg.ignore_eos:
            b["ignore_eos"] = True
        if cfg.temperature is not None:
            b["temperature"] = cfg.temperature
        b.update(cfg.extra_body)
        for f in list(self.state.unsupported) + list(drop):
            b.pop(f, None)
        return b

    def _candidates(self, body):
        return [f for f in list(OPTIONAL_FIELDS) + list(self.cfg.extra_body) if f in body]

    async def send(self, sample, result):
        """Send one request, fill ``result``; retries once without rejected fields."""
        body = self.body(sample)
        for attempt in (0, 1):
            retry = await self._stream(body, sample, result)
            if not retry or attempt == 1:
                return
            for f in retry:
                if f not in self.state.unsupported:
                    self.state.unsupported.append(f)
            body = self.body(sample, drop=retry)
            result.__init__(scheduled_time=result.scheduled_time,
                            dispatch_lag=result.dispatch_lag,
                            client_queue_time=result.client_queue_time)

    async def _stream(self, body, sample, r):
        r.prompt_len = sample.prompt_len
        st = time.perf_counter()
        r.start_time = st
        acc = _Accumulator(r, st, self.cfg.endpoint == "chat", self.cfg.keep_texts)
        try:
            async with self.session.post(self.cfg.url, data=json.dumps(body),
                                         headers=self._headers) as resp:
                r.status = resp.status
                if resp.status != 200:
                    text = await resp.text()
                    rejected = _rejected_fields(resp.status, text, self._candidates(body))
                    if rejected:
                        r.error = "HTTP %d: rejected %s" % (resp.status, ", ".join(rejected))
                        return rejected
                    r.error = "HTTP %d: %s" % (resp.status, text.strip()[:300])
                    return None
                stream = resp.content
                if self.cfg.tap_stream and _tap(stream, acc):
                    try:
                        await asyncio.wait_for(stream.wait_eof(), self.cfg.request_timeout_s)
                    finally:
                        _untap(stream)
                    if stream.exception() is not None:
                        raise stream.exception()
                else:
                    while True:
                        chunk = await stream.readany()
                        if not chunk:
                            break
                        acc.feed(chunk, time.perf_counter())
                acc.close(time.perf_counter())
        except asyncio.TimeoutError:
            acc.error = "timeout after %.0f s" % self.cfg.request_timeout_s
        except Exception as e:  # aiohttp.ClientError, OSError, payload errors
            acc.error = "%s: %s" % (type(e).__name__, e)
        acc.finish()
        return None

    # -- load -----------------------------------------------------------------------
    async def _monitor(self, stop, delays, interval=0.005):
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(interval)
            delays.append(max(0.0, time.perf_counter() - t - interval))

    def _dispatch(self, offsets, start, sem, results, tasks):
        """Start request ``i`` at ``start + offsets[i]`` from loop timers, not a coroutine.

        A timer callback starts the request task directly: no dispatcher coroutine has
        to be woken first, so a send waits for at most the loop iteration in progress.
        A timer never fires a request early: a callback that runs before the scheduled
        time re-arms itself (uvloop's timers have 1 ms resolution). The lag itself is
        measured by the request task when it starts (see :meth:`_timed`).
        """
        loop = asyncio.get_event_loop()
        done = loop.create_future()
        samples = self.samples
        n_samples = len(samples)
        n = len(offsets)
        pos = [0]

        stop_file = self.cfg.stop_file

        def fire():
            now = time.perf_counter()
            i = pos[0]
            if stop_file and os.path.exists(stop_file):
                i = n
            while i < n and start + offsets[i] <= now:
                tasks.append(loop.create_task(self._timed(
                    samples[i % n_samples], start + offsets[i], sem, results)))
                i += 1
            pos[0] = i
            if i < n:
                loop.call_later(start + offsets[i] - now, fire)
            elif not done.done():
                done.set_result(None)

        loop.call_later(max(0.0, start + offsets[0] - time.perf_counter()), fire)
        return done

    async def _timed(self, sample, scheduled, sem, results):
        r = RequestResult(scheduled_time=scheduled)
        t = time.perf_counter()
        r.dispatch_lag = max(0.0, t - scheduled)
        results.append(r)
        if sem is not None:
            async with sem:
                r.client_queue_time = time.perf_counter() - t
                await self.send(sample, r)
        else:
            await self.send(sample, r)

    async def _probe(self):
        r = RequestResult()
        await self.send(self.samples[0], r)
        if not r.success:
            raise BenchmarkError("initial test request to %s failed: %s" % (self.cfg.url, r.error))

    async def _warmup(self):
        n = self.cfg.warmup_requests
        if n <= 0:
            return
        sem = asyncio.Semaphore(self.cfg.max_concurrency) if self.cfg.max_concurrency else None
        sink = []
        await asyncio.gather(*[self._timed(self.samples[i % len(self.samples)],
                                           time.perf_counter(), sem, sink) for i in range(n)])

    async def run_level(self, rate):
        """One load level; returns (results, duration, lags, loop_delays)."""
        cfg = self.cfg
        rng = random.Random(cfg.seed)
        sem = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
        results = []
        delays = []
        stop = asyncio.Event()
        monitor = asyncio.ensure_future(self._monitor(stop, delays))
        tasks = []
        start = time.perf_counter()
        if cfg.duration_s and math.isinf(rate):
            # closed loop: max_concurrency workers, each sends the next prompt when free
            deadline = start + cfg.duration_s
            counter = [0]

            async def worker():
                while time.perf_counter() < deadline and not (cfg.stop_file and os.path.exists(cfg.stop_file)):
                    i = counter[0]
                    counter[0] += 1
                    await self._timed(self.samples[i % len(self.samples)],
                                      time.perf_counter(), None, results)
            tasks = [asyncio.ensure_future(worker()) for dummy in range(cfg.max_concurrency)]
        else:
            if cfg.duration_s:
                offsets = duration_offsets(cfg.duration_s, rate, cfg.burstiness, rng)
            else:
                offsets = arrival_offsets(cfg.num_prompts or len(self.samples), rate,
                                          cfg.burstiness, rng)
            if offsets:
                await self._dispatch(offsets, start, sem, results, tasks)
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
        stop.set()
        await monitor
        results.sort(key=lambda x: x.scheduled_time)
        return results, duration, [x.dispatch_lag for x in results], delays

    async def run_all(self, rates):
        cfg = self.cfg
        # One timer per request (total), not one re-armed on every chunk (sock_read):
        # at tens of thousands of chunks per second that timer is a measurable cost.
        timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s, sock_connect=30)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
        self._headers = cfg.headers()
        levels = []
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         read_bufsize=READ_BUFSIZE) as session:
            self.session = session
            if cfg.probe:
                await self._probe()
            for rate in rates:
                await self._warmup()
                # like vLLM: keep the collector away from the long-lived objects
                gc.collect()
                if hasattr(gc, "freeze"):
                    gc.freeze()
                try:
                    results, duration, lags, delays = await self.run_level(rate)
                finally:
                    if hasattr(gc, "unfreeze"):
                        gc.unfreeze()
                levels.append(self._level_result(rate, results, duration, lags, delays))
        return levels

    def _level_result(self, rate, results, duration, lags, delays):
        cfg = self.cfg
        extra = ()
        if cfg.max_concurrency:
            extra = ("client_queue_time",) if math.isinf(rate) else \
                ("client_queue_time", "e2el_including_client_queue")
        m = calculate_metrics(results, duration, cfg.percentiles, cfg.goodput, extra)
        lag = summarize(lags)
        loop = summarize(delays)
        warnings = []
        if lag["p99"] > LAG_WARN_MS:
            warnings.append(
                "client dispatch lag p99 %.1f ms (max %.1f ms) exceeds %.0f ms at %s req/s: "
                "the load generator could not keep the schedule; run it on a bigger host or "
                "lower the rate" % (lag["p99"], lag["max"], LAG_WARN_MS, _rate_str(rate)))
        if loop["p99"] > LOOP_DELAY_WARN_MS:
            warnings.append(
                "client event-loop delay p99 %.1f ms (max %.1f ms) exceeds %.0f ms at %s req/s: "
                "TTFT/ITL include client-side delay"
                % (loop["p99"], loop["max"], LOOP_DELAY_WARN_MS, _rate_str(rate)))
        m.update({
            "request_rate": rate if not math.isinf(rate) else "inf",
            "burstiness": cfg.burstiness,
            "max_concurrency": cfg.max_concurrency,
            "num_prompts": len(results),
            "dispatch_lag_ms": lag,
            "event_loop_delay_ms": loop,
            "client_warnings": warnings,
            "unsupported_fields": list(self.state.unsupported),
        })
        return m


def _rate_str(rate):
    return "inf" if math.isinf(rate) else ("%g" % rate)


def run_benchmark(cfg, samples, rates=None):
    """Run the benchmark at ``rates`` (default: ``cfg.request_rate``); list of level dicts."""
    rates = list(rates) if rates else [cfg.request_rate]
    runner = Runner(cfg, samples)
    loop, name = new_event_loop(cfg.event_loop)
    try:
        levels = loop.run_until_complete(runner.run_all([float(x) for x in rates]))
    finally:
        loop.close()
    for level in levels:
        level["event_loop"] = name
    return levels


def new_event_loop(kind="auto"):
    """``(loop, name)``: uvloop when installed (``auto``) or asked for, else asyncio's."""
    if kind not in EVENT_LOOPS:
        raise BenchmarkError("event_loop must be one of %s" % ", ".join(EVENT_LOOPS))
    if kind == "uvloop" and not HAS_UVLOOP:
        raise BenchmarkError("event_loop uvloop asked for but uvloop is not installed")
    if kind != "asyncio" and HAS_UVLOOP:
        return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


def make_token_counter(base_url, model, api_key=None, timeout=10.0):
    """A ``count_tokens(text)`` calling the server's ``POST /tokenize``, or None.

    vLLM and the lab simulator answer ``{"count": n, "tokens": [...]}``; a server
    without the endpoint (404/405, connection error, other shape) gives None.
    """
    import http.client

    parts = urlsplit(base_url.rstrip("/"))
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "") + "/tokenize"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    holder = {}

    def _conn():
        if "c" not in holder:
            holder["c"] = conn_cls(parts.hostname, parts.port, timeout=timeout)
        return holder["c"]

    def count(text):
        payload = json.dumps({"model": model, "prompt": text})
        for attempt in (0, 1):
            try:
                c = _conn()
                c.request("POST", path, body=payload, headers=headers)
                resp = c.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException):
                holder.pop("c", None)
                if attempt:
                    raise
        if resp.status != 200:
            raise ValueError("HTTP %d" % resp.status)
        obj = json.loads(data.decode("utf-8"))
        if isinstance(obj.get("count"), int):
            return obj["count"]
        if isinstance(obj.get("tokens"), list):
            return len(obj["tokens"])
        raise ValueError("unexpected /tokenize answer")

    try:
        count("hello world")
    except (OSError, ValueError, http.client.HTTPException):
        return None
    return count
