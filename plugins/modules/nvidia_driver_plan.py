#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_driver_plan
short_description: Decide what the NVIDIA driver step must do on a host (install, skip or refuse)
version_added: 0.1.0
description:
  - Pure decision, changes nothing. From the GPU facts of M(llmfleet.serving.gpu_facts), the pinned
    driver branch and the OS, returns whether to install, skip (the pinned branch is loaded) or refuse
    (a downgrade, a kernel module flavor change or Secure Boot without signing) with the reason,
    the packages per distribution, the NVIDIA CUDA repository name, whether Fabric Manager is needed
    and its package pinned to the exact driver version, and what to hold.
  - Alibaba Cloud Linux 3 (distribution C(Alibaba), family C(RedHat), major C(3)) is mapped to the
    C(rhel8) repository.
author:
  - llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.INFO_MODULE
options:
  facts:
    description: The C(llmfleet_gpu_facts) fact (keys C(driver_loaded), C(driver_version), C(gpu_count),
      C(product_name), C(architecture), C(nvswitch)). Empty when there is no driver.
    type: dict
    default: {}
  branch:
    description: Pinned driver branch (V(580)) or exact version (V(580.95.05)).
    type: str
    required: true
  os_family:
    description: C(ansible_facts.os_family).
    type: str
    required: true
  distribution:
    description: C(ansible_facts.distribution).
    type: str
    required: true
  distribution_major_version:
    description: C(ansible_facts.distribution_major_version).
    type: str
    required: true
  open_kernel_modules:
    description: V(auto) (open on Turing and newer), V(true) or V(false).
    type: str
    choices: [auto, 'true', 'false']
    default: auto
  fabric_manager:
    description: V(auto) (when the GPUs sit on NVSwitch), V(true) or V(false).
    type: str
    choices: [auto, 'true', 'false']
    default: auto
  allow_downgrade:
    description: Allow installing a branch older than the loaded driver.
    type: bool
    default: false
  allow_crossgrade:
    description: Allow switching between the open and proprietary kernel modules.
    type: bool
    default: false
  installed_version:
    description: Driver version installed on disk (for example from C(modinfo -F version nvidia)),
      used to pin Fabric Manager after an install that is not loaded yet.
    type: str
  proc_version:
    description: Content of C(/proc/driver/nvidia/version), tells which kernel module flavor is loaded.
    type: str
  secure_boot_state:
    description: Output of C(mokutil --sb-state).
    type: str
  secure_boot_signing_ready:
    description: The operator has enrolled a MOK that DKMS signs the modules with.
    type: bool
    default: false
  fabric_manager_installed:
    description: A Fabric Manager package is installed on the host. With O(fabric_manager=auto), an NVSwitch
      fabric that is already ready while no local package exists is taken as run by the hypervisor.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Decide the driver step
  llmfleet.serving.nvidia_driver_plan:
    facts: "{{ ansible_facts.llmfleet_gpu_facts | default({}) }}"
    branch: "580"
    os_family: "{{ ansible_facts.os_family }}"
    distribution: "{{ ansible_facts.distribution }}"
    distribution_major_version: "{{ ansible_facts.distribution_major_version }}"
  register: driver_plan
"""

RETURN = r"""
plan:
  description: The decision.
  returned: success
  type: dict
  contains:
    action: {description: "V(install), V(skip) or V(refuse).", type: str, returned: always, sample: skip}
    reason: {description: "Why, in words.", type: str, returned: always, sample: driver 580.95.05 is loaded and matches the pinned branch 580}
    transition: {description: "V(fresh), V(none), V(upgrade), V(downgrade) or V(crossgrade).", type: str, returned: always, sample: none}
    open_kernel_modules: {description: Open kernel modules wanted., type: bool, returned: always, sample: true}
    architecture: {description: GPU architecture (lower case) or null., type: str, returned: always, sample: hopper}
    cuda_repo_distro: {description: Directory of NVIDIA's CUDA repository., type: str, returned: always, sample: ubuntu2404}
    driver_packages: {description: Packages to install., type: list, elements: str, returned: always, sample: [nvidia-driver-580-open]}
    pinning_package: {description: NVIDIA branch pinning package (apt) or null., type: str, returned: always, sample: null}
    module_stream: {description: DNF module stream (RedHat family) or null., type: str, returned: always, sample: null}
    fabric_manager: {description: Fabric Manager needed., type: bool, returned: always, sample: false}
    fabric_manager_package: {description: Fabric Manager package name or null., type: str, returned: always, sample: nvidia-fabricmanager-580}
    fabric_manager_spec:
      description: "Fabric Manager package pinned to the driver version, null while unknown."
      type: str
      returned: always
      sample: "nvidia-fabricmanager-580=580.95.05-*"
    hold:
      description: Packages to hold (apt) or patterns to version-lock (dnf).
      type: list
      elements: str
      returned: always
      sample: [nvidia-driver-580-open]
    secure_boot: {description: "Secure Boot state, null when unknown.", type: bool, returned: always, sample: false}
    reboot_expected: {description: An install would change the kernel module., type: bool, returned: always, sample: false}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.llmfleet.serving.plugins.module_utils._driver import DriverPlanError, build_plan


def main():
    module = AnsibleModule(
        argument_spec=dict(
            facts=dict(type="dict", default={}),
            branch=dict(type="str", required=True),
            os_family=dict(type="str", required=True),
            distribution=dict(type="str", required=True),
            distribution_major_version=dict(type="str", required=True),
            open_kernel_modules=dict(type="str", choices=["auto", "true", "false"], default="auto"),
            fabric_manager=dict(type="str", choices=["auto", "true", "false"], default="auto"),
            allow_downgrade=dict(type="bool", default=False),
            allow_crossgrade=dict(type="bool", default=False),
            installed_version=dict(type="str"),
            proc_version=dict(type="str"),
            secure_boot_state=dict(type="str"),
            secure_boot_signing_ready=dict(type="bool", default=False),
            fabric_manager_installed=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        plan = build_plan(
            p["facts"], p["branch"], p["os_family"], p["distribution"], p["distribution_major_version"],
            open_setting=p["open_kernel_modules"], fabric_manager=p["fabric_manager"],
            allow_downgrade=p["allow_downgrade"], allow_crossgrade=p["allow_crossgrade"],
            installed_version=p["installed_version"] or None, proc_version=p["proc_version"],
            secure_boot_state=p["secure_boot_state"], secure_boot_signing_ready=p["secure_boot_signing_ready"],
            fabric_manager_installed=p["fabric_manager_installed"])
    except DriverPlanError as exc:
        module.fail_json(msg=to_native(exc))
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
