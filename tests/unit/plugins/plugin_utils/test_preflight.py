"""Unit tests for _preflight: views, parsers, every mismatch type, table rendering."""
import copy
import json

import pytest

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan, _preflight

CATALOG = _catalog.load_catalog()
GIB = 1 << 30


def facts(product="NVIDIA H200", mib=143771, n=8, driver="580.159.04", cuda="13.0", ip="10.0.0.11", iface="eth1"):
    return {"gpu_count": n, "product_name": product, "driver_version": driver, "cuda_version": cuda,
            "gpus": [{"index": i, "memory_total_mib": mib} for i in range(n)],
            "interfaces": [{"name": "lo", "ipv4": [{"address": "127.0.0.1", "prefix": 8}]},
                           {"name": "eth0", "ipv4": [{"address": "192.168.0.%s" % ip.rsplit(".", 1)[1], "prefix": 24}]},
                           {"name": iface, "ipv4": [{"address": ip, "prefix": 24}]}]}


HOSTVARS = {"gpu-a": {"ansible_host": "192.168.0.11", "llmfleet_private_address": "10.0.0.11"},
            "gpu-b": {"ansible_host": "192.168.0.12", "llmfleet_private_address": "10.0.0.12"},
            "one": {"ansible_host": "192.168.0.13", "llmfleet_private_address": "10.0.0.13"}}
GROUPS = {"dual": ["gpu-a", "gpu-b"], "single": ["one"]}
DEPS = [{"name": "r1", "hosts": "dual", "model": "deepseek-r1", "model_path": "/srv/models/R1",
         "image": "vllm/vllm-openai:v0.32.0"},
        {"name": "q", "hosts": "single", "model": "qwq-32b", "model_path": "/srv/models/QwQ", "port": 8001}]
R1_BYTES = 688586727753


def df(avail):
    return "Filesystem 1-blocks Used Available Capacity Mounted on\n/dev/nvme0n1p1 %d 1000 %d 1%% /srv\n" % (
        avail + 1000, avail)


def host(f, avail=2000 * GIB, listening=(22,), ref="sha256:aaaa", complete=False, index_size=None, skew=0.0,
         containers=()):
    return {"gpu_facts": f, "images": {"vllm/vllm-openai:v0.32.0": ref},
            "disks": {"/srv/models/R1": {"df": _preflight.parse_df(df(avail)), "complete": complete,
                                         "index_size": index_size},
                      "/srv/models/QwQ": {"df": _preflight.parse_df(df(avail)), "complete": False, "index_size": None}},
            "listening": list(listening), "containers": list(containers),
            "clock": _preflight.parse_clock("1000.0 %f" % (1000.2 + skew), 1000.4)}


def good():
    return {"gpu-a": host(facts()), "gpu-b": host(facts(ip="10.0.0.12", iface="ens5")),
            "one": host(facts(ip="10.0.0.13"))}


def plan_of(deps, hostvars=None):
    """The plan the prelude would make (preflight reads only the plan)."""
    hv = copy.deepcopy(hostvars or HOSTVARS)
    hv["gpu-a"]["llmfleet_gpu_facts"] = facts()
    hv["gpu-b"]["llmfleet_gpu_facts"] = facts(ip="10.0.0.12", iface="ens5")
    hv["one"]["llmfleet_gpu_facts"] = facts(ip="10.0.0.13")
    deps = [dict(d, api_key_file="/k", max_model_len=8192) for d in copy.deepcopy(deps)]
    return _plan.build_plan(deps, hv, GROUPS, CATALOG)


def views():
    return _preflight.views(plan_of(DEPS))


def run(data, **kw):
    return _preflight.check(views(), data, **kw)


def test_views_from_the_plan():
    v = {x["name"]: x for x in views()}
    assert [x["name"] for x in views()] == ["r1", "q"]  # the plan's order
    assert v["r1"]["hosts"] == ["gpu-a", "gpu-b"]
    assert v["r1"]["ports"] == {"gpu-a": [(8000, "port"), (6379, "ray_port"), (8265, "ray_dashboard_port"),
                                          (10001, "Ray client server (fixed 10001)"),
                                          (52365, "Ray dashboard agent (fixed 52365)")],
                                "gpu-b": [(52365, "Ray dashboard agent (fixed 52365)")]}
    assert v["r1"]["weights_bytes"] == R1_BYTES
    assert v["r1"]["addresses"]["gpu-a"] == "10.0.0.11"
    assert v["r1"]["interfaces_planned"] == {"gpu-a": "eth1", "gpu-b": "ens5"}
    assert v["q"]["ports"] == {"one": [(8001, "port")]}
    t = _preflight.targets(list(v.values()))
    assert t["hosts"]["gpu-a"] == {"images": ["vllm/vllm-openai:v0.32.0"], "paths": ["/srv/models/R1"],
                                   "ports": [8000, 6379, 8265, 10001, 52365]}
    assert t["hosts"]["one"]["images"] == ["vllm/vllm-openai:v0.32.0"]  # the planner's default image of vllm 0.32.0


