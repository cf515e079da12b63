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
from hub_server import CdnServer, HubRepo, HubServer, git_blob_sha1  # noqa: E402

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


# ---------------------------------------------------------------------------------------
# ranged downloads (fetch_range): files >= range_threshold in 1 MiB ranges over 4 connections
# ---------------------------------------------------------------------------------------
MiB = 1024 * 1024
BIG = "model-00001-of-00001.safetensors"
RANGED = {"range_size": MiB, "range_threshold": 2 * MiB, "connections": 4}


def _big_files():
    return {"config.json": b'{"model_type": "qwen2"}', BIG: os.urandom(5 * MiB + 3)}


def _ranges(server, fname=None):
    """The data ranges (not the 1-byte probe) a server answered, in order of arrival."""
    return [r for r in server.seen if r["range"] and r["range"] != "bytes=0-0"
            and (fname is None or fname in r["path"] or "/blobs/" in r["path"])]


@pytest.fixture
def cdn():
    with CdnServer() as server:
        yield server


@pytest.fixture
def hub_cdn(monkeypatch, cdn):
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    with HubServer(token=TOKEN, cdn=cdn) as server:
        yield server


@pytest.mark.parametrize("proxied", [False, True], ids=["http.client", "library-session"])
def test_huggingface_ranged_download_through_redirect_no_token_cross_host(hub_cdn, cdn, tmp_path, monkeypatch,
                                                                          proxied):
    """The ranges go over stdlib connections, or over huggingface_hub's own session where a
    proxy applies to the URL (forced here: no proxy is reachable from a unit test)."""
    from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_sources

    monkeypatch.setattr(_sync_sources._RawHttp, "proxied", staticmethod(lambda url: proxied))
    files = _big_files()
    hub_cdn.add(HubRepo("org/Big", files))
    dest = str(tmp_path / "big")
    src = HuggingFaceSource("org/Big", "main", hub_cdn.url, TOKEN, use_hf_transfer=False)
    result = SyncEngine(src, dest, **RANGED).run()
    assert _tree(dest) == files and result["files_fetched"] == 2
    state = json.load(open(os.path.join(dest, STATE_NAME)))
    assert state["files"][BIG]["digest"] == hashlib.sha256(files[BIG]).hexdigest()
    # 6 ranges of 1 MiB from the CDN (another origin): none carried the token
    got = sorted(r["range"] for r in _ranges(cdn))
    assert got == sorted("bytes=%d-%d" % (i * MiB, min(len(files[BIG]), (i + 1) * MiB) - 1) for i in range(6))
    assert cdn.seen and all(r["authorization"] is None and r["cookie"] is None for r in cdn.seen)
    # the hub itself got the token, and was asked for the big file once (the redirect resolved once)
    resolves = [r for r in hub_cdn.seen if BIG in r["path"]]
    assert len(resolves) == 1 and resolves[0]["authorization"] == "Bearer " + TOKEN


def test_huggingface_ranged_resume_fetches_only_missing_ranges(hub_cdn, cdn, tmp_path):
    files = _big_files()
    hub_cdn.add(HubRepo("org/Cut", files))
    dest = str(tmp_path / "cut")
    cdn.httpd.fail_from = 3 * MiB  # ranges from byte 3 MiB on fail: the run stops, 3 ranges kept
    with pytest.raises(SyncError) as err:
        SyncEngine(HuggingFaceSource("org/Cut", None, hub_cdn.url, TOKEN, False), dest, retries=0, **RANGED).run()
    assert BIG in str(err.value) and TOKEN not in str(err.value)
    meta = json.load(open(os.path.join(dest + ".llmfleet-staging", BIG + ".part.json")))
    assert meta["mode"] == "ranges" and sorted(meta["done"]) == ["0", "1", "2"]
    assert meta["version"] == hashlib.sha256(files[BIG]).hexdigest()
    cdn.httpd.fail_from = None
    del cdn.seen[:]
    result = SyncEngine(HuggingFaceSource("org/Cut", None, hub_cdn.url, TOKEN, False), dest, **RANGED).run()
    assert _tree(dest) == files
    want = ["bytes=%d-%d" % (3 * MiB, 4 * MiB - 1), "bytes=%d-%d" % (4 * MiB, 5 * MiB - 1),
            "bytes=%d-%d" % (5 * MiB, 5 * MiB + 2)]
    assert sorted(r["range"] for r in _ranges(cdn)) == want
    assert result["bytes_fetched"] == len(files[BIG]) - 3 * MiB  # config.json was staged by the first run


def test_huggingface_corrupt_range_is_refused(hub_cdn, cdn, tmp_path):
    files = _big_files()
    repo = hub_cdn.add(HubRepo("org/Rot", files))
    bad = bytearray(files[BIG])
    bad[2 * MiB + 17] ^= 0x01  # one bit in the third range
    repo.served[BIG] = bytes(bad)
    dest = str(tmp_path / "rot")
    with pytest.raises(SyncError) as err:
        SyncEngine(HuggingFaceSource("org/Rot", None, hub_cdn.url, TOKEN, False), dest, retries=1, **RANGED).run()
    assert BIG in str(err.value) and "does not match" in str(err.value)
    assert not os.path.exists(dest)


