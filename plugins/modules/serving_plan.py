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
    public exposure, a missing API key beyond localhost, secrets in C(env), unknown keys and wrong types,
    tensor parallel sizes the model's heads do not allow, flag values the engine refuses, secret-bearing or
    planner-owned flags from any source, and C(--trust-remote-code) without the model's explicit opt-in.
  - The API key never appears in the result, only its source (V(vault), V(file), V(inline)) and file paths.
  - See C(docs/planner.md) for the deployment keys and the plan schema.
version_added: 0.1.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
  - llmfleet.serving._attributes.CONTROL_NODE
attributes:
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
      - The suboptions below are rendered from the planner's schema (C(plugins/plugin_utils/_spec.py)); the
        planner refuses unknown keys (with "did you mean"), wrong types, non-finite numbers and the engine rules
        of C(docs/planner.md).
    type: list
    elements: dict
    # BEGIN GENERATED deployments suboptions by tools/render_plan_docs.py -- do not edit by hand
    suboptions:
      api_key:
        description:
        - The API key (vault-encrypted for O(deployments[].exposure=public)).
        type: str
      api_key_file:
        description:
        - File on the control node holding the API key (one line, mode 0600).
        type: str
      config_dir:
        default: /etc/llmfleet
        description:
        - Host folder of the deployment's files (C(<name>/api_key), C(<name>/entrypoint.sh), C(<name>/deployment.json));
          the plan's only config folder.
        type: str
      data_parallel:
        default: auto
        description:
        - Data parallel ranks (vLLM C(--data-parallel-size), SGLang C(--dp-size)), one host only; V(auto) uses the GPUs
          a valid tensor parallel size leaves.
        type: raw
      dist_init_port:
        default: 20000
        description:
        - SGLang multi-node rendezvous port.
        type: int
      engine:
        choices:
        - vllm
        - sglang
        default: vllm
        description:
        - Inference engine.
        type: str
      engine_version:
        description:
        - Engine version; selects the flag table (vLLM 0.8.5, 0.32.0, 0.33.0; SGLang 0.5.23). Default vLLM 0.32.0, SGLang
          0.5.23.
        type: str
      env:
        description:
        - Extra container environment; no secrets and none of the planner's own variables.
        type: dict
      exposure:
        choices:
        - localhost
        - private
        - public
        default: private
        description:
        - 'Where the API listens: loopback, the private address, or every address.'
        type: str
      extra_args:
        description:
        - Engine arguments, checked against the engine version's flag table (names, values, owned and secret-bearing
          flags).
        elements: str
        type: list
      gpu_memory_gib:
        description:
        - GiB per GPU for the memory check when there are no facts; must not exceed the facts.
        type: float
      gpu_memory_utilization:
        default: 0.9
        description:
        - Fraction of GPU memory for the engine, in (0, 1].
        type: float
      gpu_runtime:
        choices:
        - nvidia
        - none
        default: nvidia
        description:
        - V(none) (lab) requests no GPU devices.
        type: str
      gpus_per_host:
        default: auto
        description:
        - GPUs per host, or V(auto) (C(llmfleet_gpu_facts.gpu_count)).
        type: raw
      head:
        description:
        - The head host (rank 0); one of O(deployments[].hosts). Default the first host.
        type: str
      hosts:
        description:
        - Inventory group name, host name or list of hosts; the order is the rank order (head first).
        required: true
        type: raw
      image:
        description:
        - Container image, C(REPOSITORY[:TAG]) or pinned C(REPOSITORY@sha256:<64 hex>).
        type: str
      max_model_len:
        description:
        - Context length; at most the model's C(max_position_embeddings) unless rope scaling is set.
        type: int
      model:
        description:
        - 'A key of the catalog / C(llmfleet_models), or a model entry dict (see O(models)) with C(key: <catalog key>)
          and overrides, or C(path: <dir with config.json>).'
        required: true
        type: raw
      model_path:
        description:
        - Absolute host directory of the weights (not a system directory), mounted read-only.
        type: str
      name:
        description:
        - Unique name, lower-case letters, digits and C(-); container names derive from it.
        required: true
        type: str
      nccl_debug:
        choices:
        - VERSION
        - WARN
        - INFO
        - TRACE
        default: WARN
        description:
        - NCCL_DEBUG level.
        type: str
      nccl_ib_gid_index:
        default: 1
        description:
        - NCCL_IB_GID_INDEX on hosts with RDMA devices.
        type: int
      nccl_net_gdr_level:
        default: 5
        description:
        - NCCL_NET_GDR_LEVEL on hosts with RDMA devices.
        type: int
      network_interface:
        default: auto
        description:
        - Interface name, dict host -> name, or V(auto) (the interface of the private address).
        type: raw
      pipeline_parallel:
        default: auto
        description:
        - Pipeline parallel size or V(auto); at most the model's layers.
        type: raw
      port:
        default: 8000
        description:
        - API port.
        type: int
      ray_dashboard_port:
        default: 8265
        description:
        - Ray dashboard port (vLLM multi-node, bound to loopback).
        type: int
      ray_port:
        default: 6379
        description:
        - Ray GCS port (vLLM multi-node).
        type: int
      ray_timeout_s:
        default: 600
        description:
        - Seconds the Ray head waits for every node.
        type: int
      served_model_name:
        description:
        - Name clients use; must not start with C(-).
        type: str
      sizing_reserve_gib:
        default: 2.0
        description:
        - GiB per GPU the sizing keeps for CUDA context, NCCL and activations.
        type: float
      tensor_parallel:
        default: auto
        description:
        - Tensor parallel size or V(auto); must divide the attention heads (and suit the KV heads).
        type: raw
      weights:
        description:
        - 'Where the weights come from: C(false) (pre-staged) or a dict (C(source): modelscope, huggingface, s3, local;
          source options); fetched on the head, copied to the other hosts (docs/model-weights.md).'
        type: raw
    # END GENERATED deployments suboptions
  models:
    description:
      - Catalog entries merged over C(catalog/models.yml), key -> entry. Defaults to the variable C(llmfleet_models).
      - Each entry has the suboptions below (also the keys of a deployment's O(deployments[].model) dict).
    type: dict
    # BEGIN GENERATED models suboptions by tools/render_plan_docs.py -- do not edit by hand
    suboptions:
      config:
        description:
        - The config.json content itself.
        type: dict
      config_json:
        description:
        - Path of a config.json on the control node.
        type: str
      config_source:
        description:
        - Set by the planner (config.json read).
        type: str
      dtype:
        description:
        - Weights dtype.
        type: str
      engine_flags:
        description:
        - 'Engine arguments per engine: C({vllm: [...], sglang: [...]}).'
        type: dict
      head_dim:
        description:
        - Head dimension.
        type: int
      hf_id:
        description:
        - Hugging Face repository.
        type: str
      hidden_size:
        description:
        - Hidden size.
        type: int
      index_source:
        description:
        - Set by the planner (index read).
        type: str
      key:
        description:
        - Catalog key this dict starts from (in a deployment's model).
        type: str
      kv_lora_rank:
        description:
        - MLA latent rank (DeepSeek V2/V3/R1).
        type: int
      local_dir:
        description:
        - Same as C(path).
        type: str
      max_position_embeddings:
        description:
        - Context limit of the model.
        type: int
      modelscope_id:
        description:
        - ModelScope repository.
        type: str
      name:
        description:
        - Display name (default the key).
        type: str
      num_attention_heads:
        description:
        - Attention (query) heads.
        type: int
      num_hidden_layers:
        description:
        - Layers.
        type: int
      num_key_value_heads:
        description:
        - KV heads (GQA).
        type: int
      parameters:
        description:
        - Parameter count.
        type: int
      path:
        description:
        - Directory on the control node with config.json (read for the architecture).
        type: str
      qk_rope_head_dim:
        description:
        - MLA decoupled RoPE dimension.
        type: int
      quantization:
        description:
        - Quantization method or null.
        type: str
      revision:
        description:
        - Pinned weights revision (commit); required with C(trust_remote_code).
        type: str
      rope_scaling:
        description:
        - Rope scaling (allows max_model_len above max_position_embeddings).
        type: dict
      served_model_name:
        description:
        - Default served model name.
        type: str
      shards:
        description:
        - Shard files.
        type: int
      size_bytes:
        description:
        - Weights size in bytes.
        type: int
      size_source:
        description:
        - Where size_bytes comes from.
        type: str
      trust_remote_code:
        default: false
        description:
        - Run the repository's Python code (explicit opt-in; needs C(revision)).
        type: bool
    # END GENERATED models suboptions
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