def test_views_sglang_and_head():
    deps = [{"name": "s", "hosts": ["gpu-a", "gpu-b"], "head": "gpu-b", "engine": "sglang", "model": "deepseek-r1",
             "dist_init_port": 21000}]
    (v,) = _preflight.views(plan_of(deps))
    assert v["hosts"] == ["gpu-b", "gpu-a"]
    assert v["ports"] == {"gpu-b": [(8000, "port"), (21000, "dist_init_port")], "gpu-a": [(8000, "port")]}
    assert v["model_path"] == "/data/models/DeepSeek-R1"
    assert v["image"].startswith("lmsysorg/sglang:v")


def test_views_read_the_plan_and_nothing_else():
    # whatever the plan says is what preflight checks: no second copy of the planner's decisions
    plan = plan_of(DEPS)
    hp = plan["deployments"]["q"]["hosts"]["one"]
    hp["port_claims"] = [{"port": 9999, "key": "port"}]
    plan["deployments"]["q"].update(image="registry.example/engine:pinned", model_path="/elsewhere")
    (dummy, q) = _preflight.views(plan)
    assert (q["ports"], q["image"], q["model_path"]) == ({"one": [(9999, "port")]}, "registry.example/engine:pinned",
                                                         "/elsewhere")


@pytest.mark.parametrize("bad", [None, [], {}, {"deployments": []}, {"deployments": {"x": {"name": "x"}}}])
def test_views_refuse_what_is_not_a_plan(bad):
    with pytest.raises(ValueError) as e:
        _preflight.views(bad)
    assert str(e.value).startswith("plan: ") and "prelude" in str(e.value)


def test_all_good_passes():
    r = run(good())
    assert r["ok"], r["message"]
    assert r["errors"] == []
    assert r["message"] == "preflight passed for r1, q"
    row = r["rows"]["r1"][1]
    assert row["private interface"] == "ens5 10.0.0.12/24"
    assert row["ports"] == "52365 free"
    assert r["rows"]["r1"][0]["ports"] == "8000,6379,8265,10001,52365 free"
    assert r["rows"]["r1"][0]["clock skew s"] == "-0.0" or r["rows"]["r1"][0]["clock skew s"] == "+0.0"


def test_gpu_model_and_memory_mismatch_table():
    data = good()
    data["gpu-b"]["gpu_facts"] = facts(product="NVIDIA H100 80GB HBM3", mib=81559, ip="10.0.0.12")
    r = run(data)
    assert not r["ok"]
    assert {(e["check"], e["variable"]) for e in r["errors"]} == {
        ("GPU model", "llmfleet_deployments[r1].hosts"), ("GPU MiB", "llmfleet_deployments[r1].hosts")}
    t = r["tables"]["r1"]
    lines = t.splitlines()
    header = lines[1]
    assert "GPU model !" in header and "GPU MiB !" in header
    assert "GPUs !" not in header and "driver !" not in header
    row_b = [ln for ln in lines if ln.startswith("| gpu-b")][0]
    row_a = [ln for ln in lines if ln.startswith("| gpu-a")][0]
    assert "NVIDIA H100 80GB HBM3 !" in row_b and "81559 !" in row_b
    assert "NVIDIA H200 " in row_a and " !" not in row_a
    assert "fix:" in t and "vLLM #7815" in t
    assert "preflight failed for r1:" in r["message"] and "q" not in r["message"].split(":", 1)[0].split("for ")[1]
    # every row has the same number of cells as the header
    assert len({ln.count("|") for ln in lines[1:4]}) == 1


def test_gpu_count_driver_cuda_mismatch():
    data = good()
    data["gpu-b"]["gpu_facts"] = facts(n=4, driver="550.54.15", cuda="12.4", ip="10.0.0.12")
    r = run(data)
    assert {e["check"] for e in r["errors"]} == {"GPUs", "driver", "CUDA"}
    assert "gpu_host_driver_branch" in r["message"] and "vLLM #13388" in r["message"]


def test_missing_facts_on_one_host_is_a_mismatch():
    data = good()
    data["gpu-b"]["gpu_facts"] = None
    r = run(data, checks=["gpu"])
    assert {e["check"] for e in r["errors"]} == {"GPUs", "GPU model", "GPU MiB"}


