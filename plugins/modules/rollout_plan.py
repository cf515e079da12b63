#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout_plan
short_description: Order a rolling reconfiguration (batches, gateway drain order, canary, rollback plans)
description:
  - Runs on the control node (action plugin) and contacts no host. Reads each host's drift
    (C(inference_server_drift), set by C(roles/inference_server) (its C(drift) tasks)), the running plan of
    each replica (its head's C(deployment.json), read in the same call) and the gateway
    hosts' variables, and returns the roll of C(playbooks/reconfigure.yml).
  - Rules (unit-tested, C(plugins/plugin_utils/_rollout.py)). Only drifting replicas roll, one at a time, the
    canary first; replicas that share a host roll together; each batch is drained at every gateway that routes
    to it (same served model as its C(gateway_deployment), or listed in C(gateway_replicas)); each batch applies
    the plan restricted to its replicas and rolls back to the plans they ran before.
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
  - llmfleet.serving._attributes.CONTROL_NODE
options:
  plan:
    description: The new plan (C(llmfleet_plan)).
    type: dict
    required: true
  gateway_hosts:
    description: The gateway hosts (their C(gateway_deployment), C(gateway_replicas), C(gateway_name) are read).
    type: list
    elements: str
    default: []
  only:
    description: Deployments to consider (default all).
    type: list
    elements: str
    default: []
  canary_deployment:
    description: The replica that goes first (when it drifts).
    type: str
  canary:
    description: Whether the first batch is a canary (gated on a benchmark).
    type: bool
    default: true
  drift_var:
    description: Host variable with each host's drift.
    type: str
    default: inference_server_drift
  state_var:
    description: Variable each head registered its M(llmfleet.serving.serving_state_info) result in; the deployment
      records (running plans) are read from its C(files) (kind C(record), C(content)).
    type: str
    default: _inference_server_state
  running_var:
    description: Fallback, a variable the heads registered their slurped C(deployment.json) files in (a loop over
      deployment names).
    type: str
    default: __llmfleet_running_raw
"""

EXAMPLES = r"""
- name: Order the rollout
  llmfleet.serving.rollout_plan:
    plan: "{{ llmfleet_plan }}"
    gateway_hosts: "{{ query('ansible.builtin.inventory_hostnames', 'gateway_hosts') }}"
  register: roll
"""

RETURN = r"""
drift:
  description: Per drifting deployment, per C(host/container), why.
  returned: success
  type: dict
  sample: {"roll-a": {"h1/llmfleet-roll-a": "config hash 1111111111111111 -> 2222222222222222"}}
before:
  description: Per deployment of the plan, the plan it runs now ({} when none is recorded).
  returned: success
  type: dict
batches:
  description: The roll, in order; each C(index), C(canary), C(deployments), C(hosts), C(gateways) (C(host), C(replica),
    C(backend)), C(plan) (the plan restricted to the batch), C(rollback_plan) ({} when there is none).
  returned: success
  type: list
  elements: dict
summary:
  description: The batches without their plans (what the JSON report shows).
  returned: success
  type: list
  elements: dict
batch_sizes:
  description: The host count of each batch (the roll play's C(serial)); C([1]) when nothing rolls.
  returned: success
  type: list
  elements: int
  sample: [2, 1]
hosts:
  description: Each rolling host with its batch index.
  returned: success
  type: list
  elements: dict
  sample: [{"host": "h1", "batch": 0}]
config_hashes:
  description: The new config hash of every deployment.
  returned: success
  type: dict
"""
