# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmfleet.serving (may change without notice): the rollout plan of
playbooks/reconfigure.yml, on the controller, pure.

Rules (each unit-tested in tests/unit/plugins/plugin_utils/test_rollout.py):

- Only the replicas (deployments) that drift roll, restricted to ``only`` when given.
- One replica at a time, in name order; the canary (``canary_deployment`` when it drifts, else the
  first by name) goes first.
- Replicas that share a host roll together, in one batch (a batch is a connected set of replicas
  by shared hosts); the batch's hosts roll at once (``serial`` = the batch's host count).
- The first batch is the canary (when the canary gate is on).
- Each batch is drained at every gateway that routes to one of its replicas: a gateway routes to
  a replica when its ``gateway_deployment`` serves the same model, or when it lists the replica
  in ``gateway_replicas``; drain in the order given (gateway host order), undrain the same.
- Each batch applies the plan restricted to its replicas (other engines on its hosts stay as they
  are), and a rollback returns it to the plans its replicas ran before (read from each head's
  deployment.json), only when every replica of the batch has one.
- The canary's verdict: a run that failed, or any failed baseline check or threshold, fails the
  gate; then the canary rolls back (when it can) and the roll stops.
"""

from __future__ import annotations

import json

DEFAULT_BACKEND = "llmfleet"


def collect_drift(plan, drift_by_host, only=None):
    """{deployment: {"host/container": reason}} from each host's ``inference_server_drift``
    ({deployment: {container: reason}}), for the plan's deployments (restricted to ``only``)."""
    out = {}
    for name, dep in sorted((plan.get("deployments") or {}).items()):
        if only and name not in only:
            continue
        for h in dep.get("hosts") or {}:
            for c, why in sorted(((drift_by_host.get(h) or {}).get(name) or {}).items()):
                out.setdefault(name, {})["%s/%s" % (h, c)] = why
    return out


def order(names, canary_deployment=None):
    """Roll order: the canary first when it is among ``names``, then the rest by name."""
    names = sorted(names)
    if canary_deployment in names:
        return [canary_deployment] + [n for n in names if n != canary_deployment]
    return names


def batches_of(plan, names):
    """Group the replicas ``names`` (in roll order) into batches of replicas sharing hosts. A batch
    is placed where its first replica is in the order; a replica that shares a host with several
    batches merges them."""
    batches = []
    for name in names:
        hosts = list((plan["deployments"][name].get("hosts") or {}).keys())
        hit = [b for b in batches if set(b["hosts"]) & set(hosts)]
        if not hit:
            batches.append({"deployments": [name], "hosts": hosts})
            continue
        first = hit[0]
        for b in hit[1:]:
            first["deployments"] += b["deployments"]
            first["hosts"] += [h for h in b["hosts"] if h not in first["hosts"]]
            batches.remove(b)
        first["deployments"].append(name)
        first["hosts"] += [h for h in hosts if h not in first["hosts"]]
    return batches


def routes_to(gateway, plan, name):
    """Whether ``gateway`` ({gateway_deployment, gateway_replicas}) routes to replica ``name``."""
    deps = plan.get("deployments") or {}
    gd = gateway.get("gateway_deployment") or ""
    if gd in deps and deps[gd].get("served_model_name") == deps[name].get("served_model_name"):
        return True
    return any(isinstance(r, dict) and r.get("name") == name for r in gateway.get("gateway_replicas") or [])


def gateways_of(plan, deployments, gateways):
    """[{host, replica, backend}]: where each replica of a batch is drained, in gateway order per replica."""
    out = []
    for name in deployments:
        for g in gateways:
            if routes_to(g, plan, name):
                backend = g.get("gateway_name") or g.get("gateway_deployment") or DEFAULT_BACKEND
                out.append({"host": g["host"], "replica": name, "backend": backend})
    return out


def restrict(plan, deployments, hosts):
    """The plan restricted to ``deployments`` on ``hosts`` (what one batch applies)."""
    deps = {k: v for k, v in (plan.get("deployments") or {}).items() if k in deployments}
    out = dict(plan)
    out["deployments"] = deps
    out["hosts"] = {h: [r for r in (plan.get("hosts") or {}).get(h) or [] if r.get("deployment") in deployments]
                    for h in hosts}
    return out


def rollback_plan(before, deployments):
    """The plan a batch rolls back to: each replica's previous plan; {} unless every replica has one."""
    deps, hosts = {}, {}
    for d in deployments:
        prev = before.get(d) or {}
        if not prev:
            return {}
        deps[d] = prev
        for h, hp in (prev.get("hosts") or {}).items():
            hosts.setdefault(h, []).append({"deployment": d, "container_name": (hp or {}).get("container_name")})
    return {"deployments": deps, "hosts": hosts}


def running_plans(raw_by_head):
    """{deployment: running plan} from each head's slurped deployment.json ({deployment: text});
    an unreadable or broken file gives no entry (nothing to diff against or roll back to)."""
    out = {}
    for name, text in (raw_by_head or {}).items():
        try:
            data = json.loads(text) if isinstance(text, (str, bytes)) else text
        except ValueError:
            continue
        if isinstance(data, dict) and data:
            out[name] = data
    return out


def rollout(plan, drift_by_host, running=None, gateways=None, only=None, canary_deployment=None, canary=True):
    """The whole rollout of reconfigure.yml. Returns {drift, before, batches, summary, batch_sizes,
    hosts, config_hashes}; each batch: {index, canary, deployments, hosts, gateways, plan,
    rollback_plan}; ``summary`` is the batches without their plans (for the report)."""
    running = running or {}
    drift = collect_drift(plan, drift_by_host, only)
    batches = batches_of(plan, order(list(drift), canary_deployment))
    for i, b in enumerate(batches):
        b.update(index=i, canary=bool(canary) and i == 0, gateways=gateways_of(plan, b["deployments"], gateways or []),
                 plan=restrict(plan, b["deployments"], b["hosts"]),
                 rollback_plan=rollback_plan(running, b["deployments"]))
    before = {name: running.get(name, {}) for name in plan.get("deployments") or {}}
    summary = [{k: b[k] for k in ("index", "canary", "deployments", "hosts", "gateways")} for b in batches]
    return {"drift": drift, "before": before, "batches": batches, "summary": summary,
            "batch_sizes": [len(b["hosts"]) for b in batches] or [1],
            "hosts": [{"host": h, "batch": b["index"]} for b in batches for h in b["hosts"]],
            "config_hashes": {n: d.get("config_hash") for n, d in (plan.get("deployments") or {}).items()}}


def canary_verdict(runs):
    """[reason] for every canary benchmark run that failed the gate (empty: the canary passed).
    ``runs``: llm_benchmark results, each with ``deployment``."""
    out = []
    for r in runs or []:
        failed_checks = [c for c in (r.get("baseline_checks") or []) if not c.get("passed")]
        failed_thresholds = [c for c in (r.get("thresholds") or []) if not c.get("passed")]
        if r.get("msg") is not None or r.get("failed") or failed_checks or failed_thresholds:
            out.append("%s: %s" % (r.get("deployment", "?"), r.get("msg") or "a check failed"))
    return out
