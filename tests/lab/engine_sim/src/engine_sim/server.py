"""OpenAI-compatible HTTP front end of the simulator (aiohttp), vLLM or SGLang flavour."""

from __future__ import annotations

import hmac
import json
import time
import uuid

from aiohttp import web

from . import tokenizer as tok
from .engine import Engine
from .metrics import Metrics

_SEP = (",", ":")


def _dumps(obj):
    return json.dumps(obj, separators=_SEP)


class ServerSpec(object):
    """What the HTTP layer needs to know about the parsed command line."""

    def __init__(self, engine, version, model_path, served_names, max_model_len, api_key=None,
                 max_num_seqs=256, enable_metrics=True):
        self.engine = engine                    # "vllm" | "sglang"
        self.version = version
        self.model_path = model_path
        self.served_names = list(served_names) or [model_path]
        self.max_model_len = int(max_model_len)
        self.api_key = api_key                  # a key, a list of keys, or None
        self.max_num_seqs = max_num_seqs
        self.enable_metrics = enable_metrics


def error_body(message, etype="BadRequestError", code=400, param=None):
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def json_response(obj, status=200):
    return web.Response(body=_dumps(obj).encode("utf-8"), status=status, content_type="application/json")


class BadRequest(Exception):
    def __init__(self, message, code=400, etype="BadRequestError", param=None):
        Exception.__init__(self, message)
        self.code = code
        self.etype = etype
        self.param = param


def _int_field(body, name, minimum=None):
    val = body.get(name)
    if val is None:
        return None
    if isinstance(val, bool) or not isinstance(val, int):
        raise BadRequest("%s must be an integer, got %r" % (name, val), param=name)
    if minimum is not None and val < minimum:
        raise BadRequest("%s must be at least %d, got %d." % (name, minimum, val), param=name)
    return val


