# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection (no API promise): decide what the NVIDIA driver step must do.

Pure logic over ``gpu_facts``-like facts, no I/O. Sources for the rules:

* open kernel modules: NVIDIA, "NVIDIA Transitions Fully Towards Open-Source GPU Kernel
  Modules" (R560): required on Grace Hopper and Blackwell, recommended for Turing, Ampere,
  Ada Lovelace and Hopper, not supported on Maxwell, Pascal and Volta.
* package names: NVIDIA Driver Installation Guide r580 (docs.nvidia.com/datacenter/tesla/
  driver-installation-guide/): Ubuntu keeps branch-named packages up to 580
  (``nvidia-driver-580-open``, ``cuda-drivers-580``, ``nvidia-fabricmanager-580``) and drops
  the branch from names from 590 on, where branch locking is done by the
  ``nvidia-driver-pinning-<branch>`` package, which Debian uses already; RHEL-like systems
  select the branch with the DNF module stream ``nvidia-driver:<branch>-open`` /
  ``<branch>-dkms`` and lock versions with ``dnf versionlock``.
* Alibaba Cloud Linux 3 is built from the EL8 sources (its packages carry ``.al8``: gcc
  10.2.1-3.8.al8, glibc 2.32-1.16.al8, kernel 5.10.134-16.1.al8; Alibaba Cloud,
  "Differences between Alibaba Cloud Linux 3 and CentOS 7"), so NVIDIA's ``rhel8``
  repository is the right one, never ``rhel9`` nor "rhel3". Its 5.10 kernel is not a RHEL
  kernel, so precompiled kmods do not match: DKMS streams only.
"""

from __future__ import annotations

import re

# Architectures (nvidia-smi <product_architecture>) by generation.
OPEN_REQUIRED = ("blackwell", "grace hopper", "rubin")
OPEN_RECOMMENDED = ("turing", "ampere", "ada lovelace", "hopper")
OPEN_UNSUPPORTED = ("maxwell", "pascal", "volta", "kepler")

# Product names of 8-GPU HGX baseboards whose GPUs talk through NVSwitch (SXM parts).
HGX_PRODUCT_RE = re.compile(r"\b(A100|A800|H100|H800|H200|H20|B100|B200|B300)\b", re.IGNORECASE)
# PCIe and NVL cards of the same names are bridged pairs, never NVSwitch.
NOT_HGX_RE = re.compile(r"PCIe|\bNVL\b", re.IGNORECASE)

# Product names give the architecture when nvidia-smi lacks <product_architecture>.
_ARCH_BY_PRODUCT = (
    (re.compile(r"\bGB\d{3}\b|\bB\d{3}\b|RTX PRO 6000|RTX 50\d0", re.I), "blackwell"),
    (re.compile(r"\bGH200\b", re.I), "grace hopper"),
    (re.compile(r"\bH\d{2,3}\b", re.I), "hopper"),
    (re.compile(r"\bL4\b|\bL40S?\b|RTX 40\d0|RTX 6000 Ada", re.I), "ada lovelace"),
    (re.compile(r"\bA\d{1,3}\b|RTX 30\d0", re.I), "ampere"),
    (re.compile(r"\bT4\b|RTX 20\d0", re.I), "turing"),
    (re.compile(r"\bV100\b", re.I), "volta"),
    (re.compile(r"\bP100\b|\bP4\b|\bP40\b", re.I), "pascal"),
)

APT_CUDA_DISTROS = {("ubuntu", "22"): "ubuntu2204", ("ubuntu", "24"): "ubuntu2404", ("debian", "12"): "debian12"}


class DriverPlanError(Exception):
    """The inputs do not allow a decision (unsupported OS, bad branch string)."""


def parse_version(text):
    """``"580.159.04"`` -> ``(580, 159, 4)``; None or junk -> None."""
    if text is None:
        return None
    match = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
    if not match:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def parse_wanted(branch):
    """The wanted driver: ``"580"`` (a branch) or ``"580.95.05"`` (an exact version)."""
    version = parse_version(branch)
    if version is None or not re.match(r"^\s*\d+(\.\d+){0,2}\s*$", str(branch)):
        raise DriverPlanError("driver branch %r is neither a branch like '580' nor a version like '580.95.05'" % (branch,))
    return version


def architecture_of(architecture=None, product_name=None):
    """Normalised architecture name from nvidia-smi's field or, failing that, the product name."""
    if architecture and str(architecture).strip().lower() not in ("n/a", "unknown", ""):
        return str(architecture).strip().lower()
    for pattern, arch in _ARCH_BY_PRODUCT:
        if product_name and pattern.search(str(product_name)):
            return arch
    return None