def test_huggingface_wrong_content_range_is_refused(hub_cdn, cdn, tmp_path):
    hub_cdn.add(HubRepo("org/Shift", _big_files()))
    cdn.httpd.bad_content_range = True
    with pytest.raises(SyncError) as err:
        SyncEngine(HuggingFaceSource("org/Shift", None, hub_cdn.url, TOKEN, False), str(tmp_path / "s"),
                   retries=0, **RANGED).run()
    assert BIG in str(err.value) and "Content-Range" in str(err.value)


def test_huggingface_server_ignoring_range_is_streamed(hub_cdn, cdn, tmp_path):
    """A server that answers 200 (the whole file) to a Range request: the source stops asking
    for ranges and the engine fetches the file as one stream, verified."""
    files = _big_files()
    hub_cdn.add(HubRepo("org/NoRange", files))
    cdn.httpd.ignore_range = True
    dest = str(tmp_path / "nr")
    src = HuggingFaceSource("org/NoRange", None, hub_cdn.url, TOKEN, False)
    result = SyncEngine(src, dest, retries=1, **RANGED).run()
    assert src.ranges is False and _tree(dest) == files
    assert result["bytes_fetched"] == sum(len(v) for v in files.values())
    assert all(r["authorization"] is None for r in cdn.seen)


def test_huggingface_file_replaced_mid_download_is_refused(hub, tmp_path):
    """The hub starts serving other bytes (new ETags) after two ranges: the next range is
    refused naming the file, and a new attempt is refused because the hub's version is not
    the listed one."""
    files = _big_files()
    repo = hub.add(HubRepo("org/Moving", files))
    repo.change[BIG] = [2, os.urandom(len(files[BIG]))]
    dest = str(tmp_path / "mv")
    with pytest.raises(SyncError) as err:
        SyncEngine(HuggingFaceSource("org/Moving", None, hub.url, TOKEN, False), dest, retries=0,
                   range_size=MiB, range_threshold=2 * MiB, connections=1 + 1).run()
    assert BIG in str(err.value) and "changed on the server" in str(err.value)
    with pytest.raises(SyncError) as err:
        SyncEngine(HuggingFaceSource("org/Moving", None, hub.url, TOKEN, False), dest, retries=0, **RANGED).run()
    assert BIG in str(err.value) and "the listing of commit" in str(err.value)
    assert not os.path.exists(dest)


def test_huggingface_hf_transfer_gets_resolved_url_without_token(hub_cdn, cdn, tmp_path):
    """hf_transfer is handed the URL at the end of the redirects, with no token for the CDN.
    (A stand-in records the call and fetches with requests: the real hf_transfer holds the GIL
    for the whole download, so it cannot reach a server running in this test's own process.)"""
    import requests

    calls = []

    class FakeHfTransfer(object):
        @staticmethod
        def download(url, filename, max_files, chunk_size, headers, callback):
            calls.append((url, dict(headers)))
            body = requests.get(url, headers=headers, timeout=30).content
            with open(filename, "wb") as fh:
                fh.write(body)
            callback(len(body))

    files = {"config.json": b"{}", BIG: os.urandom(17 * MiB)}
    hub_cdn.add(HubRepo("org/Rust", files))
    dest = str(tmp_path / "rust")
    src = HuggingFaceSource("org/Rust", None, hub_cdn.url, TOKEN, use_hf_transfer=False)
    src.hf_transfer, src.ranges = FakeHfTransfer, False  # the whole-file path
    SyncEngine(src, dest, connections=4).run()
    assert _tree(dest) == files
    assert len(calls) == 1 and calls[0][0].startswith(cdn.url + "/blobs/")
    assert not any(k.lower() in ("authorization", "cookie") for k in calls[0][1])
    assert cdn.seen and all(r["authorization"] is None for r in cdn.seen)
    # a CDN that ignores Range: hf_transfer is not called, the file streams in Python, verified
    cdn.httpd.ignore_range = True
    del calls[:]
    dest2 = str(tmp_path / "rust2")
    src = HuggingFaceSource("org/Rust", None, hub_cdn.url, TOKEN, use_hf_transfer=False)
    src.hf_transfer, src.ranges = FakeHfTransfer, False
    SyncEngine(src, dest2, connections=4, retries=0).run()
    assert _tree(dest2) == files and calls == []


