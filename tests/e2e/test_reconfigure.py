"""Issue 8, playbooks/reconfigure.yml, in its own lab ("roll", 3 hosts): three single-host
simulator replicas of one model (roll-a/b/c on lab-h1/2/3) behind HAProxy on lab-h3
(playbooks/gateway.yml), deployed with playbooks/deploy.yml.

1. --check --diff with a new max_model_len: the drift report (diff of the running plan against
   the new one, JSON report), nothing changed on the hosts; a scheduled check fails on drift.
2. The rolling change under constant load through the gateway (llm_benchmark via
   playbooks/benchmark.yml, stopped by its stop file when the roll is over): zero failed
   requests, every replica on the new plan, the canary gate measured and passed; the report
   shows latency over time.
3. A replica that fails readiness (the simulator's CUDA OOM) stops the roll: the replicas after
   it keep the old plan and the load through the gateway still fails nothing.
4. A canary that regresses against the recorded baseline (4x inter-token latency) is rolled back
   to its previous plan and the roll stops before any other replica (nightly suite).
Figures are printed for docs/reconfigure.md.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import pytest


from .conftest import REPO, running_lab

LAB = "roll"
PLAYBOOKS = os.path.join(REPO, "playbooks")
FAKE_MODEL = os.path.join(REPO, "tests", "e2e", "playbooks", "fake-model.yml")
MODEL = "Qwen/QwQ-32B"
NAMES = ("roll-a", "roll-b", "roll-c")
HOSTS = dict(zip(NAMES, ("lab-h1", "lab-h2", "lab-h3")))
CLIENT_KEY = "roll-client-" + os.urandom(12).hex()
CANARY = {"llmfleet_reconfigure_canary_benchmark": {"num_prompts": 40, "request_rate": "10",
                                                    "dataset_options": {"input_len": 64, "output_len": 16}},
          # the simulator's TPOT is its ITL (10 ms); the lab machine is small and shared
          "llmfleet_reconfigure_tolerance": {"median_tpot_ms": 50, "completed": 0}}


def dep(name, max_model_len, env=None):
    e = {"LLMFLEET_SIM_LOAD_DELAY_S": "1"}
    e.update(env or {})
    return {"name": name, "hosts": HOSTS[name], "engine": "vllm", "image": "llmfleet-lab/engine-sim:latest",
            "model": "qwq-32b", "model_path": "/srv/models/QwQ-32B", "max_model_len": max_model_len, "port": 8000,
            "exposure": "private", "api_key_file": "{{ llmfleet_lab_key_file }}", "gpu_runtime": "none", "env": e}


def fleet(max_model_len, env=None):
    """Extra vars of the fleet: every replica with max_model_len; env: {name: extra env}."""
    env = env or {}
    return {"llmfleet_deployments": [dep(n, max_model_len, env.get(n)) for n in NAMES],
            "llmfleet_hosts": "lab-h1,lab-h2,lab-h3", "llmfleet_gateway_hosts": "lab-h3",
            "gateway_deployment": "roll-a", "gateway_service_manager": "none", "gateway_port": 8080,
            "gateway_health_check_interval_ms": 500, "gateway_api_keys": [{"client": "load", "key": CLIENT_KEY}]}


def config_hashes(lab):
    out = {}
    for name, host in HOSTS.items():
        out[name] = lab.sh(host, "docker inspect -f '{{index .Config.Labels \"llmfleet.config-hash\"}}' llmfleet-%s" % name).strip()
    return out


ADMIN = "python3 /etc/haproxy/llmfleet/llmfleet-haproxy-admin /run/haproxy/admin.sock"


def gateway_states(lab):
    """What the gateway reports of each replica: UP, DOWN, DRAIN, MAINT or a transition ("DOWN 1/2")."""
    return {n: lab.sh("lab-h3", "%s state roll-a %s" % (ADMIN, n)).strip().rsplit(" ", 1)[0] for n in NAMES}


def drained_by_operator(lab, name):
    """The replica's administrative state has HAProxy's forced-drain bit (SRV_ADMF_FDRAIN, 0x08): it
    gets no new request whatever its health check says."""
    out = lab.sh("lab-h3", "%s cmd 'show servers state roll-a'" % ADMIN)
    rows = [line.split() for line in out.splitlines() if line and not line.startswith("#")]
    head = next(line.lstrip("# ").split() for line in out.splitlines() if line.startswith("# be_id"))
    row = next(dict(zip(head, r)) for r in rows if len(r) >= len(head) and dict(zip(head, r))["srv_name"] == name)
    return bool(int(row["srv_admin_state"]) & 0x08)


class StateLog(threading.Thread):
    """The gateway's view of the replicas during a roll: each state change with its time."""

    def __init__(self, lab, t0):
        super().__init__(daemon=True)
        self.lab, self.t0, self.changes, self.done = lab, t0, [], threading.Event()

    def run(self):
        last = None
        while not self.done.is_set():
            try:
                now = gateway_states(self.lab)
            except AssertionError:
                now = last
            if now != last:
                self.changes.append((time.time() - self.t0, now))
                last = now
            time.sleep(0.5)

    def stop(self):
        self.done.set()
        self.join(10)
        return ["%6.1f s %s" % (t, " ".join("%s=%s" % kv for kv in sorted(s.items()))) for t, s in self.changes]


