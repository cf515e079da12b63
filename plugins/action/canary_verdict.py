# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmfleet.serving.canary_verdict: whether the canary of a rolling
reconfiguration passed its benchmark gate (rolls back when not); contacts no host.
Logic: plugin_utils/_rollout.py."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _rollout


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("runs",))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars or {})
        runs = self._task.args.get("runs") or []
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            result.update(failed=True, changed=False, msg="canary_verdict: runs must be a list of llm_benchmark results")
            return result
        failures = _rollout.canary_verdict(runs)
        checks = [c for r in runs for c in (r.get("baseline_checks") or [])]
        result.update(changed=False, failures=failures, passed=not failures, rollback=bool(failures), checks=checks)
        return result
