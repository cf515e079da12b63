# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hugging Face and ModelScope sources through their real client libraries, against a local
hub server (hub_server.py) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import HubRepo, HubServer, git_blob_sha1  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import (  # noqa: E402
    STATE_NAME,
    SyncEngine,
    SyncError,
)

pytest.importorskip("huggingface_hub")
pytest.importorskip("modelscope")

from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import (  # noqa: E402
    HuggingFaceSource,
    ModelScopeSource,
    make_source,
)

TOKEN = "hf_TESTtokenNEVERprinted123"


def _files():
    return {
        "config.json": b'{"model_type": "qwen2"}',
        "model-00001-of-00002.safetensors": os.urandom(300 * 1024),
        "model-00002-of-00002.safetensors": os.urandom(200 * 1024 + 5),
        "tokenizer/tokenizer.json": os.urandom(5000),
    }


def _tree(path):
    return {os.path.relpath(os.path.join(r, n), path): open(os.path.join(r, n), "rb").read()
            for r, _dirs, ns in os.walk(path) for n in ns if n != STATE_NAME}


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with HubServer(token=TOKEN) as server:
        yield server


def test_huggingface_sync_resume_and_verify(hub, tmp_path):
    files = _files()
    repo = hub.add(HubRepo("deepseek-ai/Tiny", files))
    dest = str(tmp_path / "hf")
    src = HuggingFaceSource("deepseek-ai/Tiny", "main", hub.url, TOKEN, use_hf_transfer=False)
    revision, listing = src.listing()
    by = {f.path: f for f in listing}
    assert revision == repo.commit
    assert by["model-00001-of-00002.safetensors"].algo == "sha256"
    assert by["config.json"].algo == "git-sha1" and by["config.json"].digest == git_blob_sha1(files["config.json"])

    # a partial shard from an earlier run: resumed with a Range request
    staging = dest + ".llmfleet-staging"
    os.makedirs(staging)
    with open(os.path.join(staging, "model-00001-of-00002.safetensors.part"), "wb") as fh:
        fh.write(files["model-00001-of-00002.safetensors"][:100000])
    with open(os.path.join(staging, "model-00001-of-00002.safetensors.part.json"), "w") as fh:
        json.dump({"version": by["model-00001-of-00002.safetensors"].version,  # the lfs oid it came from
                   "size": len(files["model-00001-of-00002.safetensors"]), "mode": "stream"}, fh)
    result = SyncEngine(src, dest, concurrency=2).run()
    assert result["revision"] == repo.commit and result["files_fetched"] == 4
    assert result["bytes_fetched"] == sum(len(v) for v in files.values()) - 100000
    assert _tree(dest) == files
    assert ("GET", "/deepseek-ai/Tiny/resolve/%s/model-00001-of-00002.safetensors" % repo.commit,
            "bytes=100000-") in hub.requests
    state = json.load(open(os.path.join(dest, STATE_NAME)))
    assert state["revision"] == repo.commit
    assert state["files"]["model-00002-of-00002.safetensors"]["digest"] == \
        hashlib.sha256(files["model-00002-of-00002.safetensors"]).hexdigest()
    again = SyncEngine(HuggingFaceSource("deepseek-ai/Tiny", "main", hub.url, TOKEN, False), dest).run()
    assert again["changed"] is False and again["bytes_fetched"] == 0


def test_huggingface_corrupt_download_is_refused(hub, tmp_path):
    files = _files()
    repo = hub.add(HubRepo("org/Bad", files))
    bad = bytearray(files["model-00002-of-00002.safetensors"])
    bad[5] ^= 0xFF
    repo.served["model-00002-of-00002.safetensors"] = bytes(bad)
    dest = str(tmp_path / "bad")
    with pytest.raises(SyncError) as err:
        SyncEngine(HuggingFaceSource("org/Bad", None, hub.url, TOKEN, False), dest, retries=1).run()
    assert "model-00002-of-00002.safetensors" in str(err.value) and "does not match" in str(err.value)
    assert not os.path.exists(dest)
    repo.served["model-00002-of-00002.safetensors"] = files["model-00002-of-00002.safetensors"]  # fixed
    result = SyncEngine(HuggingFaceSource("org/Bad", None, hub.url, TOKEN, False), dest).run()
    # the three files staged by the failed run are published without a byte fetched again
    assert result["files_fetched"] == 1 and _tree(dest) == files


def test_huggingface_bad_token_clear_error(hub, tmp_path):
    hub.add(HubRepo("org/Gated", _files()))
    token_file = tmp_path / "token"
    token_file.write_text("hf_WRONGtokenXYZ123\n")
    src = make_source({"source": "huggingface", "repo_id": "org/Gated", "endpoint": hub.url,
                       "token_file": str(token_file)})
    with pytest.raises(SyncError) as err:
        SyncEngine(src, str(tmp_path / "g")).run()
    assert "refused access" in str(err.value) and "hf_WRONGtokenXYZ123" not in str(err.value)


def test_modelscope_sync_and_noop(hub, tmp_path, monkeypatch):
    files = _files()
    hub.add(HubRepo("Qwen/Tiny", files))
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "mscache"))
    hub.httpd.token = None  # ModelScope sends its token as a cookie; tested without one here
    dest = str(tmp_path / "ms")
    src = ModelScopeSource("Qwen/Tiny", "master", hub.url, None)
    revision, listing = src.listing()
    assert revision == "master" and {f.algo for f in listing} == {"sha256"}
    result = SyncEngine(src, dest, allow_patterns=["*.safetensors", "*.json"],
                        ignore_patterns=["tokenizer/*"]).run()
    assert result["files_fetched"] == 3
    assert _tree(dest) == {k: v for k, v in files.items() if not k.startswith("tokenizer/")}
    assert any(r[1].startswith("/api/v1/models/Qwen/Tiny/repo?") and "FilePath=config.json" in r[1]
               for r in hub.requests)
    again = SyncEngine(ModelScopeSource("Qwen/Tiny", "master", hub.url, None), dest,
                       allow_patterns=["*.safetensors", "*.json"], ignore_patterns=["tokenizer/*"]).run()
    assert again["changed"] is False and again["files_up_to_date"] == 3
