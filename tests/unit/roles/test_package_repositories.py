"""Every package repository a role adds is trusted through a signing key whose fingerprint is
pinned (docs/reliability.md, supply chain): read from the roles' task files, so a repository
added without a pinned key, a yum repository with ``gpgkey: https://...`` (rpm imports whatever
key that URL serves) or ``gpgcheck`` off, an apt repository without ``signed-by`` a checked key,
or a fingerprint list left empty fails here, before any host sees it."""
from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = os.path.join(REPO, "roles")
FPR = re.compile(r"^[0-9A-F]{40}$")

# The vendors' published fingerprints (docs/roles/*.md name the sources).
PUBLISHED = {
    "gpu_host_cuda_gpg_key_fingerprints": ["EB693B3035CD5710E231E123A4B469963BF863CC"],       # 3bf863cc.pub
    "gpu_host_cuda_rpm_gpg_key_fingerprints": ["610C7B14E068A878070DA4E99CD0A493D42D0685"],   # D42D0685.pub
    "container_runtime_docker_gpg_key_fingerprints": ["9DC858229FC7DD38854AE2D88D81803C0EBFCD88"],
    "container_runtime_docker_rpm_gpg_key_fingerprints": ["060A61C51B558A7F742B77AAC52FEB6B621E9F35"],
    "container_runtime_nvidia_toolkit_gpg_key_fingerprints": ["C95B321B61E88C1809C4F759DDCAE044F796ECB0"],
}


def walk(tasks):
    for t in tasks or []:
        if not isinstance(t, dict):
            continue
        yield t
        for k in ("block", "rescue", "always"):
            yield from walk(t.get(k))


def module_args(task, *names):
    for n in names:
        for key in (n, "ansible.builtin." + n, "community.general." + n):
            if key in task:
                return task[key]
    return None


def task_files():
    out = {}
    for path in sorted(glob.glob(os.path.join(ROLES, "*", "tasks", "*.yml"))):
        with open(path) as f:
            out[os.path.relpath(path, REPO)] = list(walk(yaml.safe_load(f)))
    return out


def role_defaults():
    out = {}
    for path in glob.glob(os.path.join(ROLES, "*", "defaults", "main.yml")):
        with open(path) as f:
            out.update(yaml.safe_load(f) or {})
    return out


def checked_keys(tasks):
    """{dest: fingerprints variable} of every llmfleet.serving.signing_key task."""
    out = {}
    for t in tasks:
        args = t.get("llmfleet.serving.signing_key")
        if args:
            m = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(args.get("fingerprints", "")).strip())
            assert m, "signing_key %s: fingerprints must be one role variable, got %r" % (
                args.get("dest"), args.get("fingerprints"))
            out[args["dest"]] = m.group(1)
    return out


FILES = task_files()
DEFAULTS = role_defaults()


def repositories():
    found = []
    for path, tasks in FILES.items():
        for t in tasks:
            yum = module_args(t, "yum_repository")
            apt = module_args(t, "apt_repository")
            if yum and yum.get("state", "present") == "present":
                found.append((path, "yum", t.get("name"), yum))
            if apt and apt.get("state", "present") == "present":
                found.append((path, "apt", t.get("name"), apt))
    return found


def test_the_roles_add_the_repositories_this_test_knows():
    names = sorted((p, kind) for p, kind, _n, _a in repositories())
    assert ("roles/gpu_host/tasks/driver.yml", "yum") in names
    assert ("roles/gpu_host/tasks/driver.yml", "apt") in names
    assert ("roles/container_runtime/tasks/engine.yml", "yum") in names
    assert ("roles/container_runtime/tasks/engine.yml", "apt") in names
    assert ("roles/container_runtime/tasks/nvidia_toolkit.yml", "yum") in names


@pytest.mark.parametrize("path,kind,name,args", repositories(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_repository_trusts_only_a_key_with_a_pinned_fingerprint(path, kind, name, args):
    keys = checked_keys(FILES[path])
    if kind == "yum":
        assert args.get("gpgcheck") is True, "%s: %s has gpgcheck %r" % (path, name, args.get("gpgcheck"))
        gpgkey = str(args.get("gpgkey", ""))
        assert gpgkey.startswith("file://"), \
            "%s: %s: gpgkey %r is fetched and imported unchecked; install it with signing_key and use file://" % (
                path, name, gpgkey)
        dest = gpgkey[len("file://"):]
    else:
        m = re.search(r"signed-by=([^\s\]]+)", str(args.get("repo", "")))
        assert m, "%s: %s: an apt repository without signed-by= trusts every key apt has" % (path, name)
        dest = m.group(1)
    assert dest in keys, "%s: %s trusts %s, which no signing_key task (pinned fingerprint) installs" % (
        path, name, dest)
    var = keys[dest]
    fprs = DEFAULTS.get(var)
    assert isinstance(fprs, list) and fprs, "%s: %s has no default fingerprint" % (path, var)
    assert all(FPR.match(f.replace(" ", "").upper()) for f in fprs), (var, fprs)


def test_no_unchecked_key_import():
    for path, tasks in FILES.items():
        for t in tasks:
            assert module_args(t, "rpm_key", "apt_key") is None, \
                "%s: %s imports a key without a fingerprint check (use llmfleet.serving.signing_key)" % (
                    path, t.get("name"))


@pytest.mark.parametrize("var", sorted(PUBLISHED))
def test_default_fingerprints_are_the_vendors_published_ones(var):
    assert DEFAULTS[var] == PUBLISHED[var]
