"""Issue 2's end-to-end proof: two lab hosts reached over SSH, the engine image started on each
host's own Docker engine, a streamed completion through the host's published address."""
from __future__ import annotations

import json
import os
import urllib.request

import pytest

from .conftest import REPO

# Nightly (docs/testing.md): in CI, test_deploy.py proves the same path through the role (SSH to
# the three hosts, the engine image on each host's own Docker, streamed completions through the
# hosts' private addresses); the fault commands checked here are used by the nightly
# test_faults.py only.
pytestmark = pytest.mark.nightly


def stream_completion(base_url, model, api_key=None, max_tokens=8):
    body = json.dumps({"model": model, "prompt": "hello fleet", "max_tokens": max_tokens, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base_url + "/v1/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    if api_key:
        req.add_header("Authorization", "Bearer " + api_key)
    chunks, done = [], False
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers.get("Content-Type", "").startswith("text/event-stream")
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            chunks.append(json.loads(data))
    return chunks, done


def test_playbook_reaches_both_hosts_and_each_serves_a_stream(lab_hosts):
    rc, out, recap = lab_hosts.playbook(os.path.join(REPO, "tests", "e2e", "playbooks", "smoke.yml"))
    assert set(recap) == {h.name for h in lab_hosts.hosts}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values())
    for h in lab_hosts.hosts:
        # The engine runs in the lab host's own Docker engine, not the machine's.
        names = lab_hosts.sh(h.name, "docker ps --format '{{.Names}}'").split()
        assert "llmfleet-smoke" in names
        chunks, done = stream_completion("http://%s:8000" % h.mgmt_ip, "smoke")
        text = "".join(c["choices"][0].get("text", "") for c in chunks if c.get("choices"))
        usage = [c["usage"] for c in chunks if c.get("usage") and not c.get("choices")]
        assert done and text
        assert usage and usage[-1]["completion_tokens"] == 8
    lab_hosts.playbook(os.path.join(REPO, "tests", "e2e", "playbooks", "smoke.yml"), extra_vars={"smoke_state": "absent"})
    for h in lab_hosts.hosts:
        assert "llmfleet-smoke" not in lab_hosts.sh(h.name, "docker ps -a --format '{{.Names}}'").split()


def _ping(lab_hosts, host):
    """ansible -m ping through SSH, with a short connect timeout; returns True when reachable."""
    import subprocess
    import sys
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible"), "-i", lab_hosts.inventory, host, "-m",
           "ansible.builtin.ping", "-T", "5"]
    # A fresh connection each time: a persistent master connection would hang on a cut host.
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_SSH_ARGS="-o ControlMaster=no -o ControlPath=none -o ServerAliveInterval=2 -o ServerAliveCountMax=2")
    try:
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=40,
                              check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_fault_commands_cut_pause_restart(lab_hosts):
    from tests.lab import lab as labmod
    name = lab_hosts.state.name
    assert _ping(lab_hosts, "lab-h2")
    labmod.fault(name, "cut", "lab-h2")
    try:
        assert not _ping(lab_hosts, "lab-h2")
        assert _ping(lab_hosts, "lab-h1"), "cutting one host must not affect the others"
    finally:
        labmod.fault(name, "heal", "lab-h2")
    assert _ping(lab_hosts, "lab-h2")
    labmod.fault(name, "pause", "lab-h2")
    try:
        assert not _ping(lab_hosts, "lab-h2")
    finally:
        labmod.fault(name, "unpause", "lab-h2")
    assert _ping(lab_hosts, "lab-h2")
    labmod.fault(name, "restart", "lab-h2")
    assert _ping(lab_hosts, "lab-h2")
    # After a restart the host's own Docker engine is back too.
    h2 = labmod.host_of(lab_hosts.state, "lab-h2")
    labmod._wait_inner_docker(h2, 60)
