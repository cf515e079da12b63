"""Unit tests for _engine_flags (tables extracted from the real engines' parsers)."""
import pytest

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _engine_flags as ef


def test_default_versions_and_tables():
    assert ef.default_version("vllm") == "0.32.0"
    assert ef.default_version("sglang") == "0.5.23"
    assert ef.versions("vllm") == ["0.8.5", "0.32.0", "0.33.0"]
    flags = ef.known_flags("vllm", "0.32.0")
    assert flags["--tensor-parallel-size"] == 1 and flags["-tp"] == 1 and flags["-pp"] == 1
    assert flags["--trust-remote-code"] == 0 and flags["--no-trust-remote-code"] == 0
    assert flags["--api-key"] == "*"
    assert "--enable-reasoning" not in flags
    assert "--enable-reasoning" in ef.known_flags("vllm", "0.8.5")
    sg = ef.known_flags("sglang", "0.5.23")
    for f in ("--tp-size", "--nnodes", "--node-rank", "--dist-init-addr", "--mem-fraction-static", "--config"):
        assert f in sg


def test_unknown_engine_and_version():
    with pytest.raises(ef.UnknownEngineError):
        ef.known_flags("tgi")
    with pytest.raises(ef.UnknownEngineError):
        ef.resolve_version("vllm", "0.5.0")
    assert ef.resolve_version("vllm", "0.32.1") == "0.32.0"
    assert ef.resolve_version("vllm", "v0.32.0") == "0.32.0"


def test_parse_vllm_serve_line():
    values, unknown = ef.parse_args("vllm", "0.32.0", [
        "/data/models/QwQ-32B", "-tp", "8", "--max_model_len=32768", "--no-trust-remote-code",
        "--enable-chunked-prefill", "--compilation-config.level", "3", "--api-key", "a", "b"])
    assert unknown == []
    assert values["model_tag"] == "/data/models/QwQ-32B"
    assert values["--tensor-parallel-size"] == "8"
    assert values["--max-model-len"] == "32768"
    assert values["--trust-remote-code"] is False
    assert values["--enable-chunked-prefill"] is True
    assert values["--compilation-config"] == {"level": "3"}
    assert values["--api-key"] == ["a", "b"]


def test_parse_rejects_like_the_engine():
    dummy, unknown = ef.parse_args("vllm", "0.32.0", ["--enable-reasoning", "--tensor-parallel-size"])
    assert unknown == ["--enable-reasoning", "--tensor-parallel-size"]
    dummy, unknown = ef.parse_args("vllm", "0.32.0", ["m", "extra-positional", "--trust-remote-code=yes"])
    assert unknown == ["extra-positional", "--trust-remote-code=yes"]
    dummy, unknown = ef.parse_args("sglang", "0.5.23", ["stray", "--no-such-flag", "1"])
    assert unknown == ["stray", "--no-such-flag", "1"]


def test_parse_sglang_abbreviations_like_argparse():
    values, unknown = ef.parse_args("sglang", "0.5.23", [
        "--tp", "16", "--nnodes", "2", "--node-rank", "1", "--dist-init-addr", "10.0.0.11:20000",
        "--mem-fraction-static", "0.9", "--trust-remote-code"])
    assert unknown == []
    assert values["--tp-size"] == "16"
    assert values["--dist-init-addr"] == "10.0.0.11:20000"
    # an ambiguous prefix is an error in argparse
    dummy, unknown = ef.parse_args("sglang", "0.5.23", ["--enable", "1"])
    assert "--enable" in unknown


def test_canonical_flag():
    assert ef.canonical_flag("vllm", "0.32.0", "-tp") == ("--tensor-parallel-size", False)
    assert ef.canonical_flag("vllm", "0.32.0", "--no-enable-prefix-caching") == ("--enable-prefix-caching", True)


def test_tables_match_the_generator():
    """Each table in plugins/plugin_utils/engine_flags/ is what tools/extract_engine_flags.py renders
    from its stored parser dump (tools/engine_flags_dumps/): a hand edit, or a generator change
    without a re-render, fails here. The real parsers are not needed."""
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))))
    spec = importlib.util.spec_from_file_location("extract_engine_flags",
                                                  os.path.join(root, "tools", "extract_engine_flags.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.rendered()
    tables = sorted(f for f in os.listdir(os.path.join(root, "plugins", "plugin_utils", "engine_flags"))
                    if f.endswith(".json"))
    assert sorted(expected) == tables, "a table without a stored dump, or a dump without a table"
    for fn, text in expected.items():
        with open(os.path.join(root, "plugins", "plugin_utils", "engine_flags", fn)) as f:
            assert f.read() == text, "%s is stale: run tools/extract_engine_flags.py --render" % fn
    # what the planner loaded is those files
    assert ef.versions("vllm") == sorted({t.split("-", 1)[1][:-5] for t in tables if t.startswith("vllm-")},
                                         key=ef._version_key)


def test_choices_and_types_from_the_real_parsers():
    assert "float32" in ef.choices("vllm", "0.32.0", "--dtype")
    assert ef.choices("sglang", "0.5.23", "--kv-cache-dtype") == [
        "auto", "bf16", "bfloat16", "fp4_mx_block16", "fp8_e4m3", "fp8_e5m2", "mxfp8", "nvfp4"]
    assert "deepseek_r1" in ef.choices("vllm", "0.32.0", "--reasoning-parser")
    assert "deepseek-r1" in ef.choices("sglang", "0.5.23", "--reasoning-parser")
    assert ef.value_problem("vllm", "0.32.0", "--max-num-seqs", ["64"]) is None
    assert "not an integer" in ef.value_problem("vllm", "0.32.0", "--max-num-seqs", ["6.4"])
    assert "not a finite number" in ef.value_problem("sglang", "0.5.23", "--mem-fraction-static", ["nan"])


def test_split_args_segments():
    values, unknown, segs = ef.split_args("vllm", "0.32.0", ["--dtype=half", "-tp", "2", "--trust-remote-code",
                                                             "--compilation-config.level", "3"])
    assert unknown == []
    assert segs == [("--dtype", ["--dtype=half"]), ("--tensor-parallel-size", ["-tp", "2"]),
                    ("--trust-remote-code", ["--trust-remote-code"]),
                    ("--compilation-config.level", ["--compilation-config.level", "3"])]
