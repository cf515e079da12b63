"""The plan's Ray security (token authentication, Ray's side listeners claimed); docs/reliability.md."""
import pytest

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan

CATALOG = _catalog.load_catalog()


def facts(n=8, ip="10.0.0.11", iface="eth0", mib=143771):
    return {"gpu_count": n, "gpus": [{"index": i, "memory_total_mib": mib} for i in range(n)],
            "interfaces": [{"name": "lo", "ipv4": [{"address": "127.0.0.1", "prefix": 8}]},
                           {"name": iface, "ipv4": [{"address": ip, "prefix": 24}]}]}


HOSTVARS = {"gpu-a": {"ansible_host": "10.0.0.11", "llmfleet_gpu_facts": facts(ip="10.0.0.11")},
            "gpu-b": {"ansible_host": "10.0.0.12", "llmfleet_gpu_facts": facts(ip="10.0.0.12", iface="ens5")},
            "single": {"ansible_host": "192.168.1.5", "llmfleet_gpu_facts": facts(ip="192.168.1.5", mib=81559)}}
GROUPS = {"r1_dual": ["gpu-a", "gpu-b"], "qwq": ["single"]}
R1 = {"name": "r1", "hosts": "r1_dual", "engine": "vllm", "model": "deepseek-r1", "max_model_len": 32768,
      "gpu_memory_utilization": 0.95, "api_key_file": "/srv/keys/r1"}
SG = {"name": "r1-sglang", "hosts": "r1_dual", "engine": "sglang", "model": "deepseek-r1", "max_model_len": 32768,
      "api_key_file": "/srv/keys/r1", "port": 8100, "dist_init_port": 20001}
QWQ = {"name": "qwq", "hosts": "qwq", "model": "qwq-32b", "max_model_len": 32768, "gpu_memory_utilization": 0.95,
       "api_key_file": "/srv/keys/qwq"}


def plan(deps):
    return _plan.build_plan(deps, HOSTVARS, GROUPS, CATALOG)


def test_every_ray_container_gets_token_auth_by_a_mounted_file_only():
    p = plan([R1])["deployments"]["r1"]
    assert p["ray"]["auth"] == "token" and p["ray"]["token_path"] == "/etc/llmfleet/r1/ray_token"
    for h in ("gpu-a", "gpu-b"):
        hp = p["hosts"][h]
        assert hp["env"]["RAY_AUTH_MODE"] == "token"
        assert hp["env"]["RAY_AUTH_TOKEN_PATH"] == "/run/llmfleet/ray_token"
        assert "RAY_AUTH_TOKEN" not in hp["env"]  # the token itself: never in docker inspect
        assert {"source": "/etc/llmfleet/r1/ray_token", "target": "/run/llmfleet/ray_token",
                "read_only": True} in hp["mounts"]


def test_no_ray_token_where_there_is_no_ray():
    out = plan([QWQ])["deployments"]
    out.update(plan([SG])["deployments"])
    for dep in out.values():
        assert dep["ray"] is None
        for hp in dep["hosts"].values():
            assert not [k for k in hp["env"] if k.startswith("RAY_AUTH")]
            assert not [m for m in hp["mounts"] if m["target"] == "/run/llmfleet/ray_token"]


def test_ray_side_listeners_are_pinned_and_claimed():
    p = plan([R1])["deployments"]["r1"]
    head, worker = p["hosts"]["gpu-a"]["command"], p["hosts"]["gpu-b"]["command"]
    head_ray = head[:head.index("--")]
    assert "--ray-client-server-port=10001" in head_ray and "--dashboard-agent-listen-port=52365" in head_ray
    assert "--dashboard-host=127.0.0.1" in head_ray
    assert "--dashboard-agent-listen-port=52365" in worker


@pytest.mark.parametrize("port,host", [(10001, "gpu-a"), (52365, "gpu-a"), (52365, "gpu-b")])
def test_a_port_of_rays_side_listeners_cannot_be_taken_twice(port, host):
    other = {"name": "other", "hosts": [host], "model": "qwq-32b", "max_model_len": 4096, "port": port,
             "gpus_per_host": 1, "api_key_file": "/srv/keys/o"}
    r1 = dict(R1, gpus_per_host=4, tensor_parallel=4, pipeline_parallel=2)
    with pytest.raises(_plan.PlanErrors) as e:
        plan([other, r1])
    key = {10001: "ray_client_server_port", 52365: "ray_dashboard_agent_port"}[port]
    errs = [x for x in e.value.errors if x.variable == "llmfleet_deployments[r1].%s" % key]
    assert errs, e.value.errors
    assert "port %d on host %s is already used by deployment other (port)" % (port, host) in errs[0].message


def test_ray_side_listener_ports_are_deployment_keys():
    p = plan([dict(R1, ray_client_server_port=10101, ray_dashboard_agent_port=52400)])["deployments"]["r1"]
    head, worker = p["hosts"]["gpu-a"]["command"], p["hosts"]["gpu-b"]["command"]
    assert "--ray-client-server-port=10101" in head and "--dashboard-agent-listen-port=52400" in worker
    with pytest.raises(_plan.PlanErrors) as e:
        plan([dict(R1, ray_dashboard_agent_port=70000)])
    assert [x.variable for x in e.value.errors] == ["llmfleet_deployments[r1].ray_dashboard_agent_port"]


def test_two_ray_clusters_on_the_same_hosts_need_their_own_side_ports():
    a = dict(R1, name="a", gpus_per_host=4, tensor_parallel=4, pipeline_parallel=2, port=8000, ray_port=6379,
             ray_dashboard_port=8265)
    b = dict(R1, name="b", gpus_per_host=4, tensor_parallel=4, pipeline_parallel=2, port=8001, ray_port=6380,
             ray_dashboard_port=8266)
    with pytest.raises(_plan.PlanErrors) as e:
        plan([a, b])
    assert sorted({x.variable for x in e.value.errors}) == ["llmfleet_deployments[b].ray_client_server_port",
                                                           "llmfleet_deployments[b].ray_dashboard_agent_port"]
    both = plan([a, dict(b, ray_client_server_port=10002, ray_dashboard_agent_port=52366)])["deployments"]
    assert "--dashboard-agent-listen-port=52366" in both["b"]["hosts"]["gpu-b"]["command"]


def test_every_engine_container_drops_all_capabilities_and_privilege_gain():
    deps = plan([R1])["deployments"]
    deps.update(plan([SG])["deployments"])
    deps.update(plan([QWQ])["deployments"])
    hps = [hp for dep in deps.values() for hp in dep["hosts"].values()]
    assert len(hps) == 5
    for hp in hps:
        assert hp["cap_drop"] == ["ALL"] and hp["security_opts"] == ["no-new-privileges:true"]
    hps[0]["cap_drop"].append("x")  # each host's spec is its own
    assert hps[1]["cap_drop"] == ["ALL"]
