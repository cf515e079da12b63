# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection (not a public API): NCCL all-reduce check.

``ALLREDUCE_SCRIPT`` is a self-contained PyTorch program run with ``torch.distributed.run``
(one process per GPU) inside the engine image; it prints one line per size in the format
``allreduce size=<MiB>MiB world=<n> time_us=<t> algbw_GBps=<a> busbw_GBps=<b>`` (the format of
the real capture in tests/fixtures/gpu/h200x2/nccl.txt). ``parse_output`` reads those lines
(and nccl-tests tables) plus the ``NCCL_DEBUG=INFO`` lines that tell which transport NCCL chose.
"""

from __future__ import annotations

import re

# busbw = algbw * 2 * (n - 1) / n  (nccl-tests PERFORMANCE.md, all-reduce)
ALLREDUCE_SCRIPT = r'''# llmfleet fabric_check: bf16 all-reduce bus bandwidth (run with torch.distributed.run)
import os
import sys
import time

import torch
import torch.distributed as dist


def main():
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    try:
        dist.init_process_group("nccl", device_id=device)
    except TypeError:  # torch < 2.3
        dist.init_process_group("nccl")
    rank = dist.get_rank()
    world = dist.get_world_size()
    sizes = [float(s) for s in os.environ.get("LLMFLEET_NCCL_SIZES_MIB", "1,16,256,1024").split(",") if s]
    iters = int(os.environ.get("LLMFLEET_NCCL_ITERS", "20"))
    warmup = int(os.environ.get("LLMFLEET_NCCL_WARMUP", "5"))

    # correctness first: sum of (rank + 1) over all ranks
    check = torch.full((1024,), float(rank + 1), dtype=torch.float32, device=device)
    dist.all_reduce(check)
    expected = world * (world + 1) / 2.0
    if not torch.allclose(check, torch.full_like(check, expected)):
        print("allreduce check FAILED rank=%d got=%s expected=%s" % (rank, check[0].item(), expected), flush=True)
        sys.exit(3)
    if rank == 0:
        print("allreduce check ok world=%d" % world, flush=True)

    for mib in sizes:
        nbytes = int(mib * 1024 * 1024)
        x = torch.zeros(nbytes // 2, dtype=torch.bfloat16, device=device)
        for _ in range(warmup):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        dist.barrier()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            dist.all_reduce(x)
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000.0 / iters
        t = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the slowest rank decides
        seconds = t.item()
        algbw = nbytes / seconds / 1e9
        busbw = algbw * 2.0 * (world - 1) / world
        if rank == 0:
            size = ("%gMiB" % mib)
            print("allreduce size=%s world=%d time_us=%.1f algbw_GBps=%.1f busbw_GBps=%.1f"
                  % (size, world, seconds * 1e6, algbw, busbw), flush=True)
        del x
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
'''

_RESULT = re.compile(
    r"allreduce size=(?P<size>[0-9.]+)(?P<unit>[KMG]i?B|B) world=(?P<world>\d+) time_us=(?P<t>[0-9.]+) "
    r"algbw_GBps=(?P<alg>[0-9.]+) busbw_GBps=(?P<bus>[0-9.]+)")
# nccl-tests: "   1048576   262144  float  sum  -1   51.03  20.55  35.96  0   50.12 ..."
_NCCL_TESTS = re.compile(
    r"^\s*(?P<bytes>\d+)\s+(?P<count>\d+)\s+(?P<type>\w+)\s+(?P<op>\w+)\s+(?P<root>-?\d+)\s+"
    r"(?P<t>[0-9.]+)\s+(?P<alg>[0-9.]+)\s+(?P<bus>[0-9.]+)\s+(?P<wrong>\S+)")
_PREFIX = re.compile(r"^(?P<host>[\w.\-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] NCCL (?P<lvl>INFO|WARN)")
_VIA = re.compile(r"Channel \d+(?:/\d+)? : (?P<src>\d+)\[[0-9a-fA-F]+\] -> (?P<dst>\d+)\[[0-9a-fA-F]+\]"
                  r"(?: \[(?:send|receive)\])? via (?P<via>\S+)")
_UNIT = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 1000 ** 2, "MiB": 1024 ** 2, "GB": 1000 ** 3, "GiB": 1024 ** 3}


def normalize_transport(via):
    """'P2P/CUMEM/read' -> 'P2P/CUMEM'; 'NET/IB/0/GDRDMA' -> 'NET/IB'; 'SHM/direct/direct' -> 'SHM'."""
    parts = via.split("/")
    head = parts[0]
    if head in ("P2P", "NET") and len(parts) > 1:
        second = re.sub(r"\(.*$", "", parts[1])
        return "%s/%s" % (head, second)
    return re.sub(r"\(.*$", "", head)


def parse_output(text):
    """Parse the all-reduce program's output (any number of nodes' NCCL INFO lines mixed in)."""
    results = []
    transports = set()
    inter_node = set()
    hosts = set()
    warnings = []
    out = {"nccl_version": None, "network": None, "net_devices": [], "nranks": None, "nnodes": None,
           "check_ok": None}
    rank_host = {}
    for line in (text or "").splitlines():
        m = _RESULT.search(line)
        if m:
            nbytes = int(float(m.group("size")) * _UNIT[m.group("unit")])
            results.append({"size_bytes": nbytes, "size_mib": round(nbytes / 1024.0 ** 2, 3),
                            "world": int(m.group("world")), "time_us": float(m.group("t")),
                            "algbw_gbps": float(m.group("alg")), "busbw_gbps": float(m.group("bus"))})
            continue
        m = _NCCL_TESTS.match(line)
        if m and m.group("op") in ("sum", "prod", "max", "min", "avg"):
            nbytes = int(m.group("bytes"))
            results.append({"size_bytes": nbytes, "size_mib": round(nbytes / 1024.0 ** 2, 3), "world": None,
                            "time_us": float(m.group("t")), "algbw_gbps": float(m.group("alg")),
                            "busbw_gbps": float(m.group("bus"))})
            continue
        if "allreduce check ok" in line:
            out["check_ok"] = True
        elif "allreduce check FAILED" in line:
            out["check_ok"] = False
        p = _PREFIX.match(line)
        if p:
            hosts.add(p.group("host"))
            if p.group("lvl") == "WARN":
                warnings.append(line.strip()[:300])
        if "NCCL" not in line:
            continue
        m = re.search(r"NCCL version (\S+)", line)
        if m and not out["nccl_version"]:
            out["nccl_version"] = m.group(1)
        m = re.search(r"Using network (\w+)", line)
        if m:
            out["network"] = m.group(1)
        m = re.search(r"NET/(?:IB|Socket) ?: Using (.*?)(?: ; OOB.*)?$", line)
        if m:
            for dev in re.findall(r"\[\d+\](\S+)", m.group(1).split(";")[0]):
                if dev not in out["net_devices"]:
                    out["net_devices"].append(dev)
        m = re.search(r"comm 0x[0-9a-f]+ rank (\d+) nRanks (\d+) nNodes (\d+)", line)
        if m:
            out["nranks"] = int(m.group(2))
            out["nnodes"] = int(m.group(3))
            if p:
                rank_host[int(m.group(1))] = p.group("host")
        m = _VIA.search(line)
        if m:
            t = normalize_transport(m.group("via"))
            transports.add(t)
            if t.startswith("NET/") or t.startswith("COLLNET"):
                inter_node.add(t)
        if re.search(r"NVLS comm 0x|Connected NVLS|NVLS multicast support is available", line) and \
                "not available" not in line:
            transports.add("NVLS")
        if re.search(r"CollNet channels|Connected CollNet|COLLNET", line):
            transports.add("CollNet")
    out.update({
        "results": results,
        "transports": sorted(transports),
        "inter_node_transports": sorted(inter_node),
        "hosts": sorted(hosts),
        "nccl_warnings": warnings,
    })
    world = None
    if results:
        largest = max(results, key=lambda r: r["size_bytes"])
        world = largest["world"] or out["nranks"]
    else:
        largest = None
        world = out["nranks"]
    out["single_rank"] = world == 1
    if world == 1:
        # One rank: nothing crosses a link. nccl-tests' factor 2(n-1)/n is 0, so the program prints
        # busbw 0.0; that is no measurement of a fabric. Nor is algbw one: NCCL returns an in-place
        # all-reduce of one rank at once (a real H100, NCCL 2.28.9: 1 GiB "in" 16.8 us, 64 TB/s,
        # 19 times the card's memory bandwidth; tests/fixtures/gpu/nccl/h100x1-one-rank.txt).
        for r in results:
            r["busbw_gbps"] = None
            r["algbw_gbps"] = None
    out["largest"] = largest
    out["busbw_gbps"] = largest["busbw_gbps"] if largest else None
    out["world_size"] = world
    return out


SINGLE_RANK_NOTE = ("one rank: the all-reduce moves nothing (NCCL returns an in-place all-reduce of one rank at "
                    "once), nothing crosses NVLink, PCIe or the network, so the bus bandwidth is not defined "
                    "(busbw_gbps and algbw_gbps are null) and NCCL picks no "
                    "transport; run on a host with two or more GPUs (gpus >= 2) or several nodes to measure "
                    "the fabric")


def busbw_from_algbw(algbw, world):
    """nccl-tests' bus bandwidth of an all-reduce; None for one rank (not defined, see SINGLE_RANK_NOTE)."""
    if not world or world < 2:
        return None
    return algbw * 2.0 * (world - 1) / world


