# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests (hypothesis) of the planner: generated deployments with random types and
values never raise anything but PlanErrors (every message naming the variable to fix), and
generated valid deployments give plans with TP x PP = GPUs, one owner per port and host, and a
config hash that depends on the deployment, not on the order of its keys.

Reproducible in CI: derandomize=True (examples derived from the test itself), no database.
"""
from __future__ import annotations

import copy
import json
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CATALOG = _catalog.load_catalog()
SECRET = "sk-fuzz-secret-0123456789"


def facts(n, ip, iface="eth0", mib=143771):
    return {"gpu_count": n, "gpus": [{"index": i, "memory_total_mib": mib} for i in range(n)],
            "rdma_devices": [], "rdma": [],
            "interfaces": [{"name": "lo", "ipv4": [{"address": "127.0.0.1", "prefix": 8}]},
                           {"name": iface, "ipv4": [{"address": ip, "prefix": 24}]}]}


HOSTVARS = {
    "gpu-a": {"ansible_host": "10.0.0.11", "llmfleet_gpu_facts": facts(8, "10.0.0.11")},
    "gpu-b": {"ansible_host": "10.0.0.12", "llmfleet_gpu_facts": facts(8, "10.0.0.12", "ens5")},
    "small": {"ansible_host": "10.0.0.13", "llmfleet_gpu_facts": facts(4, "10.0.0.13")},
    "nofacts": {"ansible_host": "10.0.0.14"},
}
GROUPS = {"dual": ["gpu-a", "gpu-b"], "one": ["gpu-a"], "mixed": ["gpu-a", "small"], "empty": []}
# The variable of every refusal: a deployment's key, the list itself, or a host variable.
VARIABLE = re.compile(r"^(llmfleet_deployments($|\[[^\]]*\](\.|$))|hostvars\[|llmfleet_models\[[^\]]*\](\.|$))")

# -- arbitrary input ------------------------------------------------------------------------
SCALARS = (st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(["auto", "vllm", "sglang", "dual", "gpu-a", "private", "public",
                                                     "localhost", "qwq-32b", "deepseek-r1", "none", "8", "0"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.sampled_from(["gpu-a", "key", "path"]), inner,
                                        max_size=3), max_leaves=8)
KEYS = st.sampled_from(sorted(_plan.DEPLOYMENT_KEYS)) | st.text(max_size=8)
BASE = {"name": "fz", "hosts": "dual", "model": "qwq-32b", "max_model_len": 32768, "api_key_file": "/k"}


@st.composite
def messy_deployment(draw):
    """Mostly a valid deployment with a few keys replaced by anything (or any dict at all)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(VALUES)
    d = dict(BASE) if draw(st.booleans()) else {}
    for k, v in draw(st.dictionaries(KEYS, VALUES, max_size=5)).items():
        d[k] = v
    return d


def check_refusal(errors):
    assert errors, "PlanErrors without errors"
    for e in errors:
        assert isinstance(e, _plan.PlanError)
        assert isinstance(e.variable, str) and VARIABLE.match(e.variable), e.variable
        assert isinstance(e.message, str) and e.message
        assert SECRET not in e.message
        json.dumps(e.to_dict())


@FUZZ
@given(st.lists(messy_deployment(), max_size=3) | VALUES)
@example([{"name": "x", "hosts": "dual", "model": "qwq-32b", "api_key": SECRET, "port": float("nan")}])
@example([{"name": "x", "hosts": ["gpu-a", 1], "model": {"path": []}, "env": {"A": 1}}])
@example([dict(BASE, hosts="nofacts"), dict(BASE, name="fz", hosts="empty")])
@example([dict(BASE, tensor_parallel=0, pipeline_parallel=-1, gpus_per_host=10 ** 12)])
def test_any_input_plans_or_is_refused_with_named_variables(deployments):
    try:
        plan = _plan.build_plan(copy.deepcopy(deployments), HOSTVARS, GROUPS, CATALOG)
    except _plan.PlanErrors as e:
        check_refusal(e.errors)
        return
    assert SECRET not in json.dumps(plan, default=str)
    for name, p in plan["deployments"].items():
        assert p["tp"] * p["pp"] == p["gpus_total"], name


