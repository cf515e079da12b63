# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils._driver import (
    DriverPlanError,
    architecture_of,
    build_plan,
    cuda_repo_distro,
    decide,
    driver_packages,
    fabric_manager_needed,
    fabric_manager_package,
    hold_patterns,
    loaded_module_is_open,
    open_kernel_modules,
    parse_version,
    parse_wanted,
    secure_boot_enabled,
)

# From shared/fixtures/gpu/h100x1 and h200x2 (driver 580.159.04, Hopper).
H100 = {"driver_loaded": True, "driver_version": "580.159.04", "gpu_count": 1,
        "product_name": "NVIDIA H100 80GB HBM3", "architecture": "Hopper", "nvswitch": False}
H200X2 = dict(H100, gpu_count=2, product_name="NVIDIA H200")
# 8-GPU variant built from the H100 fixture (no nvswitch key: the heuristic decides).
HGX_H100 = {"driver_loaded": True, "driver_version": "580.159.04", "gpu_count": 8,
            "product_name": "NVIDIA H100 80GB HBM3", "architecture": "Hopper"}
NO_DRIVER = {"driver_loaded": False, "driver_version": None, "gpu_count": 0}
PROC_OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build"
PROC_PROP = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Release Build"


def test_parse_version():
    assert parse_version("580.159.04") == (580, 159, 4)
    assert parse_version("580") == (580,)
    assert parse_version(None) is None
    assert parse_version("N/A") is None


def test_parse_wanted_rejects_junk():
    assert parse_wanted("580.95.05") == (580, 95, 5)
    for bad in ("latest", "580-open", "", "580.x"):
        with pytest.raises(DriverPlanError):
            parse_wanted(bad)


def test_architecture_from_field_or_product():
    assert architecture_of("Hopper", None) == "hopper"
    assert architecture_of("N/A", "NVIDIA H20") == "hopper"
    assert architecture_of(None, "NVIDIA B200") == "blackwell"
    assert architecture_of(None, "NVIDIA GH200 480GB") == "grace hopper"
    assert architecture_of(None, "Tesla V100-SXM2-32GB") == "volta"
    assert architecture_of(None, "NVIDIA A100-SXM4-80GB") == "ampere"
    assert architecture_of(None, "NVIDIA L40S") == "ada lovelace"
    assert architecture_of(None, "Mystery GPU") is None


def test_open_modules_auto():
    assert open_kernel_modules("auto", "Hopper") is True
    assert open_kernel_modules("auto", None, "NVIDIA B200") is True
    assert open_kernel_modules("auto", "Volta") is False
    assert open_kernel_modules("auto") is True  # unknown GPU: installers' default since R560


def test_open_modules_forced_against_hardware_raises():
    with pytest.raises(DriverPlanError) as err:
        open_kernel_modules("false", "Blackwell", "NVIDIA B200")
    assert "need the open kernel modules" in str(err.value)
    with pytest.raises(DriverPlanError):
        open_kernel_modules(True, "Pascal")
    with pytest.raises(DriverPlanError):
        open_kernel_modules("maybe", "Hopper")
    assert open_kernel_modules(False, "Hopper") is False


def test_fabric_manager_heuristic_and_fact():
    assert fabric_manager_needed("auto", HGX_H100) is True
    assert fabric_manager_needed("auto", H100) is False  # nvswitch: false decides
    assert fabric_manager_needed("auto", H200X2) is False
    assert fabric_manager_needed("auto", dict(HGX_H100, product_name="NVIDIA H100 PCIe")) is False
    assert fabric_manager_needed("auto", dict(HGX_H100, product_name="NVIDIA H200 NVL")) is False
    assert fabric_manager_needed("auto", dict(HGX_H100, product_name="NVIDIA H20")) is True
    assert fabric_manager_needed("auto", dict(HGX_H100, product_name="NVIDIA A100-SXM4-80GB")) is True
    assert fabric_manager_needed("auto", dict(HGX_H100, product_name="NVIDIA L40S")) is False
    assert fabric_manager_needed("auto", dict(H200X2, nvswitch=True)) is False  # 2 GPUs: a VM slice
    assert fabric_manager_needed("auto", dict(H200X2, nvswitch=True, gpu_count=8)) is True
    assert fabric_manager_needed("true", NO_DRIVER) is True
    assert fabric_manager_needed(False, HGX_H100) is False
    assert fabric_manager_needed("auto", None) is False


