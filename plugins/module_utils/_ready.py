# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection (not a public API): readiness of an OpenAI-compatible engine.

Readiness is a real generation: ``/health`` 200, ``/v1/models`` listing the served name, then
one streamed completion whose SSE body is parsed.  While waiting, the engine containers are
watched (Docker SDK or the docker CLI through a ``run(argv)`` callable); an exit or a restart
stops the wait at once with a diagnosis classified from the log tail.

Only the standard library is used for HTTP so the module runs on any host Python.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time

import http.client as http_client
from urllib.parse import urlsplit

# --------------------------------------------------------------------------- log diagnosis
# (class, hint, [regex, ...]) in priority order: root causes before their consequences
# (a Ray worker dying of CUDA OOM logs both; the OOM is what to fix).
DIAGNOSES = [
    ("unknown_flag",
     "the engine rejected a command-line flag: check extra_args and the engine_version flag table",
     [r"error: unrecognized arguments?:.*", r"error: argument [^:]+: invalid choice.*",
      r"error: ambiguous option.*", r"error: argument [^:]+: expected .*",
      r"(?:TypeError|ValueError): .*unexpected keyword argument.*"]),
    ("port_in_use",
     "another process already listens on the port: change port or stop the other service",
     [r".*\[Errno 98\].*", r".*Address already in use.*", r".*address already in use.*",
      r".*port \d+ is (?:already )?in use.*", r".*Port \d+ is not available.*"]),
    ("missing_weights",
     "model files are missing or incomplete at model_path: re-run model_weights (sizes and hashes) and "
     "check the mount",
     [r".*FileNotFoundError.*", r".*No such file or directory.*\.(?:safetensors|bin|json|model|pt)\b.*",
      r".*does not appear to have (?:a )?file(?:s)? named.*", r".*Can't load (?:the )?(?:config|tokenizer).*",
      r".*is not a valid model identifier.*", r".*HFValidationError.*", r".*safetensors_rust\.SafetensorError.*",
      r".*incomplete metadata, file not fully covered.*", r".*Cannot find any model weights.*",
      r".*No model weights found.*"]),
    ("shm",
     "the engine's shared memory (/dev/shm) is too small: run it with --ipc host (inference_server_ipc_mode) "
     "or a larger --shm-size",
     [r".*Insufficient space in /dev/shm.*", r".*/dev/shm.*No space left on device.*",
      r".*Error while creating shared memory segment.*"]),
    ("cuda_oom",
     "the GPUs ran out of memory: lower gpu_memory_utilization / max_model_len, raise tensor_parallel, "
     "or free the GPUs (gpu_facts processes)",
     [r".*CUDA out of memory.*", r".*torch\.(?:cuda\.)?OutOfMemoryError.*", r".*CUDA error: out of memory.*",
      r".*cudaErrorMemoryAllocation.*", r".*No available memory for the cache blocks.*",
      r".*(?:larger|greater) than the maximum number of tokens that can be stored in KV cache.*",
      r".*larger than the available KV cache memory.*",
      r".*Not enough memory.*KV cache.*", r".*RuntimeError: Not enough memory.*",
      r".*Insufficient memory.*"]),
    ("nccl_ray",
     "a distributed worker died or NCCL/Ray timed out: check NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME, "
     "VLLM_HOST_IP, the worker containers and the network between hosts (fabric_check)",
     [r".*Watchdog caught collective operation timeout.*", r".*NCCL (?:error|WARN).*",
      r".*nccl(?:Internal|System|Unhandled(?:Cuda)?|Remote|InvalidUsage)Error.*", r".*NCCL timeout.*",
      r".*ProcessGroupNCCL.*(?:timeout|timed out|Timeout).*", r".*DistNetworkError.*",
      r".*ActorDiedError.*", r".*RayActorError.*", r".*The actor died unexpectedly.*",
      r".*(?:raylet|Raylet) (?:has )?died.*", r".*node .* has been marked dead.*",
      r".*GetTimeoutError.*", r".*Timed out waiting for .*(?:placement group|ray|nodes).*",
      r".*ray\.exceptions\.\w+.*", r".*Connection closed by peer.*nccl.*",
      r".*torch\.distributed\.DistBackendError.*", r".*RuntimeError: .*(?:Gloo|gloo).*(?:timeout|Timed out).*",
      r".*TimeoutError: .*(?:init_process_group|rendezvous|dist).*",
      # the collection's own Ray head entrypoint (roles/inference_server/files/entrypoint.sh)
      r".*llmfleet-entrypoint: timed out after .* waiting for Ray.*",
      r".*llmfleet-entrypoint: Ray head .* did not answer.*"]),
]
GENERIC_HINT = "see log_tail"
CLASSIFY_LINES = 200
_COMPILED = [(cls, hint, [re.compile(p) for p in pats]) for cls, hint, pats in DIAGNOSES]
_GENERIC = re.compile(r".*(?:Error|Exception|error:|FATAL|Fatal|Traceback).*")


