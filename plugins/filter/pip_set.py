# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter llmfleet.serving.pip_set: the pinned host pip set that fits a host's Python
(plugin_utils/_pip_sets.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: pip_set
short_description: The pinned set of host pip packages that fits the Python of a host
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
description:
  - Of the sets in the input (the role variable C(model_weights_pip_sets)), the one with the newest C(python)
    minimum that O(python_version) meets; its packages for O(source) plus O(extra), and its constraints.
  - Fails with a message naming C(model_weights_python) and the fix when the host's Python is older than every set.
  - O(packages) and O(constraints) (C(model_weights_pip_packages), C(model_weights_pip_constraints)), when given,
    replace the sets whatever the Python.
options:
  _input:
    description: The sets, each with C(python) (oldest Python it supports), C(packages) (per source) and C(constraints).
    type: list
    elements: dict
    required: true
  source:
    description: The weights source (s3, huggingface, modelscope, local).
    type: str
    required: true
  python_version:
    description: The Python version of the host (C(3.10.12)); empty takes the newest set.
    type: str
    required: true
  extra:
    description: Packages added to the chosen ones.
    type: list
    elements: str
    default: []
  packages:
    description: Packages per source that replace the sets (given together with O(constraints)).
    type: dict
  constraints:
    description: Constraints that replace the sets' (given together with O(packages)).
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Choose the pinned set
  ansible.builtin.set_fact:
    chosen: "{{ model_weights_pip_sets | llmfleet.serving.pip_set('huggingface', '3.10.12') }}"
"""

RETURN = r"""
_value:
  description: C(python) (the chosen set's minimum, null for an override), C(packages) and C(constraints).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _pip_sets


def pip_set(sets, source, python_version, extra=None, packages=None, constraints=None):
    try:
        return _pip_sets.choose(sets, source, python_version, extra, packages, constraints)
    except _pip_sets.PipSetError as e:
        raise AnsibleFilterError(str(e))


class FilterModule(object):
    def filters(self):
        return {"pip_set": pip_set}
