# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter llmfleet.serving.host_containers: the containers the plan puts on one host (plugin_utils/_drift.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: host_containers
short_description: The containers the plan puts on one host, as the role's tasks loop over them
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
description:
  - From the plan, each container planned on one host, in plan order, as a dict with C(d) (the deployment),
    C(nodes), C(engine), C(head) (the head's inventory host), C(hash) (the deployment's config hash), C(s)
    (this host's part of the deployment plan) and C(ray_token) (the host path of the Ray token file mounted into
    the container, C(null) without one).
  - A host the plan does not name gets an empty list.
options:
  _input:
    description: The plan (the result of M(llmfleet.serving.serving_plan)).
    type: dict
    required: true
  host:
    description: The inventory host name.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: The containers of this host
  ansible.builtin.set_fact:
    mine: "{{ plan | llmfleet.serving.host_containers(inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: One dict per planned container (d, nodes, engine, head, hash, s, ray_token).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _drift


def host_containers(plan, host):
    if not isinstance(plan, dict) or not isinstance(plan.get("deployments"), dict):
        raise AnsibleFilterError("host_containers: the input must be the plan (hostvars['localhost'].llmfleet_plan)")
    if not isinstance(host, str) or not host.strip():
        raise AnsibleFilterError("host_containers: host must be the inventory host name (got %r)" % (host,))
    try:
        return _drift.host_containers(plan, host)
    except (KeyError, TypeError, AttributeError) as e:
        raise AnsibleFilterError("host_containers: the plan is not the serving_plan result: %r" % (e,))


class FilterModule(object):
    def filters(self):
        return {"host_containers": host_containers}
