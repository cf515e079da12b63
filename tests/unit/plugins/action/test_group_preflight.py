"""Unit tests of the group_preflight action plugin: it reads the plan and nothing else (the
comparison rules are tested in tests/unit/plugins/plugin_utils/test_preflight.py)."""
from unittest.mock import MagicMock

import pytest
from ansible.errors import AnsibleActionFail
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.task import Task
from ansible.template import Templar

from ansible_collections.llmfleet.serving.plugins.action import group_preflight
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan

HOSTVARS = {"one": {"ansible_host": "10.0.0.13"}}
DEP = {"name": "q", "hosts": "one", "model": "qwq-32b", "model_path": "/srv/models/QwQ", "port": 8001,
       "gpus_per_host": 8, "max_model_len": 8192, "exposure": "localhost", "image": "x/engine:1"}


def plan():
    return _plan.build_plan([DEP], HOSTVARS, {"single": ["one"]}, _catalog.load_catalog())


def run(args, task_vars):
    task = Task()
    task.args = args
    task.action = "llmfleet.serving.group_preflight"
    action = group_preflight.ActionModule(task, MagicMock(), MagicMock(), DataLoader(), Templar(loader=DataLoader()),
                                          MagicMock())
    return action.run(task_vars=task_vars)


def test_targets_come_from_the_plan_argument_or_localhost_llmfleet_plan():
    want = {"hosts": {"one": {"images": ["x/engine:1"], "paths": ["/srv/models/QwQ"], "ports": [8001]}},
            "deployments": ["q"]}
    res = run({"phase": "targets", "plan": plan()}, {})
    assert not res.get("failed"), res
    assert res["targets"] == want and res["ansible_facts"]["llmfleet_preflight_targets"] == want
    # the deployment keys are not read: only the plan (set by playbooks/prelude.yml on localhost)
    res = run({"phase": "targets"}, {"llmfleet_deployments": [dict(DEP, port=9999)],
                                     "hostvars": {"localhost": {"llmfleet_plan": plan()}}})
    assert res["targets"] == want


def test_no_plan_is_a_clear_failure():
    res = run({"phase": "targets"}, {"llmfleet_deployments": [DEP]})
    assert res["failed"] and "found none" in res["msg"] and "playbooks/prelude.yml" in res["msg"]
    res = run({"phase": "compare", "plan": {"deployments": []}}, {})
    assert res["failed"] and res["msg"].startswith("group_preflight: plan: expected the plan")
    # the old options are gone (the plan is the one input)
    with pytest.raises(AnsibleActionFail, match="Invalid options .*: deployments"):
        run({"phase": "targets", "plan": plan(), "deployments": [DEP]}, {})


def test_compare_reads_what_the_hosts_reported():
    hv = {"one": {"_llmfleet_pf_listening": {"rc": 0, "stdout": "LISTEN 0 4096 0.0.0.0:8001 0.0.0.0:*\n"},
                  "_llmfleet_pf_containers": {"rc": 0, "stdout": ""}}}
    res = run({"plan": plan(), "checks": ["ports"]}, {"hostvars": hv})
    assert res["failed"] and [e["check"] for e in res["errors"]] == ["ports"], res
    assert res["errors"][0]["variable"] == "llmfleet_deployments[q].port"
    hv["one"]["_llmfleet_pf_listening"]["stdout"] = ""
    res = run({"plan": plan(), "checks": ["ports"]}, {"hostvars": hv})
    assert not res.get("failed") and res["msg"] == "preflight passed for q", res
