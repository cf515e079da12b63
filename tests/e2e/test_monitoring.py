"""Issue 8, monitoring role: a real Prometheus (Debian's package) scrapes a lab engine.

On the session's shared lab ("e2e", 3 hosts, tests/e2e/conftest.py; a lab of its own cost 30 to
50 s of loading the engine image into each host): one simulator deployment on the lab_single
host (lab-h3) through playbooks/deploy.yml, removed again at the end with playbooks/teardown.yml,
and Prometheus on lab-h2 through playbooks/monitoring.yml (no init system: start-stop-daemon and
a pid file).
The test sends requests, then reads Prometheus' HTTP API at lab-h2's address: the engine target
is up with the plan's labels and vllm:generation_tokens_total counts the tokens; every dashboard
expression evaluates there; promtool accepts the rules (and the dashboard expressions as
recording rules); a second run changes nothing; a stopped engine raises LLMEngineDown.

The first test needs no lab: the dashboard JSON and the shipped rules file, statically.
"""
from __future__ import annotations

import datetime
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.lab import lab as labmod

from .conftest import REPO

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
MONITORING = os.path.join(REPO, "playbooks", "monitoring.yml")
TEARDOWN = os.path.join(REPO, "playbooks", "teardown.yml")
ENGINE_HOST = "lab-h3"  # the group lab_single of the 3-host lab
FAKE_MODEL = os.path.join(REPO, "tests", "e2e", "playbooks", "fake-model.yml")
ROLE = os.path.join(REPO, "roles", "monitoring")
DASHBOARD = os.path.join(ROLE, "files", "dashboards", "llmfleet-vllm-sglang.json")
RULES = os.path.join(ROLE, "files", "rules", "llmfleet.rules.yml")
ALERTS = {"LLMEngineDown", "LLMKVCacheHigh", "LLMQueueGrowing", "LLMTTFTHighP99"}
DOWN_FOR = "6s"

SIM = {
    "name": "mon-sim", "hosts": "lab_single", "engine": "vllm", "image": "llmfleet-lab/engine-sim:latest",
    "model": "qwq-32b", "model_path": "/srv/models/QwQ-32B", "max_model_len": 32768, "port": 8000,
    "exposure": "private", "api_key_file": "{{ llmfleet_lab_key_file }}", "gpu_runtime": "none",
    "env": {"LLMFLEET_SIM_LOAD_DELAY_S": "1"},
}
MON_VARS = {
    "llmfleet_deployments": [SIM], "monitoring_prometheus_host": "lab-h2", "monitoring_service_manager": "none",
    "monitoring_scrape_interval": "2s", "monitoring_scrape_timeout": "2s", "monitoring_evaluation_interval": "2s",
    "monitoring_alert_engine_down_for": DOWN_FOR,
    # No Grafana in the lab: the provisioning files are written where a Grafana would read them.
    "monitoring_grafana_provisioning_dir": "/etc/grafana/provisioning",
}


def _dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        for t in p["targets"]:
            out.append((p["title"], t["expr"]))
    return dash, out


def _concrete(expr, deployment=".*"):
    """A dashboard expression as Grafana sends it (template variables substituted)."""
    return expr.replace("$__rate_interval", "1m").replace("$deployment", deployment).replace("$model", ".*")


