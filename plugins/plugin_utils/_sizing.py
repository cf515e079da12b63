# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU memory sizing of a deployment: weights per GPU + minimum KV cache vs the memory budget.

This file is private to the collection (leading underscore): its API may change without notice.
The arithmetic is returned as readable lines; docs/sizing.md explains it with examples.

Model (per GPU, TP x PP GPUs):
  weights_per_gpu  = weight bytes (index total_size, else parameters x dtype bytes) / (TP x PP)
  layers_per_gpu   = ceil(num_hidden_layers / PP)
  KV per token per GPU
    standard (MHA/GQA) = 2 (K and V) x layers_per_gpu x ceil(num_key_value_heads / TP) x head_dim x kv_bytes
                         (vLLM replicates KV heads when TP > num_key_value_heads, hence ceil and >= 1)
    MLA (DeepSeek V2/V3/R1) = layers_per_gpu x (kv_lora_rank + qk_rope_head_dim) x kv_bytes
                         (the latent is cached, not per-head K/V, and every TP rank holds all of it)
  kv_min_per_gpu   = max_model_len x KV per token per GPU  (the engine refuses to start when one
                     sequence of max_model_len tokens does not fit in the KV cache)
  budget_per_gpu   = GPU memory x utilization - reserve
  reserve          = RESERVE_BYTES (2 GiB): CUDA context, NCCL buffers, CUDA graphs and the
                     activations of the engine's profiling pass, which the engine takes out of the
                     same utilization budget before it sizes the KV cache.
  fits             = weights_per_gpu + kv_min_per_gpu <= budget_per_gpu