# -- valid input ----------------------------------------------------------------------------
@st.composite
def valid_deployments(draw):
    """1-3 deployments that fit gpu-a / gpu-b (8 GPUs each): GPUs per host never over-committed,
    each deployment its own ports."""
    free = {"gpu-a": 8, "gpu-b": 8}
    deps = []
    ray = False  # Ray's fixed per-node ports (10001, 52365): one vLLM multi-node cluster per host
    for i in range(draw(st.integers(1, 3))):
        hosts = draw(st.sampled_from([["gpu-a"], ["gpu-b"], ["gpu-a", "gpu-b"], ["gpu-b", "gpu-a"]]))
        room = min(free[h] for h in hosts)
        choices = [g for g in (2, 4, 8) if g <= room]
        if not choices:
            break
        g = draw(st.sampled_from(choices))
        for h in hosts:
            free[h] -= g
        engine = draw(st.sampled_from(["vllm", "sglang"]))
        if engine == "vllm" and len(hosts) > 1:
            if ray:
                engine = "sglang"
            ray = True
        exposure = draw(st.sampled_from(["localhost", "private", "public"]))
        d = {"name": "d%d" % i, "hosts": hosts if len(hosts) > 1 or draw(st.booleans()) else hosts[0],
             "engine": engine, "model": "qwq-32b", "max_model_len": draw(st.sampled_from([4096, 32768])),
             "gpus_per_host": g, "exposure": exposure, "port": 8000 + i, "ray_port": 6379 + 10 * i,
             "ray_dashboard_port": 8265 + i, "dist_init_port": 20000 + i,
             "gpu_memory_utilization": draw(st.sampled_from([0.8, 0.9, 0.95])), "gpu_runtime": "none"}
        if engine == "vllm" and draw(st.booleans()):
            d["tensor_parallel"], d["pipeline_parallel"] = g, len(hosts)
        if exposure == "private" and draw(st.booleans()):
            d["api_key"] = SECRET
        elif exposure != "localhost" or draw(st.booleans()):
            d["api_key_file"] = "/keys/d%d" % i
        if draw(st.booleans()):
            d["env"] = {"LLMFLEET_X": draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8))}
        deps.append(d)
    return deps


@FUZZ
@given(valid_deployments(), st.randoms(use_true_random=False))
def test_valid_deployments_plan_consistently(deployments, rnd):
    plan = _plan.build_plan(copy.deepcopy(deployments), HOSTVARS, GROUPS, CATALOG)
    assert set(plan["deployments"]) == {d["name"] for d in deployments}
    claimed = {}
    for d in deployments:
        p = plan["deployments"][d["name"]]
        hosts = d["hosts"] if isinstance(d["hosts"], list) else [d["hosts"]]
        assert p["tp"] * p["pp"] == p["gpus_total"] == d["gpus_per_host"] * len(hosts)
        assert p["nodes"] == len(hosts) and p["head"] == hosts[0]
        for h, hp in p["hosts"].items():
            for port in hp["ports"]:
                assert (h, port) not in claimed, (h, port, claimed.get((h, port)), d["name"])
                claimed[(h, port)] = d["name"]
        host_arg = [hp["command"][i + 1] for hp in p["hosts"].values()
                    for i, a in enumerate(hp["command"][:-1]) if a == "--host"]
        want = {"localhost": "127.0.0.1", "public": "0.0.0.0"}.get(d["exposure"])
        assert host_arg and all(a == (want or p["hosts"][h]["private_address"]) for a, h in zip(host_arg, p["hosts"]))
    dumped = json.dumps(plan, sort_keys=True, default=str)
    assert SECRET not in dumped
    # deterministic: same input -> same plan; keys in another order -> same config hashes
    assert json.dumps(_plan.build_plan(copy.deepcopy(deployments), HOSTVARS, GROUPS, CATALOG),
                      sort_keys=True, default=str) == dumped
    shuffled = []
    for d in deployments:
        items = list(d.items())
        rnd.shuffle(items)
        shuffled.append(dict(items))
    again = _plan.build_plan(shuffled, HOSTVARS, GROUPS, CATALOG)
    hashes = {(n, h): hp["labels"]["llmfleet.config-hash"]
              for n, p in plan["deployments"].items() for h, hp in p["hosts"].items()}
    assert {(n, h): hp["labels"]["llmfleet.config-hash"]
            for n, p in again["deployments"].items() for h, hp in p["hosts"].items()} == hashes
    # a change that matters (the port) changes the hash of that deployment
    changed = copy.deepcopy(deployments)
    changed[0]["port"] = 9999
    other = _plan.build_plan(changed, HOSTVARS, GROUPS, CATALOG)
    name = deployments[0]["name"]
    assert all(other["deployments"][name]["hosts"][h]["labels"]["llmfleet.config-hash"] != hashes[(name, h)]
               for h in other["deployments"][name]["hosts"])


