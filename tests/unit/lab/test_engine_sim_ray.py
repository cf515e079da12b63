# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Engine simulator with a real Ray cluster on 127.0.0.1 (skipped without ``ray``).

A head (1 GPU declared) and a worker (1 GPU) are started with ``ray start --block`` in their
own temp dir and process group; the simulator asked for PP 2 waits until the worker has
joined, serves, and exits with vLLM's ActorDiedError when the worker's node dies. Only the
processes started here are stopped, by their process group id.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

pytest.importorskip("ray")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SRC = os.path.join(ROOT, "tests", "lab", "engine_sim", "src")
COLLECTIONS = os.path.join(ROOT, "build", "collections")
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env():
    e = dict(os.environ)
    e.pop("RAY_ADDRESS", None)
    # find dead nodes within seconds instead of the default ~15 s, with room for a busy machine
    # (a live node that misses one check is not declared dead)
    e.update({"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
              "RAY_health_check_failure_threshold": "5", "RAY_USAGE_STATS_ENABLED": "0"})
    return e


def _killpg(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _session_members(sids):
    """PIDs whose session id is one of ``sids`` (Ray workers change their process group,
    not their session)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) in sids:
            out.append(int(name))
    return out


def healthy(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(RAY) is None and not os.path.exists(RAY), reason="no ray CLI")
def test_waits_for_ray_gpus_then_dies_with_a_dead_node(tmp_path):
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")   # short: Ray's socket paths are length-limited
    gcs = free_port()
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["DeepseekV3ForCausalLM"]}))
    (model / "model.safetensors").write_bytes(b"")
    renv = dict(_ray_env(), PYTHONPATH=os.pathsep.join([SRC, COLLECTIONS]))  # the workers import the simulator
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]
    procs = []
    head = subprocess.Popen([RAY, "start", "--head", "--port=%d" % gcs, "--num-gpus=1", "--temp-dir=" + temp,
                             "--include-dashboard=false"] + common, env=renv, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(head)
    try:
        # the driver's environment: a key that the entrypoint's list keeps on the head, and a
        # variable vLLM copies to its workers (their raylets never had it: the positive control)
        vcfg = tmp_path / "vllm-config"
        vcfg.mkdir()
        (vcfg / "ray_non_carry_over_env_vars.json").write_text(json.dumps(["VLLM_API_KEY"]))
        senv = dict(renv, RAY_ADDRESS="127.0.0.1:%d" % gcs, PYTHONPATH=os.pathsep.join([SRC, COLLECTIONS]),
                    LLMFLEET_SIM_LOAD_DELAY_S="0", LLMFLEET_SIM_RAY_WAIT_S="240", LLMFLEET_SIM_RAY_POLL_S="0.2",
                    LLMFLEET_SIM_LOCAL_GPUS="1", VLLM_API_KEY="sk-stays-on-the-driver-0123456789",
                    VLLM_SEC_MARK="copied-to-workers", VLLM_CONFIG_ROOT=str(vcfg))
        port = free_port()
        out_path, err_path = str(tmp_path / "sim.out"), str(tmp_path / "sim.err")
        sim = subprocess.Popen([sys.executable, "-c",
                                "import sys; from engine_sim.cli import vllm_main; sys.exit(vllm_main())",
                                "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
                                "--tensor-parallel-size", "1", "--pipeline-parallel-size", "2",
                                "--distributed-executor-backend", "ray"],
                               env=senv, stdout=open(out_path, "w"), stderr=open(err_path, "w"),
                               start_new_session=True)
        procs.append(sim)
        # The bounds below only stop a hang (each wait ends at its event): on a busy machine
        # Ray takes many times longer to start than on an idle one.
        # the head alone declares 1 GPU of the 2 needed: not ready
        end = time.monotonic() + 120
        while time.monotonic() < end and sim.poll() is None:
            with open(out_path) as fh:
                if "Waiting for creating a placement group" in fh.read():
                    break
            time.sleep(0.2)
        ready_with_one_gpu = healthy(port)
        worker = subprocess.Popen([RAY, "start", "--address=127.0.0.1:%d" % gcs, "--num-gpus=1"] + common,
                                  env=renv, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(worker)
        end = time.monotonic() + 180
        while time.monotonic() < end and not healthy(port) and sim.poll() is None:
            time.sleep(0.2)
        ready_with_two = healthy(port)
        # the simulated workers' helper processes (one per node), started with the copied variables
        helpers = {}
        for pid in _session_members({head.pid, worker.pid}):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as fh:
                    if not fh.read().endswith(b"\0compile_worker\0"):
                        continue
                with open("/proc/%d/environ" % pid, "rb") as fh:
                    helpers[pid] = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
            except OSError:
                continue
        _killpg(worker, signal.SIGKILL)          # the worker host dies
        sim.wait(timeout=120)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                _killpg(p, signal.SIGKILL)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _killpg(p, signal.SIGKILL)
                p.wait()
        sids = {p.pid for p in procs}
        for pid in _session_members(sids):   # what their children left behind, by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
    with open(out_path) as fh:
        out = fh.read()
    with open(err_path) as fh:
        err = fh.read()
    assert not ready_with_one_gpu
    assert ready_with_two
    assert "Waiting for creating a placement group of specs" in out
    assert "Placement group of 2 GPU bundles ready on 2 node(s)." in out
    # vLLM's copy of the driver's environment reached a worker on each node, but for the listed key
    copying = [line for line in out.splitlines() if "Copying the following environment variables to workers" in line]
    assert copying and "VLLM_SEC_MARK" in copying[0] and "VLLM_API_KEY" not in copying[0]
    assert len(helpers) == 2, helpers
    for env in helpers.values():
        assert env.get(b"VLLM_SEC_MARK") == b"copied-to-workers"
        assert b"VLLM_API_KEY" not in env
    assert sim.returncode == 1
    assert "ray.exceptions.ActorDiedError" in err and "RayWorkerWrapper" in err
