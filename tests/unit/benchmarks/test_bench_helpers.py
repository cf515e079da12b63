# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""benchmarks/_bench.py: the shared helpers of the sync benchmarks."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks"))
import _bench  # noqa: E402  pylint: disable=wrong-import-position


def meminfo(tmp_path, dirty, writeback):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       24000000 kB\nDirty:          %d kB\nWriteback:      %d kB\n"
                    "WritebackTmp:   999999 kB\n" % (dirty, writeback))
    return str(path)


def test_dirty_kib_adds_dirty_and_writeback_only(tmp_path):
    assert _bench.dirty_kib(meminfo(tmp_path, 1000, 24)) == 1024


@pytest.mark.parametrize("text", ["", "Dirty: lots kB\n", "Dirty:\n"])
def test_dirty_kib_of_an_unreadable_meminfo_is_zero(tmp_path, text):
    path = tmp_path / "meminfo"
    path.write_text(text)
    assert _bench.dirty_kib(str(path)) == 0
    assert _bench.dirty_kib(str(tmp_path / "absent")) == 0


def test_settle_waits_until_the_dirty_pages_drain(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sync", lambda: None)
    levels = iter([(900000, 200000), (300000, 100000), (10, 0)])
    path = meminfo(tmp_path, 4000000, 0)
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        d, w = next(levels)
        meminfo(tmp_path, d, w)

    assert _bench.settle(sleep=sleep, clock=lambda: 0.0, meminfo=path) is True
    assert len(waits) == 3


def test_settle_gives_up_after_its_timeout_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "sync", lambda: None)
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    path = meminfo(tmp_path, 4000000, 0)
    assert _bench.settle(timeout=1.0, sleep=sleep, clock=lambda: now[0], meminfo=path) is False
    assert "still 3906 MiB after 1 s" in capsys.readouterr().out
