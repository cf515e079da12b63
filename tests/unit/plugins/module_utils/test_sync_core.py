# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""model_sync engine pieces, and the local / peer (rsync) sources between two directories."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_core
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import (
    STATE_NAME,
    Limiter,
    Progress,
    RemoteFile,
    SyncEngine,
    SyncError,
    _MultipartHasher,
    parse_size,
    safe_rel,
    same_filesystem,
    select,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import (
    LocalSource,
    PeerSource,
    make_source,
)


def test_parse_size():
    assert parse_size("0") == 0 and parse_size(None) == 0 and parse_size(512) == 512
    assert parse_size("100M") == 100 * 1024 ** 2 and parse_size("1.5G") == int(1.5 * 1024 ** 3)
    assert parse_size("2GiB") == 2 * 1024 ** 3 and parse_size("10KB") == 10240
    with pytest.raises(SyncError):
        parse_size("lots")


def test_multipart_hasher_matches_s3_rule():
    data = os.urandom(2500)
    parts = [data[i:i + 1000] for i in range(0, 2500, 1000)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    h = _MultipartHasher(1000)
    for i in range(0, 2500, 333):  # chunks that straddle part boundaries
        h.update(data[i:i + 333])
    assert h.hexdigest() == expected


def test_select_and_safe_rel():
    files = [RemoteFile(p, 1) for p in ("a.safetensors", "sub/b.json", "README.md", STATE_NAME, "tokenizer.model")]
    assert [f.path for f in select(files, ["*.safetensors", "*.json", "tokenizer*"], ["sub/*"])] == \
        ["a.safetensors", "tokenizer.model"]
    assert [f.path for f in select(files)] == ["a.safetensors", "sub/b.json", "README.md", "tokenizer.model"]
    for bad in ("../etc/passwd", "/abs", "a/../../b"):
        with pytest.raises(SyncError):
            safe_rel(bad)


def test_limiter_waits_for_the_rate():
    now = [0.0]
    slept = []
    lim = Limiter(1000, clock=lambda: now[0], sleep=slept.append)
    lim.consume(500)
    lim.consume(1500)
    assert slept == [0.5, 2.0]
    Limiter(0, sleep=slept.append).consume(10 ** 9)
    assert len(slept) == 2


def _make_src(root, files):
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


FILES = {"config.json": b"{}", "model-00001-of-00002.safetensors": os.urandom(70000),
         "model-00002-of-00002.safetensors": os.urandom(50000), "sub/t.json": b"[1]"}


def test_local_then_peer_between_directories(tmp_path):
    _make_src(str(tmp_path / "src"), FILES)
    first = str(tmp_path / "first")
    r1 = SyncEngine(LocalSource(str(tmp_path / "src")), first, warm_up=True).run()
    assert r1["files_fetched"] == 4 and r1["warmed_bytes"] == sum(len(v) for v in FILES.values())
    state = json.load(open(os.path.join(first, STATE_NAME)))
    assert state["files"]["sub/t.json"]["digest"] == hashlib.sha256(b"[1]").hexdigest()

    second = str(tmp_path / "second")
    peer = PeerSource(first)
    r2 = SyncEngine(peer, second).run()
    assert r2["files_fetched"] == 4 and r2["files_verified"] == 4
    assert json.load(open(os.path.join(second, STATE_NAME)))["files"].keys() == state["files"].keys()
    for rel, data in FILES.items():
        assert open(os.path.join(second, rel), "rb").read() == data
    assert SyncEngine(PeerSource(first), second).run()["changed"] is False


def test_peer_over_remote_shell_and_corrupt_peer_copy(tmp_path):
    """rsync host:path through a remote-shell program (a stand-in for ssh that runs the
    command locally), as between two lab hosts; a peer whose bytes differ from its state is refused."""
    _make_src(str(tmp_path / "src"), FILES)
    first = str(tmp_path / "first")
    SyncEngine(LocalSource(str(tmp_path / "src")), first).run()
    fake_ssh = tmp_path / "fake-ssh"
    log = tmp_path / "ssh.log"
    fake_ssh.write_text('#!/bin/sh\n# args: [-o opt|-p port|-i key|-l user]... host command...\n'
                        'echo "$@" >> %s\n'
                        'while [ "$1" = "-o" ] || [ "$1" = "-p" ] || [ "$1" = "-i" ] || [ "$1" = "-l" ]; do shift 2; done\n'
                        'shift\nexec sh -c "$*"\n' % log)
    fake_ssh.chmod(fake_ssh.stat().st_mode | stat.S_IXUSR)
    src = make_source({"source": "peer", "peer_host": "gpu-a", "peer_user": "llm", "peer_path": first,
                       "peer_ssh_command": str(fake_ssh), "peer_port": 2222})
    second = str(tmp_path / "second")
    result = SyncEngine(src, second, bandwidth_limit=50 * 1024 * 1024).run()
    assert result["files_fetched"] == 4
    assert "-o BatchMode=yes -p 2222 -l llm gpu-a rsync --server" in log.read_text()
    for rel, data in FILES.items():
        assert open(os.path.join(second, rel), "rb").read() == data

    victim = os.path.join(first, "model-00002-of-00002.safetensors")
    st = os.stat(victim)
    with open(victim, "r+b") as fh:
        fh.write(b"\0\0\0")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = str(tmp_path / "third")
    with pytest.raises(SyncError) as err:
        SyncEngine(PeerSource(first), third, retries=0).run()
    assert "model-00002-of-00002.safetensors" in str(err.value) and not os.path.exists(third)


def test_peer_refuses_incomplete_copy(tmp_path):
    os.makedirs(str(tmp_path / "half"))
    with open(str(tmp_path / "half" / STATE_NAME), "w") as fh:
        json.dump({"complete": False, "files": {"a": {"size": 1}}}, fh)
    with pytest.raises(SyncError) as err:
        SyncEngine(PeerSource(str(tmp_path / "half")), str(tmp_path / "x")).run()
    assert "not a complete" in str(err.value)


def test_peer_without_a_published_model_says_so(tmp_path):
    os.makedirs(str(tmp_path / "empty"))
    with pytest.raises(SyncError) as err:
        SyncEngine(PeerSource(str(tmp_path / "empty")), str(tmp_path / "x")).run()
    assert "holds no model published by model_sync" in str(err.value)
    assert not os.path.exists(str(tmp_path / "x"))


def test_progress_ticker_rewrites_the_file_while_nothing_moves(tmp_path):
    path = str(tmp_path / "progress.json")
    progress = Progress(path, interval=0.05)
    progress.set(phase="fetching", bytes_total=100)
    progress.add(10)
    progress.write(force=True)
    first = json.load(open(path))
    progress.start_ticker()
    try:
        time.sleep(0.3)  # no byte moves
        later = json.load(open(path))
    finally:
        progress.stop_ticker()
    assert later["bytes_done"] == 10 and later["elapsed_s"] >= first["elapsed_s"]
    assert later["updated"] > first["updated"] and later["rate_bytes_per_s"] <= first["rate_bytes_per_s"]
    stopped = json.load(open(path))
    time.sleep(0.15)
    assert json.load(open(path)) == stopped  # the ticker thread is gone


def test_local_source_change_detected_by_size_mtime(tmp_path):
    _make_src(str(tmp_path / "src"), {"a.bin": b"one"})
    dest = str(tmp_path / "d")
    SyncEngine(LocalSource(str(tmp_path / "src")), dest).run()
    assert SyncEngine(LocalSource(str(tmp_path / "src")), dest).run()["changed"] is False
    with open(str(tmp_path / "src" / "a.bin"), "wb") as fh:
        fh.write(b"two!")
    r = SyncEngine(LocalSource(str(tmp_path / "src")), dest).run()
    assert r["fetched"] == ["a.bin"] and open(os.path.join(dest, "a.bin"), "rb").read() == b"two!"


def test_missing_local_source_names_the_variable(tmp_path):
    with pytest.raises(SyncError) as e:
        SyncEngine(LocalSource(str(tmp_path / "nowhere")), str(tmp_path / "dest")).run()
    assert "local source %s is not a directory" % (tmp_path / "nowhere") in str(e.value)
    assert "model_weights_src_path" in str(e.value)
    assert not os.path.exists(tmp_path / "dest")


class _Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_rate_is_windowed_and_ignores_kept_bytes():
    clock = _Clock()
    p = Progress(None, clock=clock, window=60)
    p.set(phase="fetching", bytes_total=10 * 2 ** 30, bytes_done=0)
    p.add(3 * 2 ** 30, fetched=False)  # kept from an earlier run: in place, not fetched
    for dummy in range(3600):  # an hour at 1 MiB/s
        clock.now += 1
        p.add(2 ** 20)
    snap = p.snapshot()
    assert snap["bytes_resumed"] == 3 * 2 ** 30 and snap["bytes_fetched"] == 3600 * 2 ** 20
    assert abs(snap["rate_bytes_per_s"] - 2 ** 20) < 2 ** 20 * 0.02  # not inflated by the kept 3 GiB
    assert snap["rate_window_s"] == 60
    for dummy in range(60):  # then a minute with no byte: the rate falls to zero at once
        clock.now += 1
        p.snapshot()
    snap = p.snapshot()
    assert snap["rate_bytes_per_s"] < 2 ** 20 * 0.02 and snap["eta_s"] is None or snap["eta_s"] > 10 ** 6
    assert snap["average_rate_bytes_per_s"] > 0.9 * 2 ** 20  # the cumulative average hardly moved
    p.add(-2 ** 20)  # a failed attempt's bytes undone: bytes_done only
    assert p.snapshot()["bytes_fetched"] == 3600 * 2 ** 20


def test_same_filesystem_check_refuses_before_the_first_byte(tmp_path, monkeypatch):
    assert same_filesystem(str(tmp_path / "a" / "b"), str(tmp_path))
    assert not same_filesystem("/proc/self", str(tmp_path))
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"x" * 1000)
    fetched = []
    monkeypatch.setattr(LocalSource, "fetch", lambda self, rf, offset, sink: fetched.append(rf))
    staging = str(tmp_path / "elsewhere")
    # as if tmp_path/elsewhere were another mount (a model directory that is itself a mount point)
    monkeypatch.setattr(_sync_core, "same_filesystem", lambda a, b: a != staging)
    with pytest.raises(SyncError) as err:
        SyncEngine(LocalSource(str(src)), str(tmp_path / "pub"), staging=staging).run()
    msg = str(err.value)
    assert "%s is not on the filesystem of %s" % (staging, tmp_path / "pub") in msg
    assert "staging_path" in msg and not fetched


def test_files_and_directory_are_fsynced_before_the_state_says_complete(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(5000))
    (src / "sub" / "b.bin").write_bytes(os.urandom(7000))
    dest = str(tmp_path / "pub")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink("/proc/self/fd/%d" % fd)))
        return real_fsync(fd)

    def replace(a, b):
        if b.endswith(STATE_NAME):
            events.append(("state", json.load(open(a))["complete"]))
        if b == dest:
            events.append(("switch", os.readlink(a)))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    version = SyncEngine(LocalSource(str(src)), dest).run()["version"]
    complete = events.index(("state", True))
    before = [path for kind, path in events[:complete] if kind == "fsync"]
    assert any(p.endswith("a.bin.part") for p in before) and any(p.endswith("b.bin.part") for p in before)
    vdir = os.path.join(dest + ".llmfleet-versions", version)
    assert vdir in before and os.path.join(vdir, "sub") in before  # the renames are on disk first
    switch = events.index(("switch", os.path.join("pub.llmfleet-versions", version)))
    assert switch > complete  # the link moves to a version whose state already says complete
    assert ("fsync", str(tmp_path)) in events[switch:]  # and the switch itself is made durable
    assert ("fsync", vdir) in events[complete:]  # and the state file's own rename after it