def classify_logs(text):
    """Classify an engine log tail. Returns {class, hint, line} (line: the matching log line)."""
    lines = (text or "").splitlines()
    for cls, hint, regexes in _COMPILED:
        for line in lines:
            for rx in regexes:
                if rx.search(line):
                    return {"class": cls, "hint": hint, "line": line.strip()[:500]}
    line = None
    for candidate in reversed(lines):
        if _GENERIC.match(candidate) and not candidate.strip().startswith("Traceback"):
            line = candidate.strip()[:500]
            break
    return {"class": "generic", "hint": GENERIC_HINT, "line": line}


def tail_lines(text, n):
    lines = (text or "").splitlines()
    return lines[-n:] if n > 0 else []


# --------------------------------------------------------------------------- containers
class ContainerBackendError(Exception):
    pass


class SDKBackend(object):
    """Docker SDK (``docker`` package); ``client_factory(docker_host or None)`` returns a client."""

    name = "docker-sdk"

    def __init__(self, client_factory):
        self._factory = client_factory
        self._clients = {}

    def _client(self, docker_host):
        if docker_host not in self._clients:
            self._clients[docker_host] = self._factory(docker_host)
        return self._clients[docker_host]

    def state(self, container, docker_host=None):
        try:
            c = self._client(docker_host).containers.get(container)
        except Exception as e:  # docker.errors.NotFound, APIError, DockerException
            if type(e).__name__ == "NotFound":
                return {"exists": False}
            raise ContainerBackendError("docker: %s" % e)
        attrs = c.attrs
        return _state_from_inspect(attrs)

    def logs(self, container, tail, docker_host=None):
        try:
            data = self._client(docker_host).containers.get(container).logs(tail=tail, stdout=True, stderr=True)
        except Exception as e:
            return "(could not read logs: %s)" % e
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


class CLIBackend(object):
    """``docker inspect`` / ``docker logs`` through run(argv) -> (rc, out, err)."""

    name = "docker-cli"

    def __init__(self, run, docker_bin="docker"):
        self._run = run
        self._bin = docker_bin

    def _argv(self, docker_host, *args):
        argv = [self._bin]
        if docker_host:
            argv += ["-H", docker_host]
        return argv + list(args)

    def state(self, container, docker_host=None):
        rc, out, err = self._run(self._argv(docker_host, "inspect", "--type", "container", container))
        if rc != 0:
            if "no such" in (err + out).lower():
                return {"exists": False}
            raise ContainerBackendError("docker inspect %s: %s" % (container, (err or out).strip()[:300]))
        try:
            data = json.loads(out)
        except ValueError:
            raise ContainerBackendError("docker inspect %s: output is not JSON" % container)
        if isinstance(data, list):
            if not data:
                return {"exists": False}
            data = data[0]
        return _state_from_inspect(data)

    def logs(self, container, tail, docker_host=None):
        rc, out, err = self._run(self._argv(docker_host, "logs", "--tail", str(tail), container))
        if rc != 0:
            return "(could not read logs: %s)" % (err or out).strip()[:300]
        # engines log to stderr mostly; docker logs keeps the streams apart, join them
        return (out or "") + (err or "")


def _state_from_inspect(attrs):
    st = attrs.get("State") or {}
    return {
        "exists": True,
        "status": st.get("Status"),
        "running": bool(st.get("Running")),
        "restarting": bool(st.get("Restarting")),
        "exit_code": st.get("ExitCode"),
        "oom_killed": bool(st.get("OOMKilled")),
        "error": st.get("Error") or None,
        "restart_count": int(attrs.get("RestartCount") or 0),
        "finished_at": st.get("FinishedAt"),
    }


