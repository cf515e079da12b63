"""Issue 8, gateway role, in its own lab ("gw", 3 hosts): two single-host simulator replicas of
one model (gw-a on lab-h1, gw-b on lab-h2) deployed with playbooks/deploy.yml, and HAProxy from
Debian's packages on lab-h3 (playbooks/gateway.yml, no init system: gateway_service_manager none).

Checks: streamed chat with a client key, 401 (OpenAI-shaped) without / with a wrong key, both
replicas serve, key rotation by re-running (runtime API, same HAProxy process) while a stream is
in flight, drain / undrain of one replica through the role's task files, a dead replica, and no
key in ps, haproxy.cfg or the -vvv output. Figures (added latency, time to detect a dead replica)
are printed for docs/roles/gateway.md.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest


from .conftest import REPO, running_lab

LAB = "gw"
DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
GATEWAY = os.path.join(REPO, "playbooks", "gateway.yml")
REPLICA = os.path.join(REPO, "tests", "e2e", "playbooks", "gateway-replica.yml")
FAKE_MODEL = os.path.join(REPO, "tests", "e2e", "playbooks", "fake-model.yml")
MODEL = "Qwen/QwQ-32B"
PORT = 8080
ADMIN = "python3 /etc/haproxy/llmfleet/llmfleet-haproxy-admin /run/haproxy/admin.sock"


def _dep(name, host):
    return {"name": name, "hosts": host, "engine": "vllm", "image": "llmfleet-lab/engine-sim:latest",
            "model": "qwq-32b", "model_path": "/srv/models/QwQ-32B", "max_model_len": 32768, "port": 8000,
            "exposure": "private", "api_key_file": "{{ llmfleet_lab_key_file }}", "gpu_runtime": "none",
            "env": {"LLMFLEET_SIM_LOAD_DELAY_S": "1"}}


DEPLOYMENTS = {"llmfleet_deployments": [_dep("gw-a", "lab-h1"), _dep("gw-b", "lab-h2")], "llmfleet_hosts": "lab-h1,lab-h2"}
KEYS = {"team-a": "gw-team-a-" + os.urandom(12).hex(), "team-b": "gw-team-b-" + os.urandom(12).hex()}


def gateway_vars(keys):
    v = dict(DEPLOYMENTS, llmfleet_gateway_hosts="lab-h3", gateway_deployment="gw-a", gateway_service_manager="none",
             gateway_port=PORT, gateway_health_check_interval_ms=500)
    v["gateway_api_keys"] = [{"client": c, "key": k} for c, k in sorted(keys.items())]
    return v


def request(url, body=None, api_key=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    if api_key:
        req.add_header("Authorization", "Bearer " + api_key)
    return urllib.request.urlopen(req, timeout=timeout)


def chat(base, api_key, max_tokens=4, stream=True):
    """A chat completion; returns (content, finish_reason, number of content chunks)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello gateway"}], "max_tokens": max_tokens,
            "ignore_eos": True, "stream": stream}
    with request(base + "/v1/chat/completions", body, api_key, timeout=120) as resp:
        if not stream:
            res = json.load(resp)
            return res["choices"][0]["message"]["content"], res["choices"][0]["finish_reason"], 1
        chunks = []
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunks.append(json.loads(line[5:]))
    content = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    finish = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")][-1]
    return content, finish, sum(1 for c in chunks if c.get("choices") and c["choices"][0]["delta"].get("content"))


class Stream(threading.Thread):
    """A long streamed chat in the background (ITL 10 ms: max_tokens x 10 ms)."""

    def __init__(self, base, api_key, max_tokens):
        super().__init__(daemon=True)
        self.args = (base, api_key, max_tokens)
        self.result = self.error = None

    def run(self):
        try:
            self.result = chat(*self.args)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def successes(lab, host):
    """vllm:request_success_total of the replica on host (all finished reasons)."""
    ip = {h.name: h.private_ip for h in lab.hosts}[host]
    with urllib.request.urlopen("http://%s:8000/metrics" % ip, timeout=10) as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(r'^vllm:request_success_total\{[^}]*\} (\S+)$', text, re.M))


def server_state(lab, server):
    # status: UP, DOWN, DRAIN, MAINT, or a transition such as "UP 1/2" (going down)
    status, in_flight = lab.sh("lab-h3", "%s state gw-a %s" % (ADMIN, server)).strip().rsplit(" ", 1)
    return status, int(in_flight)


