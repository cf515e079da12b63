# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmfleet.serving.group_preflight: compares on the controller what the host tasks of
playbooks/preflight.yml registered against the plan (llmfleet_plan); contacts no host. Logic:
plugin_utils/_preflight.py."""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _preflight

# host variable -> key of _preflight.host_data_from_raw's input
RAW_VARS = {"llmfleet_gpu_facts": "gpu_facts", "_llmfleet_pf_images": "images", "_llmfleet_pf_df": "df",
            "_llmfleet_pf_state": "state", "_llmfleet_pf_index": "index", "_llmfleet_pf_listening": "listening",
            "_llmfleet_pf_containers": "containers", "_llmfleet_pf_clock": "clock",
            "_llmfleet_pf_clock_after": "clock_after"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("phase", "plan", "checks", "clock_tolerance_s", "disk_margin"))

    def _template(self, value):
        return self._templar.template(value)

    def _plan(self, args, task_vars):
        """The plan: the argument, else the variable llmfleet_plan of this host or of localhost
        (where playbooks/prelude.yml sets it); None when there is none."""
        if args.get("plan") is not None:
            return args["plan"]
        candidates = [task_vars.get("llmfleet_plan")]
        try:
            candidates.append((task_vars.get("hostvars") or {})["localhost"].get("llmfleet_plan"))
        except (KeyError, ReferenceError, AttributeError):
            pass
        for c in candidates:
            if c is not None:
                return self._template(c)
        return None

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        result["changed"] = False
        args = self._task.args
        phase = args.get("phase", "compare")
        if phase not in ("targets", "compare"):
            result.update(failed=True, msg="phase must be targets or compare, got %r" % (phase,))
            return result
        plan = self._plan(args, task_vars)
        if plan is None:
            result.update(failed=True, msg="group_preflight checks the plan and found none: run it after "
                          "playbooks/prelude.yml (which sets llmfleet_plan on localhost), or pass plan")
            return result
        try:
            views = _preflight.views(plan)
        except ValueError as e:
            result.update(failed=True, msg="group_preflight: %s" % e)
            return result
        if phase == "targets":
            targets = _preflight.targets(views)
            result["targets"] = targets
            result["ansible_facts"] = {"llmfleet_preflight_targets": targets}
            return result

        all_hostvars = task_vars.get("hostvars") or {}
        host_data = {}
        for h in {h for v in views for h in v["hosts"]}:
            raw = {}
            try:
                hv = all_hostvars[h]
            except (KeyError, ReferenceError):
                hv = {}
            for var, key in RAW_VARS.items():
                try:
                    if var in hv:
                        raw[key] = self._template(hv[var])
                except AnsibleError:
                    continue
            host_data[h] = _preflight.host_data_from_raw(raw)
        try:
            tol = float(args.get("clock_tolerance_s", _preflight.DEFAULT_CLOCK_TOLERANCE_S))
            margin = float(args.get("disk_margin", _preflight.DEFAULT_DISK_MARGIN))
            out = _preflight.check(views, host_data, checks=args.get("checks") or _preflight.CHECKS,
                                   clock_tolerance_s=tol, disk_margin=margin)
        except (TypeError, ValueError) as e:
            result.update(failed=True, msg="group_preflight: %s" % e)
            return result
        result.update(errors=out["errors"], tables=out["tables"], rows=out["rows"], msg=out["message"])
        result["ansible_facts"] = {
            "llmfleet_preflight_result": {"ok": out["ok"], "errors": out["errors"], "tables": out["tables"]}}
        if not out["ok"]:
            result["failed"] = True
        return result
