# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deployment and model-entry schema as an Ansible argument spec (PRIVATE to this collection).

This file is private to the collection (leading underscore): its API may change without notice.
One source for three readers: the planner's typed checks (_plan.DEPLOYMENT_KEYS, _schema.MODEL_KEYS,
which this spec is built from), Ansible's own ArgumentSpecValidator (a unit test validates every
example inventory with it) and the documentation of llmfleet.serving.serving_plan, whose
``deployments`` / ``models`` suboptions are rendered from here (tools/render_plan_docs.py; a unit
test fails when the module's DOCUMENTATION and this spec differ).
"""

from __future__ import annotations

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _plan, _schema

DESCRIPTIONS = {
    "name": "Unique name, lower-case letters, digits and C(-); container names derive from it.",
    "hosts": "Inventory group name, host name or list of hosts; the order is the rank order (head first).",
    "head": "The head host (rank 0); one of O(deployments[].hosts). Default the first host.",
    "engine": "Inference engine.",
    "engine_version": "Engine version; selects the flag table (vLLM 0.8.5, 0.32.0, 0.33.0; SGLang 0.5.23). "
                      "Default vLLM 0.32.0, SGLang 0.5.23.",
    "image": "Container image, C(REPOSITORY[:TAG]) or pinned C(REPOSITORY@sha256:<64 hex>).",
    "model": "A key of the catalog / C(llmfleet_models), or a model entry dict (see O(models)) with C(key: <catalog "
             "key>) and overrides, or C(path: <dir with config.json>).",
    "model_path": "Absolute host directory of the weights (not a system directory), mounted read-only.",
    "served_model_name": "Name clients use; must not start with C(-).",
    "gpus_per_host": "GPUs per host, or V(auto) (C(llmfleet_gpu_facts.gpu_count)).",
    "data_parallel": "Data parallel ranks (vLLM C(--data-parallel-size), SGLang C(--dp-size)), one host only; "
                     "V(auto) uses the GPUs a valid tensor parallel size leaves.",
    "gpu_memory_gib": "GiB per GPU for the memory check when there are no facts; must not exceed the facts.",
    "tensor_parallel": "Tensor parallel size or V(auto); must divide the attention heads (and suit the KV heads).",
    "pipeline_parallel": "Pipeline parallel size or V(auto); at most the model's layers.",
    "max_model_len": "Context length; at most the model's C(max_position_embeddings) unless rope scaling is set.",
    "gpu_memory_utilization": "Fraction of GPU memory for the engine, in (0, 1].",
    "port": "API port.",
    "exposure": "Where the API listens: loopback, the private address, or every address.",
    "api_key_file": "File on the control node holding the API key (one line, mode 0600).",
    "api_key": "The API key (vault-encrypted for O(deployments[].exposure=public)).",
    "network_interface": "Interface name, dict host -> name, or V(auto) (the interface of the private address).",
    "nccl_debug": "NCCL_DEBUG level.",
    "nccl_ib_gid_index": "NCCL_IB_GID_INDEX on hosts with RDMA devices.",
    "nccl_net_gdr_level": "NCCL_NET_GDR_LEVEL on hosts with RDMA devices.",
    "extra_args": "Engine arguments, checked against the engine version's flag table (names, values, owned and "
                  "secret-bearing flags).",
    "env": "Extra container environment; no secrets and none of the planner's own variables.",
    "ray_port": "Ray GCS port (vLLM multi-node).",
    "ray_dashboard_port": "Ray dashboard port (vLLM multi-node, bound to loopback).",
    "ray_timeout_s": "Seconds the Ray head waits for every node.",
    "dist_init_port": "SGLang multi-node rendezvous port.",
    "gpu_runtime": "V(none) (lab) requests no GPU devices.",
    "config_dir": "Host folder of the deployment's files (C(<name>/api_key), C(<name>/entrypoint.sh), "
                  "C(<name>/deployment.json)); the plan's only config folder.",
    "weights": "Where the weights come from: C(false) (pre-staged) or a dict (C(source): modelscope, huggingface, s3, "
               "local; source options); fetched on the head, copied to the other hosts (docs/model-weights.md).",
    "sizing_reserve_gib": "GiB per GPU the sizing keeps for CUDA context, NCCL and activations.",
}
CHOICES = {"engine": list(_plan.ENGINES), "exposure": list(_plan.EXPOSURES), "nccl_debug": list(_plan.NCCL_DEBUG_LEVELS),
           "gpu_runtime": ["nvidia", "none"]}
# planner type word -> (argument spec type, elements)
_TYPES = {"str": ("str", None), "int": ("int", None), "float": ("float", None), "int or auto": ("raw", None),
          "list[str]": ("list", "str"), "dict[str,str]": ("dict", None), "str or list[str]": ("raw", None),
          "str or dict": ("raw", None), "str or dict[str,str]": ("raw", None),
          "bool or dict": ("raw", None)}
MODEL_DESCRIPTIONS = {
    "name": "Display name (default the key).", "key": "Catalog key this dict starts from (in a deployment's model).",
    "path": "Directory on the control node with config.json (read for the architecture).",
    "local_dir": "Same as C(path).", "config_json": "Path of a config.json on the control node.",
    "config": "The config.json content itself.", "hf_id": "Hugging Face repository.",
    "modelscope_id": "ModelScope repository.", "served_model_name": "Default served model name.",
    "revision": "Pinned weights revision (commit); required with C(trust_remote_code).",
    "parameters": "Parameter count.", "dtype": "Weights dtype.", "quantization": "Quantization method or null.",
    "size_bytes": "Weights size in bytes.", "size_source": "Where size_bytes comes from.", "shards": "Shard files.",
    "num_hidden_layers": "Layers.", "num_attention_heads": "Attention (query) heads.",
    "num_key_value_heads": "KV heads (GQA).", "head_dim": "Head dimension.", "hidden_size": "Hidden size.",
    "kv_lora_rank": "MLA latent rank (DeepSeek V2/V3/R1).", "qk_rope_head_dim": "MLA decoupled RoPE dimension.",
    "max_position_embeddings": "Context limit of the model.",
    "rope_scaling": "Rope scaling (allows max_model_len above max_position_embeddings).",
    "engine_flags": "Engine arguments per engine: C({vllm: [...], sglang: [...]}).",
    "trust_remote_code": "Run the repository's Python code (explicit opt-in; needs C(revision)).",
    "config_source": "Set by the planner (config.json read).", "index_source": "Set by the planner (index read).",
}
_MODEL_TYPES = {"str": "str", "str?": "str", "int+": "int", "int0": "int", "dict": "dict", "dict?": "dict",
                "flags": "dict", "bool": "bool"}


# the cross-key rules, in ArgumentSpecValidator's terms (the planner applies the same ones itself)
DEPLOYMENT_RULES = {"mutually_exclusive": [["api_key", "api_key_file"]]}
MODEL_RULES = {"required_if": [["trust_remote_code", True, ["revision"]]]}


def validator(kind):
    """An ArgumentSpecValidator for ``kind`` "deployment" or "model" (imported here: controller only)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    if kind == "deployment":
        return ArgumentSpecValidator(validation_spec(deployment_spec()), **DEPLOYMENT_RULES)
    return ArgumentSpecValidator(validation_spec(model_spec()), **MODEL_RULES)


def deployment_spec():
    """The argument spec (Ansible's format) of one item of llmfleet_deployments."""
    spec = {}
    for key, (typ, default) in _plan.DEPLOYMENT_KEYS.items():
        t, elements = _TYPES[typ]
        opt = {"type": t, "description": DESCRIPTIONS[key]}
        if elements:
            opt["elements"] = elements
        if key in ("name", "hosts", "model"):
            opt["required"] = True
        elif default not in (None, [], {}):
            opt["default"] = default
        if key in CHOICES:
            opt["choices"] = CHOICES[key]
        if key == "api_key":
            opt["no_log"] = True
        spec[key] = opt
    return spec


def model_spec():
    """The argument spec of one model entry (catalog/models.yml, llmfleet_models, a model dict)."""
    spec = {}
    for key, typ in _schema.MODEL_KEYS.items():
        opt = {"type": _MODEL_TYPES[typ], "description": MODEL_DESCRIPTIONS[key]}
        if typ == "bool":
            opt["default"] = False
        spec[key] = opt
    return spec


def validation_spec(spec):
    """``spec`` without the documentation-only keys, for ArgumentSpecValidator."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "description"} for k, v in spec.items()}


def doc_options(spec):
    """``spec`` as module documentation suboptions (descriptions as lists, as ansible-doc shows them)."""
    out = {}
    for k, v in spec.items():
        d = {"description": [v["description"]], "type": v["type"]}
        for extra in ("elements", "required", "default", "choices"):
            if extra in v:
                d[extra] = v[extra]
        out[k] = d
    return out
