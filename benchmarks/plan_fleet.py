"""Time the planner on a 1,000-host fleet: 600 deployments (200 single-host QwQ-32B / Qwen3 / R1-Distill,
400 dual-host DeepSeek-R1 with vLLM Ray or SGLang), GPU facts on every host (8 x H200, RDMA).

    cd /work/main && /work/venv-scratch/bin/python benchmarks/plan_fleet.py [--repeat 5]

Target: < 1 s per plan (issue 3). The figure is written in docs/planner.md.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import conftest  # noqa: E402  (puts build/collections on sys.path)

if conftest.COLLECTIONS not in sys.path:  # conftest puts it there when first imported
    sys.path.insert(0, conftest.COLLECTIONS)

from ansible_collections.llmfleet.serving.plugins.plugin_utils._catalog import load_catalog  # noqa: E402
from ansible_collections.llmfleet.serving.plugins.plugin_utils._plan import build_plan  # noqa: E402


def fleet(n_hosts=1000):
    hostvars, groups, deps = {}, {}, []
    for i in range(n_hosts):
        ip = "10.%d.%d.%d" % (1 + i // 250, 0, 1 + i % 250)
        hostvars["gpu%04d" % i] = {"ansible_host": ip, "llmfleet_gpu_facts": {
            "gpu_count": 8, "gpus": [{"index": g, "memory_total_mib": 143771} for g in range(8)],
            "rdma_devices": ["mlx5_%d" % r for r in range(4)],
            "interfaces": [{"name": "lo", "ipv4": [{"address": "127.0.0.1", "prefix": 8}]},
                           {"name": "eth0", "ipv4": [{"address": ip, "prefix": 24}]}]}}
    hosts = sorted(hostvars)
    i = 0
    for k in range(200):
        model = ("qwq-32b", "deepseek-r1-distill-qwen-32b", "qwen3-32b", "deepseek-r1-distill-llama-70b")[k % 4]
        deps.append({"name": "single-%d" % k, "hosts": [hosts[i]], "model": model, "max_model_len": 32768,
                     "api_key_file": "/srv/keys/k", "extra_args": ["--enable-chunked-prefill"]})
        i += 1
    for k in range(400):
        g = "dual_%d" % k
        groups[g] = [hosts[i], hosts[i + 1]]
        i += 2
        deps.append({"name": "r1-%d" % k, "hosts": g, "model": "deepseek-r1", "max_model_len": 32768,
                     "engine": "vllm" if k % 2 else "sglang", "api_key_file": "/srv/keys/k"})
    return deps, hostvars, groups


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    catalog = load_catalog()
    deps, hostvars, groups = fleet()
    times = []
    for dummy in range(args.repeat):
        t = time.perf_counter()
        plan = build_plan(deps, hostvars, groups, catalog)
        times.append(time.perf_counter() - t)
    n_hosts = len(plan["hosts"])
    n_containers = sum(len(v) for v in plan["hosts"].values())
    print("planned %d deployments, %d hosts, %d containers: best %.3f s, median %.3f s over %d runs"
          % (len(plan["deployments"]), n_hosts, n_containers, min(times), sorted(times)[len(times) // 2],
             len(times)))
    return 0 if min(times) < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
