# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Engine simulator as a process: the real command lines, flag rejection, model-dir errors,
API key from the environment / SGLang config file, startup logs, faults, and the SGLang
two-rank rendezvous on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SRC = os.path.join(ROOT, "tests", "lab", "engine_sim", "src")
COLLECTIONS = os.path.join(ROOT, "build", "collections")
KEY = "sk-cli-test-4242"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(tmp_path, shards=None, present=None):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"],
                                               "max_position_embeddings": 4096}))
    if shards is None:
        (d / "model.safetensors").write_bytes(b"")
    else:
        names = ["model-%05d-of-%05d.safetensors" % (i + 1, shards) for i in range(shards)]
        (d / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"w%d" % i: n for i, n in enumerate(names)}}))
        for n in names[:present]:
            (d / n).write_bytes(b"")
    return str(d)


def env(**kw):
    e = dict(os.environ)
    e.pop("VLLM_API_KEY", None)
    e["PYTHONPATH"] = os.pathsep.join([SRC, COLLECTIONS])
    e.update({"LLMFLEET_SIM_LOAD_DELAY_S": "0", "LLMFLEET_SIM_ITL_BASE_MS": "2",
              "LLMFLEET_SIM_TTFT_BASE_MS": "2"})
    e.update({"LLMFLEET_SIM_" + k.upper(): str(v) for k, v in kw.items()})
    return e


VLLM = [sys.executable, "-c", "import sys; from engine_sim.cli import vllm_main; sys.exit(vllm_main())"]
API_SERVER = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
SGLANG = [sys.executable, "-m", "sglang.launch_server"]


def run(cmd, environ, timeout=120):
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=timeout, check=False)


def get(url, key=None, timeout=2):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None, ""


