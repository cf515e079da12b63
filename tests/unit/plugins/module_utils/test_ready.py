# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import io
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_logs as logs  # noqa: E402
from ready_test_server import EngineServer  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.module_utils import _ready as r  # noqa: E402


# ------------------------------------------------------------------ log classification
@pytest.mark.parametrize("text,cls,needle", [
    (logs.VLLM_CUDA_OOM, "cuda_oom", "CUDA out of memory"),
    (logs.VLLM_KV_CACHE, "cuda_oom", "available KV cache memory"),
    (logs.SGLANG_OOM, "cuda_oom", "Not enough memory"),
    (logs.NCCL_WATCHDOG, "nccl_ray", "Watchdog caught collective operation timeout"),
    (logs.RAY_ACTOR_DIED, "nccl_ray", "ActorDiedError"),
    (logs.MISSING_SHARD, "missing_weights", "model-00042-of-000163.safetensors"),
    (logs.PORT_IN_USE, "port_in_use", "[Errno 98]"),
    (logs.SGLANG_UNKNOWN_FLAG, "unknown_flag", "--enable-reasoning"),
    (logs.GENERIC_CRASH, "generic", "KeyError: 'architectures'"),
])
def test_classify_realistic_logs(text, cls, needle):
    d = r.classify_logs(text)
    assert d["class"] == cls
    assert needle in d["line"]
    assert d["hint"]


def test_root_cause_wins_over_consequence():
    # a Ray worker killed by CUDA OOM logs both: the OOM is the thing to fix
    d = r.classify_logs(logs.RAY_ACTOR_DIED + logs.VLLM_CUDA_OOM)
    assert d["class"] == "cuda_oom"


def test_classify_empty():
    assert r.classify_logs("") == {"class": "generic", "hint": r.GENERIC_HINT, "line": None}


# ------------------------------------------------------------------ SSE parsing
def _clock():
    t = [0.0]

    def clock():
        t[0] += 0.1
        return t[0]

    return clock


def test_parse_sse_chat_with_reasoning_and_done():
    body = (b": ping\n\n"
            b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"think"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"length"}]}\n\n'
            b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n'
            b"data: [DONE]\n\n")
    res = r.parse_sse_stream(io.BytesIO(body), clock=_clock(), t0=0.0)
    assert res["tokens"] == 2 and res["text"] == "Hi" and res["reasoning_text"] == "think"
    assert res["done"] and res["finish_reason"] == "length" and res["usage"] == {"completion_tokens": 2}
    assert res["first_token_latency_s"] == pytest.approx(0.1)
    assert r.smoke_ok(dict(res, status=200))


def test_parse_sse_completions_crlf_without_done():
    body = b'data: {"choices":[{"text":" a","finish_reason":null}]}\r\n\r\ndata: {"choices":[{"text":"b","finish_reason":"stop"}]}\r\n\r\n'
    res = r.parse_sse_stream(io.BytesIO(body))
    assert res["text"] == " ab" and not res["done"] and res["finish_reason"] == "stop"
    assert r.smoke_ok(dict(res, status=200))


