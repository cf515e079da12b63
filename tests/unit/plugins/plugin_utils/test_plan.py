"""Unit tests for _plan: the reference topologies and every refusal."""
import copy
import json

import pytest

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan

CATALOG = _catalog.load_catalog()
SECRET = "sk-very-secret-value"


def facts(n=8, ip="10.0.0.11", iface="eth0", mib=143771, rdma=()):
    return {"gpu_count": n, "gpus": [{"index": i, "memory_total_mib": mib} for i in range(n)],
            "rdma_devices": list(rdma),
            "rdma": [{"name": r, "ports": [{"port": 1, "state": "ACTIVE"}]} for r in rdma],
            "interfaces": [{"name": "lo", "ipv4": [{"address": "127.0.0.1", "prefix": 8}]},
                           {"name": "docker0", "ipv4": [{"address": "172.17.0.1", "prefix": 16}]},
                           {"name": iface, "ipv4": [{"address": ip, "prefix": 24}]}]}


def hostvars(rdma=()):
    return {
        "gpu-a": {"ansible_host": "10.0.0.11", "llmfleet_gpu_facts": facts(ip="10.0.0.11", rdma=rdma)},
        "gpu-b": {"ansible_host": "10.0.0.12", "llmfleet_gpu_facts": facts(ip="10.0.0.12", iface="ens5", rdma=rdma)},
        "single": {"ansible_host": "192.168.1.5", "llmfleet_gpu_facts": facts(ip="192.168.1.5", mib=81559)},
        "small": {"ansible_host": "10.0.0.13", "llmfleet_gpu_facts": facts(n=4, ip="10.0.0.13")},
    }


GROUPS = {"r1_dual": ["gpu-a", "gpu-b"], "qwq": ["single"], "mixed": ["gpu-a", "small"]}


def plan(deps, hv=None, **kw):
    return _plan.build_plan(deps, hv or hostvars(), GROUPS, CATALOG, **kw)


def refused(deps, hv=None):
    with pytest.raises(_plan.PlanErrors) as e:
        plan(deps, hv)
    return e.value.errors


def variables(errors):
    return [e.variable for e in errors]


R1 = {"name": "r1", "hosts": "r1_dual", "engine": "vllm", "model": "deepseek-r1", "max_model_len": 32768,
      "gpu_memory_utilization": 0.95, "api_key_file": "/srv/keys/r1"}
SG = {"name": "r1-sglang", "hosts": "r1_dual", "engine": "sglang", "model": "deepseek-r1", "max_model_len": 32768,
      "api_key_file": "/srv/keys/r1"}
QWQ = {"name": "qwq", "hosts": "qwq", "model": "qwq-32b", "max_model_len": 32768, "gpu_memory_utilization": 0.95,
       "api_key": SECRET, "extra_args": ["--enable-chunked-prefill"]}


