#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: serving_plan
short_description: Plan LLM serving deployments (vLLM, SGLang) and refuse impossible plans before touching a host
description:
  - Runs on the control node (action plugin) and contacts no host. Reads the deployments (variable
    C(llmfleet_deployments) or O(deployments)), the model catalog of the collection (C(catalog/models.yml))
    merged with C(llmfleet_models), and, for every host the deployments name, the host variables
    C(llmfleet_gpu_facts) (from M(llmfleet.serving.gpu_facts)), C(llmfleet_private_address),
    C(llmfleet_public_address) and C(ansible_host).
  - Returns the plan (per deployment and host, its role, rank, container name, image, command, environment,
    mounts, ports, GPUs, labels, config hash, sizing) and sets it as the fact C(llmfleet_plan).
  - Fails listing B(every) refusal, each naming the variable to fix; refusals include TP x PP not equal to the GPUs,
    head missing or not in the group, hosts listed twice, different GPU counts in one multi-node group,
    weights + minimum KV cache for C(max_model_len) larger than the GPU memory (with the arithmetic),
    unknown engine or engine version, a flag the engine version does not accept, two deployments on one
    port of a host (also Ray and SGLang dist-init ports), GPUs over-committed, a plain-text API key for
    public exposure, a missing API key beyond localhost, secrets in C(env), unknown keys and wrong types.
  - The API key never appears in the result, only its source (V(vault), V(file), V(inline)) and file paths.
  - See C(docs/planner.md) for the deployment keys and the plan schema.
version_added: 0.1.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
attributes:
  check_mode:
    support: full
    details: Plans the same in check mode; it never changes anything.
  diff_mode:
    support: none
  idempotent:
    support: full
  action:
    description: Runs on the control node as an action plugin.
    support: full
  facts:
    description: Sets C(llmfleet_plan).
    support: full
options:
  deployments:
    description:
      - The deployments to plan. Defaults to the variable C(llmfleet_deployments).
      - Each is a dict with the keys listed in C(docs/planner.md) (C(name), C(hosts), C(head), C(engine),
        C(engine_version), C(image), C(model), C(model_path), C(served_model_name), C(gpus_per_host),
        C(tensor_parallel), C(pipeline_parallel), C(max_model_len), C(gpu_memory_utilization), C(port),
        C(exposure), C(api_key_file), C(api_key), C(network_interface), C(nccl_debug), C(extra_args), C(env),
        C(ray_port), C(dist_init_port), C(gpu_runtime), ...).
    type: list
    elements: dict
  models:
    description: Catalog entries merged over C(catalog/models.yml). Defaults to the variable C(llmfleet_models).
    type: dict
  catalog_path:
    description: Another catalog file instead of the collection's C(catalog/models.yml).
    type: path
notes:
  - O(deployments) given as a task argument are templated by Ansible before the plugin sees them; the
    plugin still recognises vaulted API keys (ansible-core 2.19 keeps the vault tag on decrypted values).
"""

EXAMPLES = r"""
- name: Plan every deployment of the inventory
  llmfleet.serving.serving_plan:
  delegate_to: localhost
  run_once: true

- name: Plan one deployment given inline
  llmfleet.serving.serving_plan:
    deployments:
      - name: qwq
        hosts: qwq_single
        model: qwq-32b
        max_model_len: 32768
        gpu_memory_utilization: 0.95
        exposure: private
        api_key_file: /etc/llmfleet-keys/qwq
  register: planned

- name: Show the engine command of the head
  ansible.builtin.debug:
    msg: "{{ planned.plan.deployments.qwq.hosts[planned.plan.deployments.qwq.head].command | join(' ') }}"
"""

RETURN = r"""
plan:
  description: The plan (the same as the fact C(llmfleet_plan)); schema in C(docs/planner.md).
  returned: success
  type: dict
  contains:
    deployments:
      description: Deployment name -> its plan (C(engine), C(engine_version), C(image), C(config_hash), C(head),
        C(workers), C(tp), C(pp), C(nodes), C(gpus_per_host), C(served_model_name), C(endpoint), C(api_key)
        (source and paths only), C(sizing), C(warnings), C(hosts)).
      type: dict
      sample: {r1: {engine: vllm, tp: 8, pp: 2, nodes: 2, head: gpu-a, config_hash: 8896f5071859370f}}
    hosts:
      description: Host -> list of C(deployment), C(container_name), C(role).
      type: dict
      sample: {gpu-a: [{deployment: r1, container_name: llmfleet-r1-head, role: head}]}
ansible_facts:
  description: C(llmfleet_plan), the plan.
  returned: success
  type: dict
errors:
  description: Every refusal, each C(variable) and C(message).
  returned: failure
  type: list
  elements: dict
  sample: [{variable: "llmfleet_deployments[r1].tensor_parallel", message: "tensor_parallel x pipeline_parallel = 8 x 1 = 8, ..."}]
"""
