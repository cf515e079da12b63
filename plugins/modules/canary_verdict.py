#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: canary_verdict
short_description: Decide whether the canary of a rolling reconfiguration passed its benchmark gate
description:
  - Runs on the control node (action plugin) and contacts no host. A run that failed (its C(msg)), a failed
    baseline check or a failed threshold fails the gate; C(playbooks/tasks/canary_gate.yml) then rolls the
    canary back and stops the roll. Logic in C(plugins/plugin_utils/_rollout.py).
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
  - llmfleet.serving._attributes.CONTROL_NODE
options:
  runs:
    description: The M(llmfleet.serving.llm_benchmark) results of the canary, each with C(deployment) added.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Take the verdict
  llmfleet.serving.canary_verdict:
    runs: "{{ canary_runs }}"
  register: verdict
"""

RETURN = r"""
passed:
  description: Every run passed.
  returned: success
  type: bool
failures:
  description: One line per failed run, the deployment and why.
  returned: success
  type: list
  elements: str
  sample: ["roll-a: regression against the baseline ...: median_tpot_ms"]
rollback:
  description: The canary must roll back (the opposite of RV(passed)).
  returned: success
  type: bool
checks:
  description: Every baseline comparison of the runs.
  returned: success
  type: list
  elements: dict
"""