def test_image_digest_mismatch_and_not_pulled():
    data = good()
    data["gpu-b"]["images"]["vllm/vllm-openai:v0.32.0"] = "sha256:bbbb"
    r = run(data)
    assert [e["check"] for e in r["errors"]] == ["image"]
    assert r["errors"][0]["variable"] == "llmfleet_deployments[r1].image"
    assert "gpustack #1640" in r["message"]
    assert "sha256:bbbb !" in r["tables"]["r1"]
    data["gpu-b"]["images"]["vllm/vllm-openai:v0.32.0"] = None
    r = run(data)
    assert r["ok"], r["message"]
    assert r["rows"]["r1"][1]["image"] == "not pulled"


def test_interface_missing_in_head_subnet():
    data = good()
    data["gpu-b"]["gpu_facts"] = facts(ip="10.9.0.12")
    r = run(data)
    assert [(e["check"], e["host"]) for e in r["errors"]] == [("interface", "gpu-b")]
    assert "none in subnet of 10.0.0.11 !" in r["tables"]["r1"]
    assert "hostvars[gpu-b].llmfleet_private_address" == r["errors"][0]["variable"]


def test_disk_shortfall_names_host_path_and_shortfall():
    data = good()
    data["gpu-a"]["disks"]["/srv/models/R1"]["df"] = _preflight.parse_df(df(700 * GIB))
    r = run(data)
    (e,) = r["errors"]
    need = int(R1_BYTES * 1.1)
    assert e["check"] == "disk" and e["host"] == "gpu-a" and e["variable"] == "llmfleet_deployments[r1].model_path"
    assert "/srv/models/R1" in e["message"] and str(need - 700 * GIB) in e["message"]
    assert "disk /srv/models/R1 !" in r["tables"]["r1"]


def test_disk_published_or_index_size():
    data = good()
    data["gpu-a"]["disks"]["/srv/models/R1"] = {"df": _preflight.parse_df(df(1 * GIB)), "complete": True,
                                                "index_size": None}
    data["gpu-b"]["disks"]["/srv/models/R1"] = {"df": _preflight.parse_df(df(1 * GIB)), "complete": False,
                                                "index_size": 1304}
    r = run(data)
    assert r["ok"], r["message"]
    assert r["rows"]["r1"][0]["disk /srv/models/R1"] == "published"
    data["gpu-b"]["disks"]["/srv/models/R1"]["index_size"] = 2 * GIB
    assert [e["host"] for e in run(data)["errors"]] == ["gpu-b"]
    assert run(data, disk_margin=0.0, checks=["disk"])["errors"][0]["check"] == "disk"


def test_port_in_use_and_own_container():
    data = good()
    data["one"]["listening"] = [22, 8001]
    r = run(data)
    (e,) = r["errors"]
    assert (e["check"], e["host"], e["variable"]) == ("ports", "one", "llmfleet_deployments[q].port")
    assert "port 8001" in e["message"] and "in use: 8001 !" in r["tables"]["q"]
    data["one"]["containers"] = ["q"]
    r = run(data)
    assert r["ok"], r["message"]
    assert r["rows"]["q"][0]["ports"] == "8001 (own containers)"
    data["one"]["containers"] = ["other"]
    assert not run(data)["ok"]
    data["gpu-a"]["listening"] = [6379]
    assert [e["variable"] for e in run(data, checks=["ports"])["errors"]] == [
        "llmfleet_deployments[r1].ray_port", "llmfleet_deployments[q].port"]


def test_clock_skew():
    data = good()
    data["gpu-b"]["clock"] = _preflight.parse_clock("1000.0 1003.5", 1000.4)
    r = run(data)
    (e,) = r["errors"]
    assert (e["check"], e["host"], e["variable"]) == ("clock", "gpu-b", "llmfleet_preflight_clock_tolerance_s")
    assert "+3.3" in e["message"]
    assert run(data, clock_tolerance_s=5)["ok"]
    # the offset is only known within the window [before, after]: 2.3 s with a 0.4 s window may be 1.9 s
    data["gpu-b"]["clock"] = _preflight.parse_clock("1000.0 1002.3", 1000.4)
    assert run(data)["ok"]
    data["gpu-b"]["clock"] = _preflight.parse_clock("1000.0 997.0", 1000.4)
    assert run(data)["errors"][0]["check"] == "clock"


def test_unknown_check_refused():
    with pytest.raises(ValueError) as e:
        run(good(), checks=["gpu", "dsik"])
    assert "dsik" in str(e.value)


def test_checks_subset_skips_others():
    data = good()
    data["gpu-b"]["gpu_facts"] = facts(product="NVIDIA H100 80GB HBM3", mib=81559, ip="10.0.0.12")
    data["one"]["listening"] = [8001]
    r = run(data, checks=["ports"])
    assert [e["check"] for e in r["errors"]] == ["ports"]


