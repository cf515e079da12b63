# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmfleet.serving.rollout_plan: the rollout of playbooks/reconfigure.yml
(batches, gateway drain order, canary, rollback plans) from the plan and what every host
reported; contacts no host. Logic: plugin_utils/_rollout.py."""

from __future__ import annotations

import base64

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _rollout

GATEWAY_VARS = ("gateway_deployment", "gateway_replicas", "gateway_name")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("plan", "gateway_hosts", "only", "canary_deployment", "canary", "drift_var",
                             "running_var"))

    def _hostvar(self, hostvars, host, name, default=None):
        try:
            hv = hostvars[host]
            if name not in hv:
                return default
            return self._templar.template(hv[name])
        except (KeyError, ReferenceError, AnsibleError):
            return default

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        result["changed"] = False
        args = self._task.args
        plan = args.get("plan")
        if not isinstance(plan, dict) or not isinstance(plan.get("deployments"), dict):
            result.update(failed=True, msg="rollout_plan: plan must be the serving_plan result (llmfleet_plan)")
            return result
        only = args.get("only") or []
        if isinstance(only, str):
            only = [only]
        if not isinstance(only, list) or not all(isinstance(x, str) for x in only):
            result.update(failed=True, msg="llmfleet_reconfigure_only: must be a list of deployment names, got %r"
                          % (only,))
            return result
        unknown = [x for x in only if x not in plan["deployments"]]
        if unknown:
            result.update(failed=True, msg="llmfleet_reconfigure_only: %s not in the plan (deployments: %s)"
                          % (", ".join(unknown), ", ".join(sorted(plan["deployments"]))))
            return result
        hostvars = task_vars.get("hostvars") or {}
        drift_var = args.get("drift_var") or "inference_server_drift"
        running_var = args.get("running_var") or "__llmfleet_running_raw"
        hosts = sorted({h for d in plan["deployments"].values() for h in d.get("hosts") or {}})
        drift = {h: self._hostvar(hostvars, h, drift_var, {}) or {} for h in hosts}
        raw = {}
        for name, dep in plan["deployments"].items():
            reg = self._hostvar(hostvars, dep.get("head"), running_var, {}) or {}
            for r in reg.get("results") or []:
                if r.get("item") == name and r.get("content"):
                    try:
                        raw[name] = base64.b64decode(r["content"]).decode("utf-8")
                    except (ValueError, UnicodeDecodeError):
                        continue
        gateways = []
        for g in args.get("gateway_hosts") or []:
            gw = {"host": g}
            for k in GATEWAY_VARS:
                v = self._hostvar(hostvars, g, k)
                if v is not None:
                    gw[k] = v
            gateways.append(gw)
        canary = args.get("canary", True)
        if isinstance(canary, str):
            canary = canary.strip().lower() in ("1", "true", "yes", "on")
        out = _rollout.rollout(plan, drift, running=_rollout.running_plans(raw), gateways=gateways, only=only,
                               canary_deployment=args.get("canary_deployment") or None, canary=bool(canary))
        result.update(out)
        return result
