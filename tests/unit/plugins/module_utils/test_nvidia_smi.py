# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import filecmp
import importlib.util
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_fixture_runner import FIXTURES, REPO, fake_smi  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.module_utils import _nvidia_smi as ns  # noqa: E402


def _read(*parts):
    with open(os.path.join(FIXTURES, *parts)) as f:
        return f.read()


# ------------------------------------------------------------------ fixtures themselves
def test_real_fixtures_are_byte_identical_to_shared_captures():
    shared = "/work/shared/fixtures/gpu"
    if not os.path.isdir(shared):
        pytest.skip("shared captures not on this machine")
    for d in ("h100x1", "h200x2"):
        names = sorted(os.listdir(os.path.join(shared, d)))
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(shared, d), os.path.join(FIXTURES, d), names,
                                                   shallow=False)
        assert mismatch == [] and errors == [], (d, mismatch, errors)
    assert filecmp.cmp(os.path.join(shared, "README.md"), os.path.join(FIXTURES, "README-real.md"), shallow=False)


def test_synthetic_variants_equal_a_fresh_build(tmp_path):
    spec = importlib.util.spec_from_file_location("make_variants", os.path.join(FIXTURES, "make_variants.py"))
    mv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mv)
    for variant, src in mv.VARIANTS.items():
        mv.build(variant, src, str(tmp_path))
        cmp = filecmp.dircmp(str(tmp_path / variant), os.path.join(FIXTURES, variant))
        assert cmp.diff_files == [] and cmp.left_only == [] and cmp.right_only == [], variant


# ------------------------------------------------------------------ XML parsing, real captures
def test_parse_xml_h100x1_real():
    f = ns.parse_xml(_read("h100x1", "nvidia-smi-q.xml"))
    assert f["driver_version"] == "580.159.04"
    assert f["cuda_version"] == "13.0"
    assert len(f["gpus"]) == 1
    g = f["gpus"][0]
    assert g["name"] == "NVIDIA H100 80GB HBM3"
    assert g["architecture"] == "Hopper"
    assert g["uuid"] == "GPU-1118f12b-3967-96bc-3026-a6077570697e"
    assert g["pci_bus_id"] == "00000000:00:06.0"
    assert (g["memory_total_mib"], g["memory_used_mib"], g["memory_free_mib"]) == (81559, 0, 81079)
    assert g["persistence_mode"] == "Enabled"
    assert g["mig_mode"] == "Disabled"
    assert g["ecc_mode"] == "Enabled"
    assert g["fabric_state"] is None  # N/A on a lone H100
    assert f["processes"] == []


def test_parse_xml_h200x2_real():
    f = ns.parse_xml(_read("h200x2", "nvidia-smi-q.xml"))
    assert [g["memory_total_mib"] for g in f["gpus"]] == [143771, 143771]
    assert [g["pci_bus_id"] for g in f["gpus"]] == ["00000000:00:06.0", "00000000:00:07.0"]
    assert [g["fabric_state"] for g in f["gpus"]] == ["Completed", "Completed"]
    assert f["gpus"][1]["uuid"] == "GPU-f85b4c07-a2c5-8704-8f04-a9f34d266587"


def test_parse_xml_processes():
    xml = _read("h100x1", "nvidia-smi-q.xml").replace(
        "<processes>\n\t\t</processes>",
        "<processes>\n\t\t\t<process_info>\n\t\t\t\t<gpu_instance_id>N/A</gpu_instance_id>\n"
        "\t\t\t\t<compute_instance_id>N/A</compute_instance_id>\n\t\t\t\t<pid>4242</pid>\n"
        "\t\t\t\t<type>C</type>\n\t\t\t\t<process_name>python3</process_name>\n"
        "\t\t\t\t<used_memory>74112 MiB</used_memory>\n\t\t\t</process_info>\n\t\t</processes>")
    f = ns.parse_xml(xml)
    assert f["processes"] == [{"gpu_index": 0, "gpu_uuid": "GPU-1118f12b-3967-96bc-3026-a6077570697e",
                               "pid": 4242, "type": "C", "process_name": "python3", "used_memory_mib": 74112}]


def test_parse_xml_rejects_garbage():
    with pytest.raises(ns.NvidiaSmiError) as e:
        ns.parse_xml("<nvidia_smi_log><gpu>")
    assert e.value.kind == "parse"