def notes(parsed, min_busbw_gbps=None, require_transport=None):
    """Warnings that do not fail the check (the single-rank case): list of strings."""
    if not parsed.get("single_rank"):
        return []
    out = [SINGLE_RANK_NOTE]
    if min_busbw_gbps:
        out.append("min_busbw_gbps %g not checked: bus bandwidth is not defined for one rank" % min_busbw_gbps)
    if require_transport:
        out.append("require_transport %s not checked: one rank uses no transport" % require_transport)
    return out


def evaluate(parsed, min_busbw_gbps=None, require_transport=None):
    """Returns a list of failure messages (empty when the check passes).

    With one rank (``parsed["single_rank"]``) neither threshold applies: ``notes()`` says so."""
    errors = []
    if parsed.get("check_ok") is False:
        errors.append("all-reduce returned wrong values (allreduce check FAILED)")
    if not parsed["results"]:
        errors.append("no all-reduce results in the output")
        return errors
    if parsed.get("single_rank"):
        return errors
    if min_busbw_gbps and parsed["busbw_gbps"] < min_busbw_gbps:
        errors.append("bus bandwidth %.1f GB/s at %g MiB is under min_busbw_gbps %.1f (transports: %s)" % (
            parsed["busbw_gbps"], parsed["largest"]["size_mib"], min_busbw_gbps,
            ", ".join(parsed["transports"]) or "unknown"))
    if require_transport:
        seen = parsed["transports"]
        if not any(t == require_transport or t.startswith(require_transport + "/") for t in seen):
            errors.append("NCCL did not use %s (transports seen: %s%s)" % (
                require_transport, ", ".join(seen) or "none reported; NCCL_DEBUG=INFO missing?",
                "; network %s" % parsed["network"] if parsed.get("network") else ""))
    return errors


def build_command(script_path, image=None, use_container=True, docker_bin="docker", python="python3",
                  gpus=None, env=None, name=None, nnodes=1, node_rank=0, master_addr=None, master_port=29500):
    """argv of the check. In the container the script is mounted read-only at /llmfleet/."""
    nproc = str(gpus) if gpus else "gpu"
    if nnodes > 1:
        launcher = ["-m", "torch.distributed.run", "--nnodes", str(nnodes), "--node-rank", str(node_rank),
                    "--master-addr", master_addr, "--master-port", str(master_port), "--nproc-per-node", nproc]
    else:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", nproc]
    if not use_container:
        return [python] + launcher + [script_path]
    argv = [docker_bin, "run", "--rm"]
    if name:
        argv += ["--name", name]
    argv += ["--gpus", str(gpus) if gpus else "all", "--network", "host", "--ipc", "host",
             "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]
    for k in sorted(env or {}):
        argv += ["-e", "%s=%s" % (k, env[k])]
    argv += ["-v", "%s:/llmfleet/nccl_allreduce.py:ro" % script_path, "--entrypoint", python, image]
    return argv + launcher + ["/llmfleet/nccl_allreduce.py"]