def test_fabric_manager_not_needed_in_pass_through_vm():
    # h100x1 fixture: a VM with one GPU of an HGX board, fabric registered by the hypervisor.
    vm = dict(H100, nvswitch=True, fabric={"state": "Completed", "status": "Success", "ready": True})
    assert fabric_manager_needed("auto", vm) is False
    eight_ready = dict(vm, gpu_count=8)
    assert fabric_manager_needed("auto", eight_ready) is False
    assert fabric_manager_needed("auto", eight_ready, installed_locally=True) is True
    not_started = dict(eight_ready, fabric={"state": "Not Started", "ready": False})
    assert fabric_manager_needed("auto", not_started) is True


def test_decide_fresh_install():
    result = decide(NO_DRIVER, "580")
    assert result["action"] == "install"
    assert result["transition"] == "fresh"
    assert decide(None, "580")["action"] == "install"


def test_decide_skip_when_branch_loaded():
    result = decide(H100, "580", loaded_open=True)
    assert result["action"] == "skip"
    assert "580.159.04" in result["reason"]


def test_decide_exact_version_pin():
    assert decide(H100, "580.159.04")["action"] == "skip"
    result = decide(H100, "580.95.05")
    assert result["action"] == "refuse"
    assert result["transition"] == "downgrade"
    assert decide(H100, "580.200.01")["transition"] == "upgrade"


def test_decide_downgrade_refused_unless_allowed():
    refused = decide(H100, "570")
    assert refused["action"] == "refuse"
    assert "allow_downgrade" in refused["reason"]
    allowed = decide(H100, "570", allow_downgrade=True)
    assert allowed["action"] == "install"
    assert allowed["transition"] == "downgrade"


def test_decide_upgrade_is_install():
    result = decide(dict(H100, driver_version="570.133.20"), "580")
    assert result == {"action": "install", "transition": "upgrade", "reason": result["reason"]}


def test_decide_crossgrade_refused_unless_allowed():
    refused = decide(H100, "580", want_open=True, loaded_open=False)
    assert refused["action"] == "refuse"
    assert refused["transition"] == "crossgrade"
    assert "allow_crossgrade" in refused["reason"]
    assert decide(H100, "580", allow_crossgrade=True, want_open=True, loaded_open=False)["action"] == "install"
    upgrade_and_switch = decide(dict(H100, driver_version="570.1.1"), "580", want_open=False, loaded_open=True)
    assert upgrade_and_switch["action"] == "refuse"
    # Unknown flavor: no cross-grade assumed.
    assert decide(H100, "580", want_open=False, loaded_open=None)["action"] == "skip"


def test_cuda_repo_distro_including_alibaba():
    assert cuda_repo_distro("Ubuntu", "Debian", "24") == "ubuntu2404"
    assert cuda_repo_distro("Ubuntu", "Debian", "22") == "ubuntu2204"
    assert cuda_repo_distro("Debian", "Debian", "12") == "debian12"
    assert cuda_repo_distro("RedHat", "RedHat", "9") == "rhel9"
    assert cuda_repo_distro("Rocky", "RedHat", "9.4") == "rhel9"
    assert cuda_repo_distro("Alibaba", "RedHat", "3") == "rhel8"
    with pytest.raises(DriverPlanError):
        cuda_repo_distro("Alibaba", "RedHat", "2")
    with pytest.raises(DriverPlanError):
        cuda_repo_distro("Ubuntu", "Debian", "20")
    with pytest.raises(DriverPlanError):
        cuda_repo_distro("Archlinux", "Archlinux", "0")


def test_driver_packages_per_distribution():
    ub = driver_packages("Debian", "Ubuntu", "24", "580", True)
    assert ub["packages"] == ["nvidia-driver-580-open"]
    assert ub["pinning_package"] is None
    assert driver_packages("Debian", "Ubuntu", "22", "580", False)["packages"] == ["cuda-drivers-580"]
    ub590 = driver_packages("Debian", "Ubuntu", "24", "590", True)
    assert ub590["packages"] == ["nvidia-open"]
    assert ub590["pinning_package"] == "nvidia-driver-pinning-590"
    deb = driver_packages("Debian", "Debian", "12", "580.95.05", True)
    assert deb["packages"] == ["nvidia-open"]
    assert deb["pinning_package"] == "nvidia-driver-pinning-580"
    rh = driver_packages("RedHat", "Rocky", "9", "580", True)
    assert rh["module_stream"] == "nvidia-driver:580-open"
    assert rh["packages"] == ["@nvidia-driver:580-open"]
    assert rh["repo"] == "rhel9"
    assert driver_packages("RedHat", "RedHat", "9", "580", False)["module_stream"] == "nvidia-driver:580-dkms"
    assert driver_packages("RedHat", "RedHat", "9", "580", False, precompiled=True)["module_stream"] == "nvidia-driver:580"
    ali = driver_packages("RedHat", "Alibaba", "3", "580", False, precompiled=True)
    assert ali["module_stream"] == "nvidia-driver:580-dkms"  # not a RHEL kernel: never precompiled
    assert ali["repo"] == "rhel8"
    with pytest.raises(DriverPlanError):
        driver_packages("Suse", "SLES", "15", "580", True)


