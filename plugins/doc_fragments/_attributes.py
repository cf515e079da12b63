# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: shared attribute documentation for modules."""

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
"""

    # Should be used together with the standard fragment
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
"""

    # The action plugins that decide on the control node and change nothing (serving_plan,
    # group_preflight, serving_drift, rollout_plan, canary_verdict). Use together with the standard
    # fragment (descriptions) and ACTIONGROUP_SERVING; a module adds only what is its own (facts, ...).
    CONTROL_NODE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: Decides the same in check mode; it never changes anything.
  diff_mode:
    support: none
  idempotent:
    support: full
  action:
    description: Runs on the control node as an action plugin.
    support: full
"""

    ACTIONGROUP_SERVING = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/llmfleet.serving.serving) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - llmfleet.serving.serving
"""
