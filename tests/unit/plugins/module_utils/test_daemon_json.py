# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import json

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils._daemon_json import (
    DaemonJsonError,
    changed_keys,
    deep_merge,
    normalize_wanted,
    parse,
    plan,
    render,
    restart_needed,
    validate_unsupported,
)

USER_FILE = json.dumps({
    "registry-mirrors": ["https://mirror.example.invalid"],
    "runtimes": {"kata": {"path": "/usr/bin/kata-runtime"}},
    "log-opts": {"labels": "team"},
    "bip": "172.31.0.1/16",
})

NVIDIA = {
    "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}},
    "log-driver": "json-file",
    "log-opts": {"max-size": "100m", "max-file": 3},
}


def test_parse_empty_and_whitespace_is_empty_object():
    assert parse(None) == {}
    assert parse("  \n") == {}


def test_parse_invalid_json_raises_and_names_file():
    with pytest.raises(DaemonJsonError) as err:
        parse("{oops", "/etc/docker/daemon.json")
    assert "/etc/docker/daemon.json" in str(err.value)
    assert "untouched" in str(err.value)


def test_parse_non_object_raises():
    with pytest.raises(DaemonJsonError) as err:
        parse("[1, 2]")
    assert "JSON object" in str(err.value)


def test_merge_keeps_user_keys_and_adds_runtime():
    merged = deep_merge(parse(USER_FILE), normalize_wanted(NVIDIA))
    assert merged["runtimes"]["kata"] == {"path": "/usr/bin/kata-runtime"}
    assert merged["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert merged["bip"] == "172.31.0.1/16"
    assert merged["registry-mirrors"] == ["https://mirror.example.invalid"]
    assert merged["log-opts"] == {"labels": "team", "max-size": "100m", "max-file": "3"}


def test_merge_does_not_modify_inputs():
    current = {"a": {"b": [1]}}
    wanted = {"a": {"b": [2], "c": 1}}
    deep_merge(current, wanted)
    assert current == {"a": {"b": [1]}}
    assert wanted == {"a": {"b": [2], "c": 1}}


def test_lists_append_unique_keeps_order_and_no_duplicates():
    merged = deep_merge({"dns": ["10.0.0.2", "10.0.0.3"]}, {"dns": ["10.0.0.3", "10.0.0.4"]})
    assert merged["dns"] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


def test_lists_replace_mode():
    merged = deep_merge({"dns": ["10.0.0.2"]}, {"dns": ["10.0.0.9"]}, list_merge="replace")
    assert merged["dns"] == ["10.0.0.9"]


def test_unknown_list_mode_raises():
    with pytest.raises(DaemonJsonError):
        deep_merge({}, {}, list_merge="union")


def test_none_value_keeps_current():
    assert deep_merge({"data-root": "/var/lib/docker"}, {"data-root": None}) == {"data-root": "/var/lib/docker"}
    assert deep_merge({}, {"default-runtime": None}) == {}


def test_scalar_wins_and_type_change_replaces():
    assert deep_merge({"debug": False}, {"debug": True}) == {"debug": True}
    assert deep_merge({"log-opts": "bad"}, {"log-opts": {"max-size": "1m"}}) == {"log-opts": {"max-size": "1m"}}


def test_normalize_stringifies_log_opts_only():
    out = normalize_wanted({"log-opts": {"max-file": 3, "compress": True}, "max-concurrent-downloads": 6})
    assert out["log-opts"] == {"max-file": "3", "compress": "true"}
    assert out["max-concurrent-downloads"] == 6


def test_normalize_rejects_non_dict():
    with pytest.raises(DaemonJsonError):
        normalize_wanted(["a"])
    with pytest.raises(DaemonJsonError):
        normalize_wanted({"log-opts": ["max-size=1m"]})


def test_changed_keys_and_restart_needed():
    keys = changed_keys({"a": 1, "runtimes": {}}, {"a": 1, "runtimes": {"x": {}}, "b": 2})
    assert keys == ["b", "runtimes"]
    assert restart_needed(["runtimes", "default-runtime"]) is False
    assert restart_needed(["runtimes", "log-opts"]) is True
    assert restart_needed([]) is False


def test_plan_idempotent_second_pass():
    first = plan(USER_FILE, NVIDIA)
    assert first["changed"] is True
    assert first["changed_keys"] == ["log-driver", "log-opts", "runtimes"]
    assert first["restart_needed"] is True
    second = plan(first["after_text"], NVIDIA)
    assert second["changed"] is False
    assert second["changed_keys"] == []
    assert second["after_text"] == first["after_text"]


def test_plan_user_formatting_not_a_change():
    pretty = '{"log-driver":"json-file",\n "log-opts": {"max-size": "100m", "max-file": "3"}}'
    result = plan(pretty, {"log-driver": "json-file", "log-opts": {"max-file": 3}})
    assert result["changed"] is False


def test_plan_missing_file_is_a_change():
    result = plan(None, {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}})
    assert result["changed"] is True
    assert result["before_text"] == ""
    assert json.loads(result["after_text"]) == {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}
    assert result["restart_needed"] is False


def test_render_is_stable():
    assert render({"b": 1, "a": {"d": 1, "c": 2}}) == render({"a": {"c": 2, "d": 1}, "b": 1})
    assert render({}).endswith("\n")


def test_validate_unsupported_detection():
    assert validate_unsupported("Status: unknown flag: --validate\nSee 'dockerd --help'., Code: 125")
    assert not validate_unsupported("unable to configure the Docker daemon with file x: invalid")
    assert not validate_unsupported(None)