"""

from __future__ import annotations

GIB = 1024 ** 3
MIB = 1024 ** 2
RESERVE_BYTES = 2 * GIB

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2,
               "auto": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "float8": 1, "float8_e4m3fn": 1, "fp8_inc": 1,
               "fp8_ds_mla": 1, "fp8_per_token_head": 1, "mxfp8": 1, "int8_per_token_head": 1,
               "int8": 1, "int4": 0.5, "awq": 0.5, "gptq": 0.5, "nvfp4": 0.5, "fp4_mx_block16": 0.5,
               "int4_per_token_head": 0.5}


def dtype_bytes(dtype, default=2):
    return DTYPE_BYTES.get(str(dtype).lower(), default) if dtype else default


def _ceil_div(a, b):
    return -(-a // b)


def _gb(n):
    return "%.2f GB" % (n / 1e9)


def _b(n):
    return "{:,} B".format(int(n))


def weight_bytes(model):
    """(bytes, how): index total_size / file size when known, else parameters x dtype bytes."""
    if model.get("size_bytes"):
        return int(model["size_bytes"]), model.get("size_source") or "catalog"
    if model.get("parameters"):
        b = dtype_bytes(model.get("quantization") or model.get("dtype"))
        return int(model["parameters"] * b), "parameters %s x %s B" % ("{:,}".format(model["parameters"]), b)
    return None, "unknown"


def is_mla(model):
    return bool(model.get("kv_lora_rank"))


def kv_bytes_per_token(model, tp=1, pp=1, kv_bytes=2):
    """(bytes per token per GPU, formula line). None when the architecture is unknown."""
    layers = model.get("num_hidden_layers")
    if not layers:
        return None, "KV cache: num_hidden_layers unknown (set it in the catalog entry or give config.json)"
    lpg = _ceil_div(int(layers), int(pp))
    if is_mla(model):
        lat = int(model["kv_lora_rank"]) + int(model.get("qk_rope_head_dim") or 0)
        per = lpg * lat * kv_bytes
        return per, ("KV per token per GPU (MLA): ceil(%d layers / PP %d) = %d x (kv_lora_rank %d + "
                     "qk_rope_head_dim %d) x %s B = %s" % (layers, pp, lpg, model["kv_lora_rank"],
                                                           model.get("qk_rope_head_dim") or 0, kv_bytes, _b(per)))
    kvh = model.get("num_key_value_heads") or model.get("num_attention_heads")
    hd = model.get("head_dim")
    if not hd and model.get("hidden_size") and model.get("num_attention_heads"):
        hd = model["hidden_size"] // model["num_attention_heads"]
    if not kvh or not hd:
        return None, "KV cache: num_key_value_heads / head_dim unknown"
    kvpg = max(1, _ceil_div(int(kvh), int(tp)))
    per = 2 * lpg * kvpg * int(hd) * kv_bytes
    return per, ("KV per token per GPU: 2 x ceil(%d layers / PP %d) = %d x ceil(%d KV heads / TP %d) = %d x "
                 "head_dim %d x %s B = %s" % (layers, pp, lpg, kvh, tp, kvpg, hd, kv_bytes, _b(per)))


def size_deployment(model, tp, pp, max_model_len, gpu_memory_bytes=None, utilization=0.9,
                    kv_cache_dtype=None, reserve_bytes=RESERVE_BYTES, dtype=None):
    """Sizing of one deployment. Returns a dict with the figures, ``fits`` (True / False / None when
    the GPU memory or the model's size is unknown) and ``lines`` (the arithmetic, readable).
    ``dtype`` is the engine's --dtype: float32 doubles the weights of a 16-bit model in memory (and
    its KV cache when kv_cache_dtype is auto); a quantized model keeps its size."""
    tp, pp = int(tp), int(pp)
    gpus = tp * pp
    lines = []
    wb, how = weight_bytes(model)
    stored = dtype_bytes(model.get("dtype"), default=2)
    run = stored
    if dtype and str(dtype).lower() != "auto" and not model.get("quantization") and stored >= 2:
        run = dtype_bytes(dtype, default=stored)
        if wb and run != stored:
            wb = int(wb * run / stored)
            how = "%s, x %s/%s B for --dtype %s" % (how, run, stored, dtype)
    kvb = dtype_bytes(kv_cache_dtype, default=2) if kv_cache_dtype and kv_cache_dtype != "auto" else (
        run if run >= 2 else 2)
    out = {"tp": tp, "pp": pp, "gpus": gpus, "weights_bytes": wb, "weights_source": how,
           "max_model_len": max_model_len, "kv_cache_dtype_bytes": kvb, "reserve_bytes": reserve_bytes,
           "gpu_memory_bytes": gpu_memory_bytes, "utilization": utilization}
    if wb:
        wpg = _ceil_div(wb, gpus)
        lines.append("weights: %s (%s) / (TP %d x PP %d = %d GPUs) = %s per GPU (%s)"
                     % (_b(wb), how, tp, pp, gpus, _b(wpg), _gb(wpg)))
    else:
        wpg = None
        lines.append("weights: size unknown (no size_bytes, parameters or model.safetensors.index.json)")
    out["weights_per_gpu"] = wpg
    per_tok, line = kv_bytes_per_token(model, tp, pp, kvb)
    lines.append(line)
    out["kv_bytes_per_token_per_gpu"] = per_tok
    kv_min = per_tok * int(max_model_len) if per_tok and max_model_len else None
    out["kv_min_per_gpu"] = kv_min
    if kv_min is not None:
        lines.append("minimum KV cache per GPU for max_model_len %d: %d x %s = %s (%s)"
                     % (max_model_len, max_model_len, _b(per_tok), _b(kv_min), _gb(kv_min)))
    if not gpu_memory_bytes:
        out.update(budget_per_gpu=None, need_per_gpu=None, headroom_per_gpu=None, kv_tokens_capacity=None,
                   fits=None)
        lines.append("GPU memory unknown (no gpu facts and no gpu_memory_gib): memory check skipped")
        out["lines"] = lines
        return out
    budget = int(gpu_memory_bytes * float(utilization)) - int(reserve_bytes)
    lines.append("budget per GPU: %s (%d MiB) x utilization %s - reserve %s = %s (%s)"
                 % (_b(gpu_memory_bytes), gpu_memory_bytes // MIB, utilization, _b(reserve_bytes),
                    _b(budget), _gb(budget)))
    out["budget_per_gpu"] = budget
    if wpg is None or kv_min is None:
        out.update(need_per_gpu=None, headroom_per_gpu=None, kv_tokens_capacity=None, fits=None)
        lines.append("memory check skipped: model size or architecture unknown")
        out["lines"] = lines
        return out
    need = wpg + kv_min
    head = budget - need
    cap = (budget - wpg) // per_tok if per_tok and budget > wpg else 0
    out.update(need_per_gpu=need, headroom_per_gpu=head, kv_tokens_capacity=int(cap), fits=head >= 0)
    lines.append("need per GPU: weights %s + KV %s = %s %s budget %s: %s"
                 % (_gb(wpg), _gb(kv_min), _gb(need), "<=" if head >= 0 else ">", _gb(budget),
                    "fits (KV room for about %s tokens)" % "{:,}".format(int(cap)) if head >= 0
                    else "DOES NOT FIT (short by %s)" % _gb(-head)))
    out["lines"] = lines
    return out
