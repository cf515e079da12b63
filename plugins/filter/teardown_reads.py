# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter llmfleet.serving.teardown_reads: what a teardown reads on a host (plugin_utils/_drift.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: teardown_reads
short_description: What a teardown of a host reads first (the plan's containers and folders)
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
description:
  - From the plan, the containers of one host (name, config hash, deployment) and the plan's deployment
    folders of that host to list, in the form M(llmfleet.serving.serving_state_info) takes (O(containers),
    O(finds)). M(llmfleet.serving.serving_drift) with C(teardown=true) then decides what to remove.
  - Nothing outside the plan is named, so a teardown never reads or removes another inventory's things.
extends_documentation_fragment:
  - llmfleet.serving._plan_filter
"""

EXAMPLES = r"""
- name: Read what a teardown may remove
  llmfleet.serving.serving_state_info:
    containers: "{{ (plan | llmfleet.serving.teardown_reads(inventory_hostname)).containers }}"
    finds: "{{ (plan | llmfleet.serving.teardown_reads(inventory_hostname)).finds }}"
"""

RETURN = r"""
_value:
  description: C(containers) (list of dicts name, config_hash, deployment) and C(finds) (list of dicts path, pattern).
  type: dict
"""

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _drift
from ansible_collections.llmfleet.serving.plugins.plugin_utils._plan_input import plan_input


def teardown_reads(plan, host):
    with plan_input("teardown_reads", plan):
        return _drift.teardown_reads(plan, host)


class FilterModule(object):
    def filters(self):
        return {"teardown_reads": teardown_reads}
