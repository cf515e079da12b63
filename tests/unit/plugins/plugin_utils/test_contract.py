"""The plan as the contract: per-host files, the container spec passed whole, the weights job,
key resolution and what teardown may touch (issue 13)."""
import copy
import json
import os
import stat

import pytest
from ansible.errors import AnsibleError

from ansible_collections.llmfleet.serving.plugins.lookup import api_key as api_key_lookup
from ansible_collections.llmfleet.serving.plugins.module_utils import _api_key
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _container, _files, _plan, _topology

CATALOG = _catalog.load_catalog()
KEY = "sk-contract-0123456789abcdef"


def facts(ip, iface="eth0"):
    return {"gpu_count": 8, "gpus": [{"index": i, "memory_total_mib": 143771} for i in range(8)],
            "interfaces": [{"name": iface, "ipv4": [{"address": ip, "prefix": 24}]}]}


HOSTVARS = {"gpu-a": {"ansible_host": "10.0.0.11", "llmfleet_gpu_facts": facts("10.0.0.11")},
            "gpu-b": {"ansible_host": "10.0.0.12", "llmfleet_gpu_facts": facts("10.0.0.12")},
            "gpu-c": {"ansible_host": "10.0.0.13", "llmfleet_gpu_facts": facts("10.0.0.13")}}
GROUPS = {"r1_dual": ["gpu-a", "gpu-b"], "single": ["gpu-c"]}
R1 = {"name": "r1", "hosts": "r1_dual", "model": "deepseek-r1", "max_model_len": 32768,
      "gpu_memory_utilization": 0.95, "api_key_file": "/srv/keys/r1", "config_dir": "/opt/llmfleet/"}
QWQ = {"name": "qwq", "hosts": "single", "model": "qwq-32b", "max_model_len": 32768, "exposure": "localhost"}
S3 = {"source": "s3", "bucket": "models", "prefix": "deepseek-ai/DeepSeek-R1/", "endpoint_url": "http://10.0.0.1:9000",
      "addressing_style": "path"}


def plan(deps):
    return _plan.build_plan(deps, HOSTVARS, GROUPS, CATALOG)


def refused(deps):
    with pytest.raises(_plan.PlanErrors) as e:
        plan(deps)
    return [(x.variable, x.message) for x in e.value.errors]


def test_files_per_host_with_paths_modes_and_container_paths():
    p = plan([R1])["deployments"]["r1"]
    assert p["config_dir"] == "/opt/llmfleet" and p["files_dir"] == "/opt/llmfleet/r1"
    for h in ("gpu-a", "gpu-b"):
        files = p["hosts"][h]["files"]
        # R1 is a vLLM Ray group: its cluster token is one of the plan's files (teardown removes it)
        assert [f["kind"] for f in files] == ["dir", "entrypoint", "key", "ray_token", "record"]
        by = {f["kind"]: f for f in files}
        assert (by["dir"]["path"], by["dir"]["mode"]) == ("/opt/llmfleet/r1", "0700")
        assert (by["key"]["path"], by["key"]["mode"], by["key"]["container_path"]) == (
            "/opt/llmfleet/r1/api_key", "0600", "/run/llmfleet/api_key")
        assert by["entrypoint"]["container_path"] == "/run/llmfleet/entrypoint.sh"
        assert by["entrypoint"]["sha256"] == _files.file_digest(_files.ENTRYPOINT_FILE)
        assert by["record"] == dict(by["record"], path="/opt/llmfleet/r1/deployment.json", mode="0600",
                                    container_path=None)
        assert (by["ray_token"]["path"], by["ray_token"]["mode"], by["ray_token"]["sha256"]) == (
            "/opt/llmfleet/r1/ray_token", "0600", None)
        assert all(f["owner"] == "root" and f["group"] == "root" for f in files)
        # every file with a container path is mounted from exactly that host path
        mounts = {m["target"]: m["source"] for m in p["hosts"][h]["mounts"]}
        for f in files:
            if f["container_path"]:
                assert mounts[f["container_path"]] == f["path"]
    # the key's host path is said once, and it is the file the role writes
    assert p["api_key"]["host_path"] == "/opt/llmfleet/r1/api_key"


def test_no_key_no_key_file_and_no_key_mount():
    p = plan([QWQ])["deployments"]["qwq"]
    h = p["hosts"]["gpu-c"]
    assert [f["kind"] for f in h["files"]] == ["dir", "entrypoint", "record"]
    assert "LLMFLEET_API_KEY_FILE" not in h["env"]
    assert p["api_key"]["host_path"] is None


