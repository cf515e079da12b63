# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Model catalog: load catalog/models.yml, merge user entries, read a model's own files.

This file is private to the collection (leading underscore): its API may change without notice.
Runs on the controller (PyYAML is there: ansible-core depends on it).
"""

from __future__ import annotations

import copy
import json
import os

CATALOG_PATH = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "..", "..", "catalog", "models.yml"))

# keys of a catalog entry (the planner's sizing reads the architecture ones)
ENTRY_KEYS = (
    "hf_id", "modelscope_id", "served_model_name", "parameters", "dtype", "quantization", "size_bytes",
    "size_source", "shards", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "hidden_size", "kv_lora_rank", "qk_rope_head_dim", "max_position_embeddings", "engine_flags",
    "config_json", "local_dir", "name",
)

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2,
               "fp8": 1, "float8": 1, "float8_e4m3fn": 1, "int8": 1, "int4": 0.5, "awq": 0.5, "gptq": 0.5}


class CatalogError(ValueError):
    pass


def load_catalog(path=None):
    """Parse the catalog YAML (default: the collection's catalog/models.yml) -> {key: entry}."""
    import yaml  # controller-side dependency of ansible-core

    path = path or CATALOG_PATH
    try:
        with open(path, "r") as f:
            data = yaml.safe_load(f) or {}
    except (IOError, OSError) as e:
        raise CatalogError("cannot read the model catalog %s: %s" % (path, e))
    if not isinstance(data, dict):
        raise CatalogError("model catalog %s: expected a mapping of model keys" % path)
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise CatalogError("model catalog %s: entry %r is not a mapping" % (path, key))
        entry.setdefault("name", key)
    return data


def merge_catalog(base, overrides):
    """Entries of ``overrides`` (the variable llmfleet_models) merged over ``base`` key by key;
    ``engine_flags`` is replaced per engine. New keys add models. Returns a new dict."""
    out = copy.deepcopy(base or {})
    if overrides is not None and not isinstance(overrides, dict):
        raise CatalogError("llmfleet_models must be a mapping of model keys to entries (docs/planner.md), got %s"
                           % type(overrides).__name__)
    for key, entry in (overrides or {}).items():
        if not isinstance(entry, dict):
            raise CatalogError("llmfleet_models.%s must be a mapping, got %s" % (key, type(entry).__name__))
        merged = out.setdefault(key, {"name": key})
        for k, v in entry.items():
            if k == "engine_flags" and isinstance(v, dict) and isinstance(merged.get("engine_flags") or {}, dict):
                flags = dict(merged.get("engine_flags") or {})
                flags.update(v)
                merged[k] = flags
            else:
                merged[k] = copy.deepcopy(v)
    return out


def _read_json(path):
    with open(path, "r") as f:
        return json.load(f)


def arch_from_config(cfg):
    """The catalog fields that a Hugging Face config.json defines (None when absent)."""
    if "text_config" in cfg and "num_hidden_layers" not in cfg:
        cfg = dict(cfg["text_config"], **{k: v for k, v in cfg.items() if k == "quantization_config"})
    heads = cfg.get("num_attention_heads")
    hidden = cfg.get("hidden_size")
    head_dim = cfg.get("head_dim")
    if head_dim is None and heads and hidden:
        head_dim = hidden // heads
    if cfg.get("kv_lora_rank") and cfg.get("qk_nope_head_dim") is not None and cfg.get("qk_rope_head_dim"):
        head_dim = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    quant = cfg.get("quantization_config") or {}
    qmethod = quant.get("quant_method") if isinstance(quant, dict) else None
    dtype = cfg.get("torch_dtype") or cfg.get("dtype")
    out = {
        "num_hidden_layers": cfg.get("num_hidden_layers"),
        "num_attention_heads": heads,
        "num_key_value_heads": cfg.get("num_key_value_heads", heads),
        "head_dim": head_dim,
        "hidden_size": hidden,
        "max_position_embeddings": cfg.get("max_position_embeddings"),
        "dtype": qmethod if qmethod in ("fp8",) else dtype,
        "quantization": qmethod,
    }
    if cfg.get("kv_lora_rank"):
        out["kv_lora_rank"] = cfg["kv_lora_rank"]
        out["qk_rope_head_dim"] = cfg.get("qk_rope_head_dim", 0)
    return {k: v for k, v in out.items() if v is not None}


def read_model_dir(path):
    """Facts from a model directory on this machine: config.json -> architecture,
    model.safetensors.index.json -> size_bytes (metadata.total_size) and shard count.
    Returns {} when neither file is there."""
    out = {}
    if not path:
        return out
    cfg_path = path if path.endswith(".json") else os.path.join(path, "config.json")
    base = os.path.dirname(cfg_path)
    if os.path.isfile(cfg_path):
        try:
            out.update(arch_from_config(_read_json(cfg_path)))
            out["config_source"] = cfg_path
        except (IOError, OSError, ValueError) as e:
            raise CatalogError("cannot read %s: %s" % (cfg_path, e))
    idx = os.path.join(base, "model.safetensors.index.json")
    if os.path.isfile(idx):
        try:
            data = _read_json(idx)
        except (IOError, OSError, ValueError) as e:
            raise CatalogError("cannot read %s: %s" % (idx, e))
        total = (data.get("metadata") or {}).get("total_size")
        if total:
            out["size_bytes"] = int(total)
            out["size_source"] = "index"
            out["index_source"] = idx
        shards = set((data.get("weight_map") or {}).values())
        if shards:
            out["shards"] = len(shards)
    elif os.path.isdir(base):
        single = os.path.join(base, "model.safetensors")
        if os.path.isfile(single):
            out["size_bytes"] = os.path.getsize(single)
            out["size_source"] = "file"
            out["shards"] = 1
    return out


def resolve_model(model, catalog, model_path=None):
    """The entry a deployment's ``model`` names, completed from the model's own files.

    ``model`` is a catalog key or a dict (a full entry, or {path|config_json|local_dir: ...} plus any
    entry keys). config.json / model.safetensors.index.json are read, in order, from the entry's
    ``local_dir``, its ``config_json``, then ``model_path`` when that path exists on this machine;
    their figures win over the catalog's. Raises KeyError for an unknown key."""
    if isinstance(model, dict):
        base = {}
        if model.get("key") and model["key"] in catalog:
            base = copy.deepcopy(catalog[model["key"]])
        entry = dict(base, **{k: v for k, v in model.items() if k != "key"})
        entry.setdefault("name", model.get("name") or model.get("key") or os.path.basename(
            str(model.get("path") or model.get("local_dir") or "custom").rstrip("/")))
        if "path" in model and "local_dir" not in model:
            entry["local_dir"] = model["path"]
    else:
        entry = copy.deepcopy(catalog[model])
    facts = {}
    for src in (entry.get("local_dir"), entry.get("config_json"), model_path):
        if src and os.path.exists(src):
            facts = read_model_dir(src)
            if facts:
                break
    if isinstance(entry.get("config"), dict):
        entry.update(arch_from_config(entry["config"]))
    entry.update(facts)
    return entry