def test_parse_df():
    out = _preflight.parse_df("Filesystem     1-blocks      Used   Available Capacity Mounted on\n"
                              "overlay    105089261568 4096 99000000000      1% /\n")
    assert out == {"filesystem": "overlay", "size": 105089261568, "used": 4096, "avail": 99000000000, "mount": "/"}
    assert _preflight.parse_df("") is None
    assert _preflight.parse_df("df: /x: No such file or directory") is None


def test_parse_listening_ss_and_proc():
    ss = ("LISTEN 0      4096         0.0.0.0:8000      0.0.0.0:*\n"
          "LISTEN 0      128             [::]:22           [::]:*\n"
          "LISTEN 0      511   127.0.0.1%lo:6379    0.0.0.0:*\n")
    assert _preflight.parse_listening(ss) == [22, 6379, 8000]
    proc = ("  sl  local_address rem_address   st tx_queue rx_queue\n"
            "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
            "   1: 0B00A8C0:0016 0C00A8C0:D431 01 00000000:00000000 00:00000000 00000000\n")
    assert _preflight.parse_listening(proc) == [8000]
    assert _preflight.parse_listening("") == []


def test_parse_clock_state_index():
    c = _preflight.parse_clock("100.0 101.0", 100.5)
    assert c["low"] == 0.5 and c["high"] == 1.0 and c["skew"] == 0.75
    assert _preflight.parse_clock("garbage") is None
    assert _preflight.parse_state(json.dumps({"version": 1, "complete": True}))
    assert not _preflight.parse_state(json.dumps({"complete": False}))
    assert not _preflight.parse_state("not json")
    assert _preflight.parse_index(json.dumps({"metadata": {"total_size": "1304"}, "weight_map": {}})) == 1304
    assert _preflight.parse_index("{}") is None


def test_image_ref():
    info = [{"Id": "sha256:img", "RepoDigests": ["vllm/vllm-openai@sha256:dig"]}]
    assert _preflight.image_ref(info, "vllm/vllm-openai:v0.32.0") == "sha256:dig"
    assert _preflight.image_ref([{"Id": "sha256:img", "RepoDigests": []}], "llmfleet-lab/engine-sim:latest") == \
        "sha256:img"
    assert _preflight.image_ref([], "x:1") is None
    assert _preflight.image_ref([{"Id": "sha256:i", "RepoDigests": ["other/repo@sha256:o",
                                                                    "reg.io:5000/a/b@sha256:r"]}],
                                "reg.io:5000/a/b:tag") == "sha256:r"


def test_host_data_from_raw():
    import base64

    def b64(obj):
        return base64.b64encode(json.dumps(obj).encode()).decode()
    raw = {
        "gpu_facts": facts(),
        "images": {"results": [{"item": "a:1", "images": [{"Id": "sha256:x", "RepoDigests": []}]},
                               {"item": "b:1", "images": []},
                               {"item": "c:1", "failed": True, "msg": "requests missing"}]},
        "df": {"results": [{"item": "/srv/m", "rc": 0, "stdout": "checked=/srv\n" + df(5 * GIB)}]},
        "state": {"results": [{"item": "/srv/m", "content": b64({"complete": True})}]},
        "index": {"results": [{"item": "/srv/m", "failed": True, "msg": "file not found"}]},
        "listening": {"rc": 0, "stdout": "LISTEN 0 4096 0.0.0.0:8000 0.0.0.0:*\n"},
        "containers": {"rc": 0, "stdout": "r1\nr1\n"},
        "clock": {"rc": 0, "stdout": "100.0 100.5"}, "clock_after": "100.2",
    }
    hd = _preflight.host_data_from_raw(raw)
    assert hd["images"] == {"a:1": "sha256:x", "b:1": None, "c:1": None}
    assert "image c:1" in hd["errors"]
    assert hd["disks"]["/srv/m"]["checked"] == "/srv" and hd["disks"]["/srv/m"]["df"]["avail"] == 5 * GIB
    assert hd["disks"]["/srv/m"]["complete"] is True and hd["disks"]["/srv/m"]["index_size"] is None
    assert hd["listening"] == [8000] and hd["containers"] == ["r1", "r1"]
    assert round(hd["clock"]["skew"], 6) == 0.4
    empty = _preflight.host_data_from_raw({"listening": {"rc": 127, "stderr": "ss: not found"}})
    assert empty["listening"] is None and empty["clock"] is None and empty["gpu_facts"] is None
    assert "listening ports" in empty["errors"]