def test_fabric_manager_package_pinned_to_exact_version():
    fm = fabric_manager_package("Debian", "Ubuntu", "580", "580.95.05")
    assert fm["spec"] == "nvidia-fabricmanager-580=580.95.05-*"
    assert fm["hold"] == ["nvidia-fabricmanager-580"]
    assert fabric_manager_package("Debian", "Ubuntu", "580", None)["spec"] is None
    assert fabric_manager_package("Debian", "Debian", "580", "580.95.05")["name"] == "nvidia-fabricmanager"
    rh = fabric_manager_package("RedHat", "Alibaba", "580", "580.95.05")
    assert rh["spec"] == "nvidia-fabric-manager-580.95.05"
    with pytest.raises(DriverPlanError) as err:
        fabric_manager_package("Debian", "Ubuntu", "580", "590.44.01")
    assert "would not match" in str(err.value)


def test_hold_patterns():
    assert hold_patterns("Debian", "580", ["nvidia-driver-580-open"]) == ["nvidia-driver-580-open"]
    assert hold_patterns("RedHat", "580", ["@nvidia-driver:580-open"]) == ["*nvidia*580*"]


def test_secure_boot_and_proc_parsing():
    assert secure_boot_enabled("SecureBoot enabled\n") is True
    assert secure_boot_enabled("SecureBoot disabled\n") is False
    assert secure_boot_enabled("EFI variables are not supported on this system\n") is False
    assert secure_boot_enabled("") is None
    assert loaded_module_is_open(PROC_OPEN) is True
    assert loaded_module_is_open(PROC_PROP) is False
    assert loaded_module_is_open(None) is None


def test_build_plan_fixture_host_skips():
    plan = build_plan(H100, "580", "Debian", "Ubuntu", "24", proc_version=PROC_OPEN)
    assert plan["action"] == "skip"
    assert plan["reboot_expected"] is False
    assert plan["fabric_manager"] is False
    assert plan["open_kernel_modules"] is True
    assert plan["hold"] == ["nvidia-driver-580-open"]


def test_build_plan_hgx_pins_fabric_manager_to_loaded_driver():
    plan = build_plan(HGX_H100, "580", "Debian", "Ubuntu", "22")
    assert plan["fabric_manager"] is True
    assert plan["fabric_manager_spec"] == "nvidia-fabricmanager-580=580.159.04-*"
    assert "nvidia-fabricmanager-580" in plan["hold"]


def test_build_plan_fresh_hgx_uses_installed_version():
    fresh = dict(NO_DRIVER, gpu_count=0)
    plan = build_plan(fresh, "580", "RedHat", "Alibaba", "3", fabric_manager="true")
    assert plan["action"] == "install"
    assert plan["reboot_expected"] is True
    assert plan["fabric_manager_spec"] is None
    assert plan["cuda_repo_distro"] == "rhel8"
    after = build_plan(fresh, "580", "RedHat", "Alibaba", "3", fabric_manager="true", installed_version="580.95.05")
    assert after["fabric_manager_spec"] == "nvidia-fabric-manager-580.95.05"


def test_build_plan_secure_boot_stops_install():
    plan = build_plan(NO_DRIVER, "580", "Debian", "Ubuntu", "24", secure_boot_state="SecureBoot enabled")
    assert plan["action"] == "refuse"
    assert "Secure Boot" in plan["reason"]
    ready = build_plan(NO_DRIVER, "580", "Debian", "Ubuntu", "24", secure_boot_state="SecureBoot enabled",
                       secure_boot_signing_ready=True)
    assert ready["action"] == "install"
    # Secure Boot does not matter when nothing is installed.
    assert build_plan(H100, "580", "Debian", "Ubuntu", "24", secure_boot_state="SecureBoot enabled")["action"] == "skip"
