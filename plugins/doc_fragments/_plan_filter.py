# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: the options of the filters that read the plan for one host."""

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
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
