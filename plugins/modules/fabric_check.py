#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fabric_check
short_description: Measure NCCL all-reduce bus bandwidth and the transport NCCL chose
description:
  - Runs a short bf16 all-reduce with PyTorch + NCCL, one process per GPU (C(torch.distributed.run)),
    inside the engine image (C(docker run --rm --gpus all --network host --ipc host)) or with the host's
    Python (O(use_container=false)), with C(NCCL_DEBUG=INFO).
  - Reports per message size the time, algorithm bandwidth and bus bandwidth
    (C(busbw = algbw * 2 * (n-1) / n), as nccl-tests), and the transports NCCL chose
    (C(P2P/CUMEM), C(P2P/IPC), C(NVLS), C(SHM), C(NET/IB), C(NET/Socket)) from the C(via) lines of its log.
  - Fails when the bus bandwidth at the largest size is under O(min_busbw_gbps), when O(require_transport)
    was not used, or when the program fails (with the log tail and a classification).
  - With one GPU on one node (one rank) the bus bandwidth is not defined and NCCL uses no transport; the
    task reports RV(single_rank=true), RV(busbw_gbps=null) and a warning, and checks neither threshold.
  - One host per task. Across hosts, run it on every host of the group at the same time with O(nnodes),
    O(node_rank) and O(master_addr) (for example with C(async) or C(strategy=free)); the parser handles the
    logs of several nodes. Orchestrating that from one task is not implemented.
version_added: 0.1.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
attributes:
  check_mode:
    support: full
    details:
      - The check changes nothing on the host and runs the same in check mode (it uses the GPUs for some seconds).
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  image:
    description: Engine image with PyTorch and NCCL (for example the vLLM or SGLang image). Required with O(use_container=true).
    type: str
  use_container:
    description: Run in O(image) through Docker; V(false) runs the host's O(python).
    type: bool
    default: true
  python:
    description: Python interpreter (in the image or on the host).
    type: str
    default: python3
  docker_cli:
    description: Name or path of the C(docker) CLI.
    type: str
    default: docker
  docker_args:
    description: Extra C(docker run) arguments placed before the image (for example C(--shm-size=16g)).
    type: list
    elements: str
    default: []
  gpus:
    description: Number of GPUs (processes) to use; default all GPUs.
    type: int
  sizes_mib:
    description: Message sizes in MiB.
    type: list
    elements: float
    default: [1, 16, 256, 1024]
  iters:
    description: Timed iterations per size.
    type: int
    default: 20
  warmup:
    description: Untimed iterations per size.
    type: int
    default: 5
  min_busbw_gbps:
    description: Fail when the bus bandwidth (GB/s) at the largest size is lower. V(0) disables.
    type: float
    default: 0
  require_transport:
    description:
      - Fail unless NCCL used this transport, for example C(NET/IB) for multi-node groups with RDMA,
        C(NVLS) or C(P2P). Matches a prefix (C(P2P) matches C(P2P/CUMEM)).
    type: str
  env:
    description: Extra environment (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, ...); no secrets.
    type: dict
    default: {}
  nccl_debug:
    description: C(NCCL_DEBUG) level; C(INFO) is needed to see the transports.
    type: str
    default: INFO
  nnodes:
    description: Number of nodes taking part (run the module on each at the same time).
    type: int
    default: 1
  node_rank:
    description: Rank of this node.
    type: int
    default: 0
  master_addr:
    description: Address of node 0 (private network). Required when O(nnodes) > 1.
    type: str
  master_port:
    description: Rendezvous port on O(master_addr).
    type: int
    default: 29500
  timeout:
    description: Seconds before the run is stopped (the container is removed).
    type: int
    default: 600
  log_lines:
    description: Lines of output returned in RV(log_tail).
    type: int
    default: 40
"""

EXAMPLES = r"""
- name: NVLink bandwidth inside the engine image
  llmfleet.serving.fabric_check:
    image: vllm/vllm-openai:v0.32.0
    min_busbw_gbps: 300

