# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup llmfleet.serving.api_key: the API key of a deployment of the plan, on the control node."""

from __future__ import annotations

DOCUMENTATION = r"""
name: api_key
short_description: The API key of a planned deployment (the one place that resolves it)
description:
  - Returns the API key of each deployment named, read on the control node from the deployment's
    C(api_key) (vault-encrypted) or from the file its plan names (C(api_key.control_path), the
    deployment's C(api_key_file)).
  - The key must pass the collection's content rules (one line, printable ASCII without spaces, at least
    16 characters) and a key file must be owner-only (0600 or 0400); an empty or whitespace-only key is
    an error, never "no authentication".
  - A deployment without a key (exposure localhost) gives an empty string.
  - Use it with C(no_log) on the task; the plan itself never holds the key.
options:
  _terms:
    description: Deployment names.
    required: true
    type: list
    elements: str
  plan:
    description: The plan (default the fact C(llmfleet_plan) of localhost, else of the current host).
    type: dict
  deployments:
    description: The inventory's C(llmfleet_deployments) (for inline or vault C(api_key)); default the variable.
    type: list
    elements: dict
"""

EXAMPLES = r"""
- name: Write the key file of deployment r1 (no_log)
  ansible.builtin.copy:
    content: "{{ lookup('llmfleet.serving.api_key', 'r1') }}"
    dest: /etc/llmfleet/r1/api_key
    mode: "0600"
  no_log: true
"""

RETURN = r"""
_raw:
  description: One key per deployment named (empty string for a deployment without a key).
  type: list
  elements: str
"""

import os

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

from ansible_collections.llmfleet.serving.plugins.module_utils._api_key import (
    KeyFileError,
    key_problem,
    read_key_file,
)


def resolve(name, plan, deployments):
    """The key of deployment ``name``: inline/vault api_key, else the plan's control_path file.
    Raises AnsibleError (naming the variable, never the key)."""
    dep = ((plan or {}).get("deployments") or {}).get(name)
    if dep is None:
        raise AnsibleError("llmfleet.serving.api_key: %r is not a deployment of the plan (llmfleet_plan): "
                           "run the plan first (playbooks/prelude.yml)" % name)
    key = dep.get("api_key") or {}
    source = key.get("source")
    if not source:
        return ""
    label = "llmfleet_deployments[%s]" % name
    if source in ("inline", "vault"):
        entry = [d for d in deployments or [] if isinstance(d, dict) and d.get("name") == name]
        value = entry[0].get("api_key") if entry else None
        why = key_problem(None if value is None else str(value))
        if why:
            raise AnsibleError("%s.api_key: the key %s" % (label, why))
        return str(value)
    path = os.path.expanduser(str(key.get("control_path") or ""))
    try:
        return read_key_file(path, check_mode=True)
    except KeyFileError as e:
        raise AnsibleError("%s.api_key_file: %s" % (label, e))


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}
        plan = self.get_option("plan")
        if plan is None:
            hostvars = variables.get("hostvars") or {}
            try:
                plan = hostvars["localhost"]["llmfleet_plan"]
            except (KeyError, TypeError):
                plan = variables.get("llmfleet_plan")
            plan = self._templar.template(plan) if plan is not None else {}
        deployments = self.get_option("deployments")
        if deployments is None:
            deployments = self._templar.template(variables.get("llmfleet_deployments") or [])
        return [resolve(str(t), plan, deployments) for t in terms]
