# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmfleet.serving.serving_drift: decides on the controller which engine
containers of this host restart and why, from what serving_state_info reported on every host of
the play; with teardown: true, what a teardown of this host removes. Contacts no host. Logic:
plugin_utils/_drift.py."""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _drift


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("plan", "state_var", "hosts", "teardown"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        result["changed"] = False
        args = self._task.args
        plan = args.get("plan")
        if not isinstance(plan, dict) or not isinstance(plan.get("deployments"), dict):
            result.update(failed=True, msg="serving_drift: plan must be the serving_plan result "
                                           "(inference_server_plan / hostvars['localhost'].llmfleet_plan)")
            return result
        var = args.get("state_var") or "_inference_server_state"
        hosts = args.get("hosts") or task_vars.get("ansible_play_hosts") or []
        hostvars = task_vars.get("hostvars") or {}
        states = {}
        for h in hosts:
            try:
                hv = hostvars[h]
                if var not in hv:
                    continue
                st = self._templar.template(hv[var])
            except (KeyError, ReferenceError, AnsibleError):
                continue
            if isinstance(st, dict) and not st.get("skipped") and "containers" in st:
                states[h] = st
        me = task_vars.get("inventory_hostname")
        if me not in states:
            result.update(failed=True, msg="serving_drift: no %s for %s: run llmfleet.serving.serving_state_info "
                                           "first (register: %s)" % (var, me, var))
            return result
        if args.get("teardown"):
            # what a teardown of this host removes (only what this inventory's plan started there)
            try:
                result.update(_drift.teardown(plan, me, states[me]))
            except (KeyError, TypeError, ValueError) as e:
                result.update(failed=True, msg="serving_drift: the plan and the reported state do not fit: %r" % (e,))
            return result
        try:
            out = _drift.decide(plan, states)
        except (KeyError, TypeError, ValueError) as e:
            result.update(failed=True, msg="serving_drift: the plan and the reported state do not fit: %r" % (e,))
            return result
        result.update(out[me])
        result["fleet"] = out[None]
        return result
