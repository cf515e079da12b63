# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed checks of the planner's inputs that are not deployment keys (PRIVATE to this collection).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python. Each check returns a list of (variable, message) pairs, never raises: the planner
turns them into PlanErrors. Covered here:

- numbers: finite (no .nan / .inf), of the right sign;
- a model entry (a catalog entry, an item of ``llmfleet_models`` or a deployment's ``model``
  dict): every key known (did you mean), every value of its type, sizes and layer / head counts
  positive integers, ``engine_flags`` a dict engine -> list of strings, ``trust_remote_code`` a
  bool that needs a pinned ``revision``;
- paths (``model_path``): absolute, not a system directory;
- image references, tag or digest (``repo@sha256:<64 hex>``).
"""

from __future__ import annotations

import difflib
import math
import re

# model entry key -> type: "str", "str?" (str or null), "int+" (integer >= 1), "int0" (integer >= 0),
# "dict", "flags" (dict engine -> list[str]), "bool"
MODEL_KEYS = {
    "name": "str", "key": "str", "path": "str", "local_dir": "str", "config_json": "str", "config": "dict",
    "hf_id": "str", "modelscope_id": "str", "served_model_name": "str", "revision": "str?",
    "parameters": "int+", "dtype": "str", "quantization": "str?", "size_bytes": "int+", "size_source": "str",
    "shards": "int+", "num_hidden_layers": "int+", "num_attention_heads": "int+", "num_key_value_heads": "int+",
    "head_dim": "int+", "hidden_size": "int+", "kv_lora_rank": "int+", "qk_rope_head_dim": "int0",
    "max_position_embeddings": "int+", "rope_scaling": "dict?", "engine_flags": "flags",
    "trust_remote_code": "bool",
    # read from the model's own files by _catalog.read_model_dir (harmless when given)
    "config_source": "str", "index_source": "str",
}
MODEL_TYPE_WORDS = {"str": "a string", "str?": "a string or null", "int+": "an integer of 1 or more",
                    "int0": "an integer of 0 or more", "dict": "a mapping", "dict?": "a mapping or null",
                    "flags": "a mapping engine -> list of strings", "bool": "true or false"}
# dtype values a model entry may name (the weights' dtype; the engines' --dtype is checked as a flag)
MODEL_DTYPES = ("float32", "fp32", "float16", "fp16", "half", "bfloat16", "bf16", "fp8", "float8",
                "float8_e4m3fn", "int8", "int4", "awq", "gptq", "auto")
SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
               "/run", "/sbin", "/sys", "/usr", "/var", "/tmp", "/home", "/opt", "/srv", "/data", "/mnt",
               "/media", "/usr/lib", "/usr/bin", "/usr/local", "/var/lib", "/var/lib/docker")
# repository[:tag][@sha256:<64 hex>], as docker parses a reference (lower-case path components)
_IMAGE_RE = re.compile(
    r"^(?P<repo>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z0-9_+.-]+:[A-Za-z0-9=_-]+))?$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_finite(v):
    """True for an int or a finite float (False for .nan, .inf and non-numbers)."""
    if is_int(v):
        return True
    return isinstance(v, float) and math.isfinite(v)


def did_you_mean(word, choices):
    m = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return " (did you mean %r?)" % m[0] if m else ""


def number_errors(d, label, keys):
    """(variable, message) for each of ``keys`` of ``d`` that is a number but not finite."""
    out = []
    for k in keys:
        v = d.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            out.append(("%s.%s" % (label, k), "%s is not a finite number: give a plain number (or leave it out for "
                        "the default)" % v))
    return out


def _check_model_value(typ, v):
    if typ == "str":
        return isinstance(v, str) and v.strip() != ""
    if typ == "str?":
        return v is None or (isinstance(v, str) and v.strip() != "")
    if typ == "int+":
        return is_int(v) and v >= 1
    if typ == "int0":
        return is_int(v) and v >= 0
    if typ == "dict":
        return isinstance(v, dict)
    if typ == "dict?":
        return v is None or isinstance(v, dict)
    if typ == "bool":
        return isinstance(v, bool)
    if typ == "flags":
        return isinstance(v, dict) and all(isinstance(k, str) and (x is None or (
            isinstance(x, list) and all(isinstance(a, str) for a in x))) for k, x in v.items())
    raise AssertionError(typ)


def _shown(v):
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def model_entry_errors(entry, variable, engines=("vllm", "sglang")):
    """(variable, message) for each problem of one model entry (a dict) named ``variable``."""
    if not isinstance(entry, dict):
        return [(variable, "must be a mapping of model keys (docs/planner.md), got %s" % type(entry).__name__)]
    out = []
    for k, v in entry.items():
        if not isinstance(k, str) or k not in MODEL_KEYS:
            out.append(("%s.%s" % (variable, k), "unknown model key %r%s; known keys: %s"
                        % (k, did_you_mean(k, MODEL_KEYS), ", ".join(sorted(MODEL_KEYS)))))
            continue
        typ = MODEL_KEYS[k]
        if v is None and typ not in ("str?", "dict?"):
            continue  # null = not given
        if not _check_model_value(typ, v):
            fix = ""
            if typ in ("int+", "int0") and isinstance(v, str) and v.strip().isdigit():
                fix = " (write it without quotes: %s)" % v.strip()
            elif typ == "flags" and isinstance(v, list):
                fix = " (write engine_flags: {vllm: [...], sglang: [...]})"
            out.append(("%s.%s" % (variable, k), "must be %s, got %s %s%s"
                        % (MODEL_TYPE_WORDS[typ], type(v).__name__, _shown(v), fix)))
            continue
        if k == "dtype" and str(v).lower() not in MODEL_DTYPES:
            out.append(("%s.dtype" % variable, "%r is not a weights dtype the sizing knows%s: use one of %s"
                        % (v, did_you_mean(v, MODEL_DTYPES), ", ".join(MODEL_DTYPES))))
        if k == "engine_flags":
            for e in v:
                if e not in engines:
                    out.append(("%s.engine_flags.%s" % (variable, e), "unknown engine %r%s: use %s"
                                % (e, did_you_mean(e, engines), " / ".join(engines))))
    nkv, nh = entry.get("num_key_value_heads"), entry.get("num_attention_heads")
    if is_int(nkv) and is_int(nh) and nkv > nh >= 1:
        out.append(("%s.num_key_value_heads" % variable, "%d KV heads is more than the %d attention heads: copy both "
                    "from the model's config.json" % (nkv, nh)))
    pinned = isinstance(entry.get("revision"), str) and entry["revision"].strip()
    if entry.get("trust_remote_code") is True and not pinned:
        out.append(("%s.revision" % variable, "trust_remote_code runs the model repository's Python code: pin the "
                    "weights revision (revision: <commit sha>) so that the code cannot change under you"))
    return out


def path_errors(path, variable, what="model_path", system_ok=False):
    """(variable, message) when ``path`` is not an absolute directory (nor a system one, unless
    ``system_ok``)."""
    if not isinstance(path, str):
        return []
    p = path.strip()
    if not p or not p.startswith("/"):
        return [(variable, "%r is not an absolute path: the %s is a directory on the hosts, e.g. /data/models/NAME"
                 % (path, what))]
    norm = "/" + "/".join(part for part in p.split("/") if part not in ("", "."))
    if ".." in p.split("/"):
        return [(variable, "%r contains '..': give the directory itself, e.g. /data/models/NAME" % path)]
    if norm in SYSTEM_DIRS and not (system_ok and norm != "/"):
        return [(variable, "%r is a system directory: give the model's own directory, e.g. /data/models/NAME"
                 % path)]
    return []


def image_errors(image, variable):
    """(variable, message) when ``image`` is not a valid reference; a digest must be sha256:<64 hex>."""
    if not isinstance(image, str):
        return []
    m = _IMAGE_RE.match(image)
    if not m:
        return [(variable, "%r is not an image reference: use REPOSITORY[:TAG] or REPOSITORY@sha256:<64 hex digits>"
                 % image)]
    digest = m.group("digest")
    if digest is not None and not _DIGEST_RE.match(digest):
        return [(variable, "digest %r of %r is not sha256:<64 lower-case hex digits>: copy it from "
                 "`docker buildx imagetools inspect IMAGE` or the registry" % (digest, image))]
    return []
