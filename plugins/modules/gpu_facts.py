#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Gather NVIDIA GPU, NVLink, RDMA and network facts of a host
description:
  - Reads C(nvidia-smi -q -x) (falls back to the CSV query when the XML is unavailable),
    C(nvidia-smi nvlink -s) and C(nvidia-smi topo -m), the RDMA devices under
    C(/sys/class/infiniband) and the IPv4 addresses of the network interfaces
    (C(ip -j addr), C(ip -o -4 addr), or an ioctl per interface when C(ip) is missing).
  - Returns them as the fact C(llmfleet_gpu_facts), which the serving planner reads.
  - Without C(nvidia-smi), or with the driver not loaded, fails with a message saying which
    of the two is missing, unless O(fail_on_missing=false).
version_added: 0.1.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.INFO_MODULE
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
attributes:
  facts:
    description: Action returns an C(ansible_facts) dictionary.
    support: full
options:
  nvidia_smi_path:
    description:
      - Name or absolute path of C(nvidia-smi). A bare name is searched in E(PATH),
        C(/usr/bin) and C(/usr/local/nvidia/bin).
    type: str
    default: nvidia-smi
  include_processes:
    description: Also list the processes holding GPU memory.
    type: bool
    default: true
  sysfs_root:
    description: Root of sysfs (for C(class/infiniband) and C(class/net)); change it only for tests.
    type: path
    default: /sys
  fail_on_missing:
    description:
      - Fail when C(nvidia-smi) is missing or the driver is not loaded.
      - With V(false) the module succeeds with RV(ansible_facts.llmfleet_gpu_facts.gpu_count=0) and
        RV(ansible_facts.llmfleet_gpu_facts.driver_loaded=false), so that provisioning roles can decide
        to install the driver.
    type: bool
    default: true
notes:
  - C(nvswitch) is true when the GPUs report an NVSwitch fabric state (Hopper and later) or when 8 or
    more SXM GPUs are NVLinked pair-wise; the fabric manager is then required (on the host, or in the
    hypervisor for pass-through VMs). C(fabric.ready) is true when every GPU reports state
    C(Completed) with status C(Success).
"""

EXAMPLES = r"""
- name: Gather GPU facts
  llmfleet.serving.gpu_facts:

- name: Show the GPU count and memory
  ansible.builtin.debug:
    msg: "{{ llmfleet_gpu_facts.gpu_count }} x {{ llmfleet_gpu_facts.product_name }}"

- name: Facts on hosts that may not have a driver yet
  llmfleet.serving.gpu_facts:
    fail_on_missing: false
  register: gpu

