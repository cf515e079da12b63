"""Unit tests for _sizing (arithmetic checked by hand in docs/sizing.md)."""
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _sizing as sz

R1 = {"size_bytes": 688586727753, "size_source": "index", "num_hidden_layers": 61, "kv_lora_rank": 512,
      "qk_rope_head_dim": 64, "num_key_value_heads": 128, "head_dim": 192}
QWQ = {"parameters": 32500000000, "dtype": "bfloat16", "num_hidden_layers": 64, "num_attention_heads": 40,
       "num_key_value_heads": 8, "hidden_size": 5120}
H200 = 143771 * sz.MIB


def test_kv_per_token_standard_and_mla():
    per, line = sz.kv_bytes_per_token(QWQ, tp=1, pp=1)
    assert per == 2 * 64 * 8 * 128 * 2 == 262144
    assert "head_dim 128" in line
    per, dummy = sz.kv_bytes_per_token(QWQ, tp=16, pp=1)   # KV heads replicated when TP > KV heads
    assert per == 2 * 64 * 1 * 128 * 2
    per, line = sz.kv_bytes_per_token(R1, tp=8, pp=2)
    assert per == 31 * (512 + 64) * 2 == 35712
    assert "MLA" in line
    assert sz.kv_bytes_per_token({}, 1, 1)[0] is None


def test_r1_dual_fits_and_shows_arithmetic():
    r = sz.size_deployment(R1, 8, 2, 32768, H200, 0.95)
    assert r["weights_per_gpu"] == 43036670486 - 1 or r["weights_per_gpu"] == -(-688586727753 // 16)
    assert round(r["weights_per_gpu"] / 1e9) == 43
    assert r["kv_min_per_gpu"] == 32768 * 35712
    assert r["fits"] is True
    assert any("43.04 GB" in line for line in r["lines"])


def test_qwq_on_one_small_gpu_does_not_fit():
    r = sz.size_deployment(QWQ, 1, 1, 32768, 48 * sz.GIB, 0.9)
    assert r["weights_bytes"] == 65000000000
    assert r["fits"] is False
    assert "DOES NOT FIT" in r["lines"][-1]


def test_kv_cache_dtype_and_unknown_memory():
    a = sz.size_deployment(QWQ, 1, 1, 1000, None, 0.9)
    assert a["fits"] is None and "memory check skipped" in a["lines"][-1]
    b = sz.size_deployment(QWQ, 1, 1, 1000, H200, 0.9, kv_cache_dtype="fp8")
    assert b["kv_bytes_per_token_per_gpu"] == 262144 // 2