# ------------------------------------------------------------------ CSV, version, nvlink, topo
def test_parse_query_csv_from_fake_matches_xml():
    run = fake_smi("h200x8")
    rc, out, dummy = run(["nvidia-smi", "--query-gpu=" + ",".join(ns.CSV_QUERY_FIELDS), "--format=csv,noheader,nounits"])
    assert rc == 0
    c = ns.parse_query_csv(out)
    x = ns.parse_xml(_read("h200x8", "nvidia-smi-q.xml"))
    keys = ["index", "uuid", "name", "pci_bus_id", "memory_total_mib", "memory_used_mib", "memory_free_mib",
            "persistence_mode", "mig_mode", "ecc_mode", "architecture"]
    assert [{k: g[k] for k in keys} for g in c["gpus"]] == [{k: g[k] for k in keys} for g in x["gpus"]]
    assert c["driver_version"] == "580.159.04"


def test_parse_query_csv_wrong_columns():
    with pytest.raises(ns.NvidiaSmiError):
        ns.parse_query_csv("0, GPU-x, NVIDIA H100\n")


def test_parse_version_both_forms():
    assert ns.parse_version(_read("h100x1", "topo.txt")) == ("580.159.04", "13.0")
    assert ns.parse_version(_read("h100x1", "nvidia-smi.txt")) == ("580.159.04", "13.0")


def test_parse_nvlink_status_real_and_inactive():
    run = fake_smi("h200x2")
    s = ns.parse_nvlink_status(run(["nvidia-smi", "nvlink", "-s"])[1])
    assert sorted(s) == [0, 1]
    assert s[0]["active"] == 18 and s[0]["link_gbps"][0] == 26.562
    s = ns.parse_nvlink_status("GPU 0: NVIDIA A100 (UUID: GPU-x)\n\t Link 0: 25 GB/s\n\t Link 1: <inactive>\n")
    assert s[0] == {"active": 1, "total": 2, "link_gbps": [25.0]}
    assert ns.parse_nvlink_status("") == {}


def test_parse_topo_real_and_8gpu():
    t = ns.parse_topo_matrix(fake_smi("h200x2")(["nvidia-smi", "topo", "-m"])[1])
    assert t["matrix"]["GPU0"] == {"GPU0": "X", "GPU1": "NV18"}
    assert ns.nvlink_pairs(t) == (1, True)
    t = ns.parse_topo_matrix(fake_smi("h100x8")(["nvidia-smi", "topo", "-m"])[1])
    assert ns.nvlink_pairs(t) == (28, True)
    assert t["nics"] == {"NIC0": "mlx5_0", "NIC1": "mlx5_1", "NIC2": "mlx5_2", "NIC3": "mlx5_3"}
    assert t["matrix"]["GPU0"]["NIC0"] == "PXB"
    t = ns.parse_topo_matrix(fake_smi("h100x1")(["nvidia-smi", "topo", "-m"])[1])
    assert ns.nvlink_pairs(t) == (0, False)


def test_driver_failure_markers():
    rc, out, dummy = fake_smi("h100x1", env={"LLMFLEET_GPU_FAKE_NO_DRIVER": "1"})(["nvidia-smi", "-q", "-x"])
    assert rc == 9 and ns.is_driver_failure(out)
    assert not ns.is_driver_failure("Segmentation fault")


# ------------------------------------------------------------------ network and RDMA
def test_rdma_devices_fake_sysfs_and_missing(tmp_path):
    d = ns.rdma_devices(os.path.join(FIXTURES, "h200x8", "sysfs"))
    assert [x["name"] for x in d] == ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
    assert d[0]["ports"] == [{"port": 1, "state": "ACTIVE", "link_layer": "InfiniBand", "rate": "400 Gb/sec (4X NDR)"}]
    assert ns.rdma_devices(str(tmp_path)) == []


IP_JSON = """[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"operstate":"UNKNOWN","addr_info":[
{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo"},
{"family":"inet6","local":"::1","prefixlen":128}]},
{"ifindex":2,"ifname":"eth0","operstate":"UP","addr_info":[
{"family":"inet","local":"10.0.0.11","prefixlen":24},{"family":"inet","local":"10.0.0.99","prefixlen":32}]},
{"ifindex":3,"ifname":"ib0","operstate":"DOWN","addr_info":[]}]"""
IP_O = """1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.0.0.11/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever preferred_lft forever
5: bond0.100@bond0    inet 192.168.7.2/22 brd 192.168.7.255 scope global bond0.100\\ valid_lft forever
"""