def test_parse_sse_incomplete_and_error_are_not_ok():
    res = r.parse_sse_stream(io.BytesIO(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'))
    assert res["tokens"] == 1 and not r.smoke_ok(dict(res, status=200))  # cut off: no end marker
    res = r.parse_sse_stream(io.BytesIO(b"data: [DONE]\n\n"))
    assert not r.smoke_ok(dict(res, status=200))  # no token
    res = r.parse_sse_stream(io.BytesIO(b'data: {"object":"error","message":"CUDA error"}\n\n'))
    assert "CUDA error" in res["error"] and not r.smoke_ok(dict(res, status=200))
    res = r.parse_sse_stream(io.BytesIO(b"data: <html>\n\n"))
    assert "not JSON" in res["error"]


def test_endpoint_rejects_bad_url():
    with pytest.raises(ValueError):
        r.Endpoint("10.0.0.1:8000")


# ------------------------------------------------------------------ against a local server
def test_wait_ready_health_503_then_ready():
    with EngineServer() as srv:
        srv.state.health_503 = 3
        srv.state.models_after = 1
        ep = r.Endpoint(srv.url, api_key="sk-test")
        res = r.wait_ready(ep, srv.state.model, timeout=10, poll_interval=0.01)
    assert res["ready"] and res["phase"] == "smoke"
    assert res["models"] == ["Qwen/QwQ-32B"]
    assert res["smoke"]["text"] == "Hello!" and res["smoke"]["done"] and res["smoke"]["finish_reason"] == "stop"
    assert res["first_token_latency_s"] >= 0.05
    assert res["time_to_ready_s"] >= res["first_token_latency_s"]
    assert sum(1 for c in srv.state.calls if c == ("GET", "/health")) == 4
    assert set(srv.state.auth_seen) == {"Bearer sk-test"}


def test_wait_ready_completions_endpoint():
    with EngineServer() as srv:
        ep = r.Endpoint(srv.url + "/", api_key="sk-test")
        res = r.wait_ready(ep, srv.state.model, timeout=5, endpoint_kind="completions", poll_interval=0.01)
    assert res["ready"] and ("POST", "/v1/completions") in srv.state.calls


def test_wait_ready_401_fails_at_once():
    with EngineServer() as srv:
        ep = r.Endpoint(srv.url, api_key="wrong")
        slept = []
        with pytest.raises(r.NotReady) as e:
            r.wait_ready(ep, srv.state.model, timeout=30, poll_interval=0.01, sleep=slept.append)
    assert slept == []  # at once: not one poll interval waited
    assert "401" in e.value.msg and e.value.result["diagnosis"]["class"] == "unauthorized"


def test_wait_ready_timeout_model_not_listed():
    with EngineServer() as srv:
        ep = r.Endpoint(srv.url, api_key="sk-test")
        with pytest.raises(r.NotReady) as e:
            r.wait_ready(ep, "other/model", timeout=0.5, poll_interval=0.05)
    assert "not ready after" in e.value.msg and "'other/model' not listed" in e.value.msg
    assert e.value.result["phase"] == "models" and e.value.result["models"] == ["Qwen/QwQ-32B"]


def test_wait_ready_stream_without_end_is_not_ready():
    with EngineServer() as srv:
        srv.state.finish = False
        srv.state.done = False
        ep = r.Endpoint(srv.url, api_key="sk-test")
        with pytest.raises(r.NotReady) as e:
            r.wait_ready(ep, srv.state.model, timeout=0.5, poll_interval=0.05)
    assert e.value.result["phase"] == "smoke" and "without content or end marker" in e.value.msg


def test_wait_ready_error_event():
    with EngineServer() as srv:
        srv.state.error_event = "CUDA error: an illegal memory access was encountered"
        ep = r.Endpoint(srv.url, api_key="sk-test")
        with pytest.raises(r.NotReady) as e:
            r.wait_ready(ep, srv.state.model, timeout=0.3, poll_interval=0.05)
    assert "illegal memory access" in e.value.msg


def test_wait_ready_connection_refused_times_out():
    ep = r.Endpoint("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(r.NotReady) as e:
        r.wait_ready(ep, "m", timeout=0.3, poll_interval=0.05)
    assert e.value.result["phase"] == "health" and "ConnectionRefusedError" in e.value.msg


# ------------------------------------------------------------------ container watch
class NotFound(Exception):
    pass


class FakeContainer(object):
    def __init__(self, state):
        self.state = state

    @property
    def attrs(self):
        s = self.state
        return {"State": {"Status": s["status"], "Running": s["status"] == "running", "Restarting": False,
                          "ExitCode": s.get("exit", 0), "OOMKilled": s.get("oom", False), "Error": ""},
                "RestartCount": s.get("restarts", 0)}

    def logs(self, tail, stdout=True, stderr=True):
        return "\n".join(self.state["logs"].splitlines()[-tail:]).encode()


class FakeClient(object):
    def __init__(self, states):
        self.states = states
        self.containers = self

    def get(self, name):
        if name not in self.states:
            raise NotFound("404 Client Error: Not Found (\"No such container: %s\")" % name)
        return FakeContainer(self.states[name])


def test_worker_exit_stops_wait_with_diagnosis():
    states = {"llmfleet-r1-head": {"status": "running", "logs": "INFO starting"},
              "llmfleet-r1-worker-1": {"status": "running", "logs": logs.RAY_ACTOR_DIED}}
    client = FakeClient(states)
    watch = r.ContainerWatch(r.SDKBackend(lambda h: client), [
        {"container": "llmfleet-r1-head", "host": "gpu-a"},
        {"container": "llmfleet-r1-worker-1", "host": "gpu-b"}])
    ep = r.Endpoint("http://127.0.0.1:9")
    calls = {"n": 0}

    def sleep(s):
        calls["n"] += 1
        if calls["n"] == 3:
            states["llmfleet-r1-worker-1"].update(status="exited", exit=1)

    with pytest.raises(r.NotReady) as e:
        r.wait_ready(ep, "m", timeout=600, watch=watch, poll_interval=0.01, sleep=sleep, log_lines=3)
    assert calls["n"] == 3  # stopped at the first look after the exit, not at the timeout
    d = e.value.result["diagnosis"]
    assert d["container"] == "llmfleet-r1-worker-1" and d["host"] == "gpu-b"
    assert d["class"] == "nccl_ray" and d["exit_code"] == 1
    assert "llmfleet-r1-worker-1 on gpu-b exited with code 1" in e.value.msg
    assert len(e.value.result["log_tail"]) == 3


def test_restart_count_increase_detected():
    states = {"c": {"status": "running", "restarts": 2, "logs": logs.VLLM_CUDA_OOM}}
    watch = r.ContainerWatch(r.SDKBackend(lambda h: FakeClient(states)), [{"container": "c"}])
    assert watch.start() is None  # restarts before the watch began are the baseline
    states["c"]["restarts"] = 3
    f = watch.check()
    assert f["container"] == "c" and "RestartCount 2 -> 3" in f["reason"]
    d, tail = r.diagnose(watch.backend, f, 50)
    assert d["class"] == "cuda_oom" and tail[-1].startswith("RuntimeError: Engine core")


def test_restart_before_the_watch_counts_when_the_start_count_is_given():
    # A worker this run created (RestartCount 0) died and its restart policy brought it back
    # before the wait began: running again, but a restart all the same.
    states = {"w": {"status": "running", "restarts": 1, "exit": 1, "logs": logs.RAY_ACTOR_DIED},
              "old": {"status": "running", "restarts": 4, "logs": "INFO up for days"}}
    watch = r.ContainerWatch(r.SDKBackend(lambda h: FakeClient(states)), [
        {"container": "old"}, {"container": "w", "host": "gpu-b", "restart_count": 0}])
    f = watch.start()
    assert f["container"] == "w" and "RestartCount 0 -> 1" in f["reason"]
    assert f["host"] == "gpu-b"


def test_missing_container_and_oom_killed():
    states = {"c": {"status": "exited", "exit": 137, "oom": True, "logs": "Killed"}}
    watch = r.ContainerWatch(r.SDKBackend(lambda h: FakeClient(states)), [{"container": "gone"}, {"container": "c"}])
    f = watch.start()
    assert f["container"] == "gone" and "does not exist" in f["reason"]
    watch.containers = [{"container": "c"}]
    f = watch.check()
    d, dummy = r.diagnose(watch.backend, f, 10)
    assert d["class"] == "host_oom" and "137" in d["summary"] and "OOM killed" in d["summary"]


def test_cli_backend_inspect_and_logs():
    inspect = json.dumps([{"State": {"Status": "exited", "Running": False, "ExitCode": 2}, "RestartCount": 0}])
    seen = []

    def run(argv):
        seen.append(argv)
        if argv[-2:] == ["container", "missing"]:
            return 1, "", "Error: No such container: missing"
        if "inspect" in argv:
            return 0, inspect, ""
        return 0, "", logs.SGLANG_UNKNOWN_FLAG

    b = r.CLIBackend(run, "/usr/bin/docker")
    assert b.state("missing") == {"exists": False}
    st = b.state("eng", docker_host="ssh://root@10.0.0.12")
    assert st["exit_code"] == 2 and not st["running"]
    assert seen[-1][:3] == ["/usr/bin/docker", "-H", "ssh://root@10.0.0.12"]
    assert r.classify_logs(b.logs("eng", 20))["class"] == "unknown_flag"
    assert seen[-1] == ["/usr/bin/docker", "logs", "--tail", "20", "eng"]


def test_cli_backend_daemon_down_raises():
    b = r.CLIBackend(lambda argv: (1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock"))
    with pytest.raises(r.ContainerBackendError):
        b.state("x")


def test_timeout_with_running_container_classifies_logs():
    states = {"eng": {"status": "running", "logs": logs.NCCL_WATCHDOG}}
    watch = r.ContainerWatch(r.SDKBackend(lambda h: FakeClient(states)), [{"container": "eng", "host": "gpu-b"}])
    with pytest.raises(r.NotReady) as e:
        r.wait_ready(r.Endpoint("http://127.0.0.1:9"), "m", timeout=0.3, watch=watch, poll_interval=0.05)
    res = e.value.result
    assert res["diagnosis"]["class"] == "nccl_ray" and res["diagnosis"]["reason"] == "timeout"
    assert res["log_tail"][0].startswith("[eng] ")


def test_classify_shared_memory_too_small():
    # Seen for real: vLLM 0.32 (CPU) in a container whose /dev/shm was Docker's default 64 MiB.
    log = ("(EngineCore pid=27) ERROR 11-23 11:18:43 [core.py:1510]     check_shm_free_space(self.total_bytes_of_buffer)\n"
           "(EngineCore pid=27) ERROR 11-23 11:18:43 [core.py:1510] RuntimeError: Insufficient space in /dev/shm for "
           "shared-memory allocation: 160 MiB required, 64 MiB free. Increase /dev/shm (e.g. --shm-size or --ipc=host).\n"
           "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}\n")
    diag = r.classify_logs(log)
    assert diag["class"] == "shm"
    assert "Insufficient space in /dev/shm" in diag["line"]
    assert "--ipc host" in diag["hint"]


def test_classify_head_entrypoint_ray_timeout_names_the_missing_nodes():
    # A worker cut off the network: the head's entrypoint never starts the engine and exits.
    text = ("llmfleet-entrypoint: starting Ray head\n"
            "llmfleet-entrypoint: Ray has 1/2 nodes, 8/16 GPUs\n"
            "llmfleet-entrypoint: timed out after 45s waiting for Ray: 1/2 nodes, 8/16 GPUs\n")
    d = r.classify_logs(text)
    assert d["class"] == "nccl_ray"
    assert d["line"] == "llmfleet-entrypoint: timed out after 45s waiting for Ray: 1/2 nodes, 8/16 GPUs"
    worker = r.classify_logs("llmfleet-entrypoint: Ray head 10.0.0.1:6379 did not answer\n")
    assert worker["class"] == "nccl_ray" and "10.0.0.1:6379" in worker["line"]