def open_kernel_modules(setting="auto", architecture=None, product_name=None):
    """Decide open (True) or proprietary (False) kernel modules.

    ``setting`` is ``auto``, ``true`` / ``false`` (bools accepted). With ``auto`` the open
    modules are used on Turing and newer and whenever the GPU is unknown (the default of
    every NVIDIA installer since R560); proprietary ones on Volta and older.
    Raises DriverPlanError when the operator forces a combination the hardware does not run.
    """
    arch = architecture_of(architecture, product_name)
    if isinstance(setting, bool):
        setting = "true" if setting else "false"
    setting = str(setting).lower()
    if setting not in ("auto", "true", "false"):
        raise DriverPlanError("open kernel modules setting must be auto, true or false, not %r" % setting)
    if setting == "true":
        if arch in OPEN_UNSUPPORTED:
            raise DriverPlanError("open kernel modules do not support %s GPUs (%s)" % (arch, product_name))
        return True
    if setting == "false":
        if arch in OPEN_REQUIRED:
            raise DriverPlanError("%s GPUs (%s) need the open kernel modules; the proprietary ones do not "
                                  "support them" % (arch, product_name))
        return False
    return arch not in OPEN_UNSUPPORTED


def fabric_manager_needed(setting="auto", facts=None, installed_locally=False):
    """Whether this host must run NVIDIA Fabric Manager (its GPUs are connected through NVSwitch).

    With ``auto``: ``facts['nvswitch']`` (from gpu_facts) or, when absent, an 8-GPU SXM board of
    a known HGX product (A100/A800/H100/H800/H200/H20/B100/B200/B300, not PCIe/NVL). NVSwitch
    seen from fewer than 8 GPUs is a pass-through VM slice, and an NVSwitch fabric already
    ``ready`` without a local Fabric Manager package is run by the hypervisor: neither needs
    Fabric Manager in this OS (the h100x1 fixture is such a VM: fabric state Completed, 1 GPU).
    """
    if isinstance(setting, bool):
        return setting
    setting = str(setting).lower()
    if setting in ("true", "yes"):
        return True
    if setting in ("false", "no"):
        return False
    facts = facts or {}
    product = facts.get("product_name") or ""
    count = int(facts.get("gpu_count") or 0)
    if facts.get("nvswitch") is not None:
        nvswitch = bool(facts.get("nvswitch"))
    else:
        nvswitch = count >= 8 and bool(HGX_PRODUCT_RE.search(product)) and not NOT_HGX_RE.search(product)
    if not nvswitch or count < 8:
        return False
    fabric = facts.get("fabric") or {}
    if fabric.get("ready") and not installed_locally:
        return False
    return True