def test_entrypoint_content_is_in_the_config_hash(tmp_path, monkeypatch):
    first = plan([R1])["deployments"]["r1"]["config_hash"]
    other = tmp_path / "entrypoint.sh"
    other.write_text("#!/bin/sh\n# changed\n")
    monkeypatch.setattr(_files, "ENTRYPOINT_FILE", str(other))
    monkeypatch.setattr(_files.DeploymentFiles.__init__, "__defaults__", (str(other),))
    second = plan([R1])["deployments"]["r1"]["config_hash"]
    assert first != second


def test_container_spec_argv_whole_no_separator():
    p = plan([R1])["deployments"]["r1"]
    head, worker = p["hosts"]["gpu-a"], p["hosts"]["gpu-b"]
    for h in (head, worker):
        assert "--" not in h["entrypoint"] + h["command"]
    n = int(head["entrypoint"][6])
    assert head["entrypoint"][7:] == ["ray", "start", "--head", "--node-ip-address=10.0.0.11", "--port=6379",
                                      "--dashboard-host=127.0.0.1", "--dashboard-port=8265",
                                      "--ray-client-server-port=10001", "--dashboard-agent-listen-port=52365",
                                      "--num-gpus=8"]
    assert n == len(head["entrypoint"][7:])
    assert head["command"][:3] == ["vllm", "serve", "/data/models/DeepSeek-R1"]
    assert worker["command"][:2] == ["ray", "start"]
    assert [c["key"] for c in head["port_claims"]] == [
        "port", "ray_port", "ray_dashboard_port", "Ray client server (fixed 10001)", "Ray dashboard agent (fixed 52365)"]
    assert [c["key"] for c in worker["port_claims"]] == ["Ray dashboard agent (fixed 52365)"]


def test_container_builder_from_small_objects():
    g = _topology.group("x", "sglang", "0.5.0", ["a", "b"], {"a": "10.0.0.1", "b": "10.0.0.2"}, {}, {}, 8, 16, 1)
    s = _container.EngineSettings("/m", "m", 4096, 0.8, "private", _topology.Ports(), extra_args=("--foo",))
    entry, cmd = _container.launch(g, g.members[1], s)
    assert entry == ["/bin/sh", "/run/llmfleet/entrypoint.sh", "serve"]
    assert cmd[cmd.index("--node-rank") + 1] == "1" and cmd[cmd.index("--host") + 1] == "10.0.0.2"
    assert cmd[cmd.index("--context-length") + 1] == "4096" and cmd[-1] == "--foo"
    assert g.members[1].container_name == "llmfleet-x-worker-1"


def test_weights_job_head_fetches_worker_copies():
    p = plan([dict(R1, weights=S3)])["deployments"]["r1"]
    w = p["weights"]
    assert w["source"] == "s3" and w["path"] == p["model_path"]
    assert w["params"] == {"bucket": "models", "prefix": "deepseek-ai/DeepSeek-R1/",
                           "endpoint_url": "http://10.0.0.1:9000", "addressing_style": "path"}
    assert (w["fetch_hosts"], w["peers"], w["peer_source"], w["peer_address"]) == (
        ["gpu-a"], ["gpu-b"], "gpu-a", "10.0.0.11")
    assert p["hosts"]["gpu-a"]["weights"]["mode"] == "fetch"
    assert p["hosts"]["gpu-b"]["weights"] == {"mode": "peer", "peer_source": "gpu-a", "peer_address": "10.0.0.11"}
    # the weights job does not restart anything: same hash with or without it
    assert p["config_hash"] == plan([R1])["deployments"]["r1"]["config_hash"]


def test_weights_hub_default_repo_and_no_peer_copy():
    p = plan([dict(R1, weights={"source": "huggingface", "peer_copy": False})])["deployments"]["r1"]
    assert p["weights"]["params"]["repo_id"] == CATALOG["deepseek-r1"]["hf_id"]
    assert p["weights"]["fetch_hosts"] == ["gpu-a", "gpu-b"] and p["weights"]["peer_source"] is None
    assert plan([dict(R1, weights=False)])["deployments"]["r1"]["weights"] is None
    assert plan([R1])["deployments"]["r1"]["weights"] is None


@pytest.mark.parametrize("weights, variable, words", [
    ({"source": "ftp"}, "weights.source", "is not one of s3"),
    ({"source": "s3"}, "weights.bucket", "is required for source s3"),
    ({"source": "local"}, "weights.src_path", "is required"),
    (dict(S3, secret_key="x"), "weights.secret_key", "model_weights_s3_secret_key"),
    (dict(S3, bukket="x"), "weights.bukket", "unknown key"),
    (True, "weights", "must be a dict"),
])
def test_weights_refusals_name_the_variable(weights, variable, words):
    errors = refused([dict(R1, weights=weights)])
    assert [v for v, _m in errors] == ["llmfleet_deployments[r1].%s" % variable]
    assert words in errors[0][1]


