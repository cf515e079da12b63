# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import os
import sys

import pytest
from ansible.module_utils.testing import patch_module_args

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from module_harness import ExitJson, FailJson, patch_exits  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.modules import nvidia_driver_plan  # noqa: E402


@pytest.fixture(autouse=True)
def _patch_exits(monkeypatch):
    patch_exits(monkeypatch)


BASE = dict(branch="580", os_family="Debian", distribution="Ubuntu", distribution_major_version="24")


def run(args, exc=ExitJson):
    with patch_module_args(args):
        with pytest.raises(exc) as info:
            nvidia_driver_plan.main()
    return info.value.args[0]


def test_no_facts_plans_install_in_check_mode():
    result = run(dict(BASE, _ansible_check_mode=True))
    assert result["changed"] is False
    assert result["plan"]["action"] == "install"
    assert result["plan"]["driver_packages"] == ["nvidia-driver-580-open"]
    assert result["plan"]["cuda_repo_distro"] == "ubuntu2404"


def test_loaded_branch_skips():
    facts = {"driver_loaded": True, "driver_version": "580.159.04", "gpu_count": 8,
             "product_name": "NVIDIA H200", "architecture": "Hopper", "nvswitch": True}
    result = run(dict(BASE, facts=facts))
    assert result["plan"]["action"] == "skip"
    assert result["plan"]["fabric_manager_spec"] == "nvidia-fabricmanager-580=580.159.04-*"


def test_bad_branch_fails_cleanly():
    result = run(dict(BASE, branch="latest"), exc=FailJson)
    assert "neither a branch" in result["msg"]


def test_unsupported_os_fails_cleanly():
    result = run(dict(BASE, distribution="Alibaba", os_family="RedHat", distribution_major_version="2"), exc=FailJson)
    assert "Alibaba Cloud Linux 2" in result["msg"]
