"""Unit tests for _catalog."""
import json

import pytest

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog as cat

NAMES = ["qwen3-235b-a22b", "qwen3-32b", "qwq-32b", "qwen2.5-32b-instruct", "deepseek-r1-distill-llama-70b",
         "deepseek-r1-distill-qwen-32b", "deepseek-r1-distill-qwen-7b", "deepseek-r1", "deepseek-v3"]


def test_catalog_has_every_reference_model():
    c = cat.load_catalog()
    assert sorted(NAMES) == sorted(c)
    for key in NAMES:
        e = c[key]
        for f in ("hf_id", "modelscope_id", "size_bytes", "parameters", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "hidden_size", "max_position_embeddings", "engine_flags"):
            assert e.get(f) is not None, (key, f)
    r1 = c["deepseek-r1"]
    assert r1["size_bytes"] == 688586727753 and r1["shards"] == 163
    assert (r1["kv_lora_rank"], r1["qk_rope_head_dim"]) == (512, 64)
    assert "--reasoning-parser" in r1["engine_flags"]["vllm"]


def test_merge_user_entries():
    base = {"a": {"name": "a", "size_bytes": 1, "engine_flags": {"vllm": ["--x"], "sglang": []}}}
    out = cat.merge_catalog(base, {"a": {"size_bytes": 2, "engine_flags": {"vllm": []}}, "b": {"hf_id": "o/b"}})
    assert out["a"]["size_bytes"] == 2 and out["a"]["engine_flags"] == {"vllm": [], "sglang": []}
    assert out["b"] == {"name": "b", "hf_id": "o/b"}
    assert base["a"]["size_bytes"] == 1
    with pytest.raises(cat.CatalogError):
        cat.merge_catalog(base, {"c": "not a dict"})


def test_read_model_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 256,
        "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": 12345}, "weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}))
    facts = cat.read_model_dir(str(tmp_path))
    assert facts["head_dim"] == 32 and facts["num_key_value_heads"] == 2
    assert facts["size_bytes"] == 12345 and facts["shards"] == 2 and facts["size_source"] == "index"
    entry = cat.resolve_model({"path": str(tmp_path), "name": "tiny"}, {})
    assert entry["size_bytes"] == 12345 and entry["name"] == "tiny"
    # model_path present on this machine: its files win over the catalog
    e2 = cat.resolve_model("m", {"m": {"name": "m", "size_bytes": 1}}, str(tmp_path))
    assert e2["size_bytes"] == 12345
    assert cat.read_model_dir(str(tmp_path / "missing")) == {}


def test_arch_from_mla_config():
    a = cat.arch_from_config({"num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
                              "hidden_size": 7168, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
                              "qk_nope_head_dim": 128, "quantization_config": {"quant_method": "fp8"}})
    assert a["kv_lora_rank"] == 512 and a["head_dim"] == 192 and a["dtype"] == "fp8"