- name: Two hosts over RDMA (run on both hosts at once)
  llmfleet.serving.fabric_check:
    image: vllm/vllm-openai:v0.32.0
    nnodes: 2
    node_rank: "{{ groups['r1_dual'].index(inventory_hostname) }}"
    master_addr: "{{ hostvars[groups['r1_dual'][0]].llmfleet_private_address }}"
    require_transport: NET/IB
    env:
      NCCL_SOCKET_IFNAME: eth0
  async: 900
  poll: 5
"""

RETURN = r"""
results:
  description: Per size C(size_bytes), C(size_mib), C(world), C(time_us), C(algbw_gbps), C(busbw_gbps).
  returned: when the program printed results
  type: list
  elements: dict
  sample: [{size_bytes: 1073741824, size_mib: 1024.0, world: 2, time_us: 3271.6, algbw_gbps: 328.2, busbw_gbps: 328.2}]
busbw_gbps:
  description:
    - Bus bandwidth at the largest size.
    - Null with one rank (one GPU, one node), where it is not defined; RV(notes) says so.
  returned: always
  type: float
  sample: 328.2
world_size:
  description: Number of ranks.
  returned: always
  type: int
single_rank:
  description:
    - True when only one rank took part. The all-reduce then moves nothing (NCCL returns an in-place
      all-reduce of one rank at once); bandwidths (C(busbw_gbps), C(algbw_gbps) per size are null)
      and transport are not defined, O(min_busbw_gbps) and O(require_transport) are not checked (a
      warning says so) and the task does not fail for them.
  returned: always
  type: bool
notes:
  description: Warnings that did not fail the task (the single-rank case), also shown as warnings.
  returned: when the program ran
  type: list
  elements: str
transports:
  description: Transports from NCCL's C(via) lines (C(P2P/CUMEM), C(P2P/IPC), C(SHM), C(NVLS), C(NET/IB), C(NET/Socket), C(CollNet)).
  returned: always
  type: list
  elements: str
  sample: [NVLS, P2P/CUMEM]
inter_node_transports:
  description: The C(NET/...) transports (between nodes).
  returned: always
  type: list
  elements: str
network:
  description: NCCL's network plugin (C(IB), C(Socket)) when reported.
  returned: always
  type: str
net_devices:
  description: Devices NCCL's network used (C(mlx5_0:1/IB), C(eth0:10.0.0.11<0>)).
  returned: always
  type: list
  elements: str
nccl_version:
  description: NCCL version reported.
  returned: always
  type: str
  sample: 2.28.9+cuda13.0
nnodes:
  description: Nodes in the communicator as reported by NCCL.
  returned: always
  type: int
hosts:
  description: Host names in the NCCL log prefixes.
  returned: always
  type: list
  elements: str
nccl_warnings:
  description: C(NCCL WARN) lines.
  returned: always
  type: list
  elements: str
check_ok:
  description: Whether the correctness all-reduce returned the expected sum.
  returned: always
  type: bool
command:
  description: The command that ran.
  returned: always
  type: list
  elements: str
rc:
  description: Exit status of the run.
  returned: always
  type: int
duration_s:
  description: Wall time of the run.
  returned: always
  type: float
diagnosis:
  description: Classification of the log when the program failed (same classes as llm_ready).
  returned: on failure of the program
  type: dict