class SimServer(object):
    """Build with a spec and a :class:`SimConfig`; ``app`` is the aiohttp application."""

    def __init__(self, spec, cfg, loop=None):
        self.spec = spec
        self.cfg = cfg
        self.ready = False
        self.created = int(time.time())
        self.metrics = Metrics(spec.engine, spec.version, spec.served_names[0])
        self.engine = Engine(cfg, cfg.max_num_seqs or spec.max_num_seqs, self.metrics, loop)
        keys = spec.api_key if isinstance(spec.api_key, (list, tuple)) else [spec.api_key]
        self._auth = [("Bearer " + k).encode("utf-8") for k in keys if k] or None
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.app.on_startup.append(self._on_startup)
        self.app.on_cleanup.append(self._on_cleanup)
        r = self.app.router
        r.add_get("/health", self.health)
        r.add_get("/ping", self.health)
        r.add_get("/v1/models", self.models)
        r.add_get("/version", self.version)
        r.add_post("/tokenize", self.tokenize)
        r.add_post("/detokenize", self.detokenize)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_get("/metrics", self.prom)
        if spec.engine == "vllm":
            # vLLM's SageMaker route: completions or chat by the body, outside /v1, so its API key
            # does not cover it (vLLM checks the key on /v1 paths only, as _protected does here).
            r.add_post("/invocations", self.invocations)
        r.add_get("/sim/timeline", self.timeline)
        if spec.engine == "sglang":
            r.add_get("/health_generate", self.health)
            r.add_get("/get_model_info", self.model_info)
        self.routes = [(res.canonical, sorted(route.method for route in res)) for res in r.resources()]

    async def _on_startup(self, _app):
        self.engine.start()

    async def _on_cleanup(self, _app):
        self.engine.sched.stop()

    # -- middleware: readiness and API key -------------------------------------------------
    def _protected(self, path):
        if self.spec.engine == "sglang":
            return not (path.startswith("/health") or path.startswith("/metrics"))
        return path.startswith("/v1")

    @web.middleware
    async def _middleware(self, request, handler):
        if self._auth is not None and request.method != "OPTIONS" and self._protected(request.path):
            got = request.headers.get("Authorization", "").encode("utf-8")
            ok = False
            for want in self._auth:
                ok = hmac.compare_digest(got, want) or ok
            if not ok:
                return json_response({"error": "Unauthorized"}, status=401)
        if not self.ready and request.path not in ("/metrics", "/version"):
            return json_response(error_body("The server is starting up: the model is still loading.",
                                            "ServiceUnavailableError", 503), status=503)
        try:
            return await handler(request)
        except BadRequest as exc:
            return json_response(error_body(str(exc), exc.etype, exc.code, exc.param), status=exc.code)

    # -- simple routes ---------------------------------------------------------------------
    async def health(self, request):
        return web.Response(status=200)

    async def invocations(self, request):
        try:
            body = await request.json()
        except ValueError:
            body = {}
        return await (self.chat if isinstance(body, dict) and "messages" in body else self.completions)(request)

    async def timeline(self, request):
        """The engine's own timeline (lab only): what it planned and sent, per request."""
        return json_response({"clock": "monotonic", "now": time.monotonic(),
                              "requests": list(self.engine.timeline)})

    async def version(self, request):
        return json_response({"version": self.spec.version})

    async def models(self, request):
        owner = "sglang" if self.spec.engine == "sglang" else "vllm"
        data = []
        for name in self.spec.served_names:
            data.append({
                "id": name, "object": "model", "created": self.created, "owned_by": owner,
                "root": self.spec.model_path, "parent": None, "max_model_len": self.spec.max_model_len,
                "permission": [{
                    "id": "modelperm-" + uuid.uuid4().hex, "object": "model_permission",
                    "created": self.created, "allow_create_engine": False, "allow_sampling": True,
                    "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                    "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
                }],
            })
        return json_response({"object": "list", "data": data})

    async def model_info(self, request):
        return json_response({"model_path": self.spec.model_path, "tokenizer_path": self.spec.model_path,
                              "is_generation": True})

    async def prom(self, request):
        if not self.spec.enable_metrics:
            raise web.HTTPNotFound()
        e = self.engine
        text = self.metrics.render(e.running, e.slots.waiting, e.kv_usage())
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _json(self, request):
        try:
            body = await request.json(loads=json.loads)
        except ValueError as exc:
            raise BadRequest("Invalid JSON body: %s" % exc)
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object")
        return body

    async def tokenize(self, request):
        body = await self._json(request)
        try:
            if "messages" in body:
                text = tok.render_chat(body["messages"], bool(body.get("add_generation_prompt", True)))
            elif isinstance(body.get("prompt"), str):
                text = body["prompt"]
            else:
                raise BadRequest("Either 'prompt' (a string) or 'messages' is required")
        except ValueError as exc:
            raise BadRequest(str(exc))
        ids = tok.encode(text)
        return json_response({
            "count": len(ids), "max_model_len": self.spec.max_model_len, "tokens": ids,
            "token_strs": tok.token_strs(ids) if body.get("return_token_strs") else None})

    async def detokenize(self, request):
        body = await self._json(request)
        ids = body.get("tokens")
        if not isinstance(ids, list):
            raise BadRequest("'tokens' must be a list of token ids")
        try:
            return json_response({"prompt": tok.decode(ids)})
        except ValueError as exc:
            raise BadRequest(str(exc))

    # -- generation ------------------------------------------------------------------------
    def _check_model(self, body):
        model = body.get("model")
        if model is not None and model not in self.spec.served_names:
            raise BadRequest("The model `%s` does not exist." % model, 404, "NotFoundError", "model")
        return model or self.spec.served_names[0]

    def _lengths(self, body, prompt_tokens, chat):
        max_tokens = _int_field(body, "max_completion_tokens", 1) if chat else None
        if max_tokens is None:
            max_tokens = _int_field(body, "max_tokens", 1)
        min_tokens = _int_field(body, "min_tokens", 0) or 0
        ignore_eos = bool(body.get("ignore_eos", False))
        mml = self.spec.max_model_len
        if prompt_tokens >= mml:
            raise BadRequest("This model's maximum context length is %d tokens. However, your request has "
                             "%d input tokens. Please reduce the length of the input messages."
                             % (mml, prompt_tokens))
        if max_tokens is not None and prompt_tokens + max_tokens > mml:
            raise BadRequest("'max_tokens' or 'max_completion_tokens' is too large: %d. This model's maximum "
                             "context length is %d tokens and your request has %d input tokens "
                             "(%d > %d - %d)." % (max_tokens, mml, prompt_tokens, max_tokens, mml,
                                                  prompt_tokens))
        if max_tokens is not None and min_tokens > max_tokens:
            raise BadRequest("min_tokens must be less than or equal to max_tokens=%d, got %d."
                             % (max_tokens, min_tokens), param="min_tokens")
        n = body.get("n", 1)
        if n not in (None, 1):
            raise BadRequest("The engine simulator supports n=1 only.", param="n")
        room = mml - prompt_tokens
        if ignore_eos and max_tokens is None:
            default_len = room
        else:
            default_len = max(1, min(room, max(self.cfg.default_max_tokens, min_tokens)))
        total, reason = self.engine.plan_length(max_tokens, min_tokens, ignore_eos, default_len)
        return total, reason

    @staticmethod
    def _stream_opts(body):
        so = body.get("stream_options") or {}
        if not isinstance(so, dict):
            raise BadRequest("stream_options must be an object")
        if so and not body.get("stream"):
            raise BadRequest("Stream options can only be defined when `stream=True`.")
        return bool(so.get("include_usage")), bool(so.get("continuous_usage_stats"))

    async def completions(self, request):
        arrival = time.monotonic()
        body = await self._json(request)
        model = self._check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ptoks = tok.count(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                         for t in prompt):
            ptoks = len(prompt)
        else:
            raise BadRequest("prompt must be a string, a list with one string, or a list of token ids",
                             param="prompt")
        total, reason = self._lengths(body, ptoks, chat=False)
        rid = "cmpl-" + uuid.uuid4().hex
        if body.get("stream"):
            usage_opts = self._stream_opts(body)
            return await self._stream(request, False, rid, model, ptoks, total, reason, usage_opts, arrival)
        text = await self._run_to_end(ptoks, total, reason, arrival)
        return json_response({
            "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason,
                         "stop_reason": None, "prompt_logprobs": None}],
            "usage": _usage(ptoks, total)})

    async def chat(self, request):
        arrival = time.monotonic()
        body = await self._json(request)
        model = self._check_model(body)
        try:
            text = tok.render_chat(body.get("messages"), bool(body.get("add_generation_prompt", True)))
        except ValueError as exc:
            raise BadRequest(str(exc), param="messages")
        ptoks = tok.count(text)
        total, reason = self._lengths(body, ptoks, chat=True)
        rid = "chatcmpl-" + uuid.uuid4().hex
        if body.get("stream"):
            usage_opts = self._stream_opts(body)
            return await self._stream(request, True, rid, model, ptoks, total, reason, usage_opts, arrival)
        out = await self._run_to_end(ptoks, total, reason, arrival)
        return json_response({
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out, "refusal": None,
                                                 "annotations": None, "audio": None, "function_call": None,
                                                 "tool_calls": [], "reasoning_content": None},
                         "logprobs": None, "finish_reason": reason, "stop_reason": None}],
            "service_tier": None, "system_fingerprint": None,
            "usage": _usage(ptoks, total), "prompt_logprobs": None, "kv_transfer_params": None})

    async def _run_to_end(self, ptoks, total, reason, arrival):
        gen = self.engine.generate(ptoks, total, arrival)
        try:
            async for _start, _n, _last in gen:
                pass
        finally:
            await gen.aclose()
        self.metrics.success[reason] += 1
        return tok.generated_text(0, total)

    async def _stream(self, request, chat, rid, model, ptoks, total, reason, usage_opts, arrival):
        include_usage, continuous = usage_opts
        created = int(time.time())
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        write = resp.write
        if chat:
            head = ('data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,"choices":'
                    % (rid, created, _dumps(model)))
            first = (head + '[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
                     '"finish_reason":null}]')
            mid = head + '[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]'
            end = (head + '[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":"' + reason +
                   '","stop_reason":null}]')
        else:
            head = ('data: {"id":"%s","object":"text_completion","created":%d,"model":%s,"choices":'
                    % (rid, created, _dumps(model)))
            first = None
            mid = head + '[{"index":0,"text":%s,"logprobs":null,"finish_reason":null,"stop_reason":null}]'
            end = head + '[{"index":0,"text":%s,"logprobs":null,"finish_reason":"' + reason + \
                '","stop_reason":null}]'
        words = tok.WORDS
        nwords = len(words)
        gen = self.engine.generate(ptoks, total, arrival)
        finished = False
        try:
            async for start, n, last in gen:
                if n == 1:
                    text = words[start % nwords]
                else:
                    text = tok.generated_text(start, n)
                tail = '}\n\n'
                if continuous and include_usage:
                    tail = ',"usage":%s}\n\n' % _dumps(_usage(ptoks, start + n))
                if first is not None:
                    if continuous and include_usage:
                        await write((first + ',"usage":%s}\n\n' % _dumps(_usage(ptoks, 0))).encode())
                    else:
                        await write((first + '}\n\n').encode())
                    first = None
                await write(((end if last else mid) % ('"%s"' % text) + tail).encode())
            finished = True
            if include_usage:
                await write((head + '[],"usage":%s}\n\n' % _dumps(_usage(ptoks, total))).encode())
            await write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            await gen.aclose()
            self.metrics.success[reason if finished else "abort"] += 1
        return resp


def _usage(prompt, completion):
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
            "prompt_tokens_details": None}