def test_modelscope_ranged_redirect_resume_and_no_range(hub_cdn, cdn, tmp_path, monkeypatch):
    files = _big_files()
    hub_cdn.add(HubRepo("Qwen/Big", files))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "mscache"))
    hub_cdn.httpd.token = None  # listing without a token (the cookie path is modelscope's own)
    dest = str(tmp_path / "msbig")
    src = ModelScopeSource("Qwen/Big", "master", hub_cdn.url, "ms-TOKENsecret1234")
    cdn.httpd.fail_from = 4 * MiB
    with pytest.raises(SyncError):
        SyncEngine(src, dest, retries=0, **RANGED).run()
    cdn.httpd.fail_from = None
    del cdn.seen[:]
    result = SyncEngine(ModelScopeSource("Qwen/Big", "master", hub_cdn.url, "ms-TOKENsecret1234"), dest,
                        **RANGED).run()
    assert _tree(dest) == files
    want = ["bytes=%d-%d" % (4 * MiB, 5 * MiB - 1), "bytes=%d-%d" % (5 * MiB, 5 * MiB + 2)]
    assert sorted(r["range"] for r in _ranges(cdn)) == want
    assert result["bytes_fetched"] == MiB + 3
    # the token went to the ModelScope endpoint (Bearer and cookie), never to the CDN
    assert any(r["authorization"] == "Bearer ms-TOKENsecret1234" for r in hub_cdn.seen)
    assert cdn.seen and all(r["authorization"] is None and r["cookie"] is None for r in cdn.seen)


def test_modelscope_ranged_direct_corrupt_and_no_range(hub, tmp_path, monkeypatch):
    files = _big_files()
    repo = hub.add(HubRepo("Qwen/Direct", files))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "mscache"))
    hub.httpd.token = None
    bad = bytearray(files[BIG])
    bad[-1] ^= 0x80
    repo.served[BIG] = bytes(bad)
    with pytest.raises(SyncError) as err:
        SyncEngine(ModelScopeSource("Qwen/Direct", "master", hub.url, None), str(tmp_path / "c"), retries=0,
                   **RANGED).run()
    assert BIG in str(err.value) and "does not match" in str(err.value)
    repo.served[BIG] = files[BIG]
    hub.httpd.ignore_range = True
    src = ModelScopeSource("Qwen/Direct", "master", hub.url, None)
    SyncEngine(src, str(tmp_path / "d"), retries=1, **RANGED).run()
    assert src.ranges is False and _tree(str(tmp_path / "d")) == files


def test_raw_http_leaves_proxied_urls_to_the_library(monkeypatch):
    from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import _RawHttp

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not _RawHttp.proxied("https://cdn-lfs.hf.co/x")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert _RawHttp.proxied("https://cdn-lfs.hf.co/x")
    monkeypatch.setenv("NO_PROXY", "hf.co")
    assert not _RawHttp.proxied("https://cdn-lfs.hf.co/x")


def test_hf_transfer_only_when_asked_for(hub, tmp_path, monkeypatch):
    """Not set: the ranged engine even where hf_transfer is installed; true: hf_transfer for
    whole files when installed (ranges off), the ranged engine when it is not."""
    import types

    monkeypatch.setitem(sys.modules, "hf_transfer", types.ModuleType("hf_transfer"))
    base = {"source": "huggingface", "repo_id": "org/X", "endpoint": hub.url, "token": TOKEN}
    default = make_source(dict(base))
    assert default.hf_transfer is None and default.ranges is True
    assert make_source(dict(base, hf_transfer=False)).hf_transfer is None
    asked = make_source(dict(base, hf_transfer=True))
    assert asked.hf_transfer is sys.modules["hf_transfer"] and asked.ranges is False
    monkeypatch.setitem(sys.modules, "hf_transfer", None)  # not installed: import fails
    missing = make_source(dict(base, hf_transfer=True))
    assert missing.hf_transfer is None and missing.ranges is True


def test_huggingface_streamed_file_resumes_on_the_cdn_without_token(hub_cdn, cdn, tmp_path):
    """``connections: 1`` (one GET per file): a kept prefix is resumed with Range on the URL
    the redirect resolved to, without the token."""
    files = _big_files()
    repo = hub_cdn.add(HubRepo("org/One", files))
    dest = str(tmp_path / "one")
    staging = dest + ".llmfleet-staging"
    os.makedirs(staging)
    with open(os.path.join(staging, BIG + ".part"), "wb") as fh:
        fh.write(files[BIG][:777777])
    with open(os.path.join(staging, BIG + ".part.json"), "w") as fh:
        json.dump({"version": repo.sha256[BIG], "size": len(files[BIG]), "mode": "stream"}, fh)
    result = SyncEngine(HuggingFaceSource("org/One", None, hub_cdn.url, TOKEN), dest, connections=1).run()
    assert _tree(dest) == files and result["bytes_fetched"] == sum(len(v) for v in files.values()) - 777777
    assert "bytes=777777-" in [r["range"] for r in cdn.seen]
    assert all(r["authorization"] is None and r["cookie"] is None for r in cdn.seen)
