# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared by the module tests: AnsibleModule's exit_json / fail_json raise with the result."""

from __future__ import annotations

from ansible.module_utils import basic


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


def patch_exits(monkeypatch, default_changed=None):
    """Make exit_json raise ExitJson(result) and fail_json raise FailJson(result, failed=True).
    With default_changed, a result without `changed` gets that value (as AnsibleModule does)."""
    def exit_json(self, **kwargs):
        if default_changed is not None:
            kwargs.setdefault("changed", default_changed)
        raise ExitJson(kwargs)

    def fail_json(self, **kwargs):
        kwargs["failed"] = True
        raise FailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
