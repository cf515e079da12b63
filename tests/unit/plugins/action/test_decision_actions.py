"""Unit tests of the thin decision action plugins: serving_drift, rollout_plan, canary_verdict
(the rules themselves are tested in tests/unit/plugins/plugin_utils/test_drift.py and test_rollout.py)."""
import base64
import json
from unittest.mock import MagicMock

from ansible.parsing.dataloader import DataLoader
from ansible.playbook.task import Task
from ansible.template import Templar

import pytest

from ansible_collections.llmfleet.serving.plugins.action import canary_verdict, rollout_plan, serving_drift


def run(mod, name, args, task_vars):
    task = Task()
    task.args = args
    task.action = "llmfleet.serving." + name
    action = mod.ActionModule(task, MagicMock(), MagicMock(), DataLoader(), Templar(loader=DataLoader()), MagicMock())
    return action.run(task_vars=task_vars)


PLAN = {
    "deployments": {
        "r1": {"engine": "vllm", "nodes": 2, "head": "a", "config_hash": "new", "served_model_name": "R1",
               "hosts": {"a": {"container_name": "r1-head", "rank": 0},
                         "b": {"container_name": "r1-worker-1", "rank": 1}}},
        "q": {"engine": "vllm", "nodes": 1, "head": "c", "config_hash": "qh", "served_model_name": "Q",
              "hosts": {"c": {"container_name": "q", "rank": 0}}}},
    "hosts": {"a": [{"deployment": "r1", "container_name": "r1-head"}],
              "b": [{"deployment": "r1", "container_name": "r1-worker-1"}],
              "c": [{"deployment": "q", "container_name": "q"}]}}


def up(h):
    return {"exists": True, "config_hash": h, "running": True, "status": "running", "started_at": "2026-12-06T02:00:00Z"}


def states():
    return {"a": {"containers": {"r1-head": up("new")}, "ray": {"r1-head": {"rc": 0, "nodes": 2}}, "files": []},
            "b": {"containers": {"r1-worker-1": up("old")}, "ray": {}, "files": []},
            "c": {"containers": {"q": up("qh")}, "ray": {}, "files": []}}


def test_serving_drift_decides_for_this_host_from_every_host_of_the_play():
    hv = {h: {"_inference_server_state": s} for h, s in states().items()}
    res = run(serving_drift, "serving_drift", {"plan": PLAN},
              {"inventory_hostname": "a", "ansible_play_hosts": ["a", "b", "c"], "hostvars": hv})
    assert not res.get("failed"), res
    assert res["why"] == {} and res["restart"] == ["r1"] and res["drift"] == {"r1": {"r1-head": "member of a changed group"}}
    assert res["in_sync"] is False and res["changed"] is False and res["fleet"]["restart"] == ["r1"]
    res = run(serving_drift, "serving_drift", {"plan": PLAN},
              {"inventory_hostname": "c", "ansible_play_hosts": ["a", "b", "c"], "hostvars": hv})
    assert res["in_sync"] is True and res["drift"] == {}
    # a host outside the play counts as changed for its group (b is not in this play's hosts)
    hv["b"]["_inference_server_state"] = dict(states()["b"], containers={"r1-worker-1": up("new")})
    res = run(serving_drift, "serving_drift", {"plan": PLAN},
              {"inventory_hostname": "a", "ansible_play_hosts": ["a", "c"], "hostvars": hv})
    assert res["restart"] == ["r1"]
    res = run(serving_drift, "serving_drift", {"plan": PLAN},
              {"inventory_hostname": "a", "ansible_play_hosts": ["a", "b", "c"], "hostvars": hv})
    assert res["restart"] == [] and res["in_sync"] is True


def test_serving_drift_teardown_mode_decides_removals_from_this_hosts_read_only():
    st = {"containers": {"q": dict(up("qh"), deployment_label="q")}, "ray": {}, "files": [], "found": {}}
    hv = {"c": {"_inference_server_absent_state": st}}
    res = run(serving_drift, "serving_drift", {"plan": PLAN, "state_var": "_inference_server_absent_state", "teardown": True},
              {"inventory_hostname": "c", "ansible_play_hosts": ["c"], "hostvars": hv})
    assert not res.get("failed"), res
    assert res["containers"] == ["q"] and res["files"] == [] and res["dirs"] == [] and res["changed"] is False
    assert "restart" not in res  # the drift decision is not made in teardown mode
    st["containers"]["q"]["deployment_label"] = "someone-else"
    res = run(serving_drift, "serving_drift", {"plan": PLAN, "state_var": "_inference_server_absent_state", "teardown": True},
              {"inventory_hostname": "c", "ansible_play_hosts": ["c"], "hostvars": hv})
    assert res["containers"] == [] and "someone-else" in res["kept"]["q"]


