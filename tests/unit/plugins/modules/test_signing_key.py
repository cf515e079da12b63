# -*- coding: utf-8 -*-
"""signing_key: installs a repository key only when its fingerprint is the pinned one."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ansible.module_utils.testing import patch_module_args

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from module_harness import ExitJson, FailJson, patch_exits  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.modules import signing_key  # noqa: E402

pytestmark = pytest.mark.skipif(not shutil.which("gpg"), reason="gpg makes the reference key")


@pytest.fixture(autouse=True)
def _patch_exits(monkeypatch):
    patch_exits(monkeypatch, default_changed=False)


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("gnupg"))
    os.chmod(home, 0o700)
    env = dict(os.environ, GNUPGHOME=home)
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                    "repo@example.org", "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
    cols = subprocess.run(["gpg", "--with-colons", "--fingerprint"], env=env, check=True, capture_output=True,
                          text=True).stdout
    fpr = [line.split(":")[9] for line in cols.splitlines() if line.startswith("fpr:")][0]
    return fpr, subprocess.run(["gpg", "--armor", "--export"], env=env, check=True, capture_output=True).stdout


def run(args, check=False, exc=ExitJson):
    args = dict(args)
    if check:
        args["_ansible_check_mode"] = True
    with patch_module_args(args):
        with pytest.raises(exc) as info:
            signing_key.main()
    return info.value.args[0]


def test_the_pinned_key_is_installed_once(tmp_path, key):
    fpr, data = key
    src, dest = tmp_path / "dl", tmp_path / "keyrings" / "repo.asc"
    dest.parent.mkdir()
    src.write_bytes(data)
    args = {"src": str(src), "dest": str(dest), "fingerprints": [fpr]}
    res = run(args, check=True)
    assert res["changed"] is True and not dest.exists()
    res = run(args)
    assert res["changed"] is True and res["fingerprints"] == [fpr]
    assert dest.read_bytes() == data and oct(dest.stat().st_mode & 0o777) == "0o644"
    assert run(args)["changed"] is False
    assert run(args, check=True)["changed"] is False


def test_another_key_is_refused_and_nothing_is_written(tmp_path, key):
    fpr, data = key
    src, dest = tmp_path / "dl", tmp_path / "repo.asc"
    src.write_bytes(data)
    res = run({"src": str(src), "dest": str(dest), "fingerprints": ["9DC858229FC7DD38854AE2D88D81803C0EBFCD88"]},
              exc=FailJson)
    assert "not the pinned 9DC858229FC7DD38854AE2D88D81803C0EBFCD88" in res["msg"] and fpr in res["msg"]
    assert not dest.exists()
    src.write_bytes(b"<html>captive portal</html>")
    res = run({"src": str(src), "dest": str(dest), "fingerprints": [fpr]}, exc=FailJson)
    assert "is not an OpenPGP public key" in res["msg"] and not dest.exists()
    res = run({"src": str(src), "dest": str(dest), "fingerprints": []}, exc=FailJson)
    assert res["msg"].startswith("fingerprints: empty")


def test_check_mode_before_the_download_reports_the_change(tmp_path):
    res = run({"src": str(tmp_path / "missing"), "dest": str(tmp_path / "k.asc"), "fingerprints": ["AB"]}, check=True)
    assert res["changed"] is True and "checked on a real run" in res["msg"]
    res = run({"src": str(tmp_path / "missing"), "dest": str(tmp_path / "k.asc"), "fingerprints": ["AB"]}, exc=FailJson)
    assert "cannot read" in res["msg"]