log_tail:
  description: Last O(log_lines) lines of output.
  returned: always
  type: list
  elements: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.serving.plugins.module_utils._nccl import (
    ALLREDUCE_SCRIPT,
    build_command,
    evaluate,
    notes,
    parse_output,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._ready import classify_logs


def main():
    module = AnsibleModule(
        argument_spec=dict(
            image=dict(type="str"),
            use_container=dict(type="bool", default=True),
            python=dict(type="str", default="python3"),
            docker_cli=dict(type="str", default="docker"),
            docker_args=dict(type="list", elements="str", default=[]),
            gpus=dict(type="int"),
            sizes_mib=dict(type="list", elements="float", default=[1, 16, 256, 1024]),
            iters=dict(type="int", default=20),
            warmup=dict(type="int", default=5),
            min_busbw_gbps=dict(type="float", default=0),
            require_transport=dict(type="str"),
            env=dict(type="dict", default={}),
            nccl_debug=dict(type="str", default="INFO"),
            nnodes=dict(type="int", default=1),
            node_rank=dict(type="int", default=0),
            master_addr=dict(type="str"),
            master_port=dict(type="int", default=29500),
            timeout=dict(type="int", default=600),
            log_lines=dict(type="int", default=40),
        ),
        required_if=[("use_container", True, ("image",))],
        supports_check_mode=True,
    )
    p = module.params
    if p["nnodes"] > 1 and not p["master_addr"]:
        module.fail_json(msg="master_addr is required when nnodes > 1")

    env = dict((str(k), str(v)) for k, v in p["env"].items())
    env.update({
        "NCCL_DEBUG": p["nccl_debug"],
        "LLMFLEET_NCCL_SIZES_MIB": ",".join("%g" % s for s in p["sizes_mib"]),
        "LLMFLEET_NCCL_ITERS": str(p["iters"]),
        "LLMFLEET_NCCL_WARMUP": str(p["warmup"]),
    })

    tmpdir = module.tmpdir
    script = os.path.join(tmpdir, "llmfleet_nccl_allreduce.py")
    with open(script, "w") as f:
        f.write(ALLREDUCE_SCRIPT)
    os.chmod(script, 0o644)

    name = "llmfleet-fabric-check-%d" % os.getpid()
    if p["use_container"]:
        docker = module.get_bin_path(p["docker_cli"], required=True)
        argv = build_command(script, image=p["image"], docker_bin=docker, python=p["python"], gpus=p["gpus"],
                             env=env, name=name, nnodes=p["nnodes"], node_rank=p["node_rank"],
                             master_addr=p["master_addr"], master_port=p["master_port"])
        i = argv.index("--entrypoint")
        argv[i:i] = list(p["docker_args"])
        environ = None
    else:
        python = module.get_bin_path(p["python"], required=True) if os.path.sep not in p["python"] else p["python"]
        argv = build_command(script, use_container=False, python=python, gpus=p["gpus"], nnodes=p["nnodes"],
                             node_rank=p["node_rank"], master_addr=p["master_addr"], master_port=p["master_port"])
        environ = env
    timeout_bin = module.get_bin_path("timeout")
    run_argv = ([timeout_bin, "--kill-after=15", str(p["timeout"])] + argv) if timeout_bin else argv

    t0 = time.monotonic()
    rc, out, err = module.run_command(run_argv, environ_update=environ)
    duration = round(time.monotonic() - t0, 2)
    if rc in (124, 137) and p["use_container"]:
        module.run_command([docker, "rm", "-f", name])
    text = (out or "") + "\n" + (err or "")
    parsed = parse_output(text)
    lines = [line for line in text.splitlines() if line.strip()]
    result = dict(changed=False, command=argv, duration_s=duration, rc=rc,
                  log_tail=lines[-p["log_lines"]:] if p["log_lines"] > 0 else [], **parsed)
    result.pop("largest", None)

    if rc != 0:
        diag = classify_logs(text)
        why = "timed out after %ss" % p["timeout"] if rc in (124, 137) and timeout_bin else "exited with %s" % rc
        line = (" (%s)" % diag["line"]) if diag.get("line") else ""
        module.fail_json(msg="NCCL all-reduce %s: %s%s" % (why, diag["class"], line), diagnosis=diag, **result)
    result["notes"] = notes(parsed, p["min_busbw_gbps"], p["require_transport"])
    for note in result["notes"]:
        module.warn(note)
    errors = evaluate(parsed, p["min_busbw_gbps"], p["require_transport"])
    if errors:
        module.fail_json(msg="; ".join(errors), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