- name: Install the driver where it is missing
  ansible.builtin.include_role:
    name: llmfleet.serving.gpu_host
  when: not llmfleet_gpu_facts.driver_loaded
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    llmfleet_gpu_facts:
      description: GPU, interconnect and network facts of the host.
      returned: always
      type: dict
      contains:
        driver_loaded:
          description: Whether nvidia-smi answered (driver loaded).
          type: bool
          sample: true
        reason:
          description: Why no GPU facts could be read (only when RV(ansible_facts.llmfleet_gpu_facts.driver_loaded=false)).
          type: str
          returned: when driver_loaded is false
        source:
          description: C(xml) or C(csv) (the fallback).
          type: str
          sample: xml
        gpu_count:
          description: Number of GPUs.
          type: int
          sample: 8
        product_name:
          description: GPU product name (names joined by comma when mixed).
          type: str
          sample: NVIDIA H200
        architecture:
          description: GPU architecture.
          type: str
          sample: Hopper
        driver_version:
          description: NVIDIA driver version.
          type: str
          sample: 580.159.04
        cuda_version:
          description: Highest CUDA version the driver supports.
          type: str
          sample: "13.0"
        gpus:
          description:
            - Per GPU C(index), C(uuid), C(name), C(architecture), C(pci_bus_id), C(memory_total_mib),
              C(memory_used_mib), C(memory_free_mib), C(memory_reserved_mib) (from the XML, or total - used - free),
              C(memory_usable_mib) (total - reserved, what CUDA reports and the planner sizes against), C(persistence_mode),
              C(mig_mode), C(ecc_mode), C(compute_mode), C(fabric_state), C(fabric_status),
              C(fabric_clique_id), C(nvlink_links_active) (null when unknown).
          type: list
          elements: dict
        memory_total_mib:
          description: Sum of the GPUs' memory.
          type: int
          sample: 1150168
        persistence_mode_all:
          description: Persistence mode enabled on every GPU.
          type: bool
        mig_enabled:
          description: MIG enabled on at least one GPU.
          type: bool
        nvlink:
          description: C(present), C(link_count) (active links over all GPUs), C(gpu_pairs) (pairs linked by NVLink), C(all_pairs).
          type: dict
          sample: {present: true, link_count: 144, gpu_pairs: 28, all_pairs: true}
        topology:
          description: The C(nvidia-smi topo -m) matrix, row name -> column name -> link (C(NV18), C(PXB), ...).
          type: dict
        nvswitch:
          description: GPUs on NVSwitch (fabric manager required).
          type: bool
        fabric:
          description: NVSwitch fabric C(state), C(status) and C(ready) (null without NVSwitch).
          type: dict
          sample: {state: Completed, status: Success, ready: true}
        processes:
          description: Processes holding GPU memory (C(gpu_index), C(gpu_uuid), C(pid), C(type), C(process_name), C(used_memory_mib)).
          type: list
          elements: dict
        rdma_devices:
          description: Names of RDMA devices.
          type: list
          elements: str
          sample: [mlx5_0, mlx5_1]
        rdma:
          description: RDMA devices with their ports (C(port), C(state), C(link_layer), C(rate)).
          type: list
          elements: dict
        interfaces:
          description: Network interfaces, each C(name), C(state), C(ipv4) (list of C(address), C(prefix)).
          type: list
          elements: dict
          sample: [{name: eth0, state: UP, ipv4: [{address: 10.0.0.11, prefix: 24}]}]
        interfaces_source:
          description: How the interfaces were read (C(ip -j addr), C(ip -o -4 addr), C(ioctl)).
          type: str
        warnings:
          description: Fallbacks taken.
          type: list
          elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.serving.plugins.module_utils._nvidia_smi import (
    NvidiaSmiError,
    collect,
    empty_facts,
)

SEARCH_DIRS = ["/usr/bin", "/usr/local/nvidia/bin", "/usr/local/bin"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi_path=dict(type="str", default="nvidia-smi"),
            include_processes=dict(type="bool", default=True),
            sysfs_root=dict(type="path", default="/sys"),
            fail_on_missing=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def run(argv):
        return module.run_command(argv, environ_update={"LC_ALL": "C"})

    ip_path = module.get_bin_path("ip", opt_dirs=["/usr/sbin", "/sbin"])
    path = p["nvidia_smi_path"]
    if os.path.sep in path:
        smi = path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    else:
        smi = module.get_bin_path(path, opt_dirs=SEARCH_DIRS)

    if smi is None:
        msg = ("nvidia-smi not found (looked for %r in PATH and %s): the NVIDIA driver utilities are not "
               "installed on this host" % (path, ", ".join(SEARCH_DIRS)))
        if p["fail_on_missing"]:
            module.fail_json(msg=msg, driver_loaded=False, nvidia_smi_found=False)
        facts = empty_facts(msg, p["sysfs_root"], run, ip_path)
        module.exit_json(changed=False, ansible_facts={"llmfleet_gpu_facts": facts})

    try:
        facts = collect(run, smi, sysfs_root=p["sysfs_root"], include_processes=p["include_processes"],
                        ip_path=ip_path)
    except NvidiaSmiError as e:
        if e.kind == "driver" and not p["fail_on_missing"]:
            facts = empty_facts(e.msg, p["sysfs_root"], run, ip_path)
            module.exit_json(changed=False, ansible_facts={"llmfleet_gpu_facts": facts})
        module.fail_json(msg=e.msg, driver_loaded=(e.kind != "driver"), nvidia_smi_found=True)
    for w in facts["warnings"]:
        module.warn(w)
    module.exit_json(changed=False, ansible_facts={"llmfleet_gpu_facts": facts})


if __name__ == "__main__":
    main()