class ContainerWatch(object):
    """Remembers each container's RestartCount at the start (or the ``restart_count`` it was
    started with, when given: a restart before the watch began counts too); ``check()`` returns
    the first failure as {container, host, reason, state} or None."""

    def __init__(self, backend, containers):
        self.backend = backend
        self.containers = containers  # [{container, host, docker_host}]
        self.baseline = {}

    @staticmethod
    def _key(c):
        return (c.get("docker_host"), c["container"])

    def start(self):
        for c in self.containers:
            if c.get("restart_count") is not None:
                self.baseline[self._key(c)] = c["restart_count"]
                continue
            st = self.backend.state(c["container"], c.get("docker_host"))
            self.baseline[self._key(c)] = st.get("restart_count", 0) if st.get("exists") else 0
        return self.check()

    def check(self):
        for c in self.containers:
            st = self.backend.state(c["container"], c.get("docker_host"))
            reason = None
            if not st.get("exists"):
                reason = "does not exist (removed?)"
            elif st.get("restart_count", 0) > self.baseline.get(self._key(c), 0):
                reason = "restarted (RestartCount %d -> %d, last exit code %s)" % (
                    self.baseline.get(self._key(c), 0), st["restart_count"], st.get("exit_code"))
            elif st.get("restarting"):
                reason = "is restarting (exit code %s)" % st.get("exit_code")
            elif not st.get("running") and st.get("status") != "created":
                oom = " (OOM killed by the kernel)" if st.get("oom_killed") else ""
                reason = "exited with code %s%s" % (st.get("exit_code"), oom)
            if reason:
                return {"container": c["container"], "host": c.get("host"), "docker_host": c.get("docker_host"),
                        "reason": reason, "state": st}
        return None


def diagnose(backend, failure, log_lines):
    """Build the diagnosis dict and the log tail for a failed container."""
    c = failure["container"]
    # classify a wider window than is returned: the root cause often precedes the last lines
    logs = backend.logs(c, max(log_lines, CLASSIFY_LINES), failure.get("docker_host"))
    diag = classify_logs(logs)
    st = failure.get("state") or {}
    if diag["class"] == "generic" and st.get("oom_killed"):
        diag = {"class": "host_oom", "hint": "the kernel OOM killer stopped the container: host RAM", "line": None}
    where = "%s on %s" % (c, failure["host"]) if failure.get("host") else c
    diag.update({
        "container": c,
        "host": failure.get("host"),
        "reason": failure["reason"],
        "exit_code": st.get("exit_code"),
        "restart_count": st.get("restart_count"),
        "summary": "container %s %s: %s%s" % (
            where, failure["reason"], diag["class"], (" (%s)" % diag["line"]) if diag.get("line") else ""),
    })
    return diag, tail_lines(logs, log_lines)


# --------------------------------------------------------------------------- HTTP
class HTTPResult(object):
    def __init__(self, status=None, body=b"", error=None):
        self.status = status
        self.body = body
        self.error = error

    def __repr__(self):
        return "HTTPResult(%r, %r)" % (self.status, self.error)


