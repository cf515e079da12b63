"""Python packages the roles install on hosts have exact versions (docs/reliability.md, supply
chain): every package named in a role's pip task is ``name==version``, and everything they pull
in is pinned by the constraints file the task hands to pip (``-c``), so a host never gets
whatever PyPI published since the collection was tested. One set per range of host Python
(model_weights_pip_sets); each is checked for the Pythons it serves. The metadata of the set for
Python 3.9/3.10 is recorded in data/host_pip_metadata.json (from ``pip install --dry-run --report
--python-version 3.9 --only-binary=:all: <packages>``; name==version -> requires_python,
requires_dist); the current set's comes from this test venv (requirements-test.txt)."""
from __future__ import annotations

import glob
import importlib.metadata as md
import os
import re

import json

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from ansible_collections.llmfleet.serving.plugins.filter.pip_set import pip_set

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
EXACT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)$")
# Hosts the defaults support (docs/model-weights.md): markers are evaluated for each.
SUPPORTED = ("3.9", "3.10", "3.11", "3.12", "3.13")


def host_envs(versions):
    return [{"python_version": v, "python_full_version": v + ".0", "sys_platform": "linux",
             "platform_system": "Linux", "platform_machine": m, "implementation_name": "cpython",
             "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
            for v in versions for m in ("x86_64", "aarch64")]


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
SETS = DEFAULTS["model_weights_pip_sets"]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "host_pip_metadata.json")) as _f:
    RECORDED = json.load(_f)


def _v(text):
    return tuple(int(x) for x in str(text).split(".")[:2])


def served(index):
    """The supported Pythons the set at ``index`` is chosen for (the filter itself decides)."""
    return [v for v in SUPPORTED if pip_set(SETS, "s3", v + ".4")["python"] == str(SETS[index]["python"])]


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
    assert len(writes) == 1 and "_model_weights_pip.constraints" in writes[0]["ansible.builtin.copy"]["content"]
    chooser = [t for t in walk(_yaml("roles", "model_weights", "tasks", "main.yml"))
               if "_model_weights_pip" in (t.get("ansible.builtin.set_fact") or {})]
    assert len(chooser) == 1 and "llmfleet.serving.pip_set" in chooser[0]["ansible.builtin.set_fact"]["_model_weights_pip"]


def test_packages_and_constraints_are_exact_and_agree_with_the_argument_specs():
    assert SPECS["model_weights_pip_sets"]["default"] == SETS
    assert "model_weights_pip_packages" not in DEFAULTS and "model_weights_pip_constraints" not in DEFAULTS
    assert "default" not in SPECS["model_weights_pip_packages"] and "default" not in SPECS["model_weights_pip_constraints"]
    assert len({_v(s["python"]) for s in SETS}) == len(SETS), "two sets for the same Python"
    for pinned in SETS:
        assert sorted(pinned["packages"]) == ["huggingface", "local", "modelscope", "s3"]
        constraints = pins(pinned["constraints"])
        assert constraints
        # a top-level package is never constrained to another version
        for entries in pinned["packages"].values():
            for name, version in pins(entries).items():
                assert constraints.get(name, version) == version, name


def test_every_supported_python_gets_a_set_and_the_oldest_minimum_is_the_documented_one():
    assert sorted(v for i in range(len(SETS)) for v in served(i)) == sorted(SUPPORTED)
    assert served(0) == ["3.11", "3.12", "3.13"] and served(1) == ["3.9", "3.10"]
    assert min(_v(s["python"]) for s in SETS) == (3, 9)


@pytest.mark.parametrize("version, python", [("3.13.1", "3.11"), ("3.11.0", "3.11"), ("3.10.12", "3.9"),
                                             ("3.9", "3.9"), ("3.12.3", "3.11")])
def test_the_filter_chooses_by_the_host_python(version, python):
    got = pip_set(SETS, "huggingface", version, ["hf_transfer==0.1.9"])
    chosen = [s for s in SETS if s["python"] == python][0]
    assert got == {"python": python, "packages": chosen["packages"]["huggingface"] + ["hf_transfer==0.1.9"],
                   "constraints": chosen["constraints"]}


@pytest.mark.parametrize("version", ["3.8.10", "3.6.9", "2.7.18"])
def test_a_python_older_than_every_set_fails_naming_the_variable_and_the_fix(version):
    with pytest.raises(AnsibleFilterError) as e:
        pip_set(SETS, "s3", version)
    msg = str(e.value)
    assert "model_weights_python is Python %s" % version in msg
    assert "needs Python >= 3.9" in msg and "set model_weights_python to a newer Python" in msg
    assert "model_weights_pip_sets" in msg


