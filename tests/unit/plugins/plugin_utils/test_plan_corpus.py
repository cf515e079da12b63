"""The bad input corpus (tests/e2e/bad_inputs.yml) through the planner's Python API, without hosts.

The lab test (tests/e2e/test_bad_input.py) runs every case through the real playbook; here the
cases the plan refuses (stage: plan) run through _plan.build_plan with hostvars shaped like the
lab's (lab-h1: 8 x H200, lab-h2: 2 x H200), the control-node file check of the action plugin
and its check of misspelt role variables, so a change of wording is caught in a second.
"""
from __future__ import annotations

import os

import pytest
import yaml

from ansible_collections.llmfleet.serving.plugins.action import serving_plan as action
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
CATALOG = _catalog.load_catalog()
with open(os.path.join(REPO, "tests", "e2e", "bad_inputs.yml")) as _f:
    _CORPUS = yaml.safe_load(_f)
BASE = _CORPUS["base"]
PLAN_CASES = [c for c in _CORPUS["cases"] if c["stage"] == "plan"]
KEY_TEMPLATE = "{{ llmfleet_lab_key_file }}"


def lab_facts(n, ip):
    # the lab hosts' gpu_facts (their nvidia-smi answers from the real H200 capture): 616 MiB reserved
    return {"gpu_count": n, "gpus": [{"index": i, "memory_total_mib": 143771, "memory_reserved_mib": 616,
                                      "memory_usable_mib": 143155} for i in range(n)],
            "interfaces": [{"name": "lo", "ipv4": [{"address": "127.0.0.1", "prefix": 8}]},
                           {"name": "eth1", "ipv4": [{"address": ip, "prefix": 24}]}]}


HOSTVARS = {
    "lab-h1": {"ansible_host": "172.31.160.11", "llmfleet_private_address": "172.31.161.11",
               "llmfleet_gpu_facts": lab_facts(8, "172.31.161.11")},
    "lab-h2": {"ansible_host": "172.31.160.12", "llmfleet_private_address": "172.31.161.12",
               "llmfleet_gpu_facts": lab_facts(2, "172.31.161.12")},
}
GROUPS = {"all": ["lab-h1", "lab-h2"], "gpu_hosts": ["lab-h1", "lab-h2"], "lab_single": ["lab-h1"],
          "lab_dual": ["lab-h1", "lab-h2"]}


def check_file(path):
    """The action plugin's check, for absolute paths (the corpus uses no relative one)."""
    if not os.path.isfile(path):
        return "does not exist on the control node"
    return "is empty" if os.path.getsize(path) == 0 else None


def substitute(value, key_file):
    if isinstance(value, str):
        return value.replace(KEY_TEMPLATE, key_file)
    if isinstance(value, list):
        return [substitute(v, key_file) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, key_file) for k, v in value.items()}
    return value


def case_vars(case, key_file):
    ev = {}
    if "deployments" in case:
        ev["llmfleet_deployments"] = [dict(BASE, **item) if isinstance(item, dict) else item
                                      for item in case["deployments"]]
    ev.update(case.get("vars") or {})
    return substitute(ev, key_file)


def refusals(ev):
    """Every refusal the serving_plan action would give for these extra vars."""
    errors = []
    try:
        pattern = ev.get("llmfleet_hosts", "gpu_hosts")
        catalog = _catalog.merge_catalog(CATALOG, ev.get("llmfleet_models"))
        _plan.build_plan(ev.get("llmfleet_deployments"), HOSTVARS, GROUPS, catalog, check_file=check_file,
                         play_hosts=(pattern, GROUPS[pattern]) if pattern in GROUPS else None)
    except _plan.PlanErrors as e:
        errors = list(e.errors)
    errors += _plan.misspelt_variables(ev, action.known_role_variables())
    return errors


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("keys") / "api_key"
    p.write_text("sk-unit-corpus\n")
    return str(p)


def test_base_deployment_plans(key_file):
    """The corpus' base deployment is valid: each case's refusal comes from its own change."""
    assert refusals({"llmfleet_deployments": [dict(BASE, name="ok")]}) == []
    ok = _plan.build_plan([dict(BASE, name="ok")], HOSTVARS, GROUPS, CATALOG, check_file=check_file)
    # 28 attention heads / 4 KV heads on 8 GPUs: TP 8 would not start; auto gives TP 4 x data parallel 2
    assert (ok["deployments"]["ok"]["tp"], ok["deployments"]["ok"]["dp"]) == (4, 2)


@pytest.mark.parametrize("case", PLAN_CASES, ids=[c["id"] for c in PLAN_CASES])
def test_corpus_case_refused_by_the_planner(case, key_file):
    errors = refusals(case_vars(case, key_file))
    assert errors, "%s planned without an error" % case["id"]
    text = str(_plan.PlanErrors(errors))
    missing = [f for f in case["expect"] if f not in text]
    assert not missing, "%s: %s not in:\n%s" % (case["id"], missing, text)
    if case.get("secret"):
        assert case["secret"] not in text
