# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import ast
import os

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils import _nccl as n

FIXTURES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "fixtures", "gpu"))


def _read(*parts):
    with open(os.path.join(FIXTURES, *parts)) as f:
        return f.read()


# Synthetic multi-node excerpts in NCCL 2.2x INFO format (host:pid:tid [dev] NCCL INFO ...).
TWO_NODE_IB = """\
gpu-a:2841:2841 [0] NCCL INFO NCCL version 2.21.5+cuda12.4
gpu-a:2841:2906 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB [2]mlx5_2:1/IB [3]mlx5_3:1/IB [RO]; OOB eth0:10.0.0.11<0>
gpu-a:2841:2906 [0] NCCL INFO Using network IB
gpu-b:3011:3077 [0] NCCL INFO Using network IB
gpu-a:2841:2906 [0] NCCL INFO comm 0x55d0c3a0 rank 0 nRanks 16 nNodes 2 localRanks 8 localRank 0 MNNVL 0
gpu-b:3011:3077 [0] NCCL INFO comm 0x5626a0b0 rank 8 nRanks 16 nNodes 2 localRanks 8 localRank 0 MNNVL 0
gpu-a:2841:2906 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read
gpu-a:2847:2911 [7] NCCL INFO Channel 00/0 : 7[7] -> 8[0] [send] via NET/IB/3/GDRDMA
gpu-b:3011:3077 [0] NCCL INFO Channel 00/0 : 7[7] -> 8[0] [receive] via NET/IB/0/GDRDMA
gpu-a:2841:2906 [0] NCCL INFO NVLS multicast support is available on dev 0 (NVLS_NCHANNELS 16)
gpu-a:2841:2906 [0] NCCL INFO NVLS comm 0x55d0c3a0 headRank 0 nHeads 8 buffSize 1048576 nvlsPerRankSize 201326592
gpu-a:2841:2906 [0] NCCL INFO Connected all rings, use ring PXN 0 GDR 1
allreduce check ok world=16
allreduce size=1MiB world=16 time_us=96.0 algbw_GBps=10.9 busbw_GBps=20.5
allreduce size=1024MiB world=16 time_us=18400.0 algbw_GBps=58.4 busbw_GBps=109.5
"""

TWO_NODE_SOCKET = """\
gpu-a:2841:2906 [0] NCCL INFO NET/IB : No device found.
gpu-a:2841:2906 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.11<0> [1]eth1:192.168.7.2<0>
gpu-a:2841:2906 [0] NCCL INFO Using network Socket
gpu-b:3011:3077 [0] NCCL WARN NET/Socket : peer 10.0.0.11<52344> message truncated : receiving 1048576 bytes instead of 65536
gpu-a:2841:2906 [0] NCCL INFO comm 0x55d0c3a0 rank 0 nRanks 2 nNodes 2 localRanks 1 localRank 0 MNNVL 0
gpu-a:2841:2906 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/Socket/0
gpu-a:2841:2906 [0] NCCL INFO Channel 00 : 0[e0000] -> 1[b000] [send] via NET/Socket/1
allreduce size=1024MiB world=2 time_us=850000.0 algbw_GBps=1.3 busbw_GBps=1.3
"""

NCCL_TESTS_TABLE = """\
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
     1048576        262144     float     sum      -1    51.03   20.55   35.96      0    50.12   20.92   36.61      0
  1073741824     268435456     float     sum      -1   4712.3  227.86  398.75      0   4710.1  227.96  398.93      0
# Avg bus bandwidth    : 217.45
"""


def test_real_capture_h200x2_nccl_txt():
    p = n.parse_output(_read("h200x2", "nccl.txt"))
    assert [r["size_mib"] for r in p["results"]] == [1.0, 16.0, 256.0, 1024.0]
    assert p["busbw_gbps"] == 328.2 and p["world_size"] == 2
    assert p["largest"]["size_bytes"] == 1024 ** 3 and p["largest"]["time_us"] == 3271.6
    assert p["transports"] == []  # that capture ran without NCCL_DEBUG=INFO