# -- arbitrary model entries (llmfleet_models, model dicts) ---------------------------------------
from ansible_collections.llmfleet.serving.plugins.plugin_utils._schema import MODEL_KEYS  # noqa: E402

MODEL_VALUES = VALUES | st.sampled_from(["", "   ", "15 GB", "7B", ["--trust-remote-code"], {"vllm": "--x"},
                                         {"vllm": ["--host", "0.0.0.0"]}, {"sglang": ["--kv-cache-dtype", "fp8"]},
                                         -1, 0, float("nan"), float("inf"), "/etc", "relative/dir"])
MODEL_ENTRIES = st.dictionaries(st.sampled_from(sorted(MODEL_KEYS)) | st.text(max_size=6), MODEL_VALUES, max_size=5)
FLAG_LISTS = st.lists(st.sampled_from(["--dtype", "float32", "bf16", "--kv-cache-dtype", "fp8", "fp8_e4m3",
                                       "--max-num-seqs", "64", "x", "--hf-token", "--trust-remote-code",
                                       "--reasoning-parser", "deepseek_r1", "deepseek-r1", "--port", "22", "",
                                       " ", "--hf-overrides", "{", "{}", "-tp", "4", "--dp-size", "2",
                                       "--data-parallel-size", "--enable-prefix-caching", "--"]), max_size=6)


@FUZZ
@given(st.dictionaries(st.sampled_from(["qwq-32b", "deepseek-r1-distill-qwen-7b", "mine"]), MODEL_ENTRIES, max_size=2),
       st.sampled_from(["qwq-32b", "deepseek-r1-distill-qwen-7b", "mine"]) | MODEL_ENTRIES,
       FLAG_LISTS, st.sampled_from(["vllm", "sglang"]), st.sampled_from(["one", "dual"]))
@example({"mine": {"size_bytes": "15 GB", "engine_flags": ["--x"], "num_hidden_layers": -3}}, "mine", [], "vllm",
         "one")
@example({}, {"path": [], "key": ["x"]}, ["--dtype"], "sglang", "dual")
def test_any_model_entry_and_flags_plan_or_are_refused(models, model, flags, engine, hosts):
    try:
        catalog = _catalog.merge_catalog(CATALOG, models)
    except _catalog.CatalogError:
        return
    dep = dict(BASE, model=model, engine=engine, hosts=hosts, extra_args=flags, max_model_len=4096,
               gpu_runtime="none")
    try:
        plan = _plan.build_plan([dep], HOSTVARS, GROUPS, catalog)
    except _plan.PlanErrors as e:
        check_refusal(e.errors)
        return
    for p in plan["deployments"].values():
        assert p["tp"] * p["pp"] * p["dp"] == p["gpus_total"]
        json.dumps(p)
