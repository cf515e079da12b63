"""entrypoint.sh serve with SGLang and an API key: SGLang (0.5.x) logs its server_args with the
key in clear, so the entrypoint runs it under its launcher, which gives SGLang the key in memory
only. The engine here is the lab's simulator run as ``python3 -m sglang.launch_server`` (it logs
``server_args={..., 'api_key': ...}`` through ``logging`` as SGLang does): the key must reach
SGLang (401 without it, 200 with it) and appear in none of its output, its argv
(/proc/PID/cmdline), its environment (/proc/PID/environ) nor any file written at start."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, "roles", "inference_server", "files", "entrypoint.sh")
SIM = os.path.join(REPO, "tests", "lab", "engine_sim", "src")
COLLECTIONS = os.path.join(REPO, "build", "collections")
KEY = "sk-sglang-entrypoint-'q\"uote\\-0123456789abcdef"


def forms(value):
    """The key raw, escaped as repr/json would, and base64 at each alignment."""
    raw = value.encode()
    out = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw).decode()
        out.add(enc[4 if k else 0:-4])
    return out


def leaked(data):
    if isinstance(data, bytes):
        data = data.decode("latin-1")
    return sorted(f for f in forms(KEY) if f in data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url, key=None):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None


def files_under(top):
    out = {}
    for root, _dirs, names in os.walk(top):
        for n in names:
            p = os.path.join(root, n)
            try:
                with open(p, "rb") as fh:
                    out[p] = fh.read()
            except OSError:
                pass
    return out


@pytest.fixture()
def sglang(tmp_path):
    """Start the entrypoint with the plan's SGLang argv; yield (proc, base url, tmp dir)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"],
                                                   "max_position_embeddings": 4096}))
    (model / "model.safetensors").write_bytes(b"")
    key = tmp_path / "api_key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python3"
    shim.write_text("#!/bin/sh\nexec %s \"$@\"\n" % sys.executable)  # this venv's Python
    shim.chmod(0o755)
    port = free_port()
    env = {"PATH": "%s:/usr/bin:/bin" % bin_dir, "HOME": str(tmp_path), "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join([SIM, COLLECTIONS]), "LLMFLEET_API_KEY_FILE": str(key),
           "LLMFLEET_SIM_LOAD_DELAY_S": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    argv = ["/bin/sh", SCRIPT, "serve", "python3", "-m", "sglang.launch_server", "--model-path", str(model),
            "--served-model-name", "m", "--tp", "1", "--host", "127.0.0.1", "--port", str(port),
            "--enable-metrics"]
    before = set(os.listdir("/tmp"))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc, "http://127.0.0.1:%d" % port, tmp_path, before
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def test_sglang_gets_the_key_without_it_in_logs_argv_environment_or_files(sglang):
    proc, base, tmp_path, tmp_before = sglang
    deadline = time.monotonic() + 60
    while status(base + "/health") != 200:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "SGLang did not get ready"
        time.sleep(0.05)
    # the key reached SGLang: everything but health/metrics needs it
    assert status(base + "/v1/models") == 401
    assert status(base + "/v1/models", KEY) == 200
    # the engine's process (the entrypoint exec'd it: same pid), read while it serves
    with open("/proc/%d/cmdline" % proc.pid, "rb") as fh:
        cmdline = fh.read()
    with open("/proc/%d/environ" % proc.pid, "rb") as fh:
        environ = fh.read()
    assert b"sglang.launch_server" in cmdline or b"runpy" in cmdline
    assert leaked(cmdline) == [], cmdline
    assert leaked(environ) == [], [v for v in environ.split(b"\0") if leaked(v)]
    # no file with the key: none under the test's TMPDIR / HOME but the key file, none in /tmp
    files = files_under(str(tmp_path))
    assert [p for p, data in files.items() if leaked(data) and not p.endswith("/api_key")] == []
    new_tmp = set(os.listdir("/tmp")) - tmp_before
    assert [n for n in new_tmp if n.startswith("llmfleet.")] == []
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    # SGLang logged its server_args (so the test looks where the key would be) with the key hidden
    line = [x for x in out.decode().splitlines() if "server_args={" in x]
    assert line and "'api_key': '***'" in line[0], out.decode()[-3000:]
    assert "The server is fired up and ready to roll!" in out.decode()
    assert leaked(out) == [] and leaked(err) == [], (out.decode()[-3000:], err.decode()[-3000:])


def test_sglang_with_a_key_in_another_argv_form_refuses_to_start(tmp_path):
    key = tmp_path / "api_key"
    key.write_text(KEY)
    env = dict(os.environ, LLMFLEET_API_KEY_FILE=str(key))
    p = subprocess.run(["/bin/sh", SCRIPT, "serve", "env", "python3", "-m", "sglang.launch_server", "--port", "1"],
                       env=env, capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 78
    assert "refusing to start" in p.stderr
    assert leaked(p.stdout + p.stderr) == []