class Endpoint(object):
    def __init__(self, base_url, api_key=None, validate_certs=True):
        u = urlsplit(base_url.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("url must be http(s)://host[:port][/prefix], got %r" % base_url)
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.api_key = api_key
        self.validate_certs = validate_certs

    def _conn(self, timeout):
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            if not self.validate_certs:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            return http_client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http_client.HTTPConnection(self.host, self.port, timeout=timeout)

    def headers(self, extra=None):
        h = {"Accept": "application/json", "User-Agent": "llmfleet-llm_ready"}
        if self.api_key:
            h["Authorization"] = "Bearer %s" % self.api_key
        h.update(extra or {})
        return h

    def request(self, method, path, timeout, body=None):
        conn = self._conn(timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, self.prefix + path, body=data,
                         headers=self.headers({"Content-Type": "application/json"} if data else None))
            resp = conn.getresponse()
            return HTTPResult(resp.status, resp.read())
        except (OSError, http_client.HTTPException, socket.timeout) as e:
            return HTTPResult(error="%s: %s" % (type(e).__name__, e))
        finally:
            conn.close()

    def stream(self, path, body, timeout, clock=time.monotonic):
        """POST with stream=true; returns (status, error, sse_events_iterable_result) as a dict."""
        conn = self._conn(timeout)
        t0 = clock()
        try:
            conn.request("POST", self.prefix + path, body=json.dumps(body).encode(),
                         headers=self.headers({"Content-Type": "application/json", "Accept": "text/event-stream"}))
            resp = conn.getresponse()
            if resp.status != 200:
                return {"status": resp.status, "error": resp.read()[:1000].decode("utf-8", "replace"), "t0": t0}
            return dict(parse_sse_stream(resp, clock, t0), status=200, t0=t0)
        except (OSError, http_client.HTTPException, socket.timeout) as e:
            return {"status": None, "error": "%s: %s" % (type(e).__name__, e), "t0": t0}
        finally:
            conn.close()


def _iter_sse_data(fp):
    """Yield the data payload of each SSE event (multi-line data joined with newlines)."""
    data = []
    while True:
        raw = fp.readline()
        if not raw:
            break
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
    if data:
        yield "\n".join(data)


def parse_sse_stream(fp, clock=time.monotonic, t0=None):
    """Parse an OpenAI-style SSE stream (chat or completions).

    Returns {tokens, text, finish_reason, done, first_token_latency_s, total_s, error, events}.
    ``tokens`` counts chunks carrying content (content, reasoning_content/reasoning or text).
    """
    t0 = clock() if t0 is None else t0
    out = {"tokens": 0, "text": "", "reasoning_text": "", "finish_reason": None, "done": False,
           "first_token_latency_s": None, "total_s": None, "error": None, "events": 0, "usage": None}
    for payload in _iter_sse_data(fp):
        out["events"] += 1
        if payload.strip() == "[DONE]":
            out["done"] = True
            break
        try:
            ev = json.loads(payload)
        except ValueError:
            out["error"] = "stream event is not JSON: %r" % payload[:200]
            break
        if isinstance(ev, dict) and ("error" in ev or ev.get("object") == "error"):
            err = ev.get("error", ev)
            out["error"] = "engine returned an error in the stream: %s" % (
                err.get("message") if isinstance(err, dict) else err)
            break
        if ev.get("usage"):
            out["usage"] = ev["usage"]
        for ch in ev.get("choices") or []:
            piece = reasoning = None
            delta = ch.get("delta")
            if isinstance(delta, dict):
                piece = delta.get("content")
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            elif "text" in ch:
                piece = ch.get("text")
            if piece or reasoning:
                out["tokens"] += 1
                if out["first_token_latency_s"] is None:
                    out["first_token_latency_s"] = round(clock() - t0, 4)
                out["text"] += piece or ""
                out["reasoning_text"] += reasoning or ""
            if ch.get("finish_reason"):
                out["finish_reason"] = ch["finish_reason"]
    out["total_s"] = round(clock() - t0, 4)
    return out


def smoke_ok(res):
    """A streamed completion proves readiness: >=1 content token and a proper end."""
    if res.get("status") != 200 or res.get("error"):
        return False
    return res["tokens"] >= 1 and (res["done"] or res["finish_reason"] is not None)


def model_ids(body):
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    return [m.get("id") for m in data["data"] if isinstance(m, dict)]


def smoke_body(endpoint_kind, model, prompt, max_tokens):
    if endpoint_kind == "chat":
        return "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": prompt}],
                                        "max_tokens": max_tokens, "stream": True, "temperature": 0}
    return "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                               "temperature": 0}


# --------------------------------------------------------------------------- the wait loop
class NotReady(Exception):
    def __init__(self, msg, result):
        super(NotReady, self).__init__(msg)
        self.msg = msg
        self.result = result