def test_real_nccl_info_capture_from_the_shipped_script():
    p = n.parse_output(_read("nccl", "h200x2-nccl-info.txt"))
    assert p["check_ok"] is True
    assert p["busbw_gbps"] == 328.8 and p["world_size"] == 2
    assert p["transports"] == ["P2P/CUMEM"] and p["inter_node_transports"] == []
    assert p["nccl_version"] == "2.28.9+cuda13.0"
    assert p["network"] == "Socket" and p["net_devices"] == ["eth0:192.0.2.2<0>"]
    assert (p["nranks"], p["nnodes"]) == (2, 1)
    assert p["hosts"] == ["vm"] and p["nccl_warnings"] == []
    assert n.evaluate(p, min_busbw_gbps=300, require_transport="P2P") == []


def test_multi_node_ib():
    p = n.parse_output(TWO_NODE_IB)
    assert p["transports"] == ["NET/IB", "NVLS", "P2P/CUMEM"]
    assert p["inter_node_transports"] == ["NET/IB"]
    assert p["network"] == "IB" and p["net_devices"][:2] == ["mlx5_0:1/IB", "mlx5_1:1/IB"]
    assert p["nnodes"] == 2 and p["nranks"] == 16 and p["hosts"] == ["gpu-a", "gpu-b"]
    assert p["busbw_gbps"] == 109.5 and p["world_size"] == 16
    assert n.evaluate(p, 100, "NET/IB") == []


def test_multi_node_socket_fails_ib_requirement_and_minimum():
    p = n.parse_output(TWO_NODE_SOCKET)
    assert p["transports"] == ["NET/Socket"] and p["network"] == "Socket"
    assert p["net_devices"] == ["eth0:10.0.0.11<0>", "eth1:192.168.7.2<0>"]
    assert len(p["nccl_warnings"]) == 1 and "message truncated" in p["nccl_warnings"][0]
    errs = n.evaluate(p, 50, "NET/IB")
    assert len(errs) == 2
    assert "1.3 GB/s at 1024 MiB is under min_busbw_gbps 50.0" in errs[0]
    assert "did not use NET/IB (transports seen: NET/Socket; network Socket)" in errs[1]


def test_nccl_tests_table():
    p = n.parse_output(NCCL_TESTS_TABLE)
    assert [r["size_bytes"] for r in p["results"]] == [1048576, 1073741824]
    assert p["busbw_gbps"] == 398.75 and p["results"][1]["algbw_gbps"] == 227.86


def test_no_results_and_failed_check():
    assert n.evaluate(n.parse_output("Traceback...\nRuntimeError: NCCL error"), 0) == [
        "no all-reduce results in the output"]
    p = n.parse_output("allreduce check FAILED rank=1 got=2.0 expected=3.0\n" + _read("h200x2", "nccl.txt"))
    assert p["check_ok"] is False and "wrong values" in n.evaluate(p)[0]


@pytest.mark.parametrize("via,expected", [
    ("P2P/CUMEM/read", "P2P/CUMEM"), ("P2P/IPC", "P2P/IPC"), ("P2P/direct", "P2P/direct"),
    ("NET/IB/0/GDRDMA", "NET/IB"), ("NET/IB/3(GDRDMA)", "NET/IB"), ("NET/Socket/0", "NET/Socket"),
    ("SHM/direct/direct", "SHM"), ("COLLNET", "COLLNET"),
])
def test_normalize_transport(via, expected):
    assert n.normalize_transport(via) == expected


def test_busbw_formula_matches_capture():
    # busbw = algbw * 2 (n-1)/n: equal to algbw for 2 GPUs, 1.75x for 8
    assert n.busbw_from_algbw(328.2, 2) == pytest.approx(328.2)
    assert n.busbw_from_algbw(100.0, 8) == pytest.approx(175.0)
    assert n.busbw_from_algbw(100.0, 1) is None  # not defined for one rank, no division by zero
    assert n.busbw_from_algbw(100.0, 0) is None


SINGLE_RANK = """\
gpu:411:411 [0] NCCL INFO NCCL version 2.28.9+cuda13.0
gpu:411:430 [0] NCCL INFO comm 0x3ab5c0a0 rank 0 nRanks 1 nNodes 1 localRanks 1 localRank 0 MNNVL 0
allreduce check ok world=1
allreduce size=1MiB world=1 time_us=4.1 algbw_GBps=255.8 busbw_GBps=0.0
allreduce size=1024MiB world=1 time_us=6.0 algbw_GBps=178956.9 busbw_GBps=0.0
"""