def test_single_host_tp_equals_gpu_count():
    p = plan([QWQ])["deployments"]["qwq"]
    assert (p["tp"], p["pp"], p["nodes"]) == (8, 1, 1)
    h = p["hosts"]["single"]
    assert h["role"] == "single" and h["rank"] == 0 and h["container_name"] == "llmfleet-qwq"
    assert h["entrypoint"] == ["/bin/sh", "/run/llmfleet/entrypoint.sh", "serve"]
    assert h["command"][:2] == ["vllm", "serve"]
    argv = h["command"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "8"
    assert "--pipeline-parallel-size" not in argv
    assert argv[argv.index("--host") + 1] == "192.168.1.5"            # private: the private address
    assert argv[-3:] == ["--reasoning-parser", "deepseek_r1", "--enable-chunked-prefill"]
    assert h["env"]["NCCL_SOCKET_IFNAME"] == "eth0" and h["env"]["GLOO_SOCKET_IFNAME"] == "eth0"
    assert "NCCL_IB_HCA" not in h["env"]
    assert h["device_requests"][0]["device_ids"] == [str(i) for i in range(8)]
    assert p["endpoint"]["base_url"] == "http://192.168.1.5:8000"


def test_r1_dual_vllm_ray_tp8_pp2():
    out = plan([R1], hostvars(rdma=["mlx5_0", "mlx5_1"]))
    p = out["deployments"]["r1"]
    assert (p["tp"], p["pp"], p["nodes"], p["head"]) == (8, 2, 2, "gpu-a")
    head, worker = p["hosts"]["gpu-a"], p["hosts"]["gpu-b"]
    assert head["container_name"] == "llmfleet-r1-head" and worker["container_name"] == "llmfleet-r1-worker-1"
    c = head["entrypoint"]
    assert c[2:7] == ["ray-head", "16", "2", "600", str(len(c) - 7)]
    assert "--node-ip-address=10.0.0.11" in c and "--port=6379" in c and "--dashboard-host=127.0.0.1" in c
    serve = head["command"]
    assert serve[:3] == ["vllm", "serve", "/data/models/DeepSeek-R1"]
    for flag, val in (("--tensor-parallel-size", "8"), ("--pipeline-parallel-size", "2"),
                      ("--distributed-executor-backend", "ray")):
        assert serve[serve.index(flag) + 1] == val
    assert worker["entrypoint"] == ["/bin/sh", "/run/llmfleet/entrypoint.sh", "ray-worker"]
    assert worker["command"] == ["ray", "start", "--address=10.0.0.11:6379", "--node-ip-address=10.0.0.12",
                                 "--num-gpus=8", "--block"]
    # per-host interface names, RDMA env as in reference 002
    assert head["env"]["NCCL_SOCKET_IFNAME"] == "eth0" and worker["env"]["GLOO_SOCKET_IFNAME"] == "ens5"
    assert worker["env"]["VLLM_HOST_IP"] == "10.0.0.12"
    # the worker gives up on a vanished head in 15 s (Ray: 60 s), so a restarted head gets it back soon
    assert worker["env"]["RAY_gcs_rpc_server_reconnect_timeout_s"] == "15"
    assert "RAY_gcs_rpc_server_reconnect_timeout_s" not in head["env"]
    # "=": exact names (mlx5_1 alone would also select mlx5_10 .. mlx5_19)
    assert head["env"]["NCCL_IB_HCA"] == "=mlx5_0,mlx5_1" and head["env"]["NCCL_IB_DISABLE"] == "0"
    assert head["env"]["NCCL_IB_GID_INDEX"] == "1" and head["env"]["NCCL_NET_GDR_LEVEL"] == "5"
    assert head["labels"]["llmfleet.config-hash"] == p["config_hash"] == worker["labels"]["llmfleet.config-hash"]
    assert out["hosts"]["gpu-b"] == [{"deployment": "r1", "container_name": "llmfleet-r1-worker-1", "role": "worker"}]
    assert round(p["sizing"]["weights_per_gpu"] / 1e9) == 43


def test_sglang_tp16_two_nodes():
    p = plan([SG])["deployments"]["r1-sglang"]
    assert (p["tp"], p["pp"]) == (16, 1)
    for rank, h in enumerate(["gpu-a", "gpu-b"]):
        c = p["hosts"][h]["command"]
        assert c[:3] == ["python3", "-m", "sglang.launch_server"]
        for flag, val in (("--tp", "16"), ("--nnodes", "2"), ("--node-rank", str(rank)),
                          ("--dist-init-addr", "10.0.0.11:20000"), ("--mem-fraction-static", "0.9")):
            assert c[c.index(flag) + 1] == val
        assert "--trust-remote-code" not in c           # an explicit opt-in of the model entry only
        assert c.count("--enable-metrics") == 1
        assert p["hosts"][h]["env"]["SGLANG_HOST_IP"] == p["hosts"][h]["private_address"]      # SGLang serves /metrics only when asked
    assert "NCCL_IB_HCA" not in p["hosts"]["gpu-a"]["env"]       # no RDMA devices on these hosts
    assert 20000 in p["hosts"]["gpu-a"]["ports"]


def test_api_key_never_in_plan_and_hash_stable():
    p1 = plan([QWQ])
    text = json.dumps(p1)
    assert SECRET not in text
    assert p1["deployments"]["qwq"]["hosts"]["single"]["env"]["LLMFLEET_API_KEY_FILE"] == "/run/llmfleet/api_key"
    p2 = plan([copy.deepcopy(QWQ)])
    assert p1["deployments"]["qwq"]["config_hash"] == p2["deployments"]["qwq"]["config_hash"]
    changed = dict(QWQ, max_model_len=16384)
    assert plan([changed])["deployments"]["qwq"]["config_hash"] != p1["deployments"]["qwq"]["config_hash"]


def test_lab_gpu_runtime_none_keeps_everything_but_gpus():
    p = plan([dict(QWQ, gpu_runtime="none")])["deployments"]["qwq"]["hosts"]["single"]
    q = plan([QWQ])["deployments"]["qwq"]["hosts"]["single"]
    assert p["device_requests"] == [] and p["gpus"] == 0
    assert p["command"] == q["command"] and p["env"] == q["env"]


def test_choose_interface_and_rdma_env():
    f = facts(ip="10.1.2.3", iface="enp1s0")
    assert _plan.choose_interface(f, "10.1.2.77") == "enp1s0"      # subnet contains it
    assert _plan.choose_interface(f, "10.9.9.9") is None
    assert _plan.choose_interface(f, "gpu-a.example") is None
    assert _plan.rdma_env(facts(rdma=["mlx5_0"])) == {"NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": "=mlx5_0",
                                                      "NCCL_NET_GDR_LEVEL": "5", "NCCL_IB_GID_INDEX": "1"}
    down = facts(rdma=["mlx5_0"])
    down["rdma"][0]["ports"][0]["state"] = "DOWN"
    assert _plan.rdma_env(down) == {}
    assert _plan.rdma_env({}) == {}


# ---------------- refusals ----------------

def test_refuses_tp_pp_mismatch():
    errs = refused([dict(R1, tensor_parallel=8, pipeline_parallel=1)])
    assert variables(errs) == ["llmfleet_deployments[r1].tensor_parallel"]
    assert "8 x 1 = 8" in errs[0].message and "set pipeline_parallel: 2" in errs[0].message


def test_refuses_head_not_in_group_and_duplicate_hosts():
    errs = refused([dict(R1, head="gpu-c")])
    assert variables(errs) == ["llmfleet_deployments[r1].head"]
    errs = refused([dict(R1, hosts=["gpu-a", "gpu-a"])])
    assert variables(errs) == ["llmfleet_deployments[r1].hosts"] and "twice" in errs[0].message
    errs = refused([dict(R1, hosts="no_such_group")])
    assert variables(errs) == ["llmfleet_deployments[r1].hosts"]


def test_refuses_different_gpu_counts():
    errs = refused([dict(R1, hosts="mixed")])
    assert variables(errs) == ["llmfleet_deployments[r1].hosts"] and "gpu-a=8, small=4" in errs[0].message


def test_refuses_model_too_large_with_arithmetic():
    errs = refused([dict(QWQ, tensor_parallel=1, gpus_per_host=1, max_model_len=40960)],
                   {"single": {"ansible_host": "192.168.1.5",
                               "llmfleet_gpu_facts": facts(n=1, ip="192.168.1.5", mib=46068)}})
    assert variables(errs) == ["llmfleet_deployments[qwq].max_model_len"]
    assert "DOES NOT FIT" in errs[0].message and "65,000,000,000 B" in errs[0].message


def test_refuses_unknown_engine_flag_and_owned_flags():
    errs = refused([dict(QWQ, engine="vlm")])
    assert variables(errs) == ["llmfleet_deployments[qwq].engine"] and "did you mean 'vllm'" in errs[0].message
    errs = refused([dict(QWQ, extra_args=["--enable-reasoning"])])
    assert variables(errs) == ["llmfleet_deployments[qwq].extra_args"] and "--reasoning-parser" in errs[0].message
    errs = refused([dict(QWQ, extra_args=["--port", "9000", "--api-key", "x"])])
    assert len(errs) == 2 and "set llmfleet_deployments[qwq].port" in errs[0].message
    errs = refused([dict(QWQ, engine_version="0.4.0")])
    assert variables(errs) == ["llmfleet_deployments[qwq].engine_version"]


def test_refuses_port_clashes():
    other = dict(QWQ, name="qwq2", gpus_per_host=0)
    errs = refused([dict(QWQ, gpus_per_host=4), dict(other, gpus_per_host=4)])
    assert variables(errs) == ["llmfleet_deployments[qwq2].port"]
    assert "already used by deployment qwq (port)" in errs[0].message
    # a Ray port clash between two Ray clusters on one head
    errs = refused([dict(R1, gpus_per_host=4), dict(R1, name="r1b", gpus_per_host=4, port=8001)])
    assert sorted(variables(errs)) == ["llmfleet_deployments[r1b].hosts"] * 3 + [
        "llmfleet_deployments[r1b].ray_dashboard_port", "llmfleet_deployments[r1b].ray_port"]
    # Ray's fixed ports: the client server on the head, the dashboard agent on every node
    text = str(_plan.PlanErrors(errs))
    assert "port 10001 (Ray client server (fixed 10001)) on host gpu-a" in text
    assert "port 52365 (Ray dashboard agent (fixed 52365)) on host gpu-b" in text
    errs = refused([dict(SG, gpus_per_host=4), dict(SG, name="sg2", gpus_per_host=4, port=8001)])
    assert variables(errs) == ["llmfleet_deployments[sg2].dist_init_port"]


def test_refuses_plain_key_for_public_and_missing_key():
    errs = refused([dict(QWQ, exposure="public")])
    assert variables(errs) == ["llmfleet_deployments[qwq].api_key"] and "ansible-vault" in errs[0].message
    assert SECRET not in str(errs[0])

    class EncryptedString(str):
        pass
    ok = plan([dict(QWQ, exposure="public", api_key=EncryptedString(SECRET))])
    assert ok["deployments"]["qwq"]["api_key"]["source"] == "vault"
    assert plan([dict(QWQ, exposure="public", api_key=None, api_key_file="/k")])["deployments"]["qwq"]
    no_key = {k: v for k, v in QWQ.items() if k != "api_key"}
    errs = refused([no_key])
    assert variables(errs) == ["llmfleet_deployments[qwq].api_key_file"]
    assert plan([dict(no_key, exposure="localhost")])["deployments"]["qwq"]["api_key"]["source"] is None


def test_refuses_unknown_keys_and_wrong_types_all_at_once():
    errs = refused([dict(QWQ, tensor_paralel=8, port="8000", engine_version=0.32, api_key=123)])
    v = variables(errs)
    assert "llmfleet_deployments[qwq].tensor_paralel" in v
    assert "did you mean 'tensor_parallel'" in errs[v.index("llmfleet_deployments[qwq].tensor_paralel")].message
    assert "llmfleet_deployments[qwq].port" in v and "llmfleet_deployments[qwq].engine_version" in v
    assert "123" not in errs[v.index("llmfleet_deployments[qwq].api_key")].message


def test_refuses_several_deployments_collecting_all_errors():
    errs = refused([dict(QWQ, model="qwq-23b"), dict(R1, name="r1", head="nope"), "not-a-dict",
                    dict(QWQ, name="Bad_Name")])
    v = variables(errs)
    assert v[0] == "llmfleet_deployments[qwq].model" and "did you mean 'qwq-32b'" in errs[0].message
    assert "llmfleet_deployments[r1].head" in v and "llmfleet_deployments[2]" in v
    assert "llmfleet_deployments[Bad_Name].name" in v


def test_refuses_secret_env_and_missing_facts_and_gpu_overcommit():
    errs = refused([dict(QWQ, env={"HF_TOKEN": "x"})])
    assert variables(errs) == ["llmfleet_deployments[qwq].env.HF_TOKEN"]
    errs = refused([QWQ], {"single": {"ansible_host": "192.168.1.5"}})
    assert variables(errs) == ["llmfleet_deployments[qwq].gpus_per_host"]
    errs = refused([QWQ, dict(QWQ, name="qwq-b", port=8001)])
    assert variables(errs) == ["llmfleet_deployments[qwq-b].gpus_per_host"]


def test_no_facts_with_explicit_values_plans_without_memory_check():
    hv = {"gpu-a": {"ansible_host": "10.0.0.11"}, "gpu-b": {"ansible_host": "10.0.0.12"}}
    p = plan([dict(R1, gpus_per_host=8, network_interface="eth0")], hv)["deployments"]["r1"]
    assert p["sizing"]["fits"] is None and p["hosts"]["gpu-b"]["env"]["NCCL_SOCKET_IFNAME"] == "eth0"
    errs = refused([dict(R1, gpus_per_host=8)], hv)
    assert variables(errs) == ["llmfleet_deployments[r1].network_interface"] * 2


def test_multinode_needs_ip_addresses():
    hv = hostvars()
    hv["gpu-b"]["ansible_host"] = "gpu-b.example"
    errs = refused([dict(R1, network_interface="eth0")], hv)
    assert "hostvars[gpu-b].llmfleet_private_address" in variables(errs)


@pytest.mark.parametrize("name,secret", [
    ("HF_TOKEN", True), ("HUGGING_FACE_HUB_TOKEN", True), ("TOKEN", True), ("OPENAI_API_KEY", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("DB_PASSWORD", True),
    ("LLMFLEET_SIM_TTFT_PER_PROMPT_TOKEN_MS", False), ("MAX_TOKENS", False), ("NCCL_DEBUG", False),
])
def test_secret_looking_env_names(name, secret):
    assert bool(_plan.SECRET_ENV_RE.search(name)) is secret


# ---------------- bad input corpus fixes (tests/e2e/bad_inputs.yml) ----------------

def test_refuses_empty_deployments_list():
    with pytest.raises(_plan.PlanErrors) as e:
        plan([])
    assert variables(e.value.errors) == ["llmfleet_deployments"]
    assert "is empty" in e.value.errors[0].message and "add at least one deployment" in e.value.errors[0].message


@pytest.mark.parametrize("key,value,words", [
    ("max_model_len", -1, "must be at least 1 (got -1)"),
    ("max_model_len", 0, "must be at least 1 (got 0)"),
    ("gpu_memory_gib", -80, "must be above 0"),
    ("sizing_reserve_gib", -1, "must not be negative"),
    ("ray_timeout_s", 0, "must be at least 1"),
])
def test_refuses_numbers_out_of_range(key, value, words):
    errs = refused([dict(QWQ, **{key: value})])
    assert variables(errs) == ["llmfleet_deployments[qwq].%s" % key]
    assert words in errs[0].message


def test_type_names_are_yaml_names_even_for_subclasses():
    class _AnsibleTaggedInt(int):
        pass

    errs = refused([dict(QWQ, port="eighty", gpus_per_host=[8], api_key=_AnsibleTaggedInt(12345))])
    msgs = {e.variable: e.message for e in errs}
    assert msgs["llmfleet_deployments[qwq].port"] == "must be int, got str 'eighty'"
    assert "got list [8]" in msgs["llmfleet_deployments[qwq].gpus_per_host"]
    key_msg = msgs["llmfleet_deployments[qwq].api_key"]
    assert key_msg.startswith("must be str, got int <hidden>") and "12345" not in key_msg
    assert "vault-encrypted string or api_key_file" in key_msg
    with pytest.raises(_plan.PlanErrors) as e:
        plan(["qwq-32b"])
    assert "each deployment must be a dict, got str" in e.value.errors[0].message


def test_head_refusal_says_how_to_fix():
    errs = refused([dict(R1, head="single")])
    assert "set head to one of them, or add it to hosts" in errs[0].message


def test_gpu_memory_utilization_refusal_suggests_a_fraction():
    errs = refused([dict(QWQ, gpu_memory_utilization=95)])
    assert variables(errs) == ["llmfleet_deployments[qwq].gpu_memory_utilization"]
    assert "outside (0, 1]: set a fraction such as 0.9" in errs[0].message


def test_api_key_file_checked_through_the_hook_only():
    seen = []

    def check(path):
        seen.append(path)
        return "does not exist on the control node" if path == "/missing" else None

    errs = []
    with pytest.raises(_plan.PlanErrors) as e:
        _plan.build_plan([dict(R1, api_key_file="/missing")], hostvars(), GROUPS, CATALOG, check_file=check)
    errs = e.value.errors
    assert variables(errs) == ["llmfleet_deployments[r1].api_key_file"]
    assert "'/missing' does not exist on the control node: create it" in errs[0].message
    assert _plan.build_plan([R1], hostvars(), GROUPS, CATALOG, check_file=check)["deployments"]["r1"]
    assert seen == ["/missing", "/srv/keys/r1"]
    assert plan([dict(R1, api_key_file="/missing")])["deployments"]["r1"]  # no hook: not checked


def test_misspelt_role_variables():
    known = {"inference_server_restart_policy", "inference_server_state", "gateway_port", "gateway_status"}
    names = ["inference_server_restart_polcy", "inference_server_state", "gateway_prot", "gateway_my_own_thing",
             "_inference_server_restart_polcy", "llmfleet_deployments", "unrelated_restart_polcy"]
    errs = _plan.misspelt_variables(names, known)
    assert variables(errs) == ["gateway_prot", "inference_server_restart_polcy"]
    assert "did you mean inference_server_restart_policy?" in errs[1].message
    assert _plan.misspelt_variables(["gateway_status"], known) == []
