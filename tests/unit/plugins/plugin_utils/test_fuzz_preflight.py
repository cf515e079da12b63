# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests (hypothesis) of the group preflight, the first task of deploy.yml: any
deployments and any user model entries (strings for sizes, lists for engine_flags, NaN, dicts
where strings are expected, blank strings) give views, targets and a check result, never a
Python error. Reproducible: derandomize=True, no database."""
from __future__ import annotations

import copy

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _preflight
from ansible_collections.llmfleet.serving.plugins.plugin_utils._schema import MODEL_KEYS

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CATALOG = _catalog.load_catalog()
HOSTVARS = {"gpu-a": {"ansible_host": "10.0.0.11"}, "gpu-b": {"ansible_host": "10.0.0.12"}}
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
        d = dict(BASE) if draw(st.booleans()) else {}
        d.update(draw(st.dictionaries(st.sampled_from(["name", "hosts", "model", "engine", "engine_version", "image",
                                                       "model_path", "port", "ray_port", "network_interface"]),
                                      VALUES | st.sampled_from(["mine", {"key": "mine", "size_bytes": "x"}]),
                                      max_size=4)))
        deps.append(d)
    return deps, models


@FUZZ
@given(inputs())
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
    views = _preflight.views(copy.deepcopy(deps), GROUPS, HOSTVARS, catalog)
    _preflight.targets(views)
    result = _preflight.check(views, {})
    assert isinstance(result["ok"], bool)