def wait_status(url, want, timeout=60, key=None):
    """Poll until ``url`` answers ``want``; the bound only stops a hang (it returns at the event)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, dummy = get(url, key)
        if status == want:
            return True
        time.sleep(0.05)
    return False


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def test_unknown_flag_fails_like_argparse(tmp_path):
    model = make_model(tmp_path)
    r = run(VLLM + ["serve", model, "--port", "1", "--bogus-flag", "3"], env())
    assert r.returncode == 2
    assert "vllm serve: error: unrecognized arguments: --bogus-flag" in r.stderr
    r = run(SGLANG + ["--model-path", model, "--tensor-parallel-size-x", "2"], env())
    assert r.returncode == 2
    assert "launch_server.py: error: unrecognized arguments: --tensor-parallel-size-x" in r.stderr


def test_engine_version_without_flag_table(tmp_path):
    model = make_model(tmp_path)
    r = run(VLLM + ["serve", model], env(engine_version="0.2.0"))
    assert r.returncode == 2
    assert "LLMFLEET_SIM_ENGINE_VERSION" in r.stderr and "no flag table for vllm 0.2.0" in r.stderr


def test_vllm_serve_key_on_command_line_several_names_and_version(tmp_path):
    model = make_model(tmp_path)
    port = free_port()
    proc = subprocess.Popen(VLLM + ["serve", model, "--served-model-name", "a/one", "b/two", "--host=127.0.0.1",
                                    "--port", str(port), "--api-key", KEY, "-tp", "2"],
                            env=env(engine_version="0.8.5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    base = "http://127.0.0.1:%d" % port
    try:
        assert wait_status(base + "/health", 200, timeout=8)
        models = json.loads(get(base + "/v1/models", KEY)[1])
        version = json.loads(get(base + "/version")[1])
        metrics = get(base + "/metrics")[1]
    finally:
        rc, out, err = stop(proc)
    assert [m["id"] for m in models["data"]] == ["a/one", "b/two"]
    assert version == {"version": "0.8.5"}
    assert "vllm:gpu_cache_usage_perc{" in metrics
    assert "'api_key': '***'" in out and KEY not in out and KEY not in err and rc == 0


def test_missing_shard_fails_with_the_file_name(tmp_path):
    model = make_model(tmp_path, shards=3, present=2)
    r = run(VLLM + ["serve", model, "--host", "127.0.0.1", "--port", str(free_port())], env())
    assert r.returncode == 1
    assert "FileNotFoundError: [Errno 2] No such file or directory: '%s/model-00003-of-00003.safetensors'" \
        % model in r.stderr


def test_api_server_module_starts_logs_and_enforces_env_key(tmp_path):
    model = make_model(tmp_path)
    port = free_port()
    base = "http://127.0.0.1:%d" % port
    e = env(load_delay_s=3)  # a window wide enough to see the 503 on a busy machine
    e["VLLM_API_KEY"] = KEY
    proc = subprocess.Popen(API_SERVER + ["--model", model, "--served-model-name", "org/m", "--host",
                                          "127.0.0.1", "--port", str(port), "--max-model-len", "2048"],
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_status(base + "/health", 503), "no 503 while loading"
        assert wait_status(base + "/health", 200)
        no_key = get(base + "/v1/models")
        with_key = get(base + "/v1/models", KEY)
    finally:
        rc, out, err = stop(proc)
    assert no_key[0] == 401 and json.loads(no_key[1]) == {"error": "Unauthorized"}
    assert with_key[0] == 200
    models = json.loads(with_key[1])
    assert models["data"][0]["id"] == "org/m" and models["data"][0]["max_model_len"] == 2048
    assert rc == 0
    assert "Starting vLLM API server 0 on http://127.0.0.1:%d" % port in out
    assert "INFO:     Application startup complete." in out
    assert "vLLM API server version" in out
    assert KEY not in out and KEY not in err


def test_sglang_key_from_config_file_and_logged_in_clear_like_sglang(tmp_path):
    """SGLang 0.5.x merges --config into its arguments and logs them, key included
    (engine.py: ``server_args={...}``): the simulator does the same, so that a launch path that
    lets SGLang log its key fails in the lab (tests/unit/roles/test_entrypoint_sglang.py)."""
    model = make_model(tmp_path)
    port = free_port()
    cfg = tmp_path / "sglang.yaml"
    cfg.write_text("api-key: %s\nenable-metrics: true\n" % KEY)
    cfg.chmod(0o600)
    proc = subprocess.Popen(SGLANG + ["--model-path", model, "--host", "127.0.0.1", "--port", str(port),
                                      "--config", str(cfg)],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = "http://127.0.0.1:%d" % port
    try:
        assert wait_status(base + "/health", 200)
        no_key = get(base + "/v1/models")[0]
        with_key = get(base + "/v1/models", KEY)[0]
        metrics = get(base + "/metrics")
    finally:
        rc, out, err = stop(proc)
    assert (no_key, with_key) == (401, 200)
    assert metrics[0] == 200 and "sglang:num_running_reqs{" in metrics[1]
    assert "The server is fired up and ready to roll!" in out
    assert "'api_key': '%s'" % KEY in [line for line in out.splitlines() if "server_args={" in line][0]
    assert KEY not in err and rc == 0


@pytest.mark.parametrize("fault,expect", [
    ("oom", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"),
    ("nccl", "Watchdog caught collective operation timeout"),
    ("port_in_use", "OSError: [Errno 98] Address already in use"),
])
def test_startup_faults(tmp_path, fault, expect):
    model = make_model(tmp_path)
    r = run(VLLM + ["serve", model, "--host", "127.0.0.1", "--port", str(free_port())], env(fail=fault))
    assert r.returncode == 1
    assert expect in r.stderr


def test_hang_never_gets_ready(tmp_path):
    model = make_model(tmp_path)
    port = free_port()
    proc = subprocess.Popen(VLLM + ["serve", model, "--host", "127.0.0.1", "--port", str(port)],
                            env=env(fail="hang"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_status("http://127.0.0.1:%d/health" % port, 503)
        time.sleep(0.5)
        still = get("http://127.0.0.1:%d/health" % port)[0]
        alive = proc.poll() is None
    finally:
        rc, _out, _err = stop(proc)
    assert still == 503 and alive and rc == 0


def test_real_port_in_use(tmp_path):
    model = make_model(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run(VLLM + ["serve", model, "--host", "127.0.0.1", "--port", str(port)], env())
    assert r.returncode == 1
    assert r.stderr.rstrip().endswith("OSError: [Errno 98] Address already in use")


def test_crash_after_ready(tmp_path):
    model = make_model(tmp_path)
    port = free_port()
    proc = subprocess.Popen(VLLM + ["serve", model, "--host", "127.0.0.1", "--port", str(port)],
                            env=env(fail="crash_after_s=0.3"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # it was serving (its own log says so; a poll could miss a 0.3 s window on a busy machine)
    assert "Application startup complete." in out
    assert proc.returncode == 1
    assert "EngineDeadError" in err


def test_world_size_larger_than_node_without_ray(tmp_path):
    model = make_model(tmp_path)
    r = run(VLLM + ["serve", model, "--host", "127.0.0.1", "--port", str(free_port()),
                    "--tensor-parallel-size", "16", "--distributed-executor-backend", "mp"], env(local_gpus=8))
    assert r.returncode == 1
    assert "World size (16) is larger than the number of available GPUs (8) in this node" in r.stderr


def test_sglang_two_ranks_rendezvous_and_dead_peer(tmp_path):
    model = make_model(tmp_path)
    port, dist = free_port(), free_port()
    common = ["--model-path", model, "--tp", "4", "--nnodes", "2", "--dist-init-addr", "127.0.0.1:%d" % dist,
              "--host", "127.0.0.1", "--port", str(port)]
    # a peer is dead after 10 s without a heartbeat (a busy machine can starve one for seconds);
    # the kill below is seen at once through the closed connection
    e = env(peer_timeout_s=10, heartbeat_s=0.2, dist_init_timeout_s=120)
    r0 = subprocess.Popen(SGLANG + common + ["--node-rank", "0"], env=e, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    r1 = subprocess.Popen(SGLANG + common + ["--node-rank", "1"], env=e, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        healthy = wait_status("http://127.0.0.1:%d/health" % port, 200)
        rank1_alive = r1.poll() is None
        r1.kill()
        r1.communicate(timeout=60)
        out0, err0 = r0.communicate(timeout=60)
    finally:
        for p in (r0, r1):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert healthy and rank1_alive
    assert "Node rank 1 joined" in out0
    assert r0.returncode == 1
    assert "ncclRemoteError" in err0 and "Connection closed by remote peer" in err0


def test_sglang_rank0_times_out_without_peers(tmp_path):
    model = make_model(tmp_path)
    r = run(SGLANG + ["--model-path", model, "--tp", "2", "--nnodes", "3", "--node-rank", "0",
                      "--dist-init-addr", "127.0.0.1:%d" % free_port(), "--host", "127.0.0.1",
                      "--port", str(free_port())], env(dist_init_timeout_s=0.5))
    assert r.returncode == 1
    assert "DistStoreError: Timed out after 1 seconds waiting for clients. 1/3 clients joined." in r.stderr
