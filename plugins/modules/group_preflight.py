#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: group_preflight
short_description: Compare the hosts of each LLM deployment before anything starts
description:
  - Runs on the control node (action plugin) and contacts no host. Used by C(playbooks/preflight.yml), the step
    after the plan in C(playbooks/deploy.yml).
  - Reads the plan (C(llmfleet_plan), made by C(llmfleet.serving.serving_plan) in C(playbooks/prelude.yml)) and
    nothing else. Hosts, engine image, model path, weight size, ports and private addresses are the planner's
    decisions, checked against the hosts here.
  - With O(phase=targets), returns per host what the host tasks must look at (engine images, model paths,
    ports); sets the fact C(llmfleet_preflight_targets).
  - With O(phase=compare), reads what the host tasks registered in each host's variables (C(llmfleet_gpu_facts),
    C(_llmfleet_pf_images), C(_llmfleet_pf_df), C(_llmfleet_pf_state), C(_llmfleet_pf_index),
    C(_llmfleet_pf_listening), C(_llmfleet_pf_containers), C(_llmfleet_pf_clock), C(_llmfleet_pf_clock_after))
    and compares, per deployment, GPU count, GPU model and memory, driver and CUDA version, the engine image
    (by digest, or image ID for a locally built or loaded image; an image not pulled is reported, not failed on),
    the private interface in the subnet of the head's private address, free disk at C(model_path) for the
    weights plus a margin (not required when the model is published there), the ports (free unless held by a
    running container of the same deployment) and the clock against the control node's.
  - A mismatch fails with one table per deployment (one row per host, one column per value, mismatching columns
    and cells marked C(!)) and the fixes naming the variable. See C(docs/preflight.md).
version_added: 0.1.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
  - llmfleet.serving._attributes.CONTROL_NODE
attributes:
  facts:
    description: Sets C(llmfleet_preflight_targets) (targets) or C(llmfleet_preflight_result) (compare).
    support: full
options:
  phase:
    description: V(targets) lists what each host must report; V(compare) compares the reports.
    type: str
    choices: [targets, compare]
    default: compare
  plan:
    description:
      - The plan (C(llmfleet_plan)) to read hosts, image, model path, sizes and ports from.
      - Defaults to the variable C(llmfleet_plan) of the host, else of C(localhost) (where C(playbooks/prelude.yml)
        sets it). Without a plan the module fails and says to run the prelude first.
    type: dict
  checks:
    description: The checks to run.
    type: list
    elements: str
    choices: [gpu, driver, image, interface, disk, ports, clock]
    default: [gpu, driver, image, interface, disk, ports, clock]
  clock_tolerance_s:
    description: Largest accepted difference between a host's clock and the control node's, in seconds.
    type: float
    default: 2.0
  disk_margin:
    description: Free space required at C(model_path) beyond the weights' size, as a fraction of it.
    type: float
    default: 0.1
"""

EXAMPLES = r"""
- name: What each host must report (after playbooks/prelude.yml made llmfleet_plan)
  llmfleet.serving.group_preflight:
    phase: targets
    plan: "{{ hostvars['localhost']['llmfleet_plan'] }}"

- name: Compare (after the host tasks of playbooks/preflight.yml)
  llmfleet.serving.group_preflight:
    clock_tolerance_s: 2
    disk_margin: 0.1
"""

RETURN = r"""
targets:
  description: Per host the images, model paths and ports to look at (phase targets).
  returned: phase is targets
  type: dict
  sample: {hosts: {gpu-a: {images: ["vllm/vllm-openai:v0.32.0"], paths: [/data/models/DeepSeek-R1], ports: [8000, 6379, 8265]}}}
tables:
  description: Deployment name -> the rendered table (Markdown), with the fixes when it failed.
  returned: phase is compare
  type: dict
rows:
  description: Deployment name -> one dict per host (the table's values).
  returned: phase is compare
  type: dict
errors:
  description: Every mismatch with C(deployment), C(check), C(host) (null for a group-wide mismatch), C(variable), C(message).
  returned: phase is compare
  type: list
  elements: dict
  sample: [{deployment: r1, check: GPU model, host: null, variable: "llmfleet_deployments[r1].hosts", message: "GPU model differs: ..."}]
"""
