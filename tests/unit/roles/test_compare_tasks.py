"""roles/inference_server tasks_from drift (mine.yml + compare.yml) run by ansible-playbook on
localhost (connection local), with a fake `docker` on PATH and the planned files under a temporary
folder: the one-call state read (serving_state_info) and the decision (serving_drift) as the role
wires them, the expected hashes computed in compare.yml (entrypoint from the plan, key through the
api_key lookup, record = the plan) equal to what the role's copy tasks write."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLE_FILES = os.path.join(REPO, "roles", "inference_server", "files")
KEY = "lab-key-0123456789abcdef"

FAKE_DOCKER = r"""#!/usr/bin/env python3
import json, os, sys
state = json.load(open(os.environ["FAKE_DOCKER_STATE"]))
with open(os.environ["FAKE_DOCKER_STATE"] + ".calls", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
if sys.argv[1] == "inspect":
    names = sys.argv[4:]
    print(json.dumps([state[n] for n in names if n in state]))
    missing = [n for n in names if n not in state]
    for n in missing:
        sys.stderr.write("Error: No such object: %s\n" % n)
    sys.exit(1 if missing else 0)
if sys.argv[1] == "exec":
    print("2")
    sys.exit(0)
sys.exit(2)
"""

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  environment:
    PATH: "{{ fake_bin }}:{{ ansible_env.PATH | default(lookup('env', 'PATH')) }}"
    FAKE_DOCKER_STATE: "{{ fake_state }}"
  tasks:
    - name: Write the files as the role does
      when: write_files | bool
      block:
        - ansible.builtin.file: {path: "{{ cfg }}/d1", state: directory, mode: "0700"}
        - ansible.builtin.copy: {src: "%(files)s/entrypoint.sh", dest: "{{ cfg }}/d1/entrypoint.sh", mode: "0755"}
        - ansible.builtin.copy:
            content: "{{ lookup('llmfleet.serving.api_key', 'd1', plan=inference_server_plan, deployments=[]) }}"
            dest: "{{ cfg }}/d1/api_key"
            mode: "0600"
        - ansible.builtin.copy:
            content: "{{ inference_server_plan.deployments['d1'] | to_nice_json }}\\n"
            dest: "{{ cfg }}/d1/deployment.json"
            mode: "0600"
        - ansible.builtin.file: {path: "{{ inference_server_watchdog_script | dirname }}", state: directory, mode: "0700"}
        - ansible.builtin.file: {path: "{{ inference_server_watchdog_state_dir }}", state: directory, mode: "0700"}
        - ansible.builtin.copy: {src: "%(files)s/llmfleet-watchdog", dest: "{{ inference_server_watchdog_script }}", mode: "0644"}

    - ansible.builtin.include_role:
        name: llmfleet.serving.inference_server
        tasks_from: drift

    - ansible.builtin.copy:
        content: "{{ {'drift': inference_server_drift, 'in_sync': _inference_server_in_sync,
                      'decision': _inference_server_decision, 'state': _inference_server_state} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
""" % {"files": ROLE_FILES}


def plan(cfg, key_file):
    sha = hashlib.sha256(open(os.path.join(ROLE_FILES, "entrypoint.sh"), "rb").read()).hexdigest()
    files = [{"kind": "dir", "path": cfg + "/d1", "mode": "0700", "owner": "root", "group": "root"},
             {"kind": "entrypoint", "path": cfg + "/d1/entrypoint.sh", "mode": "0755", "owner": "root", "group": "root",
              "sha256": sha},
             {"kind": "key", "path": cfg + "/d1/api_key", "mode": "0600", "owner": "root", "group": "root"},
             {"kind": "record", "path": cfg + "/d1/deployment.json", "mode": "0600", "owner": "root", "group": "root"}]
    dep = {"name": "d1", "engine": "vllm", "nodes": 1, "head": "localhost", "config_hash": "abc123", "config_dir": cfg,
           "api_key": {"source": "file", "control_path": key_file},
           "hosts": {"localhost": {"container_name": "llmfleet-d1", "rank": 0, "image": "img:1", "files": files}}}
    return {"deployments": {"d1": dep}, "hosts": {"localhost": [{"deployment": "d1", "container_name": "llmfleet-d1"}]}}


def run(tmp_path, containers, write_files):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    (tmp_path / "docker.json").write_text(json.dumps(containers))
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    cfg = str(tmp_path / "etc")
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    extra = {"inference_server_plan": plan(cfg, str(key_file)), "fake_bin": str(bin_dir),
             "fake_state": str(tmp_path / "docker.json"), "cfg": cfg, "out": str(tmp_path / "out.json"),
             "write_files": write_files, "inference_server_deployments": [],
             "inference_server_watchdog_script": str(tmp_path / "lib" / "llmfleet-watchdog"),
             "inference_server_watchdog_state_dir": str(tmp_path / "state"),
             "inference_server_ulimits": ["stack:67108864:67108864"], "ansible_python_interpreter": sys.executable}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           "-e", "@" + str(tmp_path / "extra.json"), str(tmp_path / "play.yml")],
                          cwd=REPO, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    with open(tmp_path / "out.json") as f:
        return json.load(f)


def running(h, restart="unless-stopped"):
    return {"Name": "/llmfleet-d1", "Id": "0123456789abcdef",
            "Config": {"Image": "img:1", "Labels": {"llmfleet.config-hash": h}},
            "State": {"Running": True, "Status": "running", "StartedAt": "2026-12-06T02:00:00.1Z"},
            "HostConfig": {"RestartPolicy": {"Name": restart}, "IpcMode": "host",
                           "LogConfig": {"Config": {"max-size": "100m", "max-file": "5"}},
                           "Ulimits": [{"Name": "stack", "Soft": 67108864, "Hard": 67108864}]}}


def test_nothing_there_then_in_sync_then_each_kind_of_drift(tmp_path):
    if os.getuid() != 0:
        import pytest
        pytest.skip("the plan's files are owned by root")
    out = run(tmp_path, {}, write_files=False)
    assert out["drift"] == {"d1": {"llmfleet-d1": "absent"}} and out["in_sync"] is False
    assert "KEY" not in json.dumps(out) and KEY not in json.dumps(out)

    out = run(tmp_path, {"llmfleet-d1": running("abc123")}, write_files=True)
    assert out["state"]["differences"] == [], out["state"]["differences"]
    assert out["drift"] == {} and out["in_sync"] is True
    # the record came back for reconfigure (the running plan)
    rec = [f for f in out["state"]["files"] if f.get("kind") == "record"][0]
    assert rec["content"] and KEY not in json.dumps(out)

    # a new key, a record whose mode drifted, a restart policy outside the plan: one run sees all three
    (tmp_path / "etc" / "d1" / "api_key").write_text("another-key-0123456789")
    os.chmod(str(tmp_path / "etc" / "d1" / "deployment.json"), 0o644)
    out = run(tmp_path, {"llmfleet-d1": running("abc123", restart="no")}, write_files=False)
    assert out["drift"] == {"d1": {"llmfleet-d1": "API key changed"}} and out["in_sync"] is False
    assert out["decision"]["settings"] == {"llmfleet-d1": ["restart_policy no -> unless-stopped"]}
    assert "%s/d1/deployment.json: mode 0644 -> 0600" % (tmp_path / "etc") in out["state"]["differences"]
    assert "another-key" not in json.dumps(out)
