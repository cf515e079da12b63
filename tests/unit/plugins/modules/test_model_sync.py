# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""model_sync module: check mode, real run, re-run, diff, secrets, against moto's S3 server."""

from __future__ import annotations

import json
import os
import sys

import boto3
import pytest
from ansible.module_utils.testing import patch_module_args

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from module_harness import ExitJson, FailJson, patch_exits  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))
from hub_server import moto_auth, moto_auth_off, start_moto  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.modules import model_sync  # noqa: E402


@pytest.fixture
def module_env(monkeypatch):
    patch_exits(monkeypatch)


@pytest.fixture(scope="module")
def s3():
    server, endpoint = start_moto()
    try:
        key, secret = moto_auth(endpoint)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=key, aws_secret_access_key=secret)
        client.create_bucket(Bucket="weights")
        for name, data in {"config.json": b"{}", "model-00001-of-00001.safetensors": os.urandom(200000)}.items():
            client.put_object(Bucket="weights", Key="r1/" + name, Body=data)
        yield endpoint, key, secret
    finally:
        moto_auth_off()
        server.stop()


def _run(args, check=False, diff=False):
    args = dict(args)
    if check:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args):
        with pytest.raises((ExitJson, FailJson)) as exc:
            model_sync.main()
    return exc.type, exc.value.args[0]


def _args(s3, tmp_path, **kw):
    endpoint, key, secret = s3
    args = {"source": "s3", "bucket": "weights", "prefix": "r1", "endpoint_url": endpoint,
            "region": "us-east-1", "addressing_style": "path", "access_key": key, "secret_key": secret,
            "path": str(tmp_path / "R1"), "free_space_margin": "0"}
    args.update(kw)
    return args


def test_check_real_check_real(module_env, s3, tmp_path):
    args = _args(s3, tmp_path)
    kind, res = _run(args, check=True, diff=True)
    assert kind is ExitJson and res["changed"] is True
    assert res["files_to_fetch"] == ["config.json", "model-00001-of-00001.safetensors"]
    assert res["diff"]["after"]["files_to_fetch"] == res["files_to_fetch"]
    assert not os.path.exists(args["path"])
    kind, res = _run(args)
    assert kind is ExitJson and res["changed"] is True and res["files_fetched"] == 2
    assert res["bytes_fetched"] == 200002 and res["files_verified"] == 2
    assert res["published_path"] == args["path"] and res["state_file"].endswith(".llmfleet-state.json")
    assert res["duration_s"] >= 0
    assert json.load(open(res["state_file"]))["complete"] is True
    kind, res = _run(args, check=True)
    assert res["changed"] is False and res["files_to_fetch"] == []
    kind, res = _run(args)
    assert res["changed"] is False and res["files_fetched"] == 0
    secret = s3[2]
    assert secret not in json.dumps(res)


def test_wrong_secret_fails_cleanly(module_env, s3, tmp_path):
    wrong = "wrongSECRETvalue1234567890"
    kind, res = _run(_args(s3, tmp_path, secret_key=wrong))
    assert kind is FailJson
    assert "credentials rejected" in res["msg"] and "SignatureDoesNotMatch" in res["msg"]
    assert wrong not in json.dumps(res) and "Traceback" not in res["msg"]


def test_required_options(module_env, tmp_path):
    kind, res = _run({"source": "huggingface", "path": str(tmp_path / "x")})
    assert kind is FailJson and "repo_id" in res["msg"]


def _credentials_file(tmp_path, data, mode=0o600):
    path = str(tmp_path / "creds.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(data if isinstance(data, str) else json.dumps(data))
    os.chmod(path, mode)
    return path


def test_secrets_from_a_0600_file_read_then_removed(module_env, s3, tmp_path):
    endpoint, key, secret = s3
    args = _args(s3, tmp_path)
    del args["access_key"], args["secret_key"]
    args["credentials_file"] = _credentials_file(tmp_path, {"access_key": key, "secret_key": secret})
    kind, res = _run(args)
    assert kind is ExitJson and res["files_fetched"] == 2, res
    assert not os.path.exists(args["credentials_file"])  # removed as the module started
    assert secret not in json.dumps(res)


def test_credentials_file_refused_when_readable_by_others_or_malformed(module_env, s3, tmp_path):
    endpoint, key, secret = s3
    args = _args(s3, tmp_path)
    del args["access_key"], args["secret_key"]
    args["credentials_file"] = _credentials_file(tmp_path, {"secret_key": secret}, mode=0o644)
    kind, res = _run(args)
    assert kind is FailJson and "must be owned by this user with mode 0600 (it is 0644)" in res["msg"]
    assert secret not in json.dumps(res)
    os.unlink(args["credentials_file"])
    args["credentials_file"] = _credentials_file(tmp_path, "{not json " + secret)
    kind, res = _run(args)
    assert kind is FailJson and "is not a JSON object" in res["msg"] and secret not in json.dumps(res)
    assert not os.path.exists(args["credentials_file"])
    args["credentials_file"] = _credentials_file(tmp_path, {"password": secret})
    kind, res = _run(args)
    assert kind is FailJson and "only the keys" in res["msg"] and secret not in json.dumps(res)