def decide(facts, branch, allow_downgrade=False, allow_crossgrade=False, want_open=True, loaded_open=None):
    """Decide ``install`` | ``skip`` | ``refuse`` for the driver, with the reason.

    ``facts`` is ``gpu_facts``' result (``driver_loaded``, ``driver_version``);
    ``loaded_open`` tells whether the loaded module is the open one (from
    /proc/driver/nvidia/version), None when unknown. A cross-grade is a change of kernel
    module flavor (open <-> proprietary); a downgrade is a lower branch or version.
    Upgrades to the pinned branch are installs.
    """
    wanted = parse_wanted(branch)
    exact = len(wanted) > 1
    facts = facts or {}
    loaded = parse_version(facts.get("driver_version")) if facts.get("driver_loaded") else None
    if not loaded:
        return {"action": "install", "reason": "no NVIDIA driver is loaded; install branch %s" % branch,
                "transition": "fresh"}
    loaded_text = str(facts.get("driver_version")).strip()
    current = loaded[:len(wanted)]
    flavor_change = loaded_open is not None and bool(loaded_open) != bool(want_open)
    flavor_text = "%s -> %s kernel modules" % ("open" if loaded_open else "proprietary",
                                               "open" if want_open else "proprietary")
    if current == wanted:
        if flavor_change:
            if not allow_crossgrade:
                return {"action": "refuse", "transition": "crossgrade",
                        "reason": "driver %s is loaded with the %s kernel modules but %s are wanted; "
                                  "switching flavor rebuilds the modules and needs a reboot: set "
                                  "allow_crossgrade to do it" % (loaded_text, "open" if loaded_open else "proprietary",
                                                                 "open" if want_open else "proprietary")}
            return {"action": "install", "transition": "crossgrade",
                    "reason": "driver %s loaded, cross-grade %s allowed" % (loaded_text, flavor_text)}
        return {"action": "skip", "transition": "none",
                "reason": "driver %s is loaded and matches the pinned %s %s" % (
                    loaded_text, "version" if exact else "branch", branch)}
    if current > wanted:
        if not allow_downgrade:
            return {"action": "refuse", "transition": "downgrade",
                    "reason": "driver %s is loaded, newer than the pinned %s; a downgrade can break "
                              "containers built for the newer CUDA version: set allow_downgrade to do it, "
                              "or pin %s" % (loaded_text, branch, loaded_text.split(".", maxsplit=1)[0])}
        return {"action": "install", "transition": "downgrade",
                "reason": "driver %s loaded, downgrade to %s allowed" % (loaded_text, branch)}
    if flavor_change and not allow_crossgrade:
        return {"action": "refuse", "transition": "crossgrade",
                "reason": "upgrading driver %s to %s would also switch %s: set allow_crossgrade" % (
                    loaded_text, branch, flavor_text)}
    return {"action": "install", "transition": "upgrade",
            "reason": "driver %s is loaded, older than the pinned %s: upgrade" % (loaded_text, branch)}


def cuda_repo_distro(distribution, os_family, major):
    """NVIDIA CUDA repository directory name (``ubuntu2404``, ``debian12``, ``rhel9``, ``rhel8``)."""
    dist = str(distribution or "").lower()
    family = str(os_family or "").lower()
    major = str(major or "").split(".", maxsplit=1)[0]
    if (dist, major) in APT_CUDA_DISTROS:
        return APT_CUDA_DISTROS[(dist, major)]
    if dist == "alibaba":
        if major == "3":
            return "rhel8"
        raise DriverPlanError("Alibaba Cloud Linux %s is not supported (only 3, which maps to rhel8)" % major)
    if family == "redhat" and major in ("8", "9", "10"):
        return "rhel%s" % major
    raise DriverPlanError("no NVIDIA CUDA repository known for %s %s (%s)" % (distribution, major, os_family))


def driver_packages(os_family, distribution, major, branch, use_open, precompiled=False):
    """What to install for the driver: dict with ``packages`` and (RedHat) ``module_stream``."""
    wanted = parse_wanted(branch)
    b = str(wanted[0])
    family = str(os_family or "").lower()
    dist = str(distribution or "").lower()
    repo = cuda_repo_distro(distribution, os_family, major)
    if family == "debian":
        if dist == "ubuntu" and wanted[0] < 590:
            pkgs = ["nvidia-driver-%s-open" % b] if use_open else ["cuda-drivers-%s" % b]
            return {"packages": pkgs, "pinning_package": None, "module_stream": None, "repo": repo}
        # Debian 12, and Ubuntu from branch 590 on: unversioned names + pinning package.
        pkgs = ["nvidia-open"] if use_open else ["cuda-drivers"]
        return {"packages": pkgs, "pinning_package": "nvidia-driver-pinning-%s" % b,
                "module_stream": None, "repo": repo}
    if family == "redhat":
        if use_open:
            stream = "%s-open" % b
        elif precompiled and dist != "alibaba":
            stream = b
        else:
            stream = "%s-dkms" % b
        return {"packages": ["@nvidia-driver:%s" % stream], "pinning_package": None,
                "module_stream": "nvidia-driver:%s" % stream, "repo": repo}
    raise DriverPlanError("unsupported OS family %s" % os_family)


