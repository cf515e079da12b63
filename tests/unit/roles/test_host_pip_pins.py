"""Python packages the roles install on hosts have exact versions (docs/reliability.md, supply
chain): every package named in a role's pip task is ``name==version``, and everything they pull
in is pinned by the constraints file the task hands to pip (``-c``), so a host never gets
whatever PyPI published since the collection was tested."""
from __future__ import annotations

import glob
import importlib.metadata as md
import os
import re

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
EXACT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)$")
# Hosts the defaults support (docs/model-weights.md): markers are evaluated for each.
HOST_ENVS = [{"python_version": v, "python_full_version": v + ".0", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": m, "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
             for v in ("3.11", "3.12", "3.13") for m in ("x86_64", "aarch64")]


def _yaml(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return yaml.safe_load(f)


def walk(tasks):
    for t in tasks or []:
        if isinstance(t, dict):
            yield t
            for k in ("block", "rescue", "always"):
                yield from walk(t.get(k))


DEFAULTS = _yaml("roles", "model_weights", "defaults", "main.yml")
SPECS = _yaml("roles", "model_weights", "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]


def pins(entries):
    out = {}
    for e in entries:
        m = EXACT.match(e.strip())
        assert m, "%r is not an exact pin (name==version)" % e
        name = canonicalize_name(m.group(1))
        assert name not in out, "%s pinned twice" % name
        out[name] = m.group(2)
    return out


def test_every_pip_task_of_every_role_is_the_pinned_model_weights_one():
    found = []
    for path in glob.glob(os.path.join(REPO, "roles", "*", "tasks", "*.yml")):
        for t in walk(_yaml(path)):
            args = t.get("ansible.builtin.pip") or t.get("pip")
            if args is not None:
                found.append((os.path.relpath(path, REPO), args))
            for key in ("ansible.builtin.command", "ansible.builtin.shell", "command", "shell"):
                cmd = t.get(key)
                cmd = cmd.get("cmd", "") if isinstance(cmd, dict) else (cmd or "")
                assert not re.search(r"\bpip3?\b.*\binstall\b", str(cmd)), (path, t.get("name"))
    assert [p for p, _a in found] == ["roles/model_weights/tasks/main.yml"], found
    args = found[0][1]
    assert args["name"] == "{{ _model_weights_packages }}"
    # the constraints file is always passed, and written from model_weights_pip_constraints
    assert "-c {{ (model_weights_venv ~ '.constraints.txt') | quote }}" in args["extra_args"]
    writes = [t for t in walk(_yaml("roles", "model_weights", "tasks", "main.yml"))
              if (t.get("ansible.builtin.copy") or {}).get("dest") == "{{ model_weights_venv }}.constraints.txt"]
    assert len(writes) == 1 and "model_weights_pip_constraints" in writes[0]["ansible.builtin.copy"]["content"]


def test_packages_and_constraints_are_exact_and_agree_with_the_argument_specs():
    for source, entries in DEFAULTS["model_weights_pip_packages"].items():
        pins(entries)
    constraints = pins(DEFAULTS["model_weights_pip_constraints"])
    assert constraints
    assert SPECS["model_weights_pip_packages"]["default"] == DEFAULTS["model_weights_pip_packages"]
    assert SPECS["model_weights_pip_constraints"]["default"] == DEFAULTS["model_weights_pip_constraints"]
    # a top-level package is never constrained to another version
    for entries in DEFAULTS["model_weights_pip_packages"].values():
        for name, version in pins(entries).items():
            assert constraints.get(name, version) == version, name


@pytest.mark.parametrize("source", sorted(s for s, e in DEFAULTS["model_weights_pip_packages"].items() if e))
def test_every_dependency_is_pinned(source):
    """The dependency closure, read from the packages' own metadata in this test venv (the same
    versions: requirements-test.txt), with markers evaluated for every supported host Python:
    every package pip could install is pinned."""
    top = pins(DEFAULTS["model_weights_pip_packages"][source])
    allowed = dict(pins(DEFAULTS["model_weights_pip_constraints"]), **top)
    for name, version in top.items():
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            pytest.skip("%s is not installed in the test venv" % name)
        if have != version:
            pytest.skip("the test venv has %s %s, the role pins %s" % (name, have, version))
    todo, seen, unpinned = list(top), set(), []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        if name not in allowed:
            unpinned.append(name)
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # pinned, needed on another Python only: its own deps are not known here
        assert dist.version == allowed[name], "test venv %s %s, pinned %s" % (name, dist.version, allowed[name])
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or any(req.marker.evaluate(e) for e in HOST_ENVS):
                todo.append(req.name)
    assert unpinned == [], "%s pulls in packages without a pinned version: %s" % (source, sorted(unpinned))
