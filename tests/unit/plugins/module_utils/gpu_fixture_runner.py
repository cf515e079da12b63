# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: a ``run(argv)`` that answers nvidia-smi calls from a fixture directory by
calling tests/lab/fake_nvidia_smi.py in-process (the same script the lab hosts run)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "gpu")
_spec = importlib.util.spec_from_file_location("fake_nvidia_smi", os.path.join(REPO, "tests", "lab", "fake_nvidia_smi.py"))
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)


def fake_smi(fixture, env=None, overrides=None, calls=None):
    """Return run(argv) emulating nvidia-smi on ``fixture`` (a directory name under FIXTURES).

    overrides: {tuple(argv[1:]): (rc, out, err)} to simulate failures of single calls.
    """
    path = os.path.join(FIXTURES, fixture) if fixture else ""

    def run(argv):
        if calls is not None:
            calls.append(list(argv))
        if not argv[0].endswith("nvidia-smi"):
            return 127, "", "%s: not found" % argv[0]
        key = tuple(argv[1:])
        if overrides and key in overrides:
            return overrides[key]
        old = dict(os.environ)
        os.environ["LLMFLEET_GPU_FIXTURE_DIR"] = path
        os.environ.update(env or {})
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = fake.main(["nvidia-smi"] + list(argv[1:]))
        finally:
            os.environ.clear()
            os.environ.update(old)
        return rc, out.getvalue(), err.getvalue()

    return run
