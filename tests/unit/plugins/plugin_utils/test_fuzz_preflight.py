# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests (hypothesis) of the group preflight, the step of deploy.yml after the plan: any
deployments and any user model entries (strings for sizes, lists for engine_flags, NaN, dicts
where strings are expected, blank strings) are either refused by the planner (its PlanErrors name
them) or give a plan from which preflight makes views, targets and a check result, never a
Python error. Reproducible: derandomize=True, no database."""
from __future__ import annotations

import copy

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan, _preflight
from ansible_collections.llmfleet.serving.plugins.plugin_utils._schema import MODEL_KEYS

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CATALOG = _catalog.load_catalog()
HOSTVARS = {"gpu-a": {"ansible_host": "10.0.0.11"}, "gpu-b": {"ansible_host": "10.0.0.12"}}
# a plan without GPU facts needs these two (test_plan.py::test_no_facts_with_explicit_values_plans_without_memory_check)
BASE_PLANNABLE = {"gpus_per_host": 8, "network_interface": "eth0", "api_key_file": "/k"}
GROUPS = {"dual": ["gpu-a", "gpu-b"], "one": ["gpu-a"]}
SCALARS = (st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats(allow_nan=True)
           | st.text(max_size=8) | st.sampled_from(["", "  ", "auto", "vllm", "sglang", "dual", "gpu-a", "qwq-32b",
                                                    "7B", "65000000000", "nan"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
BASE = {"name": "fz", "hosts": "dual", "model": "qwq-32b", "max_model_len": 32768}


@st.composite
def inputs(draw):
    models = {}
    for key in draw(st.lists(st.sampled_from(["qwq-32b", "mine", "deepseek-r1"]), max_size=2, unique=True)):
        models[key] = draw(st.dictionaries(st.sampled_from(sorted(MODEL_KEYS)) | st.text(max_size=5), VALUES,
                                           max_size=4))
    deps = []
    for dummy in range(draw(st.integers(0, 3))):
        d = dict(BASE, **BASE_PLANNABLE) if draw(st.booleans()) else {}
        d.update(draw(st.dictionaries(st.sampled_from(["name", "hosts", "model", "engine", "engine_version", "image",
                                                       "model_path", "port", "ray_port", "network_interface"]),
                                      VALUES | st.sampled_from(["mine", {"key": "mine", "size_bytes": "x"}]),
                                      max_size=4)))
        deps.append(d)
    return deps, models


@FUZZ
@given(inputs())
@example(([dict(BASE, **BASE_PLANNABLE)], {}))
@example(([dict(BASE, name="a", **BASE_PLANNABLE), dict(BASE, name="b", hosts="one", port=8001, **BASE_PLANNABLE)], {}))
@example(([dict(BASE, model="mine")], {"mine": {"size_bytes": "65 GB", "parameters": "7B"}}))
@example(([dict(BASE, model="mine")], {"mine": {"engine_flags": ["--x"], "num_hidden_layers": -3}}))
@example(([dict(BASE, port=float("inf"), image=["x"], model_path={"a": 1})], {}))
@example(([dict(BASE, model={"path": [], "key": ["x"]})], {}))
def test_preflight_never_raises(data):
    deps, models = data
    try:
        catalog = _catalog.merge_catalog(CATALOG, models)
    except _catalog.CatalogError:
        return  # the action plugin reports a broken llmfleet_models entry by name
    try:
        plan = _plan.build_plan(copy.deepcopy(deps), HOSTVARS, GROUPS, catalog)
    except _plan.PlanErrors:
        return  # the planner refuses it, naming the variable; preflight never sees it
    views = _preflight.views(plan)
    assert [v["name"] for v in views] == list(plan["deployments"])
    _preflight.targets(views)
    result = _preflight.check(views, {})
    assert isinstance(result["ok"], bool)


# Plausible deployments (most of them plannable): preflight of every plan the planner makes.
PLAUSIBLE = {"engine": st.sampled_from(["vllm", "sglang"]), "hosts": st.sampled_from(["dual", "one", ["gpu-b", "gpu-a"]]),
             "model": st.sampled_from(["qwq-32b", "deepseek-r1-distill-qwen-7b", "mine"]),
             "image": st.sampled_from(["x/engine:1", "registry.example:5000/e@sha256:" + "a" * 64]),
             "model_path": st.sampled_from(["/srv/m", "/data/models/q"]), "port": st.integers(1024, 65535),
             "ray_port": st.integers(1024, 65535), "dist_init_port": st.integers(1024, 65535),
             "exposure": st.sampled_from(["localhost", "private"])}


@st.composite
def plausible(draw):
    deps = []
    for i in range(draw(st.integers(1, 3))):
        d = dict(BASE, name="d%d" % i, **BASE_PLANNABLE)
        for key in draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=5, unique=True)):
            d[key] = draw(PLAUSIBLE[key])
        deps.append(d)
    return deps


@FUZZ
@given(plausible())
def test_preflight_of_any_plan(deps):
    catalog = _catalog.merge_catalog(CATALOG, {"mine": {"hf_id": "me/mine", "size_bytes": 10 ** 9,
                                                        "max_position_embeddings": 32768}})
    try:
        plan = _plan.build_plan(deps, HOSTVARS, GROUPS, catalog)
    except _plan.PlanErrors:
        return
    views = _preflight.views(plan)
    targets = _preflight.targets(views)
    for v in views:
        p = plan["deployments"][v["name"]]
        assert v["hosts"][0] == p["head"] and set(v["hosts"]) == set(p["hosts"])
        for h in v["hosts"]:
            assert p["image"] in targets["hosts"][h]["images"] and p["model_path"] in targets["hosts"][h]["paths"]
            assert [c["port"] for c in p["hosts"][h]["port_claims"]] == [port for port, _k in v["ports"][h]]
    assert isinstance(_preflight.check(views, {})["ok"], bool)