def test_dashboard_and_rules_files_are_well_formed():
    dash, exprs = _dashboard_exprs()
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "deployment", "model"]
    assert len(exprs) >= 15
    for title, expr in exprs:
        assert 'deployment=~"$deployment"' in expr and 'model=~"$model"' in expr, title
    text = " ".join(e for dummy, e in exprs)
    for metric in ("vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:num_requests_running",
                   "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket",
                   "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
                   "sglang:generation_tokens_total", "sglang:num_running_reqs", "sglang:num_queue_reqs",
                   "sglang:token_usage", "sglang:time_to_first_token_seconds_bucket"):
        assert metric in text, metric
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    with open(RULES) as f:
        rules = yaml.safe_load(f)["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        assert set(r["annotations"]) == {"summary", "description"} and r["for"], r["alert"]
    by = {r["alert"]: r for r in rules}
    assert by["LLMEngineDown"]["for"] == "1m" and "== 0" in by["LLMEngineDown"]["expr"]
    assert by["LLMKVCacheHigh"]["for"] == "5m" and "> 0.9" in by["LLMKVCacheHigh"]["expr"]
    assert by["LLMQueueGrowing"]["for"] == "10m" and "deriv(" in by["LLMQueueGrowing"]["expr"]
    assert "histogram_quantile(0.99" in by["LLMTTFTHighP99"]["expr"]
    # argument_specs and defaults list the same variables with the same defaults.
    with open(os.path.join(ROLE, "defaults", "main.yml")) as f:
        defaults = yaml.safe_load(f)
    with open(os.path.join(ROLE, "meta", "argument_specs.yml")) as f:
        spec = yaml.safe_load(f)["argument_specs"]["main"]["options"]
    assert {k: v["default"] for k, v in spec.items()} == defaults


# -- the lab ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mon_lab(lab_hosts):
    try:
        yield lab_hosts
    finally:
        lab_hosts.playbook(TEARDOWN, extra_vars={"llmfleet_deployments": [SIM]})


def _prom(lab):
    # Prometheus binds the host's private address (never 0.0.0.0): docs/reliability.md
    return "http://%s:9090" % labmod.host_of(lab.state, "lab-h2").private_ip


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _query(lab, expr):
    return _get(_prom(lab) + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _wait(what, fn, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except OSError as e:
            last = e
        time.sleep(1)
    pytest.fail("%s: not within %d s (last: %r)" % (what, timeout, last))


def _complete(url, model, key, n):
    tokens = 0
    for i in range(n):
        body = {"model": model, "prompt": "monitoring request %d" % i, "max_tokens": 8}
        req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
        with urllib.request.urlopen(req, timeout=30) as r:
            tokens += json.loads(r.read())["usage"]["completion_tokens"]
    return tokens


def test_prometheus_scrapes_the_engine_and_alerts_when_it_stops(mon_lab):
    lab = mon_lab
    h1 = labmod.host_of(lab.state, ENGINE_HOST)
    lab.playbook(FAKE_MODEL, extra_vars={"fake_model_hosts": "lab_single", "fake_model_dir": "/srv/models/QwQ-32B",
                                         "fake_model_shards": 14})
    t0 = time.time()
    lab.playbook(DEPLOY, extra_vars={"llmfleet_deployments": [SIM]})
    print("deploy %.1f s" % (time.time() - t0))

    t0 = time.time()
    rc, out, recap = lab.playbook(MONITORING, extra_vars=MON_VARS)
    first = time.time() - t0
    assert recap["lab-h2"]["changed"] > 0 and [h for h, r in recap.items() if r.get("changed")] == ["lab-h2"], recap
    print("monitoring first run (apt install prometheus + start) %.1f s" % first)

    with open(os.path.join(REPO, "build", "lab", lab.state.name, "api_key")) as f:
        key = f.read().strip()
    sent = _complete("http://%s:8000" % h1.private_ip, "Qwen/QwQ-32B", key, 5)
    assert sent == 40

    # The engine target is up, with the plan's labels, and its token counter reached Prometheus
    # (vLLM serves /metrics without the API key).
    sel = '{job="llmfleet-engines", deployment="mon-sim"}'
    up = _wait("engine target up", lambda: [r for r in _query(lab, "up" + sel)["data"]["result"]
                                            if r["value"][1] == "1"], 60)
    labels = up[0]["metric"]
    assert labels["instance"] == "%s:8000" % h1.private_ip
    assert {k: labels[k] for k in ("engine", "model", "host", "role")} == {
        "engine": "vllm", "model": "Qwen/QwQ-32B", "host": h1.name, "role": "single"}
    gen = _wait("generation tokens counted", lambda: [r for r in _query(lab, "vllm:generation_tokens_total" + sel)
                                                      ["data"]["result"] if float(r["value"][1]) >= sent], 30)
    print("vllm:generation_tokens_total = %s" % gen[0]["value"][1])
    targets = _get(_prom(lab) + "/api/v1/targets")["data"]["activeTargets"]
    assert {t["labels"]["job"] for t in targets} == {"prometheus", "llmfleet-engines"}  # no exporters in the lab

    # Every dashboard expression evaluates on the real Prometheus; the throughput panel has data.
    dash, exprs = _dashboard_exprs()
    for title, expr in exprs:
        res = _query(lab, _concrete(expr))
        assert res["status"] == "success", (title, res)
    thr = [e for t, e in exprs if t.startswith("Generation throughput")][0]
    _wait("throughput panel has data", lambda: _query(lab, _concrete(thr, "mon-sim"))["data"]["result"], 30)

    # promtool (from the package, on lab-h2) accepts the installed rules, the shipped file and the
    # dashboard expressions wrapped as recording rules.
    rec = {"groups": [{"name": "dashboard", "rules": [
        {"record": "llmfleet:dashboard:expr_%d" % i, "expr": _concrete(e)} for i, (dummy, e) in enumerate(exprs)]}]}
    with open(RULES) as f:
        shipped = f.read()
    lab.sh("lab-h2", "mkdir -p /tmp/mon-check && cat > /tmp/mon-check/shipped.yml <<'EOF'\n%sEOF\n"
                     "cat > /tmp/mon-check/dashboard.yml <<'EOF'\n%s\nEOF" % (shipped, json.dumps(rec)))
    out = lab.sh("lab-h2", "promtool check rules /etc/prometheus/rules/llmfleet.rules.yml "
                           "/tmp/mon-check/shipped.yml /tmp/mon-check/dashboard.yml")
    assert out.count("SUCCESS") == 3, out
    assert "SUCCESS: %d rules found" % len(exprs) in out, out
    # The installed rules are the shipped file with the test's `for:` override.
    installed = yaml.safe_load(lab.sh("lab-h2", "cat /etc/prometheus/rules/llmfleet.rules.yml"))
    ref = yaml.safe_load(shipped)
    for a, b in zip(installed["groups"][0]["rules"], ref["groups"][0]["rules"]):
        assert (a["alert"], a["expr"], a["labels"]) == (b["alert"], b["expr"], b["labels"])
        assert a["for"] == (DOWN_FOR if a["alert"] == "LLMEngineDown" else b["for"])
    provider = yaml.safe_load(lab.sh("lab-h2", "cat /etc/grafana/provisioning/dashboards/llmfleet.yml"))
    path = provider["providers"][0]["options"]["path"]
    assert json.loads(lab.sh("lab-h2", "cat %s/llmfleet-vllm-sglang.json" % path)) == dash
    rules = _get(_prom(lab) + "/api/v1/rules")["data"]["groups"][0]["rules"]
    assert {r["name"] for r in rules} == ALERTS and all(r["health"] == "ok" for r in rules), rules

    # Second run: nothing changes (the plan is made again, Prometheus is not reloaded).
    t0 = time.time()
    rc, out, recap = lab.playbook(MONITORING, extra_vars=MON_VARS)
    print("monitoring second run %.1f s" % (time.time() - t0))
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), recap
    pid = lab.sh("lab-h2", "cat /run/prometheus/prometheus.pid").strip()
    assert lab.sh("lab-h2", "ps -o user= -p %s" % pid).strip() == "prometheus"
    # Private and without the lifecycle API: 9090 on the private address only, POST /-/quit refused.
    h2 = labmod.host_of(lab.state, "lab-h2")
    bound = sorted(line.split()[3] for line in lab.sh("lab-h2", "ss -ltnH 'sport = :9090'").splitlines())
    assert bound == ["%s:9090" % h2.private_ip], bound
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(_prom(lab) + "/-/quit", method="POST", data=b""), timeout=5)
    assert err.value.code in (403, 404), err.value.code
    assert lab.sh("lab-h2", "cat /run/prometheus/prometheus.pid").strip() == pid

    # The engine stops: LLMEngineDown goes pending, then firing after `for`.
    stopped = time.time()
    lab.sh(h1.name, "docker stop -t 5 llmfleet-mon-sim")

    def alert_state():
        alerts = _get(_prom(lab) + "/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "LLMEngineDown"
                and a["labels"].get("deployment") == "mon-sim"]

    first = _wait("LLMEngineDown pending", alert_state, 30)
    t_pending = time.time() - stopped
    firing = _wait("LLMEngineDown firing", lambda: [a for a in alert_state() if a["state"] == "firing"], 40)
    t_firing = time.time() - stopped
    print("docker stop issued -> LLMEngineDown %s after %.1f s, firing after %.1f s (for: %s, scrape/eval 2 s)"
          % (first[0]["state"], t_pending, t_firing, DOWN_FOR))
    assert firing[0]["labels"]["host"] == h1.name and "mon-sim" in firing[0]["annotations"]["summary"]
    # Active (pending) only after the stop, firing not before `for` has passed.
    active_at = _rfc3339(firing[0]["activeAt"])
    assert active_at >= stopped - 1
    assert t_firing >= 6


def _rfc3339(text):
    """Prometheus' activeAt (RFC 3339 with nanoseconds, UTC) as a Unix time."""
    base, frac = text.rstrip("Z").split(".") if "." in text else (text.rstrip("Z"), "0")
    t = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + float("0." + frac)