def test_bad_input_fails_with_the_variable_named():
    for sets, version, needle in [([], "3.11", "model_weights_pip_sets must be a non-empty list"),
                                  ([{"python": "3.9", "packages": {}}], "3.11", "model_weights_pip_sets[0] must have"),
                                  ([{"python": "three", "packages": {}, "constraints": []}], "3.11",
                                   "model_weights_pip_sets[0].python"),
                                  (SETS, "banana", "is not a Python version")]:
        with pytest.raises(AnsibleFilterError, match=__import__("re").escape(needle)):
            pip_set(sets, "s3", version)
    with pytest.raises(AnsibleFilterError, match="set both together"):
        pip_set(SETS, "s3", "3.11", packages={"s3": ["boto3==1"]})
    one = [{"python": "3.11", "packages": {"s3": ["boto3==1"]}, "constraints": ["botocore==1"]}]
    secret = "hf_abcdefghijklmnopqrstuvwxyzABCD"
    for bad in ("", "   ", float("nan"), [1], {"a": 1}, secret, "--index-url=http://x", "boto3>=1"):
        for call, needle in [
                (lambda: pip_set([dict(one[0], packages={"s3": [bad]})], "s3", "3.11"),
                 "model_weights_pip_sets[0].packages.s3[0]"),
                (lambda: pip_set([dict(one[0], constraints=[bad])], "s3", "3.11"),
                 "model_weights_pip_sets[0].constraints[0]"),
                (lambda: pip_set(one, "s3", "3.11", [bad]), "model_weights_pip_extra_packages[0]"),
                (lambda: pip_set(one, "s3", "3.11", [], {"s3": [bad]}, []), "model_weights_pip_packages.s3[0]"),
                (lambda: pip_set(one, "s3", "3.11", [], {"s3": []}, [bad]), "model_weights_pip_constraints[0]")]:
            with pytest.raises(AnsibleFilterError) as e:
                call()
            assert needle in str(e.value) and "name==version" in str(e.value)
            assert secret not in str(e.value)


def test_an_own_set_replaces_the_sets_whatever_the_python():
    got = pip_set(SETS, "s3", "3.6.0", [], {"s3": ["boto3==1.0.0"]}, ["botocore==1.0.0"])
    assert got == {"python": None, "packages": ["boto3==1.0.0"], "constraints": ["botocore==1.0.0"]}
    # local needs nothing: no probe, the newest set, no packages
    assert pip_set(SETS, "local", "")["packages"] == []


def _metadata(name, version):
    """(requires_python, requires_dist) of name==version: recorded, else this test venv's."""
    rec = RECORDED.get("%s==%s" % (name, version))
    if rec is not None:
        return rec["requires_python"], rec["requires_dist"]
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    return dist.metadata.get("Requires-Python") or "", dist.requires or []


@pytest.mark.parametrize("index, source", [(i, s) for i, pinned in enumerate(SETS)
                                           for s in sorted(pinned["packages"]) if pinned["packages"][s]])
def test_every_dependency_is_pinned(index, source):
    """The dependency closure, from the packages' own metadata, with markers evaluated for every
    Python the set is chosen for: every package pip could install is pinned, at a version that
    meets its dependants' specifiers and whose Requires-Python admits those Pythons."""
    pinned = SETS[index]
    versions = served(index)
    envs = host_envs(versions)
    top = pins(pinned["packages"][source])
    allowed = dict(pins(pinned["constraints"]), **top)
    for name, version in top.items():
        if _metadata(name, version) is None:
            pytest.skip("no metadata for %s %s (not recorded, not in the test venv)" % (name, version))
    todo, seen, unpinned, problems = [Requirement(n) for n in top], set(), [], []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in allowed and not req.specifier.contains(Version(allowed[name]), prereleases=True):
            problems.append("%s %s does not meet %s" % (name, allowed[name], req))
        if name in seen:
            continue
        seen.add(name)
        if name not in allowed:
            unpinned.append(name)
            continue
        meta = _metadata(name, allowed[name])
        assert meta is not None, "%s==%s: no metadata (record it in data/host_pip_metadata.json)" % (name, allowed[name])
        requires_python, requires = meta
        for v in versions:
            if requires_python and not SpecifierSet(requires_python).contains(v + ".0", prereleases=True):
                problems.append("%s %s needs Python %s, the set serves %s" % (name, allowed[name], requires_python, v))
        for r in requires:
            req = Requirement(r)
            if req.marker is None or any(req.marker.evaluate(e) for e in envs):
                todo.append(req)
    assert unpinned == [], "%s pulls in packages without a pinned version: %s" % (source, sorted(unpinned))
    assert problems == [], problems