def test_parse_ip_json_and_oneline():
    j = ns.parse_ip_json(IP_JSON)
    assert j[1] == {"name": "eth0", "state": "UP",
                    "ipv4": [{"address": "10.0.0.11", "prefix": 24}, {"address": "10.0.0.99", "prefix": 32}]}
    assert j[2]["ipv4"] == []
    o = ns.parse_ip_oneline(IP_O)
    assert [i["name"] for i in o] == ["lo", "eth0", "bond0.100"]
    assert o[2]["ipv4"] == [{"address": "192.168.7.2", "prefix": 22}]


def test_collect_interfaces_fallback_chain():
    calls = []

    def run(argv):
        calls.append(argv)
        if argv[1] == "-j":
            return 1, "", 'Option "-j" is unknown, try "ip -help".'
        return 0, IP_O, ""

    ifs, src = ns.collect_interfaces(run, "/sbin/ip")
    assert src == "ip -o -4 addr" and ifs[1]["ipv4"][0]["address"] == "10.0.0.11"
    assert [c[1] for c in calls] == ["-j", "-o"]


def test_interfaces_from_ioctl_on_this_machine():
    ifs = ns.interfaces_from_ioctl("/sys")
    lo = [i for i in ifs if i["name"] == "lo"]
    assert lo and lo[0]["ipv4"] == [{"address": "127.0.0.1", "prefix": 8}]


# ------------------------------------------------------------------ collect()
def test_collect_h200x8_synthetic_everything():
    f = ns.collect(fake_smi("h200x8"), "/usr/bin/nvidia-smi", sysfs_root=os.path.join(FIXTURES, "h200x8", "sysfs"),
                   ip_path=None)
    assert f["source"] == "xml" and f["driver_loaded"] is True
    assert f["gpu_count"] == 8 and f["product_name"] == "NVIDIA H200" and f["architecture"] == "Hopper"
    assert f["memory_total_mib"] == 8 * 143771
    assert all(g["nvlink_links_active"] == 18 for g in f["gpus"])
    assert f["nvlink"] == {"present": True, "link_count": 144, "gpu_pairs": 28, "all_pairs": True}
    assert f["nvswitch"] is True
    assert f["fabric"] == {"state": "Completed", "status": "Success", "ready": True}
    assert f["rdma_devices"] == ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
    assert f["interfaces_source"] == "ioctl"
    assert len(set(g["uuid"] for g in f["gpus"])) == 8
    assert f["warnings"] == []


def test_collect_h100x1_real_no_nvlink_no_nvswitch(tmp_path):
    f = ns.collect(fake_smi("h100x1"), "nvidia-smi", sysfs_root=str(tmp_path), ip_path=None)
    assert f["gpu_count"] == 1 and f["gpus"][0]["nvlink_links_active"] == 0
    assert f["nvlink"]["present"] is False and f["nvswitch"] is False
    assert f["fabric"] == {"state": None, "status": None, "ready": None}
    assert f["rdma_devices"] == [] and f["interfaces"] == []


def test_collect_h200x2_real():
    f = ns.collect(fake_smi("h200x2"), "nvidia-smi", sysfs_root="/nonexistent")
    assert f["gpu_count"] == 2 and f["nvlink"]["link_count"] == 36 and f["nvlink"]["all_pairs"]
    assert f["nvswitch"] is True  # fabric state reported: GPUs of an HGX board passed through


def test_collect_csv_fallback_when_xml_fails():
    calls = []
    run = fake_smi("h100x8", overrides={("-q", "-x"): (4, "", "Unable to determine the device handle")}, calls=calls)
    f = ns.collect(run, "nvidia-smi", sysfs_root="/nonexistent")
    assert f["source"] == "csv" and f["gpu_count"] == 8
    assert f["cuda_version"] == "13.0" and f["driver_version"] == "580.159.04"
    assert f["architecture"] == "Hopper" and f["gpus"][3]["memory_total_mib"] == 81559
    assert f["nvswitch"] is True  # 8 NVLinked SXM GPUs, no fabric state in CSV
    assert "falling back" in f["warnings"][0]
    assert ["nvidia-smi", "--version"] in calls


def test_collect_csv_fallback_on_unparsable_xml():
    run = fake_smi("h200x2", overrides={("-q", "-x"): (0, "<nvidia_smi_log><gpu>", "")})
    f = ns.collect(run, "nvidia-smi", sysfs_root="/nonexistent")
    assert f["source"] == "csv" and f["gpu_count"] == 2


