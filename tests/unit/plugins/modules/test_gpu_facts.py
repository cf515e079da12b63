# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import os
import sys

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from module_harness import ExitJson, FailJson, patch_exits  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))
from gpu_fixture_runner import FIXTURES, fake_smi  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.modules import gpu_facts  # noqa: E402


@pytest.fixture
def module_env(monkeypatch):
    patch_exits(monkeypatch)

    def setup(args, fixture="h200x8", env=None, overrides=None, bins=None):
        args = dict(args)
        args.setdefault("_ansible_check_mode", False)
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
        bins = {"nvidia-smi": "/usr/bin/nvidia-smi"} if bins is None else bins
        monkeypatch.setattr(basic.AnsibleModule, "get_bin_path",
                            lambda self, name, required=False, opt_dirs=None: bins.get(name))
        runner = fake_smi(fixture, env=env, overrides=overrides)
        calls = []

        def run_command(self, argv, **kw):
            calls.append(argv)
            return runner(argv)

        monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
        return calls

    return setup


def _facts(exc):
    return exc.value.args[0]["ansible_facts"]["llmfleet_gpu_facts"]


def test_h200x8_facts_in_check_mode(module_env):
    calls = module_env({"_ansible_check_mode": True, "sysfs_root": os.path.join(FIXTURES, "h200x8", "sysfs")})
    with pytest.raises(ExitJson) as e:
        gpu_facts.main()
    res = e.value.args[0]
    f = _facts(e)
    assert res["changed"] is False
    assert f["gpu_count"] == 8 and f["gpus"][7]["memory_total_mib"] == 143771
    assert f["product_name"] == "NVIDIA H200" and f["driver_version"] == "580.159.04" and f["cuda_version"] == "13.0"
    assert f["rdma_devices"] == ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
    assert f["nvswitch"] is True and f["nvlink"]["all_pairs"] is True
    assert all(c[0] == "/usr/bin/nvidia-smi" for c in calls)  # no ip binary: ioctl fallback
    assert ["/usr/bin/nvidia-smi", "-q", "-x"] in calls


def test_h100x1_real_with_ip_json(module_env, tmp_path):
    ip_json = json.dumps([{"ifname": "eth0", "operstate": "UP",
                           "addr_info": [{"family": "inet", "local": "10.0.0.11", "prefixlen": 24}]}])
    module_env({"sysfs_root": str(tmp_path)}, fixture="h100x1",
               bins={"nvidia-smi": "/usr/local/nvidia/bin/nvidia-smi", "ip": "/usr/sbin/ip"},
               overrides=None)
    orig = basic.AnsibleModule.run_command

    def run_command(self, argv, **kw):
        if argv[0] == "/usr/sbin/ip":
            return 0, ip_json, ""
        return orig(self, argv, **kw)

    basic.AnsibleModule.run_command = run_command
    try:
        with pytest.raises(ExitJson) as e:
            gpu_facts.main()
    finally:
        basic.AnsibleModule.run_command = orig
    f = _facts(e)
    assert f["gpu_count"] == 1 and f["gpus"][0]["memory_total_mib"] == 81559
    assert f["interfaces"] == [{"name": "eth0", "state": "UP", "ipv4": [{"address": "10.0.0.11", "prefix": 24}]}]
    assert f["interfaces_source"] == "ip -j addr"


def test_csv_fallback_warns(module_env):
    module_env({"sysfs_root": "/nonexistent"}, fixture="h100x8",
               overrides={("-q", "-x"): (3, "", "Failed to get XML output")})
    with pytest.raises(ExitJson) as e:
        gpu_facts.main()
    f = _facts(e)
    assert f["source"] == "csv" and f["gpu_count"] == 8 and f["cuda_version"] == "13.0"
    assert any("falling back" in w for w in f["warnings"])


def test_binary_missing_fails_clearly(module_env):
    module_env({}, bins={})
    with pytest.raises(FailJson) as e:
        gpu_facts.main()
    res = e.value.args[0]
    assert res["failed"] and "nvidia-smi not found" in res["msg"] and "not installed" in res["msg"]
    assert res["nvidia_smi_found"] is False


def test_binary_missing_not_fatal(module_env):
    module_env({"fail_on_missing": False, "sysfs_root": os.path.join(FIXTURES, "h100x8", "sysfs")}, bins={})
    with pytest.raises(ExitJson) as e:
        gpu_facts.main()
    f = _facts(e)
    assert f["gpu_count"] == 0 and f["driver_loaded"] is False and "not found" in f["reason"]
    assert f["rdma_devices"] == ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]


def test_driver_not_loaded_fails(module_env):
    module_env({}, env={"LLMFLEET_GPU_FAKE_NO_DRIVER": "1"})
    with pytest.raises(FailJson) as e:
        gpu_facts.main()
    res = e.value.args[0]
    assert "driver is not loaded" in res["msg"] and res["driver_loaded"] is False and res["nvidia_smi_found"]


def test_driver_not_loaded_not_fatal(module_env):
    module_env({"fail_on_missing": False, "sysfs_root": "/nonexistent"}, env={"LLMFLEET_GPU_FAKE_NO_DRIVER": "1"})
    with pytest.raises(ExitJson) as e:
        gpu_facts.main()
    f = _facts(e)
    assert f["driver_loaded"] is False and f["gpu_count"] == 0 and "couldn't communicate" in f["reason"]


def test_explicit_path_not_executable(module_env, tmp_path):
    module_env({"nvidia_smi_path": str(tmp_path / "nvidia-smi")})
    with pytest.raises(FailJson) as e:
        gpu_facts.main()
    assert "nvidia-smi not found" in e.value.args[0]["msg"]


def test_other_failure_is_failed_even_without_fail_on_missing(module_env):
    module_env({"fail_on_missing": False}, overrides={
        ("-q", "-x"): (255, "", "Unknown Error"),
        ("--query-gpu=index,uuid,name,pci.bus_id,driver_version,memory.total,memory.used,memory.free,"
         "persistence_mode,ecc.mode.current,mig.mode.current", "--format=csv,noheader,nounits"): (255, "", "Unknown Error"),
    })
    with pytest.raises(FailJson) as e:
        gpu_facts.main()
    assert "Unknown Error" in e.value.args[0]["msg"]
