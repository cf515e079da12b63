# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import json
import os
import sys
import stat

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from module_harness import ExitJson, FailJson, patch_exits  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.modules import docker_daemon_config  # noqa: E402

NVIDIA = {
    "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}},
    "log-driver": "json-file",
    "log-opts": {"max-size": "100m", "max-file": 3},
}


@pytest.fixture(autouse=True)
def _patch_exits(monkeypatch):
    patch_exits(monkeypatch, default_changed=False)


def run(args, check=False, diff=False, exc=ExitJson):
    args = dict(args)
    if check:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args):
        with pytest.raises(exc) as info:
            docker_daemon_config.main()
    return info.value.args[0]


def write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def test_check_mode_reports_change_and_does_not_write(tmp_path):
    target = tmp_path / "daemon.json"
    write(target, {"bip": "172.31.0.1/16"})
    before = target.read_text()
    result = run(dict(path=str(target), settings=NVIDIA, validate="never"), check=True, diff=True)
    assert result["changed"] is True
    assert result["restart_needed"] is True
    assert target.read_text() == before
    assert '"nvidia-container-runtime"' in result["diff"]["after"]
    assert "nvidia" not in result["diff"]["before"]


def test_real_run_merges_then_second_run_is_unchanged(tmp_path):
    target = tmp_path / "daemon.json"
    write(target, {"bip": "172.31.0.1/16", "runtimes": {"kata": {"path": "kata"}}})
    os.chmod(str(target), 0o600)
    first = run(dict(path=str(target), settings=NVIDIA, validate="never"))
    assert first["changed"] is True
    data = json.loads(target.read_text())
    assert data["bip"] == "172.31.0.1/16"
    assert set(data["runtimes"]) == {"kata", "nvidia"}
    assert data["log-opts"]["max-file"] == "3"
    assert stat.S_IMODE(os.stat(str(target)).st_mode) == 0o644
    second = run(dict(path=str(target), settings=NVIDIA, validate="never"), check=True)
    assert second["changed"] is False
    third = run(dict(path=str(target), settings=NVIDIA, validate="never"))
    assert third["changed"] is False
    assert third["changed_keys"] == []


def test_creates_missing_file_and_directory(tmp_path):
    target = tmp_path / "etc" / "docker" / "daemon.json"
    result = run(dict(path=str(target), settings={"runtimes": NVIDIA["runtimes"]}, validate="never"))
    assert result["changed"] is True
    assert result["restart_needed"] is False
    assert json.loads(target.read_text())["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"


def test_mode_only_difference_is_a_change(tmp_path):
    target = tmp_path / "daemon.json"
    run(dict(path=str(target), settings={"debug": False}, validate="never"))
    os.chmod(str(target), 0o600)
    result = run(dict(path=str(target), settings={"debug": False}, validate="never"))
    assert result["changed"] is True
    assert stat.S_IMODE(os.stat(str(target)).st_mode) == 0o644


def test_backup_keeps_previous_content(tmp_path):
    target = tmp_path / "daemon.json"
    write(target, {"bip": "172.31.0.1/16"})
    result = run(dict(path=str(target), settings={"data-root": "/data/docker"}, backup=True, validate="never"))
    assert result["changed"] is True
    assert json.loads(open(result["backup_file"]).read()) == {"bip": "172.31.0.1/16"}


def test_invalid_json_fails_and_leaves_file(tmp_path):
    target = tmp_path / "daemon.json"
    write(target, "{not json")
    result = run(dict(path=str(target), settings=NVIDIA), exc=FailJson)
    assert "not valid JSON" in result["msg"]
    assert target.read_text() == "{not json"


def test_validation_rejection_leaves_file(tmp_path, mocker):
    target = tmp_path / "daemon.json"
    write(target, {"bip": "172.31.0.1/16"})
    mocker.patch.object(basic.AnsibleModule, "get_bin_path", return_value="/usr/bin/dockerd")
    runc = mocker.patch.object(basic.AnsibleModule, "run_command", return_value=(1, "", "invalid data-root"))
    result = run(dict(path=str(target), settings={"data-root": "relative"}), exc=FailJson)
    assert "rejected" in result["msg"]
    assert json.loads(target.read_text()) == {"bip": "172.31.0.1/16"}
    argv = runc.call_args[0][0]
    assert argv[:3] == ["/usr/bin/dockerd", "--validate", "--config-file"]


def test_validation_ok(tmp_path, mocker):
    target = tmp_path / "daemon.json"
    mocker.patch.object(basic.AnsibleModule, "get_bin_path", return_value="/usr/bin/dockerd")
    mocker.patch.object(basic.AnsibleModule, "run_command", return_value=(0, "configuration OK", ""))
    result = run(dict(path=str(target), settings={"debug": True}))
    assert result["validated"] is True
    assert result["changed"] is True


def test_old_dockerd_without_validate_is_skipped_in_auto(tmp_path, mocker):
    target = tmp_path / "daemon.json"
    mocker.patch.object(basic.AnsibleModule, "get_bin_path", return_value="/usr/sbin/dockerd")
    mocker.patch.object(basic.AnsibleModule, "run_command",
                        return_value=(125, "", "Status: unknown flag: --validate\nSee 'dockerd --help'., Code: 125"))
    warn = mocker.patch.object(basic.AnsibleModule, "warn")
    result = run(dict(path=str(target), settings={"debug": True}))
    assert result["validated"] is False
    assert result["changed"] is True
    assert "does not support --validate" in warn.call_args[0][0]


def test_old_dockerd_with_validate_always_fails(tmp_path, mocker):
    target = tmp_path / "daemon.json"
    mocker.patch.object(basic.AnsibleModule, "get_bin_path", return_value="/usr/sbin/dockerd")
    mocker.patch.object(basic.AnsibleModule, "run_command", return_value=(125, "", "unknown flag: --validate"))
    result = run(dict(path=str(target), settings={"debug": True}, validate="always"), exc=FailJson)
    assert "does not support --validate" in result["msg"]
    assert not target.exists()


def test_no_dockerd_always_fails_auto_skips(tmp_path, mocker):
    target = tmp_path / "daemon.json"
    mocker.patch.object(basic.AnsibleModule, "get_bin_path", return_value=None)
    result = run(dict(path=str(target), settings={"debug": True}, validate="always"), exc=FailJson)
    assert "dockerd was not found" in result["msg"]
    ok = run(dict(path=str(target), settings={"debug": True}))
    assert ok["validated"] is False
    assert target.exists()
