# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""model_sync publishes a whole version at once: ``<path>`` is a symlink to
``<path>.llmfleet-versions/<version>/``, switched in one rename once the new version is complete."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils import _sync_core
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import (
    STATE_NAME,
    SyncEngine,
    SyncError,
    versions_in_use,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import LocalSource


def _write(root, files):
    for rel, data in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


def _read(root):
    out = {}
    for base, dummy, names in os.walk(str(root)):
        for name in names:
            full = os.path.join(base, name)
            out[os.path.relpath(full, str(root))] = open(full, "rb").read()
    return out


def _versions(dest):
    return sorted(os.listdir(dest + ".llmfleet-versions"))


V1 = {"config.json": b"{}", "model-1.safetensors": b"a" * 5000, "model-2.safetensors": b"b" * 7000,
      "sub/tok.json": b"t1"}


def test_versions_switch_whole_drop_upstream_files_keep_users_files_and_prune(tmp_path):
    src, dest = tmp_path / "src", str(tmp_path / "pub")
    _write(src, V1)
    r1 = SyncEngine(LocalSource(str(src)), dest).run()
    assert r1["publish"] == "versioned" and os.path.islink(dest)
    assert os.readlink(dest) == os.path.join("pub.llmfleet-versions", r1["version"])  # relative: survives a move
    assert {k: v for k, v in _read(dest).items() if k != STATE_NAME} == V1
    assert json.load(open(os.path.join(dest, STATE_NAME)))["complete"] is True
    old_dir = os.path.realpath(dest)
    _write(dest, {"my-notes.txt": b"mine"})  # the user's own file: no sync recorded it

    # upstream: model-2 changed, sub/tok.json dropped, model-3 added
    os.unlink(str(src / "sub" / "tok.json"))
    _write(src, {"model-2.safetensors": b"B" * 7000, "model-3.safetensors": b"c" * 300})
    r2 = SyncEngine(LocalSource(str(src)), dest).run()
    assert r2["changed"] and r2["version"] != r1["version"]
    new_dir = os.path.realpath(dest)
    assert new_dir != old_dir
    got = _read(dest)
    assert got["model-2.safetensors"] == b"B" * 7000 and got["model-3.safetensors"] == b"c" * 300
    assert "sub/tok.json" not in got  # dropped upstream: not in the new version
    assert got["my-notes.txt"] == b"mine"  # carried over, never dropped
    # unchanged shards are hard links, not copies
    assert os.stat(os.path.join(new_dir, "model-1.safetensors")).st_ino == \
        os.stat(os.path.join(old_dir, "model-1.safetensors")).st_ino
    # the old version is whole and untouched (an engine started before the switch still reads it)
    assert {k: v for k, v in _read(old_dir).items() if k not in (STATE_NAME, "my-notes.txt")} == V1
    assert _versions(dest) == sorted([r1["version"], r2["version"]]) and r2["versions_removed"] == []

    again = SyncEngine(LocalSource(str(src)), dest).run()  # no-op: no new version
    assert again["changed"] is False and again["version"] == r2["version"] and _versions(dest) == sorted(
        [r1["version"], r2["version"]])
    _write(src, {"model-3.safetensors": b"C" * 300})
    r3 = SyncEngine(LocalSource(str(src)), dest).run()
    assert r3["versions_removed"] == [r1["version"]]  # keep_versions=1: the one before the current stays
    assert _versions(dest) == sorted([r2["version"], r3["version"]])
    assert not os.path.exists(dest + ".llmfleet-staging") and not os.path.lexists(dest + ".llmfleet-switch")


def test_a_crash_before_the_switch_leaves_the_old_version_whole_and_the_next_run_fetches_nothing(
        tmp_path, monkeypatch):
    src, dest = tmp_path / "src", str(tmp_path / "pub")
    _write(src, V1)
    r1 = SyncEngine(LocalSource(str(src)), dest).run()
    _write(src, {"model-1.safetensors": b"X" * 5000})

    def crash(self, new):
        raise OSError("power cut")

    monkeypatch.setattr(SyncEngine, "_switch", crash)
    with pytest.raises(OSError):
        SyncEngine(LocalSource(str(src)), dest).run()
    monkeypatch.undo()
    assert os.path.realpath(dest).endswith(r1["version"])  # still the old version, whole
    assert {k: v for k, v in _read(dest).items() if k != STATE_NAME} == V1
    assert json.load(open(os.path.join(dest, STATE_NAME)))["complete"] is True
    fetched = []
    real = LocalSource.fetch
    monkeypatch.setattr(LocalSource, "fetch", lambda self, rf, off, sink: fetched.append(rf.path) or real(
        self, rf, off, sink))
    r2 = SyncEngine(LocalSource(str(src)), dest).run()
    assert fetched == []  # the verified file stayed staged until the switch: only hashed again
    assert _read(dest)["model-1.safetensors"] == b"X" * 5000
    # the version the link pointed to is kept (an engine may run on it), the orphan of the crash goes
    assert _versions(dest) == sorted([r1["version"], r2["version"]])


@pytest.mark.parametrize("exchange", [True, False])
def test_a_directory_published_before_versions_becomes_a_version(tmp_path, monkeypatch, exchange):
    src, dest = tmp_path / "src", str(tmp_path / "pub")
    _write(src, V1)
    SyncEngine(LocalSource(str(src)), dest, publish="in_place").run()
    assert os.path.isdir(dest) and not os.path.islink(dest)
    if not exchange:  # a kernel or filesystem without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(_sync_core, "exchange_paths", lambda a, b: False)
    _write(src, {"model-2.safetensors": b"Z" * 7000})
    r = SyncEngine(LocalSource(str(src)), dest).run()
    assert os.path.islink(dest) and _read(dest)["model-2.safetensors"] == b"Z" * 7000
    legacy = [v for v in _versions(dest) if v.startswith("0-before-versions-")]
    assert len(legacy) == 1 and sorted(_versions(dest)) == sorted(legacy + [r["version"]])
    assert _read(os.path.join(dest + ".llmfleet-versions", legacy[0]))["model-2.safetensors"] == b"b" * 7000


def test_a_mount_point_is_published_in_place_and_says_why(tmp_path, monkeypatch):
    src, dest = tmp_path / "src", str(tmp_path / "pub")
    _write(src, V1)
    os.makedirs(dest)
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: p == dest or real(p))
    r = SyncEngine(LocalSource(str(src)), dest).run()
    assert r["publish"] == "in_place" and "is a mount point" in r["publish_fallback"]
    assert os.path.isdir(dest) and not os.path.islink(dest) and not os.path.exists(dest + ".llmfleet-versions")
    with pytest.raises(SyncError, match="publish must be versioned or in_place"):
        SyncEngine(LocalSource(str(src)), dest, publish="swap")


