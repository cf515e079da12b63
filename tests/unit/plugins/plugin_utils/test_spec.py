# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deployment / model-entry schema (_spec): rendered into serving_plan's DOCUMENTATION, in
step with the planner's own type tables, and accepted by Ansible's ArgumentSpecValidator for
every example inventory and catalog entry."""
from __future__ import annotations

import glob
import importlib.util
import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan, _schema, _spec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def _module_doc():
    spec = importlib.util.spec_from_file_location("serving_plan_module",
                                                  os.path.join(REPO, "plugins", "modules", "serving_plan.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return yaml.safe_load(mod.DOCUMENTATION)


def test_documentation_is_the_schema():
    """Fails when serving_plan's DOCUMENTATION and the schema differ: run tools/render_plan_docs.py."""
    doc = _module_doc()["options"]
    assert doc["deployments"]["suboptions"] == _spec.doc_options(_spec.deployment_spec())
    assert doc["models"]["suboptions"] == _spec.doc_options(_spec.model_spec())


def test_schema_follows_the_planner_tables():
    assert set(_spec.deployment_spec()) == set(_plan.DEPLOYMENT_KEYS)
    assert set(_spec.model_spec()) == set(_schema.MODEL_KEYS)
    for key, opt in _spec.deployment_spec().items():
        default = _plan.DEPLOYMENT_KEYS[key][1]
        assert opt.get("default", default if default in (None, [], {}) else "?") == default, key


def _inventory_deployments():
    for path in sorted(glob.glob(os.path.join(REPO, "inventories", "*", "group_vars", "**", "*.yml"), recursive=True)):
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        for dep in data.get("llmfleet_deployments") or []:
            yield path, dep


def test_ansible_validator_accepts_every_example_deployment_and_catalog_entry():
    deps = list(_inventory_deployments())
    assert len(deps) >= 4
    dv = _spec.validator("deployment")
    for path, dep in deps:
        result = dv.validate({k: v for k, v in dep.items() if not (isinstance(v, str) and "{{" in v)})
        assert not [m for m in result.error_messages if "required" not in m], (path, result.error_messages)
    mv = _spec.validator("model")
    for key, entry in _catalog.load_catalog().items():
        assert mv.validate(entry).error_messages == [], key
        assert _schema.model_entry_errors(entry, key) == [], key


def test_ansible_validator_and_planner_refuse_the_same_unknown_key():
    dv = _spec.validator("deployment")
    assert "tensor_paralel" in dv.validate({"name": "x", "hosts": "h", "model": "m",
                                            "tensor_paralel": 8}).unsupported_parameters
    try:
        _plan.build_plan([{"name": "x", "hosts": "h", "model": "m", "tensor_paralel": 8}], {"h": {}}, {}, {})
    except _plan.PlanErrors as e:
        assert "did you mean 'tensor_parallel'" in str(e)
    else:
        raise AssertionError("planned")


def test_cross_key_rules_in_the_validator_and_the_planner():
    mv = _spec.validator("model")
    assert any("revision" in m for m in mv.validate({"trust_remote_code": True}).error_messages)
    assert mv.validate({"trust_remote_code": True, "revision": "a" * 40}).error_messages == []
    assert _schema.model_entry_errors({"trust_remote_code": True}, "m")[0][0] == "m.revision"
    dv = _spec.validator("deployment")
    both = {"name": "x", "hosts": "h", "model": "m", "api_key": "k", "api_key_file": "/k"}
    assert any("mutually exclusive" in m for m in dv.validate(both).error_messages)


FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
ANY = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=6) | st.lists(
    st.text(max_size=4), max_size=2) | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(_schema.MODEL_KEYS)) | st.text(max_size=8), ANY, max_size=5))
def test_fuzz_model_entries_unknown_keys_agree_with_ansible(entry):
    """Any model entry: the planner's refusals never raise, and it refuses exactly the keys
    Ansible's validator calls unsupported."""
    errors = _schema.model_entry_errors(entry, "m")
    unknown = {var[2:] for var, msg in errors if "unknown model key" in msg}
    assert unknown == {str(k) for k in _spec.validator("model").validate(dict(entry)).unsupported_parameters}