def backend_key():
    with open(os.path.join(REPO, "build", "lab", LAB, "api_key")) as f:
        return f.read().strip()


@pytest.fixture(scope="module")
def gw():
    with running_lab(LAB, 3, ssh_port_base=2820, mgmt_subnet="172.31.190.0/24",
                     private_subnet="172.31.191.0/24", engine=("sim",)) as lab:
        lab.base = "http://%s:%d" % ({h.name: h.private_ip for h in lab.hosts}["lab-h3"], PORT)
        lab.playbook(FAKE_MODEL, extra_vars={"fake_model_hosts": "lab-h1,lab-h2", "fake_model_dir": "/srv/models/QwQ-32B",
                                             "fake_model_shards": 14})
        lab.playbook(DEPLOY, extra_vars=DEPLOYMENTS)
        t0 = time.time()
        lab.playbook(GATEWAY, extra_vars=gateway_vars(KEYS))
        print("gateway play (HAProxy installed from the Debian mirror) %.1f s" % (time.time() - t0))
        yield lab


def test_streamed_chat_with_a_client_key_and_401_otherwise(gw):
    for client, key in KEYS.items():
        content, finish, n = chat(gw.base, key, max_tokens=6)
        assert content and finish == "length" and n == 6, client
    for bad in (None, "not-a-key-" + os.urandom(8).hex(), backend_key()):
        with pytest.raises(urllib.error.HTTPError) as err:
            chat(gw.base, bad)
        assert err.value.code == 401
        assert err.value.headers["Content-Type"] == "application/json"
        assert json.loads(err.value.read())["error"]["code"] == "invalid_api_key"
    with pytest.raises(urllib.error.HTTPError) as err:
        request(gw.base + "/v1/models")
    assert err.value.code == 401
    # Added latency, interleaved: GET /v1/models and the first byte of a streamed chat, direct to a
    # replica (with its key) and through the gateway (a new TCP connection each, as urllib does).
    direct = "http://%s:8000" % {h.name: h.private_ip for h in gw.hosts}["lab-h1"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    times = {"models": ([], []), "ttfb": ([], [])}
    for dummy in range(40):
        for i, (base, key) in enumerate(((direct, backend_key()), (gw.base, KEYS["team-a"]))):
            t0 = time.perf_counter()
            with request(base + "/v1/models", api_key=key) as r:
                r.read()
            times["models"][i].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            with request(base + "/v1/chat/completions", body, key) as r:
                r.readline()
                times["ttfb"][i].append((time.perf_counter() - t0) * 1000)
                r.read()
    for what, (d, g) in times.items():
        print("%s median: direct %.2f ms, through the gateway %.2f ms (added %.2f ms)" % (
            what, statistics.median(d), statistics.median(g), statistics.median(g) - statistics.median(d)))


def test_leastconn_spreads_over_both_replicas(gw):
    before = {h: successes(gw, h) for h in ("lab-h1", "lab-h2")}
    for dummy in range(10):
        assert chat(gw.base, KEYS["team-b"], max_tokens=2, stream=False)[0]
    after = {h: successes(gw, h) - before[h] for h in before}
    assert after["lab-h1"] >= 3 and after["lab-h2"] >= 3 and sum(after.values()) == 10, after


def test_key_rotation_by_rerun_keeps_streams_and_the_process(gw):
    pid = gw.sh("lab-h3", "cat /run/haproxy.pid").strip()
    # Longer than the playbook run on a loaded 2-core machine (about 30 s at 10 ms per token).
    stream = Stream(gw.base, KEYS["team-a"], max_tokens=3000)
    stream.start()
    time.sleep(0.5)
    rotated = dict(KEYS, **{"team-a": "gw-team-a-" + os.urandom(12).hex()})
    rc, out, recap = gw.playbook(GATEWAY, "-vvv", extra_vars=gateway_vars(rotated))
    # Two changes: the client key map file and its load through the runtime API; no reload.
    assert recap["lab-h3"]["changed"] == 2, recap
    assert "Load changed key maps into the running HAProxy" in out
    assert "RUNNING HANDLER" not in out
    assert stream.is_alive(), "the stream ended before the rotation finished: make it longer"
    stream.join(60)
    assert stream.error is None, stream.error
    assert stream.result[1] == "length" and stream.result[2] == 3000
    assert gw.sh("lab-h3", "cat /run/haproxy.pid").strip() == pid, "HAProxy was restarted"
    with pytest.raises(urllib.error.HTTPError) as err:
        chat(gw.base, KEYS["team-a"])
    assert err.value.code == 401
    assert chat(gw.base, rotated["team-a"])[0] and chat(gw.base, rotated["team-b"])[0]
    # No key (clients' nor the replicas') in -vvv output, argv, haproxy.cfg; only hashes on disk.
    secrets = list(KEYS.values()) + [rotated["team-a"], backend_key()]
    ps = gw.sh("lab-h3", "ps -eo args")
    cfg = gw.sh("lab-h3", "cat /etc/haproxy/haproxy.cfg")
    for s in secrets:
        assert s not in out and s not in ps and s not in cfg
    for s in list(KEYS.values()) + [rotated["team-a"]]:
        assert gw.sh("lab-h3", "grep -rlF %s /etc /run /var/lib/haproxy /tmp /root || true" % s).strip() == ""
    assert gw.sh("lab-h3", "stat -c '%a %U' /etc/haproxy/llmfleet/client_keys.map /etc/haproxy/llmfleet/backend_key.map"
                 ).split() == ["600", "root", "600", "root"]
    KEYS.update(rotated)
    # Re-running with the same keys changes nothing.
    rc, out, recap = gw.playbook(GATEWAY, extra_vars=gateway_vars(KEYS))
    assert recap["lab-h3"]["changed"] == 0, recap


def test_drain_waits_for_in_flight_then_undrain(gw):
    # Two concurrent long streams: leastconn puts one on each replica.
    streams = [Stream(gw.base, KEYS["team-a"], max_tokens=1500) for dummy in range(2)]  # about 15 s
    for s in streams:
        s.start()
    time.sleep(0.5)
    assert server_state(gw, "gw-a")[1] == 1 and server_state(gw, "gw-b")[1] == 1
    t0 = time.time()
    rc, out, recap = gw.playbook(REPLICA, extra_vars={"gateway_host": "lab-h3", "gateway_action": "drain",
                                                      "gateway_replica": "gw-a", "gateway_name": "gw-a"})
    took = time.time() - t0
    waited = float(re.search(r"idle after ([0-9.]+) s", out).group(1))
    print("drain: playbook %.1f s, waited %.1f s for the in-flight stream on gw-a" % (took, waited))
    assert waited > 0.5
    for s in streams:
        s.join(60)
        assert s.error is None and s.result[2] == 1500
    assert server_state(gw, "gw-a") == ("DRAIN", 0)
    before = {h: successes(gw, h) for h in ("lab-h1", "lab-h2")}
    for dummy in range(6):
        assert chat(gw.base, KEYS["team-b"], max_tokens=2, stream=False)[0]
    assert {h: successes(gw, h) - before[h] for h in before} == {"lab-h1": 0, "lab-h2": 6}

    gw.playbook(REPLICA, extra_vars={"gateway_host": "lab-h3", "gateway_action": "undrain",
                                     "gateway_replica": "gw-a", "gateway_name": "gw-a"})
    assert server_state(gw, "gw-a")[0] == "UP"
    before = {h: successes(gw, h) for h in ("lab-h1", "lab-h2")}
    for dummy in range(6):
        assert chat(gw.base, KEYS["team-b"], max_tokens=2, stream=False)[0]
    after = {h: successes(gw, h) - before[h] for h in before}
    assert after["lab-h1"] >= 2 and after["lab-h2"] >= 2, after


def test_dead_replica_is_taken_out_and_requests_keep_succeeding(gw):
    gw.sh("lab-h1", "docker stop -t 5 llmfleet-gw-a")
    stopped = time.time()
    errors, sent = 0, 0
    detected = None
    while time.time() - stopped < 20 and (detected is None or sent < 50):
        try:
            chat(gw.base, KEYS["team-b"], max_tokens=2, stream=False)
        except (urllib.error.URLError, OSError):
            errors += 1
        sent += 1
        if detected is None and server_state(gw, "gw-a")[0] == "DOWN":
            detected = time.time() - stopped
    print("dead replica: marked DOWN %.1f s after its engine stopped; %d errors over %d requests sent meanwhile and after"
          % (detected or -1, errors, sent))
    assert detected is not None and detected < 5
    assert errors == 0
    after_down = [0, 0]
    for dummy in range(50):
        try:
            chat(gw.base, KEYS["team-b"], max_tokens=2, stream=False)
            after_down[0] += 1
        except (urllib.error.URLError, OSError):
            after_down[1] += 1
    assert after_down == [50, 0]