@pytest.mark.parametrize("target", ["/", "/etc", "/usr/share/models", "/var", "/root", "/proc/1", "/boot/x",
                                    "/bin", "/sys/kernel", "/dev/shm/m", "/tmp"])
def test_dangerous_targets_are_refused(tmp_path, target):
    with pytest.raises(SyncError) as err:
        SyncEngine(LocalSource(str(tmp_path)), target).run()
    assert "path=%s is a system directory" % target in str(err.value)
    with pytest.raises(SyncError) as err:
        SyncEngine(LocalSource(str(tmp_path)), str(tmp_path / "pub"), staging=target).run()
    assert "staging_path=%s is a system directory" % target in str(err.value)


def test_symlink_to_a_system_directory_is_refused(tmp_path):
    os.symlink("/etc", str(tmp_path / "innocent"))
    with pytest.raises(SyncError) as err:
        SyncEngine(LocalSource(str(tmp_path)), str(tmp_path / "innocent")).run()
    assert "resolves to /etc" in str(err.value)


def test_a_second_sync_of_the_same_directory_is_refused_while_one_runs(tmp_path):
    _make_src(str(tmp_path / "src"), FILES)
    dest = str(tmp_path / "pub")
    held = _sync_core.SyncLock(dest + ".llmfleet-lock", dest)
    try:
        with pytest.raises(SyncError) as err:
            SyncEngine(LocalSource(str(tmp_path / "src")), dest).run()
        assert "another model_sync is running for %s (pid %d" % (dest, os.getpid()) in str(err.value)
        assert not os.path.exists(dest)
    finally:
        held.release()
    assert SyncEngine(LocalSource(str(tmp_path / "src")), dest).run()["files_fetched"] == len(FILES)


