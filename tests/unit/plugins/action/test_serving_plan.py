"""Unit tests for the serving_plan action plugin (runs on the controller, no host)."""
import os
import tempfile
from unittest.mock import MagicMock

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import EncryptedString, VaultedValue
from ansible.playbook.task import Task
from ansible.template import Templar

from ansible_collections.llmfleet.serving.plugins.action import serving_plan as sp

SECRET = "sk-never-shown-in-any-output"
_KEY_DIR = tempfile.mkdtemp(prefix="llmfleet-unit-key-")
KEY_FILE = os.path.join(_KEY_DIR, "api_key")  # a usable key file: one line, 16+ printable, 0600
with open(os.open(KEY_FILE, os.O_WRONLY | os.O_CREAT, 0o600), "w") as _f:
    _f.write("sk-unit-key-0123456789\n")


def facts(ip):
    return {"gpu_count": 8, "gpus": [{"memory_total_mib": 143771}] * 8, "rdma_devices": [],
            "interfaces": [{"name": "eth0", "ipv4": [{"address": ip, "prefix": 24}]}]}


TASK_VARS = {
    "groups": {"all": ["gpu-a", "gpu-b"], "r1_dual": ["gpu-a", "gpu-b"]},
    "hostvars": {"gpu-a": {"ansible_host": "10.0.0.11", "llmfleet_gpu_facts": facts("10.0.0.11"), "other": 1},
                 "gpu-b": {"ansible_host": "10.0.0.12", "llmfleet_gpu_facts": facts("10.0.0.12")}},
}


def run(args, task_vars):
    task = Task()
    task.args = args
    task.action = "llmfleet.serving.serving_plan"
    action = sp.ActionModule(task, MagicMock(), MagicMock(), DataLoader(), Templar(loader=DataLoader()),
                             MagicMock())
    return action.run(task_vars=task_vars)


def dep(**kw):
    d = {"name": "r1", "hosts": "r1_dual", "model": "deepseek-r1", "max_model_len": 32768,
         "exposure": "public"}
    d.update(kw)
    return d


def test_is_vaulted_on_encrypted_and_tagged_values():
    assert sp.is_vaulted(EncryptedString(ciphertext="$ANSIBLE_VAULT;1.1;AES256\n3132"))
    assert sp.is_vaulted(VaultedValue(ciphertext="$ANSIBLE_VAULT;1.1;AES256\n3132").tag(SECRET))
    assert not sp.is_vaulted(SECRET)
    assert not sp.is_vaulted(None)


def test_hosts_of_and_collect_hostvars():
    deps = [dep(), {"name": "x", "hosts": ["gpu-c"]}, "junk"]
    assert sp.hosts_of(deps, TASK_VARS["groups"]) == ["gpu-a", "gpu-b", "gpu-c"]
    hv = sp.collect_hostvars(["gpu-a", "gpu-c"], TASK_VARS["hostvars"], lambda v: v)
    assert list(hv) == ["gpu-a"] and "other" not in hv["gpu-a"]


def test_run_plans_from_variables_and_sets_fact():
    tagged = VaultedValue(ciphertext="$ANSIBLE_VAULT;1.1;AES256\n3132").tag(SECRET)
    tv = dict(TASK_VARS, llmfleet_deployments=[dep(api_key=tagged)])
    res = run({}, tv)
    assert not res.get("failed"), res.get("msg")
    plan = res["ansible_facts"]["llmfleet_plan"]
    assert plan is res["plan"] and plan["deployments"]["r1"]["api_key"]["source"] == "vault"
    assert SECRET not in repr(res)
    assert res["changed"] is False


def test_run_fails_with_every_error_and_hides_the_key():
    res = run({"deployments": [dep(api_key=SECRET, tensor_parallel=3)]}, dict(TASK_VARS))
    assert res["failed"] is True
    assert sorted(e["variable"] for e in res["errors"]) == ["llmfleet_deployments[r1].api_key",
                                                            "llmfleet_deployments[r1].tensor_parallel"]
    assert SECRET not in repr(res)


def test_run_with_user_models(tmp_path):
    models = {"tiny": {"hf_id": "o/tiny", "size_bytes": 1000, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 512,
                       "engine_flags": {"vllm": ["--no-such-flag"]}}}
    res = run({"deployments": [dep(model="tiny", exposure="localhost", max_model_len=512)], "models": models},
              dict(TASK_VARS))
    assert res["failed"] and res["errors"][0]["variable"] == "llmfleet_models[tiny].engine_flags.vllm"
    bad = tmp_path / "c.yml"
    bad.write_text("- not a mapping\n")
    res = run({"deployments": [], "catalog_path": str(bad)}, dict(TASK_VARS))
    assert res["failed"] and "expected a mapping" in res["msg"]


