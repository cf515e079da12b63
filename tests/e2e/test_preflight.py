"""Preflight in its own lab ("pre"): an H200 host and an H100 host (same GPU count) fail the dual
deployment's preflight with a table naming both hosts and the GPU model / memory mismatch, before
any container exists; a port held by another process fails naming host and port; a single-host
deployment on a free port passes. The passing dual case (matching hosts) is covered by the unit
tests (tests/unit/plugins/plugin_utils/test_preflight.py) to keep this file under ~90 s.
"""
from __future__ import annotations

import os
import time

import pytest

from .conftest import REPO, running_lab

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
PREFLIGHT = os.path.join(REPO, "playbooks", "preflight.yml")


def deployment(name, hosts, port=8000):
    return {"name": name, "hosts": hosts, "engine": "vllm", "image": "llmfleet-lab/engine-sim:latest",
            "model": "deepseek-r1-distill-qwen-7b", "model_path": "/srv/models/pre-%s" % name,
            "max_model_len": 4096, "port": port, "exposure": "localhost", "gpu_runtime": "none"}


@pytest.fixture(scope="module")
def pre_lab():
    with running_lab("pre", 2, ssh_port_base=2720, mgmt_subnet="172.31.200.0/24",
                     private_subnet="172.31.201.0/24", fixtures=["h200x8", "h100x8"], engine=()) as the_lab:
        yield the_lab


def containers(pre, host):
    return pre.sh(host, "docker ps -aq").split()


def test_mixed_gpus_fail_before_any_container(pre_lab):
    t0 = time.time()
    rc, out, recap = pre_lab.playbook(DEPLOY, check=False,
                                      extra_vars={"llmfleet_deployments": [deployment("mix", ["lab-h1", "lab-h2"])]})
    assert rc != 0, out[-3000:]
    assert "preflight failed for mix" in out
    table = [ln for ln in out.splitlines() if "| lab-h" in ln or "| host" in ln]
    header = [ln for ln in table if "| host" in ln][0]
    assert "GPU model !" in header and "GPU MiB !" in header, header
    assert "GPUs !" not in header and "driver !" not in header
    h1 = [ln for ln in table if "| lab-h1" in ln][0]
    h2 = [ln for ln in table if "| lab-h2" in ln][0]
    assert "NVIDIA H200" in h1 and "NVIDIA H100 80GB HBM3 !" in h2, table
    assert "eth1 172.31.201.12/24" in h2  # the private interface per host
    assert "not pulled" in h1
    assert "llmfleet_deployments[mix].hosts" in out
    # the plan ran first (preflight checks the plan), but nothing of the deployment touched a host:
    # no weights step, no engine
    assert "Run the engines" not in out and "weights" not in "".join(
        ln for ln in out.splitlines() if ln.startswith("PLAY [")).lower()
    assert containers(pre_lab, "lab-h1") == [] and containers(pre_lab, "lab-h2") == []
    print("mixed GPUs refused in %.1f s" % (time.time() - t0))


def test_port_in_use_names_host_and_port_then_free_port_passes(pre_lab):
    pre_lab.sh("lab-h2", "cd /tmp && (nohup python3 -m http.server 8000 >/dev/null 2>&1 &) ; "
                         "for i in $(seq 50); do ss -ltnH | grep -q ':8000 ' && exit 0; sleep 0.1; done; exit 1")
    try:
        busy = {"llmfleet_deployments": [deployment("busy", "lab-h2")], "llmfleet_hosts": "lab-h2"}
        rc, out, dummy = pre_lab.playbook(PREFLIGHT, check=False, extra_vars=busy)
        assert rc != 0, out[-3000:]
        assert "port 8000 (port) is in use on host lab-h2" in out
        assert "llmfleet_deployments[busy].port" in out
        assert "in use: 8000 !" in out
    finally:
        pre_lab.sh("lab-h2", "pkill -f 'http.server 8000' || true", check=False)
    # another port on the same host, checked in check mode: passes, and reports the values
    free = {"llmfleet_deployments": [deployment("free", "lab-h2", port=8001)], "llmfleet_hosts": "lab-h2"}
    rc, out, dummy = pre_lab.playbook(PREFLIGHT, "--check", extra_vars=free)
    assert "preflight passed for free" in out
    assert "8001 free" in out
