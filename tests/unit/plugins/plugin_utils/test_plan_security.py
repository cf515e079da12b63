"""The plan's Ray security (token authentication, Ray's side listeners claimed); docs/reliability.md."""

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


def test_ray_side_listeners_are_pinned_at_the_ports_the_planner_claims():
    p = plan([R1])["deployments"]["r1"]
    head, worker = p["hosts"]["gpu-a"], p["hosts"]["gpu-b"]
    head_ray = head["entrypoint"] + head["command"]
    assert "--ray-client-server-port=10001" in head_ray and "--dashboard-agent-listen-port=52365" in head_ray
    assert "--dashboard-host=127.0.0.1" in head_ray
    assert "--dashboard-agent-listen-port=52365" in worker["command"]
    claims = {h: {c["port"] for c in hp["port_claims"]} for h, hp in p["hosts"].items()}
    assert {10001, 52365} <= claims["gpu-a"] and 52365 in claims["gpu-b"]


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