def test_files_dropped_upstream_are_removed_and_a_user_staging_dir_is_kept(tmp_path):
    src = str(tmp_path / "src")
    _make_src(src, FILES)
    dest = str(tmp_path / "pub")
    staging = str(tmp_path / "shared-staging")
    os.makedirs(staging)
    with open(os.path.join(staging, "someone-elses.bin"), "w") as fh:
        fh.write("keep me")
    SyncEngine(LocalSource(src), dest, staging=staging).run()
    assert os.listdir(staging) == ["someone-elses.bin"]  # only this run's files went
    os.unlink(os.path.join(src, "model-00002-of-00002.safetensors"))
    with open(os.path.join(dest, "not-ours.txt"), "w") as fh:
        fh.write("a file model_sync never published")
    res = SyncEngine(LocalSource(src), dest, staging=staging).run()
    assert res["changed"] is True
    assert not os.path.exists(os.path.join(dest, "model-00002-of-00002.safetensors"))
    assert os.path.exists(os.path.join(dest, "not-ours.txt"))  # never recorded as ours: left alone
    state = json.load(open(os.path.join(dest, STATE_NAME)))
    assert "model-00002-of-00002.safetensors" not in state["files"] and state["complete"] is True
    assert os.listdir(staging) == ["someone-elses.bin"]


def test_peer_rsync_protects_its_arguments():
    args = PeerSource("/data/models/R1", host="10.0.0.11")._base_args()
    assert "--protect-args" in args


def test_concurrency_zero_is_sized_for_the_host(monkeypatch, tmp_path):
    from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_core as core
    for cpus, want in ((2, 8), (16, 16), (128, 32)):
        monkeypatch.setattr(core.os, "cpu_count", lambda c=cpus: c)
        assert core.default_concurrency() == want
        eng = core.SyncEngine(None, str(tmp_path / "m"), concurrency=0)
        assert eng.concurrency == want
    assert core.SyncEngine(None, str(tmp_path / "m"), concurrency=3).concurrency == 3
