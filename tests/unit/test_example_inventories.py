"""The example inventories plan as documented: playbooks/plan.yml on each, with the GPU facts of
real 8 x H100 / 8 x H200 hosts (tests/fixtures/gpu) given as host variables from a second
inventory source. No host is contacted (plan.yml runs on localhost only)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from ansible_collections.llmfleet.serving.plugins.module_utils._nvidia_smi import parse_xml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = {"LLMFLEET_QWQ_API_KEY": "example-qwq-key-0123456789", "LLMFLEET_R1_API_KEY": "example-r1-key-0123456789"}


def gpu_facts(variant, address):
    with open(os.path.join(REPO, "tests", "fixtures", "gpu", variant, "nvidia-smi-q.xml")) as f:
        facts = parse_xml(f.read())
    facts.update(gpu_count=len(facts["gpus"]), product_name=facts["gpus"][0]["name"], driver_loaded=True)
    facts["interfaces"] = [{"name": "eth1", "state": "UP", "ipv4": [{"address": address, "prefix": 24}]}]
    return facts


def plan(tmp_path, inventory, hosts):
    """Run plan.yml on the inventory with GPU facts for `hosts` ({host: (variant, private address)})."""
    facts = {"all": {"hosts": {h: {"llmfleet_gpu_facts": gpu_facts(v, a)} for h, (v, a) in hosts.items()}}}
    extra = tmp_path / "facts.yml"
    extra.write_text(json.dumps(facts))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="json", **KEYS)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                           "-i", os.path.join(REPO, "inventories", inventory), "-i", str(extra),
                           os.path.join(REPO, "playbooks", "plan.yml")],
                          cwd=REPO, capture_output=True, text=True, env=env, check=False)
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    # the plan task of the shared prelude (playbooks/prelude.yml)
    task = [t["hosts"]["localhost"] for p in out["plays"] for t in p["tasks"]
            if "localhost" in t["hosts"] and t["task"]["name"].startswith("Plan")][0]
    return proc.returncode, task


def test_fleet_example_plans_three_qwq_replicas_and_a_dual_host_r1(tmp_path):
    hosts = {"gpu-qwq-%d" % i: ("h100x8", "10.0.2.3%d" % i) for i in (1, 2, 3)}
    hosts.update({"gpu-r1-a-head": ("h200x8", "10.0.2.41"), "gpu-r1-a-worker": ("h200x8", "10.0.2.42")})
    rc, task = plan(tmp_path, "fleet-example", hosts)
    assert rc == 0, task.get("msg")
    deps = task["plan"]["deployments"]
    assert sorted(deps) == ["qwq-1", "qwq-2", "qwq-3", "r1-a"]
    assert {deps[n]["served_model_name"] for n in ("qwq-1", "qwq-2", "qwq-3")} == {"Qwen/QwQ-32B"}
    assert [deps[n]["head"] for n in ("qwq-1", "qwq-2", "qwq-3")] == ["gpu-qwq-1", "gpu-qwq-2", "gpu-qwq-3"]
    r1 = deps["r1-a"]
    assert (r1["tp"], r1["pp"], r1["nodes"], r1["head"]) == (8, 2, 2, "gpu-r1-a-head")
    assert r1["endpoint"]["base_url"] == "http://10.0.2.41:8000"
    # the keys come from the (example) vault, never into the plan
    assert not any(k in json.dumps(task["plan"]) for k in KEYS.values())


def test_qwq_single_plans(tmp_path):
    rc, task = plan(tmp_path, "qwq-single", {"gpu-qwq-1": ("h100x8", "10.0.0.10")})
    assert rc == 0, task.get("msg")
    assert list(task["plan"]["deployments"]) == ["qwq"]


def test_r1_dual_is_refused_only_for_its_missing_key_file(tmp_path):
    rc, task = plan(tmp_path, "r1-dual", {"gpu-r1-head": ("h200x8", "10.0.1.21"), "gpu-r1-worker": ("h200x8", "10.0.1.22")})
    assert rc != 0
    assert [e["variable"] for e in task["errors"]] == ["llmfleet_deployments[r1].api_key_file"], task["errors"]
