"""roles/inference_server/files/entrypoint.sh with the plan's argv: modes by position, the key
read from its file just before exec, and an empty or unreadable key file refused."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _container, _topology

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

SCRIPT = os.path.join(REPO, "roles", "inference_server", "files", "entrypoint.sh")


def fake_bin(tmp_path, name, body):
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture()
def env(tmp_path):
    log = tmp_path / "calls.log"
    # every fake writes its argv (one line, NUL-free) and, for the engine, the key it saw
    record = 'printf "%%s" "$(basename "$0")" >> %s; for a in "$@"; do printf " %%s" "$a" >> %s; done; ' \
             'echo >> %s\n' % (log, log, log)
    fake_bin(tmp_path, "ray", record)
    fake_bin(tmp_path, "python3", "cat > /dev/null; exit 0\n")  # wait_for_gpus / wait_for_address
    fake_bin(tmp_path, "vllm", record + 'echo "key=${VLLM_API_KEY:-}" >> %s\n' % log)
    e = dict(os.environ, PATH="%s:%s" % (tmp_path / "bin", os.environ["PATH"]))
    e.pop("LLMFLEET_API_KEY_FILE", None)
    return e, log


def plan_argv(role):
    ports = _topology.Ports()
    g = _topology.group("r1", "vllm", "0.32.0", ["a", "b"], {"a": "10.0.0.1", "b": "10.0.0.2"}, {}, {}, 8, 8, 2)
    s = _container.EngineSettings("/m", "served", 4096, 0.9, "private", ports)
    m = g.members[0 if role == "head" else 1]
    entrypoint, command = _container.launch(g, m, s)
    return [SCRIPT if a == _container.ENTRYPOINT_IN_CONTAINER else a for a in entrypoint] + command, command


def run(argv, env):
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)


def test_ray_head_runs_ray_start_then_the_engine_argv_whole(env, tmp_path):
    e, log = env
    argv, command = plan_argv("head")
    key = tmp_path / "key"
    key.write_text("sk-entrypoint-0123456789\n")
    e["LLMFLEET_API_KEY_FILE"] = str(key)
    p = run(argv, e)
    assert p.returncode == 0, p.stderr
    lines = log.read_text().splitlines()
    assert lines[0].startswith("ray start --head --node-ip-address=10.0.0.1 ")
    assert lines[1] == " ".join(command)          # exactly the plan's command, nothing dropped or added
    assert lines[2] == "key=sk-entrypoint-0123456789"


def test_ray_worker_execs_ray_start_as_given(env):
    e, log = env
    argv, command = plan_argv("worker")
    p = run(argv, e)
    assert p.returncode == 0, p.stderr
    assert log.read_text().splitlines() == [" ".join(command)]


@pytest.mark.parametrize("content", ["", "   \n\t\n", None])
def test_empty_or_missing_key_file_refuses_to_start(env, tmp_path, content):
    e, log = env
    key = tmp_path / "key"
    if content is not None:
        key.write_text(content)
    e["LLMFLEET_API_KEY_FILE"] = str(key)
    p = run(["/bin/sh", SCRIPT, "serve", "vllm", "serve", "/m"], e)
    assert p.returncode == 78
    assert "refusing to start without authentication" in p.stderr
    assert not log.exists()  # the engine never started


def test_no_key_file_named_serves_without_key(env):
    e, log = env
    p = run(["/bin/sh", SCRIPT, "serve", "vllm", "serve", "/m"], e)
    assert p.returncode == 0, p.stderr
    assert log.read_text().splitlines() == ["vllm serve /m", "key="]
