# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The weights job of a deployment: where its model comes from and which host fetches it (PRIVATE).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python, controller only. The deployment key ``weights`` (docs/planner.md) names the source;
the job says: the head fetches from it, verifies and publishes at the deployment's model_path,
the other hosts of a multi-node group copy from the head over the private network (rsync over
SSH, roles/model_weights). Credentials never enter the plan: they stay role variables
(model_weights_s3_access_key / _secret_key, model_weights_token), vault-encrypted.
Without ``weights`` (or with ``weights: false``) the model is pre-staged: no job.
"""

from __future__ import annotations

SOURCES = ("s3", "huggingface", "modelscope", "local")
# key -> (type name, default)
KEYS = {
    "source": ("str", None),
    "bucket": ("str", ""), "prefix": ("str", ""), "endpoint_url": ("str", ""), "region": ("str", ""),
    "addressing_style": ("str", "auto"),
    "repo_id": ("str", ""), "revision": ("str", ""), "endpoint": ("str", ""),
    "src_path": ("str", ""),
    "allow_patterns": ("list[str]", []), "ignore_patterns": ("list[str]", []),
    "peer_copy": ("bool", True),
}
SECRETS = {"access_key": "model_weights_s3_access_key", "secret_key": "model_weights_s3_secret_key",
           "aws_access_key_id": "model_weights_s3_access_key", "aws_secret_access_key": "model_weights_s3_secret_key",
           "token": "model_weights_token", "hf_token": "model_weights_token"}
REQUIRED = {"s3": ("bucket",), "huggingface": ("repo_id",), "modelscope": ("repo_id",), "local": ("src_path",)}


def _ok(value, typ):
    if typ == "str":
        return isinstance(value, str)
    if typ == "bool":
        return isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def job(spec, model, model_path, hosts, addresses, label):
    """(job or None, [(variable, message)]). ``hosts`` head first; ``model`` the catalog entry
    (its hf_id is the default repo_id of the hubs)."""
    if spec is None or spec is False:
        return None, []
    var = label + ".weights"
    if spec is True or not isinstance(spec, dict):
        return None, [(var, "must be a dict {source: s3|huggingface|modelscope|local, ...} or false "
                            "(pre-staged weights), got %r" % (spec,))]
    errors = []
    params = {}
    for k, v in spec.items():
        if k in SECRETS:
            errors.append(("%s.%s" % (var, k), "credentials do not belong in the deployment (the plan is shown and "
                           "recorded): set %s (vault-encrypted) in the inventory instead" % SECRETS[k]))
        elif k not in KEYS:
            errors.append(("%s.%s" % (var, k), "unknown key; known keys: %s" % ", ".join(sorted(KEYS))))
        elif not _ok(v, KEYS[k][0]):
            errors.append(("%s.%s" % (var, k), "must be %s, got %r" % (KEYS[k][0], v)))
    source = spec.get("source")
    if source not in SOURCES:
        errors.append((var + ".source", "%r is not one of %s" % (source, ", ".join(SOURCES))))
    if errors:
        return None, errors
    for k, (_typ, default) in KEYS.items():
        params[k] = spec.get(k, default if not isinstance(default, list) else list(default))
    if source in ("huggingface", "modelscope") and not params["repo_id"]:
        params["repo_id"] = str((model or {}).get("hf_id") or "")
    for k in REQUIRED[source]:
        if not params[k]:
            errors.append(("%s.%s" % (var, k), "is required for source %s" % source))
    if errors:
        return None, errors
    peer_copy = params.pop("peer_copy")
    del params["source"]
    params = {k: v for k, v in params.items() if v not in ("", [])}
    fetchers = [hosts[0]] if peer_copy else list(hosts)
    return {"source": source, "path": model_path, "params": params, "fetch_hosts": fetchers,
            "peer_source": hosts[0] if peer_copy and len(hosts) > 1 else None,
            "peer_address": addresses[hosts[0]] if peer_copy and len(hosts) > 1 else None,
            "peers": [h for h in hosts if h not in fetchers]}, []


def host_step(wjob, host):
    """This host's part of the job: {"mode": fetch|peer, "peer_source", "peer_address"} or None."""
    if not wjob:
        return None
    if host in wjob["fetch_hosts"]:
        return {"mode": "fetch", "peer_source": None, "peer_address": None}
    return {"mode": "peer", "peer_source": wjob["peer_source"], "peer_address": wjob["peer_address"]}