def test_teardown_reads_filter_refuses_what_is_not_a_plan():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.llmfleet.serving.plugins.filter.teardown_reads import teardown_reads
    assert teardown_reads(PLAN, "c")["containers"] == [{"name": "q", "config_hash": "qh", "deployment": "q"}]
    with pytest.raises(AnsibleFilterError) as e:
        teardown_reads({"nope": 1}, "c")
    assert "must be the plan" in str(e.value)


@pytest.mark.parametrize("plan, host", [({"nope": 1}, "c"), ("a plan", "c"), (None, "c"), ({"deployments": []}, "c"),
                                        (PLAN, ""), (PLAN, "   "), (PLAN, {"h": "sk-secret-0123456789"}), (PLAN, None),
                                        (PLAN, float("nan"))])
def test_host_containers_filter_refuses_what_is_not_a_plan_or_a_host(plan, host):
    from ansible.errors import AnsibleFilterError
    from ansible_collections.llmfleet.serving.plugins.filter.host_containers import host_containers
    with pytest.raises(AnsibleFilterError) as e:
        host_containers(plan, host)
    assert "host_containers:" in str(e.value) and "sk-secret" not in str(e.value)


def test_host_containers_filter_names_a_plan_missing_its_parts():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.llmfleet.serving.plugins.filter.host_containers import host_containers
    assert [m["d"] for m in host_containers(PLAN, "c")] == ["q"]
    with pytest.raises(AnsibleFilterError) as e:
        host_containers({"deployments": {}, "hosts": {"c": [{"deployment": "gone"}]}}, "c")
    assert "not the serving_plan result" in str(e.value)


@pytest.mark.parametrize("name", ["", "  ", None, 3, float("nan"), {"d": "sk-secret-0123456789"}, ["r1"]])
def test_watchdog_cron_path_filter_refuses_what_is_not_a_deployment_name(name):
    from ansible.errors import AnsibleFilterError
    from ansible_collections.llmfleet.serving.plugins.filter.watchdog_cron_path import watchdog_cron_path
    with pytest.raises(AnsibleFilterError) as e:
        watchdog_cron_path(name)
    assert "must be a deployment name" in str(e.value) and "sk-secret" not in str(e.value)
    assert watchdog_cron_path("r1.v2") == "/etc/cron.d/llmfleet-watchdog-r1_v2"


@pytest.mark.parametrize("name", ["host_containers", "state_reads", "teardown_reads"])
@pytest.mark.parametrize("plan", [{"deployments": {}, "hosts": ["c"]}, {"deployments": {}, "hosts": {"c": ["q"]}},
                                  {"deployments": {}, "hosts": {"c": [{"deployment": "gone"}]}}, ["not", "a plan"]])
def test_the_plan_reading_filters_refuse_a_broken_plan_alike_naming_themselves(name, plan):
    """One mechanism (plugin_utils/_plan_input.py) for every filter that reads the plan: a plan
    with its hosts as a list, a reference that is not a dict or names a missing deployment, or
    no plan at all, is an AnsibleFilterError naming the filter, never a traceback."""
    import importlib

    from ansible.errors import AnsibleFilterError
    fn = getattr(importlib.import_module("ansible_collections.llmfleet.serving.plugins.filter." + name), name)
    with pytest.raises(AnsibleFilterError) as e:
        fn(plan, "c")
    assert str(e.value).startswith(name + ": ")


def test_serving_drift_refuses_bad_input():
    res = run(serving_drift, "serving_drift", {"plan": "nope"}, {"inventory_hostname": "a", "hostvars": {}})
    assert res["failed"] and "plan must be" in res["msg"]
    res = run(serving_drift, "serving_drift", {"plan": PLAN}, {"inventory_hostname": "a", "ansible_play_hosts": ["a"],
                                                               "hostvars": {"a": {}}})
    assert res["failed"] and "serving_state_info" in res["msg"]


