#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: serving_drift
short_description: Decide which engine containers restart and why, across the hosts of each group
description:
  - Runs on the control node (action plugin) and contacts no host. Reads what
    M(llmfleet.serving.serving_state_info) reported on every host of the play (registered as O(state_var))
    and compares it with the plan. Rules (unit-tested, C(plugins/plugin_utils/_drift.py)).
    A container is changed when absent, its config-hash label differs, it is not running, or its API-key
    file is missing or differs; a multi-node group restarts as a whole when any member changed or a member's
    host is not in the play; a multi-node vLLM group whose members match is still broken when a member
    started before the head or the head's Ray misses nodes.
  - Returns this host's decision. Used by C(roles/inference_server) (tasks C(compare.yml), C(drift.yml)).
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
  - llmfleet.serving._attributes.CONTROL_NODE
options:
  plan:
    description: The plan (the result of M(llmfleet.serving.serving_plan), or a part of it).
    type: dict
    required: true
  state_var:
    description: Name of the variable each host registered the M(llmfleet.serving.serving_state_info) result in.
    type: str
    default: _inference_server_state
  hosts:
    description: The hosts whose reports count (a group member on a host outside them counts as changed).
    type: list
    elements: str
    default: the hosts of the play (C(ansible_play_hosts))
  teardown:
    description:
      - Decide instead what a teardown of this host removes (C(roles/inference_server) C(tasks/absent.yml)),
        that is only the plan's containers whose C(llmfleet.deployment) label is the planned deployment, the plan's
        files, and the plan's folders that hold nothing but the plan's files (from the folder listing of
        M(llmfleet.serving.serving_state_info) O(llmfleet.serving.serving_state_info#module:finds)).
      - Returns RV(containers), RV(files), RV(dirs), RV(kept) only.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Read what runs
  llmfleet.serving.serving_state_info:
    containers: "{{ my_containers }}"
  register: _inference_server_state

- name: Decide what restarts
  llmfleet.serving.serving_drift:
    plan: "{{ hostvars['localhost'].llmfleet_plan }}"
  register: decision
"""

RETURN = r"""
why:
  description: Per container of this host that must change, the reason.
  returned: success
  type: dict
  sample: {"llmfleet-r1-head": "config hash 1111111111111111 -> 2222222222222222"}
restart:
  description: This host's multi-node deployments that restart as a whole.
  returned: success
  type: list
  elements: str
  sample: ["r1"]
proven_ready:
  description:
    - This host's deployments that this run changes nothing of (every member reported and matches the plan,
      no group restart, no role setting to apply) and whose head answered the health GET of
      M(llmfleet.serving.serving_state_info) with 200. C(playbooks/deploy.yml) skips their readiness wait.
  returned: success
  type: list
  elements: str
  sample: ["qwq"]
group_why:
  description: Per deployment of this host whose members all match the plan but whose group is broken, why.
  returned: success
  type: dict
  sample: {"r1": "the head llmfleet-r1-head's Ray holds 1 of 2 nodes"}
drift:
  description: Per deployment, per container of this host, why it changes (member of a changed group included).
  returned: success
  type: dict
  sample: {"r1": {"llmfleet-r1-worker-1": "member of a changed group"}}
settings:
  description: Per container whose role-level settings (outside the plan's hash) differ, the differences; they restart nothing by themselves.
  returned: success
  type: dict
  sample: {"llmfleet-r1-head": ["restart_policy no -> unless-stopped"]}
in_sync:
  description: Nothing of this host changes (containers, their settings, files).
  returned: success
  type: bool
  sample: true
containers:
  description: With O(teardown), the containers to remove (the plan's names carrying the planned deployment label).
  returned: with O(teardown)
  type: list
  elements: str
files:
  description: With O(teardown), the plan's files of this host to remove.
  returned: with O(teardown)
  type: list
  elements: str
dirs:
  description: With O(teardown), the plan's folders that hold nothing but the plan's files (removed after them).
  returned: with O(teardown)
  type: list
  elements: str
kept:
  description: With O(teardown), what stays and why (a container labelled for another deployment, a folder with other files).
  returned: with O(teardown)
  type: dict
fleet:
  description: The fleet-wide C(restart) and C(group_why).
  returned: success
  type: dict
"""