def test_collect_driver_not_loaded():
    run = fake_smi("h100x1", env={"LLMFLEET_GPU_FAKE_NO_DRIVER": "1"})
    with pytest.raises(ns.NvidiaSmiError) as e:
        ns.collect(run, "/usr/bin/nvidia-smi")
    assert e.value.kind == "driver"
    assert "driver is not loaded" in e.value.msg and "couldn't communicate" in e.value.msg


def test_collect_both_queries_fail():
    run = fake_smi("h100x1", overrides={
        ("-q", "-x"): (255, "", "Unknown Error"),
        ("--query-gpu=" + ",".join(ns.CSV_QUERY_FIELDS), "--format=csv,noheader,nounits"): (255, "", "Unknown Error"),
    })
    with pytest.raises(ns.NvidiaSmiError) as e:
        ns.collect(run, "nvidia-smi")
    assert e.value.kind == "failed" and "Unknown Error" in e.value.msg


def test_empty_facts_shape_matches_collect():
    full = ns.collect(fake_smi("h100x1"), "nvidia-smi", sysfs_root="/nonexistent")
    empty = ns.empty_facts("no driver", "/nonexistent")
    assert set(full) | {"reason"} == set(empty)
    assert empty["gpu_count"] == 0 and empty["driver_loaded"] is False


def test_fake_nvidia_smi_as_a_real_process():
    script = os.path.join(REPO, "tests", "lab", "fake_nvidia_smi.py")
    env = dict(os.environ, LLMFLEET_GPU_FIXTURE_DIR=os.path.join(FIXTURES, "h100x8"))
    p = subprocess.run([sys.executable, script, "-L"], env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 8
    p = subprocess.run([sys.executable, script, "--frobnicate"], env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 1 and "Invalid combination of input arguments" in p.stderr
    env.pop("LLMFLEET_GPU_FIXTURE_DIR")
    p = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 9 and "couldn't communicate with the NVIDIA driver" in p.stdout


def test_fake_reproduces_real_csv_with_units_from_xml():
    rc, out, dummy = fake_smi("h100x1")(["nvidia-smi", "--query-gpu=memory.total,pstate,clocks.max.mem",
                                         "--format=csv"])
    assert rc == 0
    assert out == "memory.total [MiB], pstate, clocks.max.mem [MHz]\n81559 MiB, P0, 2619 MHz\n"
    rc, out, dummy = fake_smi("h100x1")(["nvidia-smi", "--query-gpu=no.such.field", "--format=csv"])
    assert rc == 2


# ------------------------------------------------------------------ memory as CUDA sees it (real H100, 2026-12-06)
def test_usable_memory_is_what_cuda_reports_on_a_real_h100():
    """h100x1-cuda/ was captured on a lent H100 by tests/gpu/run_all.sh: nvidia-smi says 81559 MiB total
    and 480 MiB reserved; torch.cuda (mem_get_info, the total vLLM multiplies by
    --gpu-memory-utilization) says 81079 MiB. gpu_facts' memory_usable_mib must be the latter, from
    the XML and from the CSV fallback (which has no reserved column: total - used - free)."""
    import json
    with open(os.path.join(FIXTURES, "h100x1-cuda", "torch_facts.json")) as f:
        cuda = json.load(f)["torch"]["gpus"][0]
    cuda_mib = cuda["mem_get_info_total_bytes"] // (1024 * 1024)
    x = ns.parse_xml(_read("h100x1-cuda", "nvidia-smi-q.xml"))["gpus"][0]
    c = ns.parse_query_csv(_read("h100x1-cuda", "query-gpu-module.csv"))["gpus"][0]
    assert x["memory_total_mib"] == c["memory_total_mib"] == 81559
    assert x["memory_reserved_mib"] == c["memory_reserved_mib"] == 480
    assert x["memory_usable_mib"] == c["memory_usable_mib"] == cuda_mib == 81079


def test_usable_memory_without_reserved_figures_is_the_total():
    g = {"memory_total_mib": 1000, "memory_used_mib": None, "memory_free_mib": 10}
    ns._add_usable(g)
    assert g["memory_usable_mib"] == 1000 and g.get("memory_reserved_mib") is None
    g = {"memory_total_mib": 1000, "memory_used_mib": 600, "memory_free_mib": 500}   # inconsistent
    ns._add_usable(g)
    assert g["memory_usable_mib"] == 1000