def test_single_rank_busbw_undefined_and_thresholds_not_checked():
    p = n.parse_output(SINGLE_RANK)
    assert p["single_rank"] is True and p["world_size"] == 1
    assert p["busbw_gbps"] is None and [r["busbw_gbps"] for r in p["results"]] == [None, None]
    assert [r["algbw_gbps"] for r in p["results"]] == [None, None]   # nothing moved: no bandwidth
    assert p["transports"] == []
    assert n.evaluate(p, min_busbw_gbps=300, require_transport="P2P") == []
    notes = n.notes(p, min_busbw_gbps=300, require_transport="P2P")
    assert notes[0] == n.SINGLE_RANK_NOTE and "not defined" in notes[0]
    assert "min_busbw_gbps 300 not checked" in notes[1] and "require_transport P2P not checked" in notes[2]
    assert n.notes(p) == [n.SINGLE_RANK_NOTE]


def test_single_rank_real_h100_log():
    # fabric_check on a lent H100 (2026-12-06, torch 2.11 / NCCL 2.28.9): 1 GiB "all-reduced" in
    # 16.8 us, 64 TB/s by the program's arithmetic, far beyond HBM3: one rank moves nothing
    text = _read("nccl", "h100x1-one-rank.txt")
    assert "size=1024MiB world=1 time_us=16.8 algbw_GBps=64016.8" in text
    p = n.parse_output(text)
    assert p["single_rank"] is True and p["nranks"] == 1 and p["check_ok"] is True
    assert p["nccl_version"] == "2.28.9+cuda13.0" and p["transports"] == []
    assert [r["size_mib"] for r in p["results"]] == [1.0, 16.0, 256.0, 1024.0]
    assert all(r["algbw_gbps"] is None and r["busbw_gbps"] is None for r in p["results"])
    assert n.evaluate(p, min_busbw_gbps=100, require_transport="P2P") == []


def test_single_rank_still_fails_on_a_wrong_sum_or_no_results():
    p = n.parse_output(SINGLE_RANK.replace("allreduce check ok world=1", "allreduce check FAILED rank=0 got=2.0 expected=1.0"))
    assert "wrong values" in n.evaluate(p, 300)[0]
    p = n.parse_output("gpu:411:430 [0] NCCL INFO comm 0x3ab5c0a0 rank 0 nRanks 1 nNodes 1 localRanks 1\n")
    assert p["single_rank"] is True and n.evaluate(p) == ["no all-reduce results in the output"]


def test_two_ranks_are_not_single_rank():
    p = n.parse_output(_read("nccl", "h200x2-nccl-info.txt"))
    assert p["single_rank"] is False and n.notes(p, 300, "P2P") == []


def test_script_is_valid_python_and_prints_the_parsed_format():
    tree = ast.parse(n.ALLREDUCE_SCRIPT)
    names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert names == {"main"}
    line = "allreduce size=%s world=%d time_us=%.1f algbw_GBps=%.1f busbw_GBps=%.1f" % ("1024MiB", 8, 5000.0, 214.7, 375.8)
    assert n.parse_output(line)["busbw_gbps"] == 375.8
    assert '"%gMiB" % mib' in n.ALLREDUCE_SCRIPT  # the format the parser reads


def test_build_command_container_and_host():
    argv = n.build_command("/tmp/x/s.py", image="vllm/vllm-openai:v0.32.0", docker_bin="/usr/bin/docker",
                           env={"NCCL_DEBUG": "INFO", "A": "1"}, name="llmfleet-fabric-check-1")
    assert argv[:5] == ["/usr/bin/docker", "run", "--rm", "--name", "llmfleet-fabric-check-1"]
    assert argv[argv.index("--gpus") + 1] == "all"
    assert ["--network", "host"] == argv[argv.index("--network"):argv.index("--network") + 2]
    assert ["--ipc", "host"] == argv[argv.index("--ipc"):argv.index("--ipc") + 2]
    assert argv.index("-e") < argv.index("--entrypoint") < argv.index("vllm/vllm-openai:v0.32.0")
    assert argv[argv.index("-e") + 1] == "A=1"
    assert "/tmp/x/s.py:/llmfleet/nccl_allreduce.py:ro" in argv
    assert argv[-6:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "gpu",
                         "/llmfleet/nccl_allreduce.py"]
    host = n.build_command("/tmp/s.py", use_container=False, python="/usr/bin/python3", gpus=2, nnodes=2,
                           node_rank=1, master_addr="10.0.0.11")
    assert host == ["/usr/bin/python3", "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", "1",
                    "--master-addr", "10.0.0.11", "--master-port", "29500", "--nproc-per-node", "2", "/tmp/s.py"]
