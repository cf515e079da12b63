# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""model_sync's engine against a real S3 API: moto's server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import zlib
import json
import os
import sys
from collections import namedtuple

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import CutProxy, moto_auth, moto_auth_off, start_moto  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_core  # noqa: E402
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import (  # noqa: E402
    STATE_NAME,
    SyncEngine,
    SyncError,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import S3Source  # noqa: E402

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def python_engine(monkeypatch):
    """These tests are about the Python transfer engine (ranges, resume, If-Match, the cut proxy):
    no s5cmd, as on a host without it (test_sync_s5cmd.py covers s5cmd)."""
    from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_s5cmd

    monkeypatch.setattr(_sync_s5cmd, "find_s5cmd", lambda explicit=None: None)


@pytest.fixture(scope="module")
def moto():
    server, endpoint = start_moto()
    yield endpoint
    server.stop()


def _client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def _upload(client, bucket, prefix, files, tmp_path):
    client.create_bucket(Bucket=bucket)
    for name, data in files.items():
        if len(data) > 5 * MiB:  # real multipart upload, 5 MiB parts
            local = tmp_path / "upload.bin"
            local.write_bytes(data)
            client.upload_file(str(local), bucket, prefix + name,
                               Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
        else:
            client.put_object(Bucket=bucket, Key=prefix + name, Body=data)


def _model(seed=1):
    rnd = __import__("random").Random(seed)
    return {
        "config.json": b'{"architectures": ["DeepseekV3ForCausalLM"]}',
        "tokenizer.json": bytes(rnd.getrandbits(8) for _i in range(3000)),
        "model-00001-of-000003.safetensors": os.urandom(2 * MiB + 123),
        "model-00002-of-000003.safetensors": os.urandom(MiB),
        "model-00003-of-000003.safetensors": os.urandom(11 * MiB + 7),  # multipart
        "sub/README.md": b"# hello\n",
    }


def _source(endpoint, bucket, prefix="m/", **kw):
    return S3Source(bucket, prefix, endpoint, "us-east-1", "path",
                    kw.pop("access_key", "test"), kw.pop("secret_key", "test"), **kw)


def _tree(path):
    out = {}
    for root, _dirs, names in os.walk(path):
        for n in names:
            full = os.path.join(root, n)
            rel = os.path.relpath(full, path)
            if rel != STATE_NAME:
                out[rel] = hashlib.sha256(open(full, "rb").read()).hexdigest()
    return out


def _expected(files):
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def test_cold_sync_then_noop_rerun_only_stats(moto, tmp_path, monkeypatch):
    files = _model()
    _upload(_client(moto), "cold", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    result = SyncEngine(_source(moto, "cold"), dest, concurrency=4).run()
    assert result["changed"] and result["files_fetched"] == 6
    assert result["bytes_fetched"] == sum(len(v) for v in files.values())
    assert _tree(dest) == _expected(files)
    state = json.load(open(os.path.join(dest, STATE_NAME)))
    assert state["complete"] is True
    big = state["files"]["model-00003-of-000003.safetensors"]
    assert big["algo"] == "s3-multipart" and big["digest"].endswith("-3") and big["part_size"] == 5 * MiB
    # boto3 uploads single-part objects with a CRC32 (S3 additional checksum): that is what is checked
    assert state["files"]["config.json"]["algo"] == "crc32"
    assert state["files"]["config.json"]["digest"] == "%08x" % zlib.crc32(files["config.json"])
    assert not os.path.exists(dest + ".llmfleet-staging")
    progress = json.load(open(dest + ".llmfleet-progress.json"))
    assert progress["phase"] == "done"

    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    again = SyncEngine(_source(moto, "cold"), dest).run()
    monkeypatch.undo()
    assert again["changed"] is False and again["files_fetched"] == 0 and again["bytes_fetched"] == 0
    assert again["files_up_to_date"] == 6
    assert [p for p in opened if p.startswith(dest + "/")] == [os.path.join(dest, STATE_NAME)]  # stat only


def test_cut_mid_file_resumes_to_identical_hashes(moto, tmp_path):
    files = {"model-00001-of-000001.safetensors": os.urandom(3 * MiB), "config.json": b"{}"}
    _upload(_client(moto), "cut", "m/", files, tmp_path)
    host, port = moto.rsplit("//", 1)[1].split(":")
    proxy = CutProxy(host, int(port), cut_after=MiB + 4321)
    dest = str(tmp_path / "pub")
    try:
        with pytest.raises(SyncError) as err:
            SyncEngine(_source(proxy.url, "cut"), dest, concurrency=1, retries=0).run()
        part = dest + ".llmfleet-staging/model-00001-of-000001.safetensors.part"
        kept = os.path.getsize(part)
        assert proxy.cuts == 1 and 0 < kept < 3 * MiB
        assert not os.path.exists(dest)  # nothing published
        result = SyncEngine(_source(proxy.url, "cut"), dest, concurrency=1, retries=0).run()
    finally:
        proxy.close()
    assert "kept" in str(err.value)
    assert result["bytes_fetched"] == 3 * MiB - kept  # only the rest (config.json was staged)
    assert _tree(dest) == _expected(files)


def test_cut_mid_file_retried_within_one_run(moto, tmp_path):
    files = {"a.safetensors": os.urandom(2 * MiB)}
    _upload(_client(moto), "retry", "m/", files, tmp_path)
    host, port = moto.rsplit("//", 1)[1].split(":")
    proxy = CutProxy(host, int(port), cut_after=700000)
    try:
        result = SyncEngine(_source(proxy.url, "retry"), str(tmp_path / "pub"), concurrency=1, retries=2).run()
    finally:
        proxy.close()
    assert proxy.cuts == 1 and result["bytes_fetched"] == 2 * MiB
    assert _tree(str(tmp_path / "pub")) == _expected(files)


def test_corrupted_published_file_detected_and_refetched(moto, tmp_path):
    files = _model(2)
    _upload(_client(moto), "corrupt", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    SyncEngine(_source(moto, "corrupt"), dest).run()
    victim = os.path.join(dest, "model-00001-of-000003.safetensors")
    st = os.stat(victim)
    with open(victim, "r+b") as fh:  # flip one byte, keep size and mtime: only a re-hash sees it
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    quick = SyncEngine(_source(moto, "corrupt"), dest).run()
    full = SyncEngine(_source(moto, "corrupt"), dest, verify="full").run()
    assert quick["files_fetched"] == 0  # verify: state trusts size + mtime
    assert full["fetched"] == ["model-00001-of-000003.safetensors"] and full["files_verified"] == 6
    assert _tree(dest) == _expected(files)
    # a touched file (mtime changed) is re-hashed even with verify: state
    with open(victim, "r+b") as fh:
        fh.write(b"XX")
    touched = SyncEngine(_source(moto, "corrupt"), dest).run()
    assert touched["fetched"] == ["model-00001-of-000003.safetensors"]
    assert _tree(dest) == _expected(files)


def test_corrupted_staged_part_is_refetched(moto, tmp_path):
    files = {"w.safetensors": os.urandom(MiB)}
    _upload(_client(moto), "badpart", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    staging = dest + ".llmfleet-staging"
    os.makedirs(staging)
    part = os.path.join(staging, "w.safetensors.part")
    with open(part, "wb") as fh:
        fh.write(b"garbage" * 1000)  # a partial file that is not a prefix of the object
    # no record of the object version it came from: discarded before the first byte
    result = SyncEngine(_source(moto, "badpart"), dest, retries=1).run()
    assert result["bytes_fetched"] == MiB and result["files_fetched"] == 1
    assert _tree(dest) == _expected(files)

    # recorded as coming from this very ETag, but corrupt: resumed, fails the hash, fetched whole
    etag = _client(moto).head_object(Bucket="badpart", Key="m/w.safetensors")["ETag"].strip('"')
    dest2 = str(tmp_path / "pub2")
    os.makedirs(dest2 + ".llmfleet-staging")
    part = os.path.join(dest2 + ".llmfleet-staging", "w.safetensors.part")
    with open(part, "wb") as fh:
        fh.write(b"garbage" * 1000)
    with open(part + ".json", "w") as fh:
        json.dump({"version": etag, "size": MiB, "mode": "stream"}, fh)
    result = SyncEngine(_source(moto, "badpart"), dest2, retries=1).run()
    assert result["bytes_fetched"] == (MiB - 7000) + MiB
    assert _tree(dest2) == _expected(files)


def test_partial_file_from_another_object_version_is_discarded(moto, tmp_path):
    client = _client(moto)
    old = os.urandom(MiB)
    _upload(client, "ver", "m/", {"w.safetensors": old}, tmp_path)
    etag = client.head_object(Bucket="ver", Key="m/w.safetensors")["ETag"].strip('"')
    dest = str(tmp_path / "pub")
    os.makedirs(dest + ".llmfleet-staging")
    part = os.path.join(dest + ".llmfleet-staging", "w.safetensors.part")
    with open(part, "wb") as fh:
        fh.write(old[:MiB // 2])  # a true prefix of the old version...
    with open(part + ".json", "w") as fh:
        json.dump({"version": etag, "size": MiB, "mode": "stream"}, fh)
    new = os.urandom(MiB)
    client.put_object(Bucket="ver", Key="m/w.safetensors", Body=new)  # ...but the object changed since
    result = SyncEngine(_source(moto, "ver"), dest, retries=0).run()
    assert result["bytes_fetched"] == MiB  # nothing of the old version kept
    assert _tree(dest) == _expected({"w.safetensors": new})


def test_ranged_parallel_download_verifies_multipart_and_md5(moto, tmp_path):
    files = _model(7)
    _upload(_client(moto), "ranged", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    calls = []
    real = S3Source.fetch_range

    def spy(self, rf, start, end, sink):
        calls.append((rf.path, start, end))
        return real(self, rf, start, end, sink)

    S3Source.fetch_range = spy
    try:
        result = SyncEngine(_source(moto, "ranged"), dest, range_size=2 * MiB, range_threshold=2 * MiB,
                            connections=4).run()
    finally:
        S3Source.fetch_range = real
    assert _tree(dest) == _expected(files)
    assert result["files_fetched"] == len(files) and result["bytes_fetched"] == sum(map(len, files.values()))
    # the multipart shard in ranges cut on its 5 MiB parts, the 2 MiB single-part one in 2 MiB ranges
    big = sorted((s, e) for p, s, e in calls if p == "model-00003-of-000003.safetensors")
    assert big == [(0, 5 * MiB), (5 * MiB, 10 * MiB), (10 * MiB, 11 * MiB + 7)]
    one = sorted((s, e) for p, s, e in calls if p == "model-00001-of-000003.safetensors")
    assert one == [(0, 2 * MiB), (2 * MiB, 2 * MiB + 123)]
    state = json.load(open(os.path.join(dest, STATE_NAME)))["files"]
    assert state["model-00003-of-000003.safetensors"]["algo"] == "s3-multipart"
    assert not os.path.exists(dest + ".llmfleet-staging")


@pytest.mark.parametrize("name", ["model-00003-of-000003.safetensors", "model-00001-of-000003.safetensors"])
def test_ranged_download_cut_resumes_only_missing_ranges(moto, tmp_path, monkeypatch, name):
    files = _model(8)
    bucket = "rcut-" + name[6:11]
    _upload(_client(moto), bucket, "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    real = S3Source.fetch_range

    def cut(self, rf, start, end, sink):
        if rf.path == name and start > 0:
            real(self, rf, start, start + (end - start) // 2, sink)  # half a range, then the line drops
            raise ConnectionResetError("connection reset by peer")
        return real(self, rf, start, end, sink)

    monkeypatch.setattr(S3Source, "fetch_range", cut)
    with pytest.raises(SyncError) as err:
        SyncEngine(_source(moto, bucket), dest, range_size=2 * MiB, range_threshold=2 * MiB, retries=0).run()
    assert "kept in" in str(err.value)
    assert not os.path.exists(dest)  # nothing published
    meta = json.load(open(os.path.join(dest + ".llmfleet-staging", name + ".part.json")))
    assert meta["mode"] == "ranges" and list(meta["done"]) == ["0"]
    monkeypatch.undo()
    result = SyncEngine(_source(moto, bucket), dest, range_size=2 * MiB, range_threshold=2 * MiB).run()
    assert _tree(dest) == _expected(files)
    kept = meta["chunk"]
    assert result["bytes_fetched"] == len(files[name]) - kept  # the first range was not fetched again
    assert result["files_fetched"] == 1


def test_ranges_left_by_a_cut_resume_as_one_stream_from_their_leading_run(moto, tmp_path, monkeypatch):
    """A part that ranged GETs left with ranges 0 and 2 done, resumed by one GET (a re-run with
    ``connections: 1``, or a source that stopped serving ranges): the part is cut after range 0
    and the stream fetches the rest, once, verified; not the whole file again."""
    name = "model-00003-of-000003.safetensors"  # 11 MiB + 7, multipart: ranges on its 5 MiB parts
    files = _model(9)
    _upload(_client(moto), "rstream", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    real = S3Source.fetch_range

    def cut(self, rf, start, end, sink):
        if rf.path == name and start == 5 * MiB:
            raise ConnectionResetError("connection reset by peer")
        return real(self, rf, start, end, sink)

    monkeypatch.setattr(S3Source, "fetch_range", cut)
    with pytest.raises(SyncError):
        SyncEngine(_source(moto, "rstream"), dest, range_size=2 * MiB, range_threshold=2 * MiB, retries=0).run()
    meta = json.load(open(os.path.join(dest + ".llmfleet-staging", name + ".part.json")))
    assert meta["mode"] == "ranges" and sorted(meta["done"], key=int) == ["0", "2"]
    monkeypatch.undo()
    result = SyncEngine(_source(moto, "rstream"), dest, connections=1, retries=0).run()  # one GET a file
    assert _tree(dest) == _expected(files)
    assert result["bytes_fetched"] == len(files[name]) - 5 * MiB  # range 0 kept, the rest streamed once


def test_disk_full_leaves_published_model_untouched(moto, tmp_path, monkeypatch):
    old = _model(3)
    client = _client(moto)
    _upload(client, "full", "m/", old, tmp_path)
    dest = str(tmp_path / "pub")
    SyncEngine(_source(moto, "full"), dest).run()
    before = _tree(dest)
    state_before = open(os.path.join(dest, STATE_NAME)).read()
    client.put_object(Bucket="full", Key="m/model-00002-of-000003.safetensors", Body=os.urandom(3 * MiB))

    Vfs = namedtuple("Vfs", "f_bavail f_frsize")
    monkeypatch.setattr(_sync_core.os, "statvfs", lambda p: Vfs(f_bavail=256, f_frsize=4096))  # 1 MiB free
    with pytest.raises(SyncError) as err:
        SyncEngine(_source(moto, "full"), dest, free_space_margin=MiB).run()
    msg = str(err.value)
    assert dest + ".llmfleet-staging" in msg
    assert "short by 3.0 MiB (%d bytes)" % (3 * MiB) in msg
    assert _tree(dest) == before and open(os.path.join(dest, STATE_NAME)).read() == state_before
    assert not os.path.exists(dest + ".llmfleet-staging")  # not a byte written


def test_interrupted_update_never_half_publishes(moto, tmp_path, monkeypatch):
    old = _model(4)
    client = _client(moto)
    _upload(client, "half", "m/", old, tmp_path)
    dest = str(tmp_path / "pub")
    SyncEngine(_source(moto, "half"), dest).run()
    before = _tree(dest)
    client.put_object(Bucket="half", Key="m/config.json", Body=b'{"v": 2}')
    client.put_object(Bucket="half", Key="m/model-00002-of-000003.safetensors", Body=os.urandom(MiB))
    real_fetch = S3Source.fetch

    def failing(self, rf, offset, sink):
        if rf.path == "config.json":
            raise ConnectionResetError("connection reset by peer")
        return real_fetch(self, rf, offset, sink)

    monkeypatch.setattr(S3Source, "fetch", failing)
    with pytest.raises(SyncError):
        SyncEngine(_source(moto, "half"), dest, retries=0).run()
    assert _tree(dest) == before  # the shard that did arrive is staged, not published
    monkeypatch.undo()
    result = SyncEngine(_source(moto, "half"), dest).run()
    # the shard staged by the failed run is published without a byte fetched: not counted as fetched
    assert result["files_fetched"] == 1 and result["bytes_fetched"] == len(b'{"v": 2}')
    assert json.load(open(os.path.join(dest, "config.json"))) == {"v": 2}


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_wrong_credentials_clear_error_without_secret(tmp_path, wrong):
    server, endpoint = start_moto()
    try:
        key, secret = moto_auth(endpoint)
        good = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret)
        good.create_bucket(Bucket="auth")
        good.put_object(Bucket="auth", Key="m/config.json", Body=b"{}")
        bad_secret = "WRONGsecret/" + secret[:20]
        bad_key = "AKIAWRONGKEY0000" if wrong == "key" else key
        src = _source(endpoint, "auth", access_key=bad_key, secret_key=bad_secret)
        with pytest.raises(SyncError) as err:
            SyncEngine(src, str(tmp_path / "pub")).run()
        ok = SyncEngine(_source(endpoint, "auth", access_key=key, secret_key=secret), str(tmp_path / "ok")).run()
    finally:
        moto_auth_off()
        server.stop()
    msg = str(err.value)
    assert "credentials rejected" in msg and "s3://auth/m/" in msg
    assert ("InvalidAccessKeyId" if wrong == "key" else "SignatureDoesNotMatch") in msg
    assert bad_secret not in msg and secret not in msg
    assert ok["files_fetched"] == 1
    assert not os.path.exists(str(tmp_path / "pub"))


def test_multipart_etag_without_part_size_falls_back_to_size(moto, tmp_path, monkeypatch):
    files = {"big.safetensors": os.urandom(11 * MiB)}
    _upload(_client(moto), "nopart", "m/", files, tmp_path)
    src = _source(moto, "nopart")
    monkeypatch.setattr(src.client, "head_object", lambda **kw: (_x for _x in ()).throw(RuntimeError("no")))
    dest = str(tmp_path / "pub")
    SyncEngine(src, dest).run()
    entry = json.load(open(os.path.join(dest, STATE_NAME)))["files"]["big.safetensors"]
    assert entry["algo"] == "etag-multipart"
    assert entry["digest"] == hashlib.sha256(files["big.safetensors"]).hexdigest()
    assert _tree(dest) == _expected(files)


def test_filters_check_mode_and_bandwidth(moto, tmp_path):
    files = _model(5)
    _upload(_client(moto), "filt", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    plan = SyncEngine(_source(moto, "filt"), dest, check_mode=True, allow_patterns=["*.json", "*.md"],
                      ignore_patterns=["tokenizer*"]).run()
    assert plan["files_to_fetch"] == ["config.json", "sub/README.md"] and plan["changed"]
    assert not os.path.exists(dest) and not os.path.exists(dest + ".llmfleet-progress.json")
    eng = SyncEngine(_source(moto, "filt"), dest, allow_patterns=["model-00002*"], bandwidth_limit=2 * MiB)
    # The limiter's own timeline (no wall-clock bound): a clock that moves only when it sleeps.
    now, slept = [0.0], []
    eng.limiter = _sync_core.Limiter(2 * MiB, clock=lambda: now[0],
                                     sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    eng.run()
    assert sum(slept) == pytest.approx(0.5)  # 1 MiB at 2 MiB/s
    assert sorted(_tree(dest)) == ["model-00002-of-000003.safetensors"]


@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32C", None])
def test_store_checksums_replace_md5_and_join_across_ranges(moto, tmp_path, algorithm):
    """A full-object CRC from the store (HEAD ChecksumMode=ENABLED) is the check, also when the
    file comes in ranges (their CRCs combined); without one, md5 (the ETag)."""
    client = _client(moto)
    bucket = "crc-%s" % (algorithm or "none").lower()
    client.create_bucket(Bucket=bucket)
    data = os.urandom(3 * MiB + 5)
    extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    plain = boto3.client("s3", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="test",
                         aws_secret_access_key="test",
                         config=__import__("botocore.config").config.Config(
                             request_checksum_calculation="when_required"))
    (client if algorithm else plain).put_object(Bucket=bucket, Key="m/w.safetensors", Body=data, **extra)
    dest = str(tmp_path / "pub")
    SyncEngine(_source(moto, bucket), dest, range_size=MiB, range_threshold=MiB).run()
    entry = json.load(open(os.path.join(dest, STATE_NAME)))["files"]["w.safetensors"]
    assert _tree(dest) == _expected({"w.safetensors": data})
    if algorithm:
        from awscrt import checksums
        assert entry["algo"] == algorithm.lower()
        assert entry["digest"] == ("%016x" if algorithm == "CRC64NVME" else "%08x") % getattr(
            checksums, algorithm.lower())(data)
    else:
        assert entry["algo"] == "md5" and entry["digest"] == hashlib.md5(data).hexdigest()
    # a corrupted published byte is found by verify: full with the same check, and fetched again
    with open(os.path.join(dest, "w.safetensors"), "r+b") as fh:
        fh.seek(MiB + 3)
        byte = fh.read(1)
        fh.seek(MiB + 3)
        fh.write(bytes([byte[0] ^ 1]))
    res = SyncEngine(_source(moto, bucket), dest, verify="full", range_size=MiB, range_threshold=MiB).run()
    assert res["files_fetched"] == 1 and _tree(dest) == _expected({"w.safetensors": data})


# ---------------------------------------------------------------------------------------
# Alibaba OSS: every object carries its CRC-64/XZ (x-oss-hash-crc64ecma); its ETag is an md5
# only for PutObject (multipart, append and copy give another value)
# ---------------------------------------------------------------------------------------
def _oss_client(endpoint):
    from botocore.config import Config

    # OSS stores no S3 additional checksum: upload without one, as an OSS SDK would
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test", config=Config(request_checksum_calculation="when_required"))


@pytest.fixture
def oss(moto, monkeypatch):
    """moto answering HEAD as OSS does: ``x-oss-hash-crc64ecma``, the whole object's CRC-64/XZ as
    an unsigned decimal. ``oss.wrong`` names keys whose published CRC is off by one."""
    fastcrc = pytest.importorskip("fastcrc")
    from moto.s3 import responses

    real = responses.S3Response.head_object
    wrong = set()

    def head(self, bucket_name, query, key_name, headers):
        status, out, body = real(self, bucket_name, query, key_name, headers)
        if status in (200, 206) and not query.get("partNumber"):
            crc = fastcrc.crc64.xz(self.backend.head_object(bucket_name, key_name).value)
            out["x-oss-hash-crc64ecma"] = str((crc + 1) % (1 << 64) if key_name in wrong else crc)
        return status, out, body

    monkeypatch.setattr(responses.S3Response, "head_object", head)
    return namedtuple("Oss", "endpoint wrong")(moto, wrong)


def _opaque_etag(bucket, key):
    """Give a stored object an ETag that is no md5 of its parts (as OSS's multipart ETags are)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    obj = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[bucket].keys[key]
    obj._etag = hashlib.md5(b"not the parts").hexdigest().upper() + "-3"


def test_oss_objects_are_verified_by_their_crc64_not_their_etag(oss, tmp_path):
    files = _model(21)
    _upload(_oss_client(oss.endpoint), "oss-crc", "m/", files, tmp_path)
    _opaque_etag("oss-crc", "m/model-00003-of-000003.safetensors")  # an md5-of-parts check would refuse it
    dest = str(tmp_path / "pub")
    result = SyncEngine(_source(oss.endpoint, "oss-crc"), dest, range_size=2 * MiB, range_threshold=2 * MiB,
                        connections=4).run()
    assert _tree(dest) == _expected(files)
    state = json.load(open(os.path.join(dest, STATE_NAME)))["files"]
    assert set(e["algo"] for e in state.values()) == {"crc64ecma"}
    import fastcrc

    for name, data in files.items():
        assert state[name]["digest"] == "%016x" % fastcrc.crc64.xz(data)
    again = SyncEngine(_source(oss.endpoint, "oss-crc"), dest).run()  # a re-run only stats
    assert again["files_fetched"] == 0 and not again["changed"]


def test_oss_crc64_that_does_not_match_the_bytes_is_refused(oss, tmp_path):
    files = {"model.safetensors": os.urandom(3 * MiB + 5), "config.json": b"{}"}
    _upload(_oss_client(oss.endpoint), "oss-bad", "m/", files, tmp_path)
    oss.wrong.add("m/model.safetensors")
    dest = str(tmp_path / "pub")
    with pytest.raises(SyncError, match=r"model\.safetensors: crc64ecma [0-9a-f]{16} does not match"):
        SyncEngine(_source(oss.endpoint, "oss-bad"), dest, retries=1).run()
    assert not os.path.exists(dest)  # nothing published


def test_without_fastcrc_an_oss_object_falls_back_to_its_etag(oss, tmp_path, monkeypatch):
    monkeypatch.setattr(_sync_core, "_fastcrc", None)
    files = {"model.safetensors": os.urandom(MiB + 1)}
    _upload(_oss_client(oss.endpoint), "oss-nofc", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    SyncEngine(_source(oss.endpoint, "oss-nofc"), dest).run()
    state = json.load(open(os.path.join(dest, STATE_NAME)))["files"]
    assert state["model.safetensors"]["algo"] == "md5"


@pytest.mark.parametrize("value", ["", " ", "-1", "12a", "1.5", str(1 << 64), "nan", None, "٣"])
def test_a_malformed_oss_crc64_header_is_ignored(value):
    from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import oss_crc64

    head = {"ResponseMetadata": {"HTTPHeaders": {} if value is None else {"x-oss-hash-crc64ecma": value}}}
    assert oss_crc64(head) is None
    assert oss_crc64({}) is None
    assert oss_crc64({"ResponseMetadata": {"HTTPHeaders": {"x-oss-hash-crc64ecma": "5"}}}) == "0000000000000005"