class Load(object):
    """Constant load through the gateway: playbooks/benchmark.yml (llm_benchmark) in the background,
    until its stop file appears."""

    def __init__(self, lab, rate=4):
        self.dir = tempfile.mkdtemp(prefix="llmfleet-roll-load-")
        self.stop_file = os.path.join(self.dir, "stop")
        gw = "http://%s:8080" % {h.name: h.private_ip for h in lab.hosts}["lab-h3"]
        extra = {"llmfleet_benchmark_base_url": gw, "llmfleet_benchmark_model": MODEL,
                 "llmfleet_benchmark_api_key": CLIENT_KEY, "llmfleet_benchmark_request_rate": str(rate),
                 "llmfleet_benchmark_duration_s": 900, "llmfleet_benchmark_num_prompts": 50,
                 "llmfleet_benchmark_stop_file": self.stop_file, "llmfleet_benchmark_endpoint": "chat",
                 "llmfleet_benchmark_dataset_options": {"input_len": 32, "output_len": 24},
                 "llmfleet_benchmark_results_dir": self.dir, "llmfleet_benchmark_remote_dir": self.dir + "/remote"}
        cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", lab.inventory,
               os.path.join(PLAYBOOKS, "benchmark.yml"), "-e", json.dumps(extra)]
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        self.log = open(os.path.join(self.dir, "ansible.log"), "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.t0 = time.time()

    def started(self, timeout=90):
        """Wait until the benchmark's first requests went out (the probe passed)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("the load ended early:\n" + open(self.log.name).read()[-4000:])
            with open(self.log.name) as f:
                if "TASK [Benchmark each endpoint]" in f.read():
                    self.t_bench = time.time()  # the first request goes out within about a second
                    time.sleep(8)  # the probe, the warm-up, then some seconds of load before the roll
                    return
            time.sleep(1)
        raise AssertionError("the load did not start")

    def stop(self):
        open(self.stop_file, "w").close()
        self.proc.wait(120)
        self.log.close()
        out = open(self.log.name).read()
        assert self.proc.returncode == 0, out[-4000:]
        files = glob.glob(os.path.join(self.dir, "custom", "*", "*.json"))
        assert len(files) == 1, (files, out[-3000:])
        with open(files[0]) as f:
            result = json.load(f)
        result["report"] = files[0][:-5] + ".md"
        return result


@pytest.fixture(scope="module")
def roll():
    with running_lab(LAB, 3, ssh_port_base=3420, mgmt_subnet="172.31.120.0/24",
                     private_subnet="172.31.121.0/24", engine=("sim",)) as lab:
        lab.playbook(FAKE_MODEL, extra_vars={"fake_model_hosts": "lab-h1,lab-h2,lab-h3",
                                             "fake_model_dir": "/srv/models/QwQ-32B", "fake_model_shards": 14})
        t0 = time.time()
        lab.playbook(os.path.join(PLAYBOOKS, "deploy.yml"), extra_vars=fleet(32768))
        t1 = time.time()
        lab.playbook(os.path.join(PLAYBOOKS, "gateway.yml"), extra_vars=fleet(32768))
        print("deploy of 3 replicas %.0f s; gateway %.0f s" % (t1 - t0, time.time() - t1))
        lab.baselines = tempfile.mkdtemp(prefix="llmfleet-roll-baselines-")
        yield lab


def reconfigure(lab, extra, *args, check=True):
    """Run reconfigure.yml; returns (rc, output, recap, seconds, report): the report holds the drift,
    the rollout order and the new plan's config hash of every replica."""
    report = os.path.join(lab.baselines, "report.json")
    if os.path.exists(report):
        os.unlink(report)
    extra = dict({"llmfleet_reconfigure_report": report}, **extra)
    t0 = time.time()
    rc, out, recap = lab.playbook(os.path.join(PLAYBOOKS, "reconfigure.yml"), *args, check=check,
                                  extra_vars=dict(extra, llmfleet_reconfigure_baseline_dir=lab.baselines, **CANARY))
    took = time.time() - t0
    rep = {}
    if os.path.exists(report):
        with open(report) as f:
            rep = json.load(f)
    return rc, out, recap, took, rep


def test_check_diff_reports_drift_and_changes_nothing(roll):
    before = config_hashes(roll)
    rc, out, recap, took, rep = reconfigure(roll, dict(fleet(16384), llmfleet_reconfigure_fail_on_drift=True),
                                            "--check", "--diff", check=False)
    assert rc != 0 and "drift in roll-a, roll-b, roll-c (llmfleet_reconfigure_fail_on_drift is set)" in out, out[-3000:]
    # the diff of the running plan against the new one shows the changed engine argument
    assert "-    - '32768'\n+    - '16384'" in out and "-max_model_len: 32768\n+max_model_len: 16384" in out
    assert rep["check_mode"] is True and sorted(rep["drift"]) == list(NAMES)
    assert rep["drift"]["roll-b"] == {"lab-h2/llmfleet-roll-b": "config hash %s -> %s" % (
        before["roll-b"], rep["config_hashes"]["roll-b"])}
    assert [b["deployments"] for b in rep["rollout"]] == [["roll-a"], ["roll-b"], ["roll-c"]]
    assert rep["rollout"][0]["canary"] and rep["rollout"][1]["gateways"] == [
        {"host": "lab-h3", "replica": "roll-b", "backend": "roll-a"}]
    assert config_hashes(roll) == before
    assert all(recap[h]["changed"] == 0 for h in HOSTS.values()), recap
    assert gateway_states(roll) == {n: "UP" for n in NAMES}
    print("check run with drift: %.0f s" % took)


def test_rolling_change_under_load_drops_no_request(roll):
    load = Load(roll)
    load.started()
    t_roll = time.time()
    states = StateLog(roll, load.t_bench)
    states.start()
    rc, out, recap, took, rep = reconfigure(roll, fleet(16384))
    t_end = time.time()
    time.sleep(3)
    changes = states.stop()
    result = load.stop()
    assert rc == 0, out[-5000:]
    # The proof: the benchmark through the gateway failed no request, before, during or after.
    assert result["failed"] == 0, result["llmfleet"]["error_summary"]
    assert result["completed"] >= 40
    assert config_hashes(roll) == rep["config_hashes"]
    assert gateway_states(roll) == {n: "UP" for n in NAMES}
    # the canary was measured against the recorded baseline and passed
    assert "Measure and record the missing baselines" in out and "metric: median_tpot_ms" in out
    baselines = glob.glob(os.path.join(roll.baselines, "Qwen_QwQ-32B", "NVIDIA-H200x8x1-*.json"))
    assert len(baselines) == 1, baselines
    assert "failed its benchmark gate" not in out
    # the order: roll-a (canary), roll-b, roll-c, one at a time
    order = [out.index("replica %s on %s" % (n, HOSTS[n])) for n in NAMES]
    assert order == sorted(order), order
    with open(result["report"]) as f:
        report = f.read()
    assert "### Latency over time" in report
    tl = result["llmfleet"]["timeline"]
    during = [r for r in tl if load.t_bench + r["start_s"] >= t_roll]
    print("roll of 3 replicas under load: %.0f s (playbook), load %.0f s, %d requests, %d failed; "
          "p99 TTFT %.1f ms, p99 E2EL %.1f ms over the run; report %s" % (
              took, result["duration"], result["completed"], result["failed"], result["p99_ttft_ms"],
              result["p99_e2el_ms"], result["report"]))
    print("windows of the run (s from start, requests, failed, median/p99 TTFT, p99 E2EL):")
    for r in tl:
        print("  %4g %3d %d %7.1f %7.1f %7.1f" % (
            r["start_s"], r["requests"], r["failed"], r["median_ttft_ms"] or 0, r["p99_ttft_ms"] or 0, r["p99_e2el_ms"] or 0))
    print("roll from %.1f s to %.1f s of the load (about 1 s after its first request); the gateway's states:"
          % (t_roll - load.t_bench, t_end - load.t_bench))
    print("\n".join("  " + c for c in changes))
    assert during, "no request during the roll"
    assert any("roll-b=DRAIN" in c for c in changes), changes
    assert t_end > t_roll
    # A re-run finds nothing to do.
    rc, out, recap, took, rep = reconfigure(roll, fleet(16384), "--check", "--diff")
    assert "no drift: every deployment matches the plan" in out
    assert recap["localhost"]["changed"] == 0 and all(recap[h]["changed"] == 0 for h in HOSTS.values()), recap


def test_replica_failing_readiness_stops_the_roll(roll):
    before = config_hashes(roll)
    load = Load(roll)
    load.started()
    broken_b = dict(fleet(8192, {"roll-b": {"LLMFLEET_SIM_FAIL": "oom"}}), llmfleet_reconfigure_canary=False,
                    llmfleet_ready_timeout=120)
    rc, out, recap, took, rep = reconfigure(roll, broken_b, check=False)
    result = load.stop()
    assert rc != 0
    assert "CUDA out of memory" in out and "llmfleet-roll-b" in out, out[-4000:]
    new = rep["config_hashes"]
    after = config_hashes(roll)
    assert after["roll-a"] == new["roll-a"]                  # rolled first, fine
    assert after["roll-b"] == new["roll-b"]                  # the failed one (crash-looping, drained)
    assert after["roll-c"] == before["roll-c"]               # never reached: old plan, serving
    assert "replica roll-c on lab-h3" not in out
    states = gateway_states(roll)
    assert states["roll-a"] == "UP" and states["roll-c"] == "UP", states
    assert drained_by_operator(roll, "roll-b") and not drained_by_operator(roll, "roll-c"), states
    assert result["failed"] == 0, result["llmfleet"]["error_summary"]
    print("roll stopped at the failed replica after %.0f s; load: %d requests, %d failed" % (
        took, result["completed"], result["failed"]))


@pytest.mark.nightly
def test_canary_regression_rolls_back_and_stops(roll):
    # Runs alone too (bash tests/run.sh nightly): without a recorded baseline the canary is
    # measured on its current plan first.
    before = config_hashes(roll)
    slow = {n: {"LLMFLEET_SIM_ITL_BASE_MS": "40"} for n in NAMES}
    rc, out, recap, took, rep = reconfigure(roll, fleet(4096, slow), check=False)
    assert rc != 0
    assert "canary roll-a failed its benchmark gate" in out and "rolled back to its previous plan" in out, out[-4000:]
    assert "regression against the baseline" in out and "median_tpot_ms" in out
    after = config_hashes(roll)
    assert after["roll-a"] == before["roll-a"]               # back on its previous plan
    assert after["roll-c"] == before["roll-c"]               # the roll stopped at the canary
    assert "replica roll-b on" not in out and "replica roll-c on" not in out
    assert gateway_states(roll)["roll-a"] == "UP"
    print("canary regression detected and rolled back in %.0f s (whole playbook)" % took)