def test_versions_a_running_container_has_mounted_are_not_pruned(tmp_path, monkeypatch):
    src, dest = tmp_path / "src", str(tmp_path / "pub")
    _write(src, V1)
    versions = []
    for n in range(3):
        _write(src, {"model-1.safetensors": b"%d" % n * 100})
        versions.append(SyncEngine(LocalSource(str(src)), dest, keep_versions=0).run()["version"])
    assert _versions(dest) == [versions[2]]  # keep_versions=0: only the current one
    proc = tmp_path / "proc"
    (proc / "4242" / "ns").mkdir(parents=True)
    # a container's bind mount, as /proc/<pid>/mountinfo shows it (root field = path in its filesystem)
    (proc / "4242" / "mountinfo").write_text(
        "1203 1180 253:1 /srv/pub.llmfleet-versions/%s /data/models/m ro,relatime - ext4 /dev/vda rw\n" % versions[2])
    assert versions_in_use(dest + ".llmfleet-versions", proc=str(proc)) == {versions[2]}
    monkeypatch.setattr(_sync_core, "versions_in_use", lambda path: {versions[2]})
    _write(src, {"model-1.safetensors": b"new" * 100})
    r = SyncEngine(LocalSource(str(src)), dest, keep_versions=0).run()
    assert _versions(dest) == sorted([versions[2], r["version"]])  # in use: kept although not the newest
