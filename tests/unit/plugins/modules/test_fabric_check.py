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

from ansible_collections.llmfleet.serving.plugins.modules import fabric_check  # noqa: E402

FIXTURES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "fixtures", "gpu"))
REAL_INFO = open(os.path.join(FIXTURES, "nccl", "h200x2-nccl-info.txt")).read()


@pytest.fixture
def run_module(monkeypatch, tmp_path):
    patch_exits(monkeypatch)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path",
                        lambda self, name, required=False, opt_dirs=None: "/usr/bin/%s" % name)
    state = {"calls": [], "answers": []}

    def run_command(self, argv, environ_update=None, **kw):
        state["calls"].append((argv, environ_update))
        if "run" in argv:
            # the script the command mounts must exist with the shipped content
            mount = [a for a in argv if a.endswith(":/llmfleet/nccl_allreduce.py:ro")]
            if mount:
                with open(mount[0].split(":")[0]) as f:
                    state["script"] = f.read()
        return state["answers"].pop(0) if state["answers"] else (0, "", "")

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)

    def run(args, answers):
        state["answers"] = list(answers)
        args = dict(args, _ansible_remote_tmp=str(tmp_path), _ansible_keep_remote_files=False)
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
        fabric_check.main()

    run.state = state
    return run


def test_container_run_parses_real_log(run_module):
    with pytest.raises(ExitJson) as e:
        run_module({"image": "vllm/vllm-openai:v0.32.0", "min_busbw_gbps": 300, "require_transport": "P2P",
                    "env": {"NCCL_SOCKET_IFNAME": "eth0"}}, [(0, REAL_INFO, "")])
    res = e.value.args[0]
    assert res["changed"] is False and res["busbw_gbps"] == 328.8 and res["transports"] == ["P2P/CUMEM"]
    assert [r["size_mib"] for r in res["results"]] == [1.0, 16.0, 256.0, 1024.0]
    argv = run_module.state["calls"][0][0]
    assert argv[:3] == ["/usr/bin/timeout", "--kill-after=15", "600"]
    assert argv[3:6] == ["/usr/bin/docker", "run", "--rm"]
    assert "NCCL_DEBUG=INFO" in argv and "NCCL_SOCKET_IFNAME=eth0" in argv
    assert "LLMFLEET_NCCL_SIZES_MIB=1,16,256,1024" in argv
    assert run_module.state["script"].startswith("# llmfleet fabric_check")
    assert res["command"] == argv[3:]


def test_under_minimum_fails(run_module):
    with pytest.raises(FailJson) as e:
        run_module({"image": "img", "min_busbw_gbps": 400}, [(0, REAL_INFO, "")])
    res = e.value.args[0]
    assert "328.8 GB/s at 1024 MiB is under min_busbw_gbps 400.0" in res["msg"] and res["busbw_gbps"] == 328.8


def test_transport_requirement(run_module):
    with pytest.raises(FailJson) as e:
        run_module({"image": "img", "require_transport": "NET/IB"}, [(0, REAL_INFO, "")])
    assert "did not use NET/IB" in e.value.args[0]["msg"]


def test_program_failure_is_classified(run_module):
    out = "vm:627:627 [0] NCCL WARN Cuda failure 'out of memory'\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB"
    with pytest.raises(FailJson) as e:
        run_module({"image": "img", "sizes_mib": [1024]}, [(1, out, "")])
    res = e.value.args[0]
    assert res["diagnosis"]["class"] == "cuda_oom" and "exited with 1" in res["msg"]
    assert res["nccl_warnings"] and res["log_tail"][-1].startswith("torch.OutOfMemoryError")


def test_timeout_removes_container(run_module):
    with pytest.raises(FailJson) as e:
        run_module({"image": "img", "timeout": 30}, [(124, "", ""), (0, "", "")])
    assert "timed out after 30s" in e.value.args[0]["msg"]
    rm = run_module.state["calls"][1][0]
    assert rm[:3] == ["/usr/bin/docker", "rm", "-f"] and rm[3].startswith("llmfleet-fabric-check-")


def test_host_python(run_module):
    with pytest.raises(ExitJson):
        run_module({"use_container": False, "gpus": 2, "nccl_debug": "WARN"}, [(0, REAL_INFO, "")])
    argv, env = run_module.state["calls"][0]
    assert argv[3:7] == ["/usr/bin/python3", "-m", "torch.distributed.run", "--standalone"]
    assert env["NCCL_DEBUG"] == "WARN" and env["LLMFLEET_NCCL_ITERS"] == "20"


def test_image_required_and_master_addr(run_module):
    with pytest.raises(FailJson) as e:
        run_module({}, [])
    assert "image" in e.value.args[0]["msg"]
    with pytest.raises(FailJson) as e:
        run_module({"image": "img", "nnodes": 2}, [])
    assert "master_addr" in e.value.args[0]["msg"]


SINGLE_RANK_LOG = """\
gpu:411:411 [0] NCCL INFO NCCL version 2.28.9+cuda13.0
gpu:411:430 [0] NCCL INFO comm 0x3ab5c0a0 rank 0 nRanks 1 nNodes 1 localRanks 1 localRank 0 MNNVL 0
allreduce check ok world=1
allreduce size=1MiB world=1 time_us=4.1 algbw_GBps=255.8 busbw_GBps=0.0
allreduce size=1024MiB world=1 time_us=6.0 algbw_GBps=178956.9 busbw_GBps=0.0
"""


def test_one_gpu_reports_single_rank_and_does_not_fail_on_thresholds(run_module):
    with pytest.raises(ExitJson) as e:
        run_module({"use_container": False, "min_busbw_gbps": 100, "require_transport": "P2P"},
                   [(0, SINGLE_RANK_LOG, "")])
    res = e.value.args[0]
    assert res["single_rank"] is True and res["world_size"] == 1
    assert res["busbw_gbps"] is None and all(r["busbw_gbps"] is None for r in res["results"])
    assert "bus bandwidth is not defined" in res["notes"][0]
    assert any("min_busbw_gbps 100 not checked" in w for w in res["notes"])
    assert any("require_transport P2P not checked" in w for w in res["notes"])