def wait_ready(endpoint, model, timeout, watch=None, endpoint_kind="chat", prompt="Say hello.", max_tokens=16,
               poll_interval=2.0, request_timeout=60.0, log_lines=50, health_path="/health",
               clock=time.monotonic, sleep=time.sleep):
    """Wait until the engine serves. Returns the result dict; raises NotReady with it otherwise."""
    t0 = clock()
    deadline = t0 + timeout
    result = {"ready": False, "phase": "health", "time_to_ready_s": None, "first_token_latency_s": None,
              "models": [], "diagnosis": None, "log_tail": [], "smoke": None, "attempts": 0, "last_error": None}

    def fail_container(failure):
        diag, tail = diagnose(watch.backend, failure, log_lines)
        result["diagnosis"] = diag
        result["log_tail"] = tail
        raise NotReady(diag["summary"], result)

    if watch is not None:
        try:
            failure = watch.start()
        except ContainerBackendError as e:
            raise NotReady("cannot watch the engine containers: %s" % e, result)
        if failure:
            fail_container(failure)

    while True:
        result["attempts"] += 1
        short = max(0.5, min(5.0, deadline - clock()))
        if result["phase"] == "health":
            r = endpoint.request("GET", health_path, short)
            if r.status == 200:
                result["phase"] = "models"
            else:
                result["last_error"] = "GET %s: %s" % (health_path, r.error or "HTTP %s" % r.status)
        if result["phase"] == "models":
            r = endpoint.request("GET", "/v1/models", short)
            if r.status == 401 or r.status == 403:
                result["last_error"] = "GET /v1/models: HTTP %s (API key rejected or missing)" % r.status
                result["diagnosis"] = {"class": "unauthorized", "hint": "api_key / api_key_file does not match "
                                       "the engine's key", "line": None, "summary": result["last_error"]}
                raise NotReady(result["last_error"], result)
            ids = model_ids(r.body) if r.status == 200 else None
            if ids is not None:
                result["models"] = ids
            if ids is not None and model in ids:
                result["phase"] = "smoke"
            else:
                result["last_error"] = "GET /v1/models: %s" % (
                    r.error or ("HTTP %s" % r.status if r.status != 200 else
                                "served model %r not listed (listed: %s)" % (model, ids)))
        if result["phase"] == "smoke":
            path, body = smoke_body(endpoint_kind, model, prompt, max_tokens)
            s = endpoint.stream(path, body, max(1.0, min(request_timeout, deadline - clock())), clock=clock)
            smoke = {k: s.get(k) for k in ("status", "tokens", "text", "reasoning_text", "finish_reason", "done",
                                           "first_token_latency_s", "total_s", "error", "usage")}
            result["smoke"] = smoke
            if s.get("status") in (401, 403):
                result["last_error"] = "POST %s: HTTP %s (API key rejected or missing)" % (path, s["status"])
                result["diagnosis"] = {"class": "unauthorized", "hint": "api_key / api_key_file does not match "
                                       "the engine's key", "line": None, "summary": result["last_error"]}
                raise NotReady(result["last_error"], result)
            if smoke_ok(s):
                result["ready"] = True
                result["time_to_ready_s"] = round(clock() - t0, 3)
                result["first_token_latency_s"] = s["first_token_latency_s"]
                result["last_error"] = None
                return result
            result["last_error"] = "POST %s: %s" % (path, s.get("error") or (
                "HTTP %s" % s.get("status") if s.get("status") != 200 else
                "stream ended without content or end marker (tokens=%s, done=%s, finish_reason=%s)"
                % (s.get("tokens"), s.get("done"), s.get("finish_reason"))))
            if s.get("status") == 404 or s.get("status") == 400:
                result["phase"] = "models"  # model vanished or not accepted: re-check the listing
        if watch is not None:
            try:
                failure = watch.check()
            except ContainerBackendError as e:
                failure = None
                result["last_error"] = "%s; cannot watch containers: %s" % (result["last_error"], e)
            if failure:
                fail_container(failure)
        if clock() >= deadline:
            break
        sleep(max(0.0, min(poll_interval, deadline - clock())))

    msg = "engine not ready after %ss (phase %s: %s)" % (timeout, result["phase"], result["last_error"])
    if watch is not None:
        # Still running but not serving (a hang: NCCL waiting for a peer, weights loading forever...).
        tails = []
        diag = None
        for c in watch.containers:
            logs = watch.backend.logs(c["container"], max(log_lines, CLASSIFY_LINES), c.get("docker_host"))
            d = classify_logs(logs)
            tails.extend("[%s] %s" % (c["container"], line) for line in tail_lines(logs, log_lines))
            if diag is None or (diag["class"] == "generic" and d["class"] != "generic"):
                diag = dict(d, container=c["container"], host=c.get("host"), reason="timeout",
                            exit_code=None, restart_count=None)
        if diag is not None:
            diag["summary"] = "%s; logs of %s suggest %s%s" % (msg, diag["container"], diag["class"],
                                                               (" (%s)" % diag["line"]) if diag.get("line") else "")
            result["diagnosis"] = diag
            msg = diag["summary"]
        result["log_tail"] = tails
    raise NotReady(msg, result)