def test_rollout_plan_reads_drift_running_plans_and_gateways():
    old = dict(PLAN["deployments"]["r1"], config_hash="old")
    hv = {"a": {"inference_server_drift": {"r1": {"r1-head": "member of a changed group"}},
                "__llmfleet_running_raw": {"results": [{"item": "r1", "content": base64.b64encode(
                    json.dumps(old).encode()).decode()}]}},
          "b": {"inference_server_drift": {"r1": {"r1-worker-1": "config hash old -> new"}}},
          "c": {},
          "gw": {"gateway_deployment": "r1", "gateway_name": "front"}}
    res = run(rollout_plan, "rollout_plan", {"plan": PLAN, "gateway_hosts": ["gw"]}, {"hostvars": hv})
    assert not res.get("failed"), res
    assert res["drift"] == {"r1": {"a/r1-head": "member of a changed group", "b/r1-worker-1": "config hash old -> new"}}
    b = res["batches"][0]
    assert b["hosts"] == ["a", "b"] and b["canary"] and b["gateways"] == [{"host": "gw", "replica": "r1", "backend": "front"}]
    assert b["rollback_plan"]["deployments"]["r1"]["config_hash"] == "old"
    assert res["before"]["r1"]["config_hash"] == "old" and res["before"]["q"] == {}
    assert res["batch_sizes"] == [2] and res["summary"][0]["deployments"] == ["r1"]
    res = run(rollout_plan, "rollout_plan", {"plan": PLAN, "canary": "false"}, {"hostvars": hv})
    assert not res["batches"][0]["canary"]


def test_rollout_plan_names_an_unknown_only():
    res = run(rollout_plan, "rollout_plan", {"plan": PLAN, "only": ["r2"]}, {"hostvars": {}})
    assert res["failed"] and res["msg"] == "llmfleet_reconfigure_only: r2 not in the plan (deployments: q, r1)"
    res = run(rollout_plan, "rollout_plan", {"plan": PLAN, "only": [3]}, {"hostvars": {}})
    assert res["failed"] and "must be a list of deployment names" in res["msg"]


def test_canary_verdict():
    ok = {"deployment": "r1", "baseline_checks": [{"metric": "median_ttft_ms", "passed": True}]}
    res = run(canary_verdict, "canary_verdict", {"runs": [ok]}, {})
    assert res["passed"] and not res["rollback"] and res["failures"] == [] and len(res["checks"]) == 1
    res = run(canary_verdict, "canary_verdict", {"runs": [dict(ok, msg="regression")]}, {})
    assert res["rollback"] and res["failures"] == ["r1: regression"]
    res = run(canary_verdict, "canary_verdict", {"runs": "x"}, {})
    assert res["failed"]


def test_rollout_plan_reads_the_running_plan_from_the_heads_state_call():
    old = dict(PLAN["deployments"]["q"], config_hash="old")
    content = base64.b64encode(json.dumps(old).encode()).decode()
    hv = {"c": {"inference_server_drift": {"q": {"q": "config hash old -> qh"}},
                "_inference_server_state": {"files": [
                    {"kind": "key", "deployment": "q", "in_sync": True},
                    {"kind": "record", "deployment": "q", "content": content}]}}}
    res = run(rollout_plan, "rollout_plan", {"plan": PLAN}, {"hostvars": hv})
    assert res["before"]["q"]["config_hash"] == "old"
    assert res["batches"][0]["rollback_plan"]["deployments"]["q"]["config_hash"] == "old"


def test_state_reads_filter_hashes_key_and_record_as_the_role_writes_them(tmp_path):
    import hashlib
    from ansible.errors import AnsibleFilterError
    from ansible.plugins.filter.core import to_nice_json
    from ansible_collections.llmfleet.serving.plugins.filter.state_reads import state_reads
    key_file = tmp_path / "key"
    key_file.write_text("lab-key-0123456789abcdef\n")
    key_file.chmod(0o600)
    p = json.loads(json.dumps(PLAN))
    p["deployments"]["q"]["api_key"] = {"source": "file", "control_path": str(key_file)}
    p["deployments"]["q"]["hosts"]["c"]["files"] = [
        {"kind": "key", "path": "/e/q/api_key"}, {"kind": "record", "path": "/e/q/deployment.json"}]
    out = state_reads(p, "c", watchdog_script="/usr/local/lib/llmfleet/llmfleet-watchdog", watchdog_state_dir="/s")
    by = {f["path"]: f for f in out["files"]}
    assert by["/e/q/api_key"]["sha256"] == hashlib.sha256(b"lab-key-0123456789abcdef").hexdigest()
    assert by["/e/q/deployment.json"]["sha256"] == hashlib.sha256(
        (to_nice_json(p["deployments"]["q"]) + "\n").encode()).hexdigest()
    assert "lab-key" not in json.dumps(out)
    assert out["containers"] == [{"name": "q", "config_hash": "qh", "deployment": "q"}]
    with pytest.raises(AnsibleFilterError):
        state_reads([], "c")
