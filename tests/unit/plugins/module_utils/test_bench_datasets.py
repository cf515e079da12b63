# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import json
import random

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils._bench_datasets import (
    _lengths,
    build_dataset, load_jsonl, load_sharegpt, prefix_dataset, random_dataset,
)


def fake_tokenizer(text):
    # pretend every word is 1.5 tokens (rounded up), so calibration must adapt
    return (len(text.split()) * 3 + 1) // 2


def test_random_lengths_in_range_and_reproducible():
    a = random_dataset(50, 100, 20, range_ratio=0.5, seed=7)
    b = random_dataset(50, 100, 20, range_ratio=0.5, seed=7)
    c = random_dataset(50, 100, 20, range_ratio=0.5, seed=8)
    assert [s.as_dict() for s in a] == [s.as_dict() for s in b]
    assert [s.prompt for s in a] != [s.prompt for s in c]
    assert all(50 <= s.prompt_len <= 150 and 10 <= s.output_len <= 30 for s in a)
    assert len(set(s.prompt_len for s in a)) > 5
    assert len(set(s.prompt for s in a)) == 50


def test_random_is_calibrated_with_the_server_tokenizer():
    ds = random_dataset(20, 300, 10, seed=1, count_tokens=fake_tokenizer)
    for s in ds:
        assert s.prompt_len == fake_tokenizer(s.prompt)   # the recorded length is the real one
        assert abs(s.prompt_len - 300) <= 1


def test_range_ratio_validation():
    with pytest.raises(ValueError):
        random_dataset(1, 10, 10, range_ratio=1.0)


def test_prefix_set_shares_prefixes():
    ds = prefix_dataset(12, prefix_len=40, suffix_len=10, output_len=5, num_prefixes=3, seed=0,
                        count_tokens=fake_tokenizer)
    heads = set(" ".join(s.prompt.split()[:20]) for s in ds)
    assert len(heads) == 3
    assert len(set(s.prompt for s in ds)) == 12
    assert all(abs(s.prompt_len - 50) <= 1 for s in ds)


def sharegpt(tmp_path):
    data = [
        {"id": "a", "conversations": [{"from": "human", "value": "one two three four five"},
                                      {"from": "gpt", "value": "six seven eight nine ten"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "too short"},
                                      {"from": "gpt", "value": "a b c d e"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "only one turn here"}]},
        {"id": "d", "conversations": [{"from": "human", "value": "w " * 30},
                                      {"from": "gpt", "value": "x " * 3000}]},
        {"id": "e", "conversations": [{"from": "human", "value": "alpha beta gamma delta"},
                                      {"from": "gpt", "value": "e f g h i j"}]},
    ]
    p = tmp_path / "ShareGPT_V3_unfiltered_cleaned_split.json"
    p.write_text(json.dumps(data))
    return str(p)


def count_words(text):
    return len(text.split())


def test_sharegpt_sampling_filters_like_vllm(tmp_path):
    path = sharegpt(tmp_path)
    ds = load_sharegpt(path, 2, seed=0, count_tokens=count_words)
    assert sorted((s.prompt_len, s.output_len) for s in ds) == [(4, 6), (5, 5)]
    with pytest.raises(ValueError):
        load_sharegpt(path, 3, seed=0, count_tokens=count_words)
    # a fixed output length keeps the long-answer conversation (only prompt >= 4 applies)
    fixed = load_sharegpt(path, 3, seed=0, output_len=64, count_tokens=count_words)
    assert sorted(s.prompt_len for s in fixed) == [4, 5, 30]
    assert all(s.output_len == 64 for s in fixed)
    assert [s.prompt for s in load_sharegpt(path, 2, seed=5, count_tokens=count_words)] == \
        [s.prompt for s in load_sharegpt(path, 2, seed=5, count_tokens=count_words)]


def test_jsonl_prompts_cycle_and_errors(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "a b c", "output_len": 7}\n\n"just text"\n')
    ds = load_jsonl(str(p), 3, count_tokens=count_words)
    assert [(s.prompt, s.prompt_len, s.output_len) for s in ds] == [
        ("a b c", 3, 7), ("just text", 2, 256), ("a b c", 3, 7)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    with pytest.raises(ValueError) as exc:
        load_jsonl(str(bad), 1)
    assert "line 1" in str(exc.value)


def test_build_dataset_dispatch(tmp_path):
    assert len(build_dataset("random", 3, {"input_len": 8, "output_len": 4})) == 3
    with pytest.raises(ValueError):
        build_dataset("sharegpt", 1, {})
    with pytest.raises(ValueError):
        build_dataset("nope", 1, {})


def test_random_hits_the_exact_length_when_word_merges_make_counts_jump():
    # Long words are two tokens and every third word merges away: adding or removing whole
    # words alone oscillates around some targets (3 of these 300 missed before the word swap).
    def count(text):
        ws = text.split()
        return sum(2 if len(w) > 4 else 1 for w in ws) - len(ws) // 3

    ds = random_dataset(300, 16, 4, range_ratio=0.5, seed=3, count_tokens=count)
    want = _lengths(random.Random(3), 16, 0.5, 300)
    assert [s.prompt_len for s in ds] == want
    assert [count(s.prompt) for s in ds] == want