@pytest.mark.parametrize("key", ["deployments", "models"])
def test_valid_args(key):
    assert key in sp.ActionModule._VALID_ARGS


class _StrictHostVars(dict):
    """Like Ansible 2.19's HostVars: a name that is not a host gives an Undefined that raises
    ReferenceError outside a template, and `in` is the only safe test."""

    def __getitem__(self, key):
        if key not in self:
            raise ReferenceError("A required TemplateContext context is not active.")
        return dict.__getitem__(self, key)


def test_unknown_host_name_does_not_stop_the_action():
    strict = _StrictHostVars(TASK_VARS["hostvars"])
    assert list(sp.collect_hostvars(["gpu-a", "gpu_hostz"], strict, lambda v: v)) == ["gpu-a"]
    res = run({"deployments": [dep(hosts="r1_duel", api_key_file=KEY_FILE)]},
              dict(TASK_VARS, hostvars=strict))
    assert res["failed"] and res["errors"][0]["variable"] == "llmfleet_deployments[r1].hosts"
    assert "did you mean 'r1_dual'?" in res["errors"][0]["message"]


def test_api_key_file_must_exist_and_hold_something(tmp_path):
    good = tmp_path / "key"
    good.write_text("sk-unit-0123456789abcdef\n")
    good.chmod(0o600)
    bad = {}
    for name, text, mode in (("empty", "", 0o600), ("blank", "  \n\t\n", 0o600), ("two-lines", "a" * 20 + "\nb\n", 0o600),
                             ("short", "sk-short\n", 0o600), ("spaces", "sk key with spaces 123\n", 0o600),
                             ("group-readable", "sk-unit-0123456789abcdef\n", 0o640),
                             ("world-readable", "sk-unit-0123456789abcdef\n", 0o644)):
        bad[name] = tmp_path / name
        bad[name].write_text(text)
        bad[name].chmod(mode)
    res = run({"deployments": [dep(api_key_file=str(good))]}, dict(TASK_VARS))
    assert not res.get("failed"), res.get("msg")
    for path, words in ((tmp_path / "missing", "does not exist on the control node"),
                        (bad["empty"], "is empty or whitespace only"), (bad["blank"], "is empty or whitespace only"),
                        (bad["two-lines"], "more than one line"), (bad["short"], "at least 16"),
                        (bad["spaces"], "printable ASCII"), (bad["group-readable"], "has mode 0640"),
                        (bad["world-readable"], "has mode 0644"),
                        (tmp_path, "is not a regular file"), ("relative/key", "does not exist on the control node")):
        res = run({"deployments": [dep(api_key_file=str(path))]}, dict(TASK_VARS))
        assert res["failed"], path
        assert [e["variable"] for e in res["errors"]] == ["llmfleet_deployments[r1].api_key_file"]
        assert words in res["errors"][0]["message"] and "create it" in res["errors"][0]["message"]


def test_known_role_variables_from_specs_and_role_files():
    known = sp.known_role_variables()
    assert {"inference_server_restart_policy", "model_weights_source", "gateway_port"} <= known
    assert "gateway_status" in known  # set by the gateway role, not an option
    assert "inference_server_restart_polcy" not in known


def test_misspelt_role_variable_fails_the_plan_from_extra_or_host_vars():
    tv = dict(TASK_VARS, inference_server_restart_polcy="always")
    res = run({"deployments": [dep(api_key_file=KEY_FILE)]}, tv)
    assert res["failed"] and [e["variable"] for e in res["errors"]] == ["inference_server_restart_polcy"]
    assert "did you mean inference_server_restart_policy?" in res["msg"]
    hv = {h: dict(v) for h, v in TASK_VARS["hostvars"].items()}
    hv["gpu-b"]["gateway_prot"] = 8080
    res = run({"deployments": [dep(api_key_file=KEY_FILE)]}, dict(TASK_VARS, hostvars=hv))
    assert res["failed"] and [e["variable"] for e in res["errors"]] == ["gateway_prot"]
    # both kinds of error in one message
    res = run({"deployments": [dep(api_key_file=KEY_FILE, port="eighty")]}, tv)
    assert sorted(e["variable"] for e in res["errors"]) == ["inference_server_restart_polcy",
                                                            "llmfleet_deployments[r1].port"]
