# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parallel layout of a deployment: tensor x pipeline x data parallel (PRIVATE to this collection).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python. The rules are those the engines check at start, after the weights are on disk:

- TP must divide the attention heads: vLLM ModelConfig.verify_with_parallel_config ("Total number
  of attention heads (28) must be divisible by tensor parallel size (8)"), SGLang asserts
  ``total_num_heads % tp_size == 0`` in its attention layers.
- KV heads (GQA): QKVParallelLinear of both engines splits the KV heads when TP <= KV heads
  (``divide(num_kv_heads, tp)``: KV heads % TP == 0) and replicates them when TP > KV heads
  (``divide(tp, num_kv_heads)``: TP % KV heads == 0). MLA models (kv_lora_rank) cache a latent,
  not per-head K/V: only the attention heads count.
- PP at most the layers (each stage needs one layer; vLLM get_pp_indices, SGLang the same split).
- DP ranks x TP x PP = the GPUs used; vLLM ``--data-parallel-size``, SGLang ``--dp-size`` (both
  count replicas of TP x PP GPUs each).

``auto``: the largest TP that divides the GPUs of a host and passes the head rules; the rest of
a host's GPUs become data-parallel ranks on a single host; across hosts the layout is TP x PP
(PP = hosts) and GPUs a valid TP cannot use stay idle, with a warning. SGLang first tries TP over
every GPU of every host (reference 002: ``--tp 16``) when the heads allow it.
"""

from __future__ import annotations


def _divisors_desc(n):
    return [d for d in range(n, 0, -1) if n % d == 0]


def tp_problem(model, tp):
    """None when ``tp`` suits the model's heads, else why not (a sentence)."""
    heads = model.get("num_attention_heads")
    kv = model.get("num_key_value_heads")
    if isinstance(heads, int) and heads >= 1 and heads % tp:
        return "the model has %d attention heads, which tensor_parallel %d does not divide" % (heads, tp)
    if model.get("kv_lora_rank") or not isinstance(kv, int) or kv < 1:
        return None
    if kv % tp and tp % kv:
        return ("the model has %d KV heads: tensor_parallel must divide them or be a multiple of them "
                "(%d does neither)" % (kv, tp))
    return None


def pp_problem(model, pp):
    layers = model.get("num_hidden_layers")
    if isinstance(layers, int) and layers >= 1 and pp > layers:
        return "the model has %d layers, fewer than pipeline_parallel %d stages" % (layers, pp)
    return None


def valid_tps(model, limit):
    """TP sizes up to ``limit`` that suit the model, largest first."""
    return [t for t in range(limit, 0, -1) if tp_problem(model, t) is None]


def choose(engine, model, nodes, gph, tp, pp, dp):
    """The layout for ``nodes`` hosts of ``gph`` GPUs. ``tp``/``pp``/``dp`` are ints or "auto".

    Returns (layout, errors): layout = {tp, pp, dp, gpus_per_host (used), idle_per_host, notes,
    warnings}; errors = [(key, message)] naming tensor_parallel / pipeline_parallel /
    data_parallel. One of the two is None."""
    total = gph * nodes
    notes, warnings = [], []
    explicit_dp = dp != "auto"
    if explicit_dp and dp < 1:
        return None, [("data_parallel", "must be at least 1 (got %d)" % dp)]
    if explicit_dp and nodes > 1 and dp > 1:
        return None, [("data_parallel", "data parallel ranks are planned on one host only (%d hosts here): use "
                       "data_parallel: 1, or one deployment per host" % nodes)]
    if tp == "auto" and pp == "auto" and not explicit_dp:
        return _auto(engine, model, nodes, gph)
    d = 1 if dp == "auto" else dp
    if d > total:
        return None, [("data_parallel", "%d data parallel ranks but only %d GPUs: each rank needs at least one GPU; "
                       "lower data_parallel" % (d, total))]
    per_rank = total // d if total % d == 0 else None
    if per_rank is None:
        return None, [("data_parallel", "%d GPUs do not split into %d equal data parallel ranks: use a divisor of %d"
                       % (total, d, total))]
    if tp == "auto":
        p = nodes if pp == "auto" else pp
        if p < 1 or per_rank % p:
            return None, [("pipeline_parallel", "pipeline_parallel %s does not divide the %d GPUs of a data parallel "
                           "rank: use a divisor of %d" % (p, per_rank, per_rank))]
        t = per_rank // p
    else:
        t = tp
        if pp == "auto":
            p = per_rank // t if t >= 1 and per_rank % t == 0 else nodes
        else:
            p = pp
    if t < 1 or p < 1 or t * p * d != total:
        fix_pp = per_rank // t if t >= 1 and per_rank % t == 0 else None
        return None, [("tensor_parallel", "tensor_parallel x pipeline_parallel%s = %d x %d%s = %d, but %d host(s) x %d "
                       "GPUs = %d GPUs are planned: TP x PP%s must equal the GPUs%s"
                       % (" x data_parallel" if d > 1 else "", t, p, " x %d" % d if d > 1 else "", t * p * d, nodes,
                          gph, total, " x DP" if d > 1 else "",
                          " (set pipeline_parallel: %d)" % fix_pp if fix_pp else " (set tensor_parallel: %d)" % gph))]
    errors = []
    problem = tp_problem(model, t)
    if problem:
        ok = valid_tps(model, gph)
        errors.append(("tensor_parallel", "%s: the engine refuses to start. Use tensor_parallel %s%s"
                       % (problem, " or ".join(str(x) for x in ok[:3]) or "1",
                          " (with data_parallel for the other GPUs of a host, or tensor_parallel: auto)"
                          if ok and ok[0] < gph else "")))
    problem = pp_problem(model, p)
    if problem:
        errors.append(("pipeline_parallel", "%s: use pipeline_parallel %d or less"
                       % (problem, model["num_hidden_layers"])))
    if errors:
        return None, errors
    if d > 1:
        notes.append("data parallel: %d ranks of TP %d x PP %d GPUs each" % (d, t, p))
    return {"tp": t, "pp": p, "dp": d, "gpus_per_host": gph, "idle_per_host": 0, "notes": notes,
            "warnings": warnings}, None


def _auto(engine, model, nodes, gph):
    total = gph * nodes
    notes, warnings = [], []
    if engine == "sglang" and nodes > 1 and tp_problem(model, total) is None and pp_problem(model, 1) is None:
        return {"tp": total, "pp": 1, "dp": 1, "gpus_per_host": gph, "idle_per_host": 0, "notes": notes,
                "warnings": warnings}, None
    tp = next((t for t in _divisors_desc(gph) if tp_problem(model, t) is None), 1)
    pp = nodes
    problem = pp_problem(model, pp)
    if problem:
        return None, [("pipeline_parallel", "auto: %s: use fewer hosts" % problem)]
    if tp == gph:
        return {"tp": tp, "pp": pp, "dp": 1, "gpus_per_host": gph, "idle_per_host": 0, "notes": notes,
                "warnings": warnings}, None
    heads = "%s attention heads%s" % (model.get("num_attention_heads"), (
        ", %s KV heads" % model["num_key_value_heads"]) if model.get("num_key_value_heads") and
        not model.get("kv_lora_rank") else "")
    if nodes == 1:
        dp = gph // tp
        notes.append("auto: TP %d (the largest that divides the model's %s and the %d GPUs) x data parallel %d: "
                     "%d replicas of the model behind one endpoint" % (tp, heads, gph, dp, dp))
        return {"tp": tp, "pp": 1, "dp": dp, "gpus_per_host": gph, "idle_per_host": 0, "notes": notes,
                "warnings": warnings}, None
    idle = gph - tp
    warnings.append("auto: TP %d x PP %d (the model's %s do not allow TP %d): %d of the %d GPUs of each host stay "
                    "IDLE; set gpus_per_host: %d to say so, or deploy the model once per host (data parallel "
                    "replicas) instead" % (tp, pp, heads, gph, idle, gph, tp))
    return {"tp": tp, "pp": pp, "dp": 1, "gpus_per_host": tp, "idle_per_host": idle, "notes": notes,
            "warnings": warnings}, None
