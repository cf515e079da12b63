# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter llmfleet.serving.watchdog_cron_path: a deployment's watchdog cron file (plugin_utils/_drift.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: watchdog_cron_path
short_description: The cron file of a deployment's group watchdog
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
description:
  - C(/etc/cron.d/llmfleet-watchdog-NAME) for deployment NAME, every character outside C(A-Za-z0-9_-) made
    C(_) (cron skips files whose names hold dots). The one place the name is made, for writing, keeping and
    removing the file.
options:
  _input:
    description: The deployment name.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Remove the watchdog cron files of these deployments
  ansible.builtin.file:
    path: "{{ item }}"
    state: absent
  loop: "{{ deployments | map('llmfleet.serving.watchdog_cron_path') | list }}"
"""

RETURN = r"""
_value:
  description: The path of the cron file.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _drift


def watchdog_cron_path(deployment):
    if not isinstance(deployment, str) or not deployment.strip():
        raise AnsibleFilterError("watchdog_cron_path: the input must be a deployment name (got %s)" % (
            "a blank string" if isinstance(deployment, str) else type(deployment).__name__,))
    return _drift.watchdog_cron_path(deployment)


class FilterModule(object):
    def filters(self):
        return {"watchdog_cron_path": watchdog_cron_path}
