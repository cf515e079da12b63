"""execution-environment.yml is a valid ansible-builder 3 definition: `ansible-builder create`
writes the build context (no image is built here: no registry is reachable), with this
collection's tarball, the collections of requirements.yml and the Python packages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def test_ansible_builder_creates_the_context(tmp_path):
    builder = os.path.join(BIN, "ansible-builder")
    if not os.path.exists(builder):
        pytest.skip("ansible-builder is not installed (requirements-test.txt has it)")
    ee = tmp_path / "repo"
    ee.mkdir()
    shutil.copy(os.path.join(REPO, "execution-environment.yml"), ee)
    shutil.copy(os.path.join(REPO, "requirements.yml"), ee)
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(ee / "build" / "ee"),
                    REPO], check=True, capture_output=True)
    proc = subprocess.run([builder, "create", "-f", "execution-environment.yml", "-c", "context",
                           "--output-filename", "Dockerfile"], cwd=ee, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ctx = ee / "context"
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "ansible-galaxy collection install --no-deps /tmp/llmfleet/llmfleet-serving-" in dockerfile
    assert [p.name for p in (ctx / "_build" / "llmfleet").iterdir()][0].startswith("llmfleet-serving-")
    reqs = (ctx / "_build" / "requirements.yml").read_text()
    for name in ("community.docker", "ansible.posix", "community.general", "ansible.utils"):
        assert name in reqs
    assert "aiohttp" in (ctx / "_build" / "requirements.txt").read_text()
