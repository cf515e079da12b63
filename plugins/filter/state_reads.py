# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter llmfleet.serving.state_reads: what serving_state_info compares on a host, from the plan
(plugin_utils/_drift.py expected_reads / expected_files)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: state_reads
short_description: What the state read of a host compares, from the plan
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
description:
  - From the plan, the containers of one host (name, config hash, the Ray nodes and health URL to check, the
    role-level settings) and its files (the plan's C(hosts.<h>.files) with the sha256 each must have, and
    the watchdog's script and folders), in the form M(llmfleet.serving.serving_state_info) takes
    (O(llmfleet.serving.serving_state_info#module:containers), O(llmfleet.serving.serving_state_info#module:files)).
  - The API key's sha256 is computed on the control node from the one place that resolves keys (the lookup
    P(llmfleet.serving.api_key#lookup)); the key itself is never part of the result.
extends_documentation_fragment:
  - llmfleet.serving._plan_filter
options:
  deployments:
    description: The inventory's C(llmfleet_deployments) (for an inline or vault C(api_key)).
    type: list
    elements: dict
    default: []
  read_records:
    description: Ask for the deployment records' content (reconfigure diffs against them).
    type: bool
    default: false
  settings:
    description: The role-level settings of every container (restart_policy, ipc_mode, log_max_size, log_max_file, ulimits).
    type: dict
  watchdog_script:
    description: Where the watchdog script goes (its folder is compared too); no watchdog entries when unset.
    type: str
  watchdog_state_dir:
    description: The watchdog's state folder.
    type: str
"""

EXAMPLES = r"""
- name: Read this host
  llmfleet.serving.serving_state_info:
    containers: "{{ (plan | llmfleet.serving.state_reads(inventory_hostname)).containers }}"
    files: "{{ (plan | llmfleet.serving.state_reads(inventory_hostname)).files }}"
"""

RETURN = r"""
_value:
  description: C(containers) and C(files), the options of M(llmfleet.serving.serving_state_info).
  type: dict
"""

import hashlib
import os

from ansible.plugins.filter.core import to_nice_json

from ansible_collections.llmfleet.serving.plugins.lookup.api_key import resolve
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _drift, _files
from ansible_collections.llmfleet.serving.plugins.plugin_utils._plan_input import plan_input

WATCHDOG_FILE = os.path.join(_files.COLLECTION_ROOT, "roles", "inference_server", "files", "llmfleet-watchdog")


def _sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def state_reads(plan, host, deployments=None, read_records=False, settings=None, watchdog_script=None,
                watchdog_state_dir=None):
    with plan_input("state_reads", plan):
        deps = plan["deployments"]
        watchdog = None
        if watchdog_script:
            watchdog = {"script": watchdog_script, "state_dir": watchdog_state_dir,
                        "sha256": _files.file_digest(WATCHDOG_FILE)}
        files = _drift.expected_files(
            plan, host,
            key_digest=lambda name: _sha(resolve(name, plan, deployments or [])),
            # what the role's copy task writes: the deployment's plan | to_nice_json, then a newline
            record_digest=lambda name: _sha(to_nice_json(deps[name]) + "\n"),
            read_records=read_records, watchdog=watchdog)
        return {"containers": _drift.expected_reads(plan, host, settings), "files": files}


class FilterModule(object):
    def filters(self):
        return {"state_reads": state_reads}
