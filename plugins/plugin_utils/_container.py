# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The container of each host of a deployment: argv, environment, mounts, ports (PRIVATE).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python, controller only. The argv is built once, here, and passed whole: the plan gives
``entrypoint`` (the llmfleet entrypoint and its mode arguments) and ``command`` (the engine's or
Ray's own argv) as two lists, and roles/inference_server/tasks/container.yml hands both to
community.docker.docker_container unchanged. The entrypoint (roles/inference_server/files/
entrypoint.sh) reads its mode arguments by position and execs ``command`` as given.

    single / SGLang rank:  /bin/sh ENTRYPOINT serve                       + ENGINE ARGV
    vLLM Ray worker:       /bin/sh ENTRYPOINT ray-worker                  + ray start --address=... --block
    vLLM Ray head:         /bin/sh ENTRYPOINT ray-head GPUS NODES TIMEOUT_S N RAY-START-ARGV(N)
                                                                          + ENGINE ARGV
"""

from __future__ import annotations

from typing import NamedTuple

from ansible_collections.llmfleet.serving.plugins.plugin_utils._files import ENTRYPOINT_IN_CONTAINER, KEY_IN_CONTAINER


class EngineSettings(NamedTuple):
    """What the engine's argv is made of (validated deployment keys, settled by the planner)."""
    model_path: str
    served_model_name: str
    max_model_len: int
    gpu_memory_utilization: float
    exposure: str                  # localhost | private | public
    ports: object                  # _topology.Ports
    ray_timeout_s: int = 600
    catalog_flags: tuple = ()      # the model's engine_flags from the catalog
    extra_args: tuple = ()         # the deployment's extra_args


def bind_address(exposure, address):
    """--host: every address for public, the private address for private, loopback for localhost."""
    return {"public": "0.0.0.0", "private": address, "localhost": "127.0.0.1"}[exposure]


def engine_argv(group, member, s):
    """The engine's own argv on ``member`` (vllm serve ... / python3 -m sglang.launch_server ...)."""
    u = "%g" % s.gpu_memory_utilization
    bind = bind_address(s.exposure, member.address)
    if group.engine == "sglang":
        argv = ["python3", "-m", "sglang.launch_server", "--model-path", s.model_path,
                "--served-model-name", s.served_model_name, "--tp", str(group.tp)]
        if group.pp > 1:
            argv += ["--pp-size", str(group.pp)]
        if group.multi_node:
            argv += ["--nnodes", str(group.nodes), "--node-rank", str(member.rank),
                     "--dist-init-addr", "%s:%d" % (group.head.address, s.ports.dist_init)]
        argv += ["--host", bind, "--port", str(s.ports.api), "--mem-fraction-static", u,
                 "--context-length", str(s.max_model_len)]
        # SGLang serves /metrics only when asked (vLLM always does): monitoring needs it.
        if "--enable-metrics" not in s.extra_args and "--enable-metrics" not in s.catalog_flags:
            argv.append("--enable-metrics")
        return argv + list(s.catalog_flags) + list(s.extra_args)
    argv = ["vllm", "serve", s.model_path, "--served-model-name", s.served_model_name,
            "--tensor-parallel-size", str(group.tp)]
    if group.pp > 1:
        argv += ["--pipeline-parallel-size", str(group.pp)]
    argv += ["--max-model-len", str(s.max_model_len), "--gpu-memory-utilization", u, "--host", bind,
             "--port", str(s.ports.api)]
    if group.multi_node:
        argv += ["--distributed-executor-backend", "ray"]
    return argv + list(s.catalog_flags) + list(s.extra_args)


def ray_start_argv(group, member, s):
    """`ray start` of a vLLM multi-node member: the head's GCS and loopback-only dashboard, or a
    worker that joins the head and blocks."""
    if member.role == "worker":
        return ["ray", "start", "--address=%s:%d" % (group.head.address, s.ports.ray),
                "--node-ip-address=%s" % member.address, "--num-gpus=%d" % group.gpus_per_host, "--block"]
    return ["ray", "start", "--head", "--node-ip-address=%s" % member.address, "--port=%d" % s.ports.ray,
            "--dashboard-host=127.0.0.1", "--dashboard-port=%d" % s.ports.ray_dashboard,
            "--num-gpus=%d" % group.gpus_per_host]


def launch(group, member, s):
    """(entrypoint, command): the two lists docker_container gets, see the module docstring."""
    sh = ["/bin/sh", ENTRYPOINT_IN_CONTAINER]
    if group.engine == "sglang" or not group.multi_node:
        return sh + ["serve"], engine_argv(group, member, s)
    ray = ray_start_argv(group, member, s)
    if member.role == "worker":
        return sh + ["ray-worker"], ray
    return (sh + ["ray-head", str(group.gpus_total), str(group.nodes), str(s.ray_timeout_s), str(len(ray))] + ray,
            engine_argv(group, member, s))


def environment(group, member, nccl_debug, rdma, has_key, extra_env, is_ip):
    """The container's environment (no secret: the key is a mounted file named here)."""
    env = {"HF_HUB_OFFLINE": "1", "NCCL_DEBUG": nccl_debug}
    if member.interface:
        env["NCCL_SOCKET_IFNAME"] = member.interface
        env["GLOO_SOCKET_IFNAME"] = member.interface
    if is_ip and group.engine == "vllm":
        env["VLLM_HOST_IP"] = member.address
    if is_ip and group.engine == "sglang" and group.multi_node:
        # SGLang's get_local_ip_auto() (sglang/srt/utils/network.py) reads SGLANG_HOST_IP first
        env["SGLANG_HOST_IP"] = member.address
    if group.multi_node:
        env.update(rdma or {})
    if group.engine == "vllm" and member.role == "worker":
        # A worker's raylet gives up on a head that went away after this long (Ray's default 60 s),
        # so that it exits, Docker restarts it and it joins the new head (the group watchdog,
        # docs/roles/watchdog.md, waits for exactly this).
        env["RAY_gcs_rpc_server_reconnect_timeout_s"] = "15"
    if has_key:
        env["LLMFLEET_API_KEY_FILE"] = KEY_IN_CONTAINER
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    return env


def ports_of(group, member, s):
    """Ports the container listens on (informative: the containers use the host network)."""
    ports = [s.ports.api] if (member.role != "worker" or group.engine == "sglang") else []
    if member.role == "head" and group.engine == "vllm":
        ports += [s.ports.ray, s.ports.ray_dashboard]
    if group.engine == "sglang" and group.multi_node and member.rank == 0:
        ports.append(s.ports.dist_init)
    return ports


def spec(group, member, s, image, env, mounts, gpu_runtime):
    """The container spec of ``member``: what docker_container runs, nothing left to derive."""
    entrypoint, command = launch(group, member, s)
    gpus = group.gpus_per_host if gpu_runtime == "nvidia" else 0
    return {
        "container_name": member.container_name, "image": image,
        "entrypoint": entrypoint, "command": command,
        "env": env, "mounts": mounts, "ports": ports_of(group, member, s),
        "gpus": gpus, "gpu_devices": list(member.gpu_devices),
        "device_requests": ([{"driver": "nvidia", "device_ids": [str(i) for i in member.gpu_devices],
                              "capabilities": [["gpu"]]}] if gpus else []),
    }
