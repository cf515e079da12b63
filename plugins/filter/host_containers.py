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
extends_documentation_fragment:
  - llmfleet.serving._plan_filter
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
from ansible_collections.llmfleet.serving.plugins.plugin_utils._plan_input import plan_input


def host_containers(plan, host):
    with plan_input("host_containers", plan):
        if not isinstance(host, str) or not host.strip():
            raise AnsibleFilterError("host_containers: host must be the inventory host name (got %s)" % (
                "a blank string" if isinstance(host, str) else type(host).__name__,))
        return _drift.host_containers(plan, host)


class FilterModule(object):
    def filters(self):
        return {"host_containers": host_containers}
