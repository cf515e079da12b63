# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine-true rules of issue 14 (and the planner's part of issue 15): layout vs heads and
layers, one flag path, secrets in flags and env, typed model entries, paths, image digests,
cross-deployment rules, sizing inputs, engine versions."""
from __future__ import annotations

import json

import pytest

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _engine_flags, _layout, _plan, _schema

CATALOG = _catalog.load_catalog()


def facts(n=8, ip="10.0.0.11", mib=81559):
    return {"gpu_count": n, "gpus": [{"index": i, "memory_total_mib": mib} for i in range(n)],
            "interfaces": [{"name": "eth0", "ipv4": [{"address": ip, "prefix": 24}]}]}


HV = {"a": {"ansible_host": "10.0.0.11", "llmfleet_gpu_facts": facts(8, "10.0.0.11")},
      "b": {"ansible_host": "10.0.0.12", "llmfleet_gpu_facts": facts(8, "10.0.0.12")},
      "one": {"ansible_host": "10.0.0.13", "llmfleet_gpu_facts": facts(1, "10.0.0.13")},
      "two": {"ansible_host": "10.0.0.14", "llmfleet_gpu_facts": facts(2, "10.0.0.14")}}
GROUPS = {"dual": ["a", "b"], "gpu_hosts": ["a", "b", "one", "two"]}
D7 = {"name": "d7", "hosts": "a", "model": "deepseek-r1-distill-qwen-7b", "max_model_len": 8192,
      "exposure": "localhost"}


def plan(deps, catalog=None, **kw):
    return _plan.build_plan(deps, HV, GROUPS, catalog or CATALOG, **kw)


def refused(deps, catalog=None, **kw):
    with pytest.raises(_plan.PlanErrors) as e:
        plan(deps, catalog, **kw)
    return e.value.errors


def text(errors):
    return str(_plan.PlanErrors(errors))


def argv(p, host=None):
    hp = p["hosts"][host or p["head"]]
    return hp["command"][hp["command"].index("--") + 1:] if "--" in hp["command"] else hp["command"]


# -- layout ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine,flag", [("vllm", "--data-parallel-size"), ("sglang", "--dp-size")])
def test_auto_layout_7b_on_8_gpus_is_tp4_dp2(engine, flag):
    p = plan([dict(D7, engine=engine)])["deployments"]["d7"]
    assert (p["tp"], p["pp"], p["dp"], p["gpus_total"]) == (4, 1, 2, 8)
    a = argv(p)
    assert a[a.index(flag) + 1] == "2"
    assert any("data parallel 2" in n for n in p["notes"])


def test_explicit_tp8_refused_for_28_heads_with_the_fix():
    errs = refused([dict(D7, tensor_parallel=8, pipeline_parallel=1)])
    assert [e.variable for e in errs] == ["llmfleet_deployments[d7].tensor_parallel"]
    assert "28 attention heads" in errs[0].message and "tensor_parallel 4" in errs[0].message


def test_kv_heads_rule():
    # 28 heads / 4 KV heads: TP 7 divides the heads but neither divides nor is a multiple of 4 KV heads
    assert "KV heads" in _layout.tp_problem(CATALOG["deepseek-r1-distill-qwen-7b"], 7)
    assert _layout.tp_problem(CATALOG["deepseek-r1-distill-qwen-7b"], 2) is None
    # MLA (DeepSeek-R1): only the 128 attention heads count
    assert _layout.tp_problem(CATALOG["deepseek-r1"], 16) is None


def test_explicit_data_parallel():
    p = plan([dict(D7, data_parallel=4)])["deployments"]["d7"]
    assert (p["tp"], p["dp"]) == (2, 4)
    errs = refused([dict(D7, data_parallel=16)])
    assert "16 data parallel ranks but only 8 GPUs" in text(errs)
    errs = refused([dict(D7, extra_args=["--data-parallel-size", "2"])])
    assert "set llmfleet_deployments[d7].data_parallel instead" in text(errs)


def test_sglang_40_heads_on_two_hosts_gets_tp8_pp2_not_tp16():
    d = {"name": "q", "hosts": "dual", "engine": "sglang", "model": "qwq-32b", "max_model_len": 8192,
         "exposure": "localhost"}
    p = plan([d])["deployments"]["q"]
    assert (p["tp"], p["pp"]) == (8, 2)
    errs = refused([dict(d, tensor_parallel=16, pipeline_parallel=1)])
    assert "40 attention heads" in text(errs)


def test_pp_above_layers_refused():
    tiny = {"tiny": {"num_hidden_layers": 1, "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 64,
                     "size_bytes": 10 ** 9, "max_position_embeddings": 4096}}
    cat = _catalog.merge_catalog(CATALOG, tiny)
    errs = refused([{"name": "t", "hosts": "dual", "model": "tiny", "exposure": "localhost",
                     "tensor_parallel": 8, "pipeline_parallel": 2}], cat)
    assert "1 layers, fewer than pipeline_parallel 2" in text(errs)


# -- one flag path --------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["catalog", "model_dict", "extra_args"])
def test_owned_and_secret_flags_refused_from_every_source(source):
    bad = ["--host", "0.0.0.0", "--port", "22", "--hf-token", "hf_xyz"]
    if source == "catalog":
        cat = _catalog.merge_catalog(CATALOG, {"deepseek-r1-distill-qwen-7b": {"engine_flags": {"vllm": bad}}})
        errs = refused([D7], cat)
        var = "llmfleet_models[deepseek-r1-distill-qwen-7b].engine_flags.vllm"
    elif source == "model_dict":
        errs = refused([dict(D7, model={"key": "deepseek-r1-distill-qwen-7b", "engine_flags": {"vllm": bad}})])
        var = "llmfleet_deployments[d7].model.engine_flags.vllm"
    else:
        errs = refused([dict(D7, extra_args=bad)])
        var = "llmfleet_deployments[d7].extra_args"
    t = text(errs)
    assert {e.variable for e in errs} == {var}
    assert "--host is set by the planner" in t and "--port is set by the planner" in t
    assert "--hf-token carries a secret" in t and "hf_xyz" not in t.replace("'hf_xyz'", "")


@pytest.mark.parametrize("engine,flags", [("sglang", ["--admin-api-key", "s3"]),
                                          ("sglang", ["--ssl-keyfile-password", "s3"]),
                                          ("vllm", ["--api-key", "s3"])])
def test_secret_flags(engine, flags):
    errs = refused([dict(D7, engine=engine, extra_args=flags)])
    assert "carries a secret" in text(errs)
    assert "--ssl-keyfile" not in _plan._flags.OWNED_FLAGS[engine]
    assert not _plan._flags.is_secret_flag("--ssl-keyfile") and not _plan._flags.is_secret_flag("--max-num-batched-tokens")


@pytest.mark.parametrize("engine,flags,fragment", [
    ("vllm", ["--dtype", "bf16"], "'bf16' is not one of"),
    ("sglang", ["--kv-cache-dtype", "fp8"], "'fp8' is not one of"),
    ("vllm", ["--max-num-seqs", "many"], "'many' is not an integer"),
    ("vllm", ["--hf-overrides", "{rope_scaling: yarn}"], "not valid JSON"),
    ("vllm", ["--reasoning-parser", "deepseek-r1"], "did you mean 'deepseek_r1'"),
    ("sglang", ["--reasoning-parser", "deepseek_r1"], "did you mean 'deepseek-r1'"),
])
def test_flag_values_checked(engine, flags, fragment):
    errs = refused([dict(D7, engine=engine, extra_args=flags)])
    assert fragment in text(errs), text(errs)


def test_duplicates_removed_conflicts_refused():
    p = plan([dict(D7, extra_args=["--reasoning-parser", "deepseek_r1", "--enable-prefix-caching"])])
    a = argv(p["deployments"]["d7"])
    assert a.count("--reasoning-parser") == 1 and "--enable-prefix-caching" in a
    errs = refused([dict(D7, extra_args=["--reasoning-parser", "qwen3"])])
    assert "also given by llmfleet_models[deepseek-r1-distill-qwen-7b].engine_flags.vllm" in text(errs)


def test_list_engine_flags_and_string_sizes_refused_not_crashing():
    errs = refused([dict(D7, model={"path": "/nowhere", "engine_flags": ["--x"], "size_bytes": "15 GB",
                                    "num_hidden_layers": -28, "parameters": "7B"})])
    t = text(errs)
    for frag in ("model.engine_flags: must be a mapping engine -> list of strings",
                 "model.size_bytes: must be an integer of 1 or more, got str '15 GB'",
                 "model.num_hidden_layers: must be an integer of 1 or more, got int -28"):
        assert frag in t


def test_unknown_model_key_did_you_mean():
    errs = refused([dict(D7, model={"key": "deepseek-r1-distill-qwen-7b", "num_layers": 3})])
    assert "unknown model key 'num_layers' (did you mean" in text(errs)


# -- trust_remote_code ----------------------------------------------------------------------------
def test_no_catalog_entry_trusts_remote_code():
    for key, entry in CATALOG.items():
        assert not entry.get("trust_remote_code"), key
        for flags in (entry.get("engine_flags") or {}).values():
            assert "--trust-remote-code" not in (flags or []), key


def test_trust_remote_code_is_an_opt_in_with_a_pinned_revision():
    errs = refused([dict(D7, extra_args=["--trust-remote-code"])])
    assert "set trust_remote_code: true and a pinned revision" in text(errs)
    errs = refused([dict(D7, model={"key": "deepseek-r1-distill-qwen-7b", "trust_remote_code": True})])
    assert "model.revision" in text(errs)
    m = {"key": "deepseek-r1-distill-qwen-7b", "trust_remote_code": True, "revision": "a" * 40}
    p = plan([dict(D7, model=m)])["deployments"]["d7"]
    assert argv(p).count("--trust-remote-code") == 1 and p["model_revision"] == "a" * 40
    other = plan([dict(D7, model=dict(m, revision="b" * 40))])["deployments"]["d7"]
    assert other["config_hash"] != p["config_hash"]


# -- numbers, strings, env ------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [("gpu_memory_utilization", float("nan")), ("gpu_memory_gib", float("inf")),
                                       ("sizing_reserve_gib", float("nan")), ("sizing_reserve_gib", float("inf")),
                                       ("gpu_memory_gib", "80"), ("max_model_len", "8192")])
def test_non_finite_and_string_numbers_refused(key, value):
    errs = refused([dict(D7, **{key: value})])
    assert [e.variable for e in errs] == ["llmfleet_deployments[d7].%s" % key]


@pytest.mark.parametrize("name", ["HFTOKEN", "SSH_PRIVATE_KEY", "CREDENTIALS", "AWS_SECRET_ACCESS_KEY"])
def test_secret_env_names(name):
    assert "secrets do not belong" in text(refused([dict(D7, env={name: "x"})]))


def test_secret_url_and_planner_env():
    errs = refused([dict(D7, env={"DATABASE_URL": "postgres://u:pw@db/x", "NCCL_DEBUG": "INFO"})])
    t = text(errs)
    assert "env.DATABASE_URL: secrets" in t and "pw" not in t.replace("pw@", "")
    assert "env.NCCL_DEBUG: is set by the planner (from nccl_debug)" in t
    plan([dict(D7, env={"DATABASE_URL": "https://db.example/x", "LLMFLEET_SIM_TTFT_PER_PROMPT_TOKEN_MS": "1",
                        "NCCL_IB_HCA": "=mlx5_0"})])


@pytest.mark.parametrize("path", ["models/x", "/", "/etc", "/usr/", "/data/../etc"])
def test_model_path_refused(path):
    assert [e.variable for e in refused([dict(D7, model_path=path)])] == ["llmfleet_deployments[d7].model_path"]


def test_served_model_name_starting_with_dash_refused():
    assert "start with '-'" in text(refused([dict(D7, served_model_name="--help")]))


@pytest.mark.parametrize("image,ok", [("vllm/vllm-openai:v0.32.0", True),
                                      ("reg.example:5000/vllm/vllm-openai@sha256:" + "a" * 64, True),
                                      ("vllm/vllm-openai:v0.32.0@sha256:" + "0f" * 32, True),
                                      ("vllm/vllm-openai@sha256:abc", False),
                                      ("vllm/vllm-openai@sha256:" + "A" * 64, False),
                                      ("Vllm Openai", False)])
def test_image_reference(image, ok):
    assert (_schema.image_errors(image, "x") == []) is ok


def test_port_22_refused():
    assert "sshd" in text(refused([dict(D7, port=22)]))


# -- cross-deployment -----------------------------------------------------------------------------
def test_same_container_name_on_one_host_refused():
    # a single-host deployment named x-head and the head of multi-node x: both llmfleet-x-head on a
    deps = [{"name": "x", "hosts": "dual", "model": "qwq-32b", "max_model_len": 4096, "exposure": "localhost",
             "engine": "sglang", "gpus_per_host": 4},
            {"name": "x-head", "hosts": "a", "model": "qwq-32b", "max_model_len": 4096, "exposure": "localhost",
             "gpus_per_host": 4, "port": 8001}]
    assert "container name llmfleet-x-head on host a is also deployment x's" in text(refused(deps))


def test_port_flag_in_extra_args_claimed():
    deps = [dict(D7, gpus_per_host=4, data_parallel=1, tensor_parallel=4),
            dict(D7, name="d8", gpus_per_host=4, port=8000 + 1, tensor_parallel=4, data_parallel=1,
                 extra_args=["--ssl-ciphers", "x"])]
    plan(deps)
    deps[1]["engine"] = "sglang"
    deps[1]["extra_args"] = ["--disaggregation-bootstrap-port", "8000"]
    assert "port 8000 (extra_args --disaggregation-bootstrap-port) on host a" in text(refused(deps))


def test_host_outside_the_deploy_plays_refused():
    errs = refused([D7], play_hosts=("gpu_hosts", ["b"]))
    assert "not in gpu_hosts, the hosts the deploy plays run on" in text(errs)
    # the GPU facts play did not run there either: the one refusal is the cause, not the missing facts
    hv = dict(HV, a={"ansible_host": "10.0.0.11"})
    with pytest.raises(_plan.PlanErrors) as e:
        _plan.build_plan([D7], hv, GROUPS, CATALOG, play_hosts=("lab_single", ["b"]))
    assert [x.variable for x in e.value.errors] == ["llmfleet_deployments[d7].hosts"]
    plan([D7], play_hosts=("gpu_hosts", ["a"]))


# -- sizing ---------------------------------------------------------------------------------------
def test_dtype_float32_doubles_weights():
    base = plan([dict(D7, tensor_parallel=1, data_parallel=1, gpus_per_host=1, hosts="one")])["deployments"]["d7"]
    f32 = plan([dict(D7, tensor_parallel=1, data_parallel=1, gpus_per_host=1, hosts="one",
                     extra_args=["--dtype", "float32"])])["deployments"]["d7"]
    assert f32["sizing"]["weights_per_gpu"] == 2 * base["sizing"]["weights_per_gpu"]
    assert f32["sizing"]["kv_cache_dtype_bytes"] == 4


def test_declared_gpu_memory_above_facts_refused():
    errs = refused([dict(D7, gpu_memory_gib=141)])
    assert "141 GiB declared, but the GPU facts say 79.6 GiB" in text(errs)
    p = plan([dict(D7, gpu_memory_gib=40)])["deployments"]["d7"]
    assert any("below the 79.6 GiB" in w for w in p["warnings"])


def test_sizing_uses_the_memory_cuda_reports_not_the_nvidia_smi_total():
    # a real H100 80GB HBM3: nvidia-smi 81559 MiB total, 480 reserved; CUDA (and vLLM) 81079 MiB
    hv = dict(HV, a=dict(HV["a"], llmfleet_gpu_facts=facts(8, "10.0.0.11")))
    for g in hv["a"]["llmfleet_gpu_facts"]["gpus"]:
        g.update(memory_reserved_mib=480, memory_usable_mib=81079)
    sized = _plan.build_plan([D7], hv, GROUPS, CATALOG)["deployments"]["d7"]["sizing"]
    assert sized["gpu_memory_bytes"] == 81079 * 1024 * 1024
    assert plan([D7])["deployments"]["d7"]["sizing"]["gpu_memory_bytes"] == 81559 * 1024 * 1024  # older facts
    errs = _plan.PlanErrors(pytest.raises(_plan.PlanErrors, _plan.build_plan, [dict(D7, gpu_memory_gib=80)],
                                          hv, GROUPS, CATALOG).value.errors)
    assert "the GPU facts say 79.2 GiB" in str(errs)


@pytest.mark.parametrize("gpus, field, got", [
    ([{"index": 0, "memory_total_mib": float("nan")}], "gpus[0].memory_total_mib", "got nan"),
    ([{"index": 0, "memory_usable_mib": "   "}], "gpus[0].memory_usable_mib", "got a str"),
    ([{"index": 0, "memory_usable_mib": -5}], "gpus[0].memory_usable_mib", "got -5"),
    ([{"index": 0, "memory_reserved_mib": [1]}], "gpus[0].memory_reserved_mib", "got a list"),
    ([{"index": 0, "memory_total_mib": {"a": 1}}], "gpus[0].memory_total_mib", "got a dict"),
    ([{"index": 0, "memory_total_mib": "hf_abcdefghijklmnopqrstuvwxyzABCD"}], "gpus[0].memory_total_mib", "got a str"),
    (["x"], "gpus[0]", "must be a dict"),
    ("x", "gpus", "must be a list of GPUs"),
])
def test_gpu_facts_the_planner_cannot_size_against_are_refused_naming_the_field(gpus, field, got):
    hv = dict(HV, a=dict(HV["a"], llmfleet_gpu_facts=dict(facts(8, "10.0.0.11"), gpus=gpus)))
    with pytest.raises(_plan.PlanErrors) as e:
        _plan.build_plan([D7], hv, GROUPS, CATALOG)
    msg = text(e.value.errors)
    assert "hostvars[a].llmfleet_gpu_facts." + field in msg and got in msg and "gpu_facts" in msg
    assert "hf_abcdefghijklmnopqrstuvwxyzABCD" not in msg


def test_max_model_len_above_the_model_refused_unless_rope_scaling():
    errs = refused([dict(D7, max_model_len=262144)])
    assert "262144 is above the model's max_position_embeddings 131072" in text(errs)
    m = {"key": "deepseek-r1-distill-qwen-7b", "rope_scaling": {"rope_type": "yarn", "factor": 2.0}}
    p = plan([dict(D7, max_model_len=262144, model=m)])["deployments"]["d7"]
    assert any("rope scaling is configured" in w for w in p["warnings"])


# -- engine versions ------------------------------------------------------------------------------
def test_engine_versions():
    assert _engine_flags.table_versions() == {"sglang": ["0.5.23"], "vllm": ["0.8.5", "0.32.0", "0.33.0"]}
    # vLLM 0.33.0 keeps every 0.32.0 option string and adds 55 (both tables from the real parsers)
    v32, v33 = _engine_flags.known_flags("vllm", "0.32.0"), _engine_flags.known_flags("vllm", "0.33.0")
    assert set(v32) <= set(v33) and len(set(v33) - set(v32)) == 55
    p = plan([dict(D7, engine_version="0.33.0", extra_args=["--watchdog-config", "{}"])])["deployments"]["d7"]
    assert p["engine_version"] == "0.33.0" and p["warnings"] == []
    assert "--watchdog-config" in text(refused([dict(D7, extra_args=["--watchdog-config", "{}"])]))
    p = plan([dict(D7, engine_version="0.8.5")])["deployments"]["d7"]
    assert any("security advisories" in w for w in p["warnings"])
    errs = refused([dict(D7, engine="sglang", engine_version="0.5.24")])
    assert "no flag table for sglang 0.5.24" in text(errs) and "15 added, 1 removed" in text(errs)
    errs = refused([dict(D7, engine_version="0.34.0")])
    assert "no flag table for vllm 0.34.0" in text(errs)


def test_plan_is_json():
    json.dumps(plan([D7]))


# -- every accepted plan of the catalog is one the engines accept -----------------------------
SHAPES = {"1": ["one"], "2": ["two"], "8": ["a"], "2x8": ["a", "b"]}


def _shape_hostvars(mib):
    return {"one": {"ansible_host": "10.0.0.13", "llmfleet_gpu_facts": facts(1, "10.0.0.13", mib)},
            "two": {"ansible_host": "10.0.0.14", "llmfleet_gpu_facts": facts(2, "10.0.0.14", mib)},
            "a": {"ansible_host": "10.0.0.11", "llmfleet_gpu_facts": facts(8, "10.0.0.11", mib)},
            "b": {"ansible_host": "10.0.0.12", "llmfleet_gpu_facts": facts(8, "10.0.0.12", mib)}}


@pytest.mark.parametrize("gpu_mib", [81559, 143771], ids=["H100", "H200"])
@pytest.mark.parametrize("engine,version", [("vllm", "0.32.0"), ("vllm", "0.33.0"), ("sglang", "0.5.23")])
def test_every_accepted_catalog_plan_passes_the_engine_rules(engine, version, gpu_mib):
    hv = _shape_hostvars(gpu_mib)
    planned = 0
    for key, model in CATALOG.items():
        for shape, hosts in SHAPES.items():
            dep = {"name": "m", "hosts": hosts, "engine": engine, "engine_version": version, "model": key,
                   "max_model_len": 8192, "exposure": "localhost"}
            try:
                p = _plan.build_plan([dep], hv, {}, CATALOG)["deployments"]["m"]
            except _plan.PlanErrors as e:
                # refused: with a fix that names the variable (too large for the GPUs, mostly)
                assert all(err.variable.startswith("llmfleet_deployments[m].") for err in e.errors), str(e)
                continue
            planned += 1
            assert p["tp"] * p["pp"] * p["dp"] == p["gpus_total"]
            assert _layout.tp_problem(model, p["tp"]) is None and _layout.pp_problem(model, p["pp"]) is None
            for h, hp in p["hosts"].items():
                cmd = hp["command"]
                if cmd[0] == "ray":          # a Ray worker: no engine command line
                    continue
                args = cmd[2:] if cmd[0] == "vllm" else cmd[3:]   # vllm serve ... / python3 -m sglang.launch_server
                values, unknown, segs = _engine_flags.split_args(engine, version, args)
                assert unknown == [], (key, shape, unknown)
                for option, a in segs:
                    problem = _engine_flags.value_problem(engine, version, option.split(".")[0], a[1:])
                    assert problem is None, (key, shape, option, problem)
    assert planned >= 10