def fabric_manager_package(os_family, distribution, branch, driver_version):
    """The Fabric Manager package pinned to the exact driver version (never a branch glob).

    ``driver_version`` is the installed driver (``580.95.05``); when it is not known yet
    (check mode before the install) the returned ``spec`` is None and ``name`` tells the
    package that will be pinned once the driver is there.
    """
    b = str(parse_wanted(branch)[0])
    family = str(os_family or "").lower()
    dist = str(distribution or "").lower()
    version = None
    if driver_version:
        parsed = parse_version(driver_version)
        if parsed is None or str(parsed[0]) != b:
            raise DriverPlanError("driver version %s is not of branch %s: fabric manager would not match"
                                  % (driver_version, b))
        version = str(driver_version).strip()
    if family == "debian":
        name = "nvidia-fabricmanager-%s" % b if (dist == "ubuntu" and int(b) < 590) else "nvidia-fabricmanager"
        spec = "%s=%s-*" % (name, version) if version else None
        return {"name": name, "spec": spec, "hold": [name]}
    if family == "redhat":
        name = "nvidia-fabric-manager"
        spec = "%s-%s" % (name, version) if version else None
        return {"name": name, "spec": spec, "hold": [name]}
    raise DriverPlanError("unsupported OS family %s" % os_family)


def hold_patterns(os_family, branch, packages):
    """Names to hold (apt-mark hold) or patterns to version-lock (dnf versionlock)."""
    family = str(os_family or "").lower()
    b = str(parse_wanted(branch)[0])
    if family == "debian":
        return [p for p in packages if not p.startswith("@")]
    return ["*nvidia*%s*" % b]


def secure_boot_enabled(mokutil_output):
    """Parse ``mokutil --sb-state``: True / False, None when it could not tell."""
    text = (mokutil_output or "").lower()
    if "secureboot enabled" in text:
        return True
    if "secureboot disabled" in text or "efi variables are not supported" in text or "not supported" in text:
        return False
    return None


def loaded_module_is_open(proc_version_text):
    """/proc/driver/nvidia/version says "Open Kernel Module" for the open flavor."""
    if not proc_version_text:
        return None
    return "open kernel module" in proc_version_text.lower()


def build_plan(facts, branch, os_family, distribution, major, open_setting="auto", fabric_manager="auto",
               allow_downgrade=False, allow_crossgrade=False, installed_version=None, proc_version=None,
               secure_boot_state=None, secure_boot_signing_ready=False, fabric_manager_installed=False):
    """Everything the gpu_host role needs, as one dict (see the nvidia_driver_plan module)."""
    facts = facts or {}
    use_open = open_kernel_modules(open_setting, facts.get("architecture"), facts.get("product_name"))
    decision = decide(facts, branch, allow_downgrade, allow_crossgrade, use_open, loaded_module_is_open(proc_version))
    drv = driver_packages(os_family, distribution, major, branch, use_open)
    fm_needed = fabric_manager_needed(fabric_manager, facts, fabric_manager_installed)
    version = installed_version or (facts.get("driver_version") if decision["action"] == "skip" else None)
    fm = fabric_manager_package(os_family, distribution, branch, version) if fm_needed else None
    sb = secure_boot_enabled(secure_boot_state)
    if decision["action"] == "install" and sb and not secure_boot_signing_ready:
        decision = {"action": "refuse", "transition": decision["transition"],
                    "reason": "Secure Boot is enabled and the driver would be built by DKMS as an unsigned "
                              "module that the kernel refuses to load; enrol a Machine Owner Key (MOK) used by "
                              "DKMS to sign modules, then set gpu_host_secure_boot_signing_ready: true, or "
                              "disable Secure Boot"}
    hold = hold_patterns(os_family, branch, drv["packages"] + ([drv["pinning_package"]] if drv["pinning_package"] else []))
    if fm:
        hold = hold + (fm["hold"] if str(os_family).lower() == "debian" else [])
    return {
        "action": decision["action"],
        "reason": decision["reason"],
        "transition": decision["transition"],
        "open_kernel_modules": use_open,
        "architecture": architecture_of(facts.get("architecture"), facts.get("product_name")),
        "cuda_repo_distro": drv["repo"],
        "driver_packages": drv["packages"],
        "pinning_package": drv["pinning_package"],
        "module_stream": drv["module_stream"],
        "fabric_manager": fm_needed,
        "fabric_manager_package": fm["name"] if fm else None,
        "fabric_manager_spec": fm["spec"] if fm else None,
        "hold": hold,
        "secure_boot": sb,
        # A new or changed kernel module is only in use after a reboot (nouveau or the old
        # module may hold the GPUs); the role reboots only when the install really changed.
        "reboot_expected": decision["action"] == "install",
    }
