# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Topology of one deployment: who is head, who is worker, which ports each host claims (PRIVATE).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python, controller only. The planner (_plan.py) validates the deployment keys, then hands
the numbers it settled (hosts head first, GPUs, TP x PP, addresses) to ``group()``; the container
builder (_container.py) and the files (_files.py) read the small objects made here.
"""

from __future__ import annotations

from typing import NamedTuple


class Member(NamedTuple):
    """One host of a deployment."""
    host: str
    rank: int
    role: str              # single | head | worker
    address: str           # private address (llmfleet_private_address, else ansible_host)
    interface: object      # NCCL/GLOO interface name, or None
    gpu_devices: tuple     # GPU indices allocated on the host
    container_name: str


class Group(NamedTuple):
    """The hosts of one deployment, head first, and how the GPUs are split over them."""
    name: str
    engine: str
    version: str
    gpus_per_host: int
    tp: int
    pp: int
    members: tuple         # (Member, ...), head first

    @property
    def nodes(self):
        return len(self.members)

    @property
    def gpus_total(self):
        return self.gpus_per_host * self.nodes

    @property
    def head(self):
        return self.members[0]

    @property
    def multi_node(self):
        return self.nodes > 1


class Ports(NamedTuple):
    """The ports a deployment uses (deployment keys port, ray_port, ray_dashboard_port, dist_init_port)."""
    api: int = 8000
    ray: int = 6379
    ray_dashboard: int = 8265
    dist_init: int = 20000


def role_of(rank, nodes):
    return "single" if nodes == 1 else ("head" if rank == 0 else "worker")


def container_name(name, role, rank):
    """llmfleet-<name> | llmfleet-<name>-head | llmfleet-<name>-worker-<rank>."""
    if role == "single":
        return "llmfleet-%s" % name
    return "llmfleet-%s-head" % name if role == "head" else "llmfleet-%s-worker-%d" % (name, rank)


def group(name, engine, version, hosts, addresses, interfaces, devices, gpus_per_host, tp, pp):
    """A Group from the planner's settled values; ``hosts`` head first, the dicts keyed by host."""
    members = []
    for rank, h in enumerate(hosts):
        role = role_of(rank, len(hosts))
        members.append(Member(h, rank, role, addresses[h], interfaces.get(h), tuple(devices.get(h) or ()),
                              container_name(name, role, rank)))
    return Group(name, engine, version, gpus_per_host, tp, pp, tuple(members))


# Ray's fixed per-node ports (ray start defaults): claimed so that two Ray heads on one host collide
# in the plan, not at start-up
RAY_CLIENT_SERVER_PORT = 10001
RAY_DASHBOARD_AGENT_PORT = 52365


def port_claims(engine, hosts, ports):
    """{host: [(port, deployment key)]}: the API port on the head (every rank for SGLang), Ray's
    GCS and dashboard ports on a multi-node vLLM head, the dist-init port on a multi-node SGLang
    head. The planner refuses two claims of one port on one host; preflight checks they are free."""
    out = {h: [] for h in hosts}
    nodes = len(hosts)
    for rank, h in enumerate(hosts):
        if engine == "sglang" or rank == 0:
            out[h].append((ports.api, "port"))
    if engine == "vllm" and nodes > 1:
        out[hosts[0]] += [(ports.ray, "ray_port"), (ports.ray_dashboard, "ray_dashboard_port"),
                          (RAY_CLIENT_SERVER_PORT, "Ray client server (fixed %d)" % RAY_CLIENT_SERVER_PORT)]
        for h in hosts:
            out[h].append((RAY_DASHBOARD_AGENT_PORT, "Ray dashboard agent (fixed %d)" % RAY_DASHBOARD_AGENT_PORT))
    if engine == "sglang" and nodes > 1:
        out[hosts[0]].append((ports.dist_init, "dist_init_port"))
    return out