@pytest.mark.parametrize("key, words", [("short-key", "at least 16"), ("   ", "empty or whitespace"),
                                        ("a" * 10 + " " + "b" * 10, "printable ASCII"),
                                        ("a" * 20 + "\n" + "b", "more than one line")])
def test_inline_key_content_rules(key, words):
    errors = refused([dict(R1, api_key_file=None, api_key=key)])
    assert errors[0][0] == "llmfleet_deployments[r1].api_key" and words in errors[0][1]
    assert key.strip() == "" or key not in errors[0][1]


def test_key_reader_one_way(tmp_path):
    f = tmp_path / "k"
    f.write_text(KEY + "\r\n")
    f.chmod(0o400)
    assert _api_key.read_key_file(str(f), check_mode=True) == KEY
    f.chmod(0o644)
    assert _api_key.read_key_file(str(f)) == KEY  # hosts: content rules only
    with pytest.raises(_api_key.KeyFileError) as e:
        _api_key.read_key_file(str(f), check_mode=True)
    assert "has mode 0644" in str(e.value)
    assert stat.S_IMODE(os.stat(str(f)).st_mode) == 0o644


def test_lookup_resolves_the_key_from_the_plan(tmp_path):
    keyfile = tmp_path / "r1"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o600)
    p = plan([dict(R1, api_key_file=str(keyfile)), dict(QWQ)])
    assert api_key_lookup.resolve("r1", p, []) == KEY
    assert api_key_lookup.resolve("qwq", p, []) == ""          # no key: exposure localhost
    inline = plan([dict(R1, api_key_file=None, api_key=KEY)])
    assert api_key_lookup.resolve("r1", inline, [dict(R1, api_key=KEY)]) == KEY
    keyfile.write_text(" \n")
    with pytest.raises(AnsibleError) as e:
        api_key_lookup.resolve("r1", p, [])
    assert "llmfleet_deployments[r1].api_key_file" in str(e.value) and "empty or whitespace only" in str(e.value)
    with pytest.raises(AnsibleError) as e:
        api_key_lookup.resolve("nope", p, [])
    assert "not a deployment of the plan" in str(e.value)


def test_teardown_touches_only_the_plans_names_and_files():
    """What tasks/absent.yml may remove: the plan's container names and the files under each
    deployment's own folder; never config_dir itself, never another deployment's folder."""
    p = plan([R1, QWQ])
    for name, d in p["deployments"].items():
        for h, hp in d["hosts"].items():
            assert hp["container_name"].startswith("llmfleet-%s" % name)
            assert hp["labels"]["llmfleet.deployment"] == name
            for f in hp["files"]:
                assert f["path"] == d["files_dir"] or f["path"].startswith(d["files_dir"] + "/")
                assert f["path"] != d["config_dir"]
    assert {r["deployment"] for r in p["hosts"]["gpu-c"]} == {"qwq"}


def test_plan_holds_no_secret():
    text = json.dumps(plan([dict(R1, api_key_file=None, api_key=KEY, weights=copy.deepcopy(S3))]))
    assert KEY not in text


def test_host_containers_of_a_real_plan_carry_the_ray_token_path_only_for_a_vllm_group():
    """What the role's tasks loop over (filter host_containers) comes from the plan: the Ray token
    path is the host side of the mount at /run/llmfleet/ray_token, None for a single-host engine."""
    from ansible_collections.llmfleet.serving.plugins.plugin_utils import _drift

    p = plan([R1, QWQ])
    head, worker, single = (_drift.host_containers(p, h) for h in ("gpu-a", "gpu-b", "gpu-c"))
    assert [(m["d"], m["s"]["role"], m["ray_token"]) for m in head + worker] == [
        ("r1", "head", "/opt/llmfleet/r1/ray_token"), ("r1", "worker", "/opt/llmfleet/r1/ray_token")]
    assert head[0]["s"] is p["deployments"]["r1"]["hosts"]["gpu-a"]
    assert (head[0]["nodes"], head[0]["engine"], head[0]["head"], head[0]["hash"]) == (
        2, "vllm", "gpu-a", p["deployments"]["r1"]["config_hash"])
    assert [(m["d"], m["nodes"], m["ray_token"]) for m in single] == [("qwq", 1, None)]
    assert _drift.host_containers(p, "gpu-z") == []
