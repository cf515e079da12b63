# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import os
import sys

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))
import engine_logs as logs  # noqa: E402
from module_harness import ExitJson, FailJson, patch_exits  # noqa: E402
from ready_test_server import EngineServer  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.modules import llm_ready  # noqa: E402


@pytest.fixture
def run_module(monkeypatch):
    patch_exits(monkeypatch)

    def run(args):
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
        llm_ready.main()

    return run


def test_ready_with_api_key_file_in_check_mode(run_module, tmp_path):
    keyfile = tmp_path / "api_key"
    keyfile.write_text("sk-test-file-0123456789\n")
    with EngineServer() as srv:
        srv.state.api_key = "sk-test-file-0123456789"
        srv.state.health_503 = 2
        with pytest.raises(ExitJson) as e:
            run_module({"url": srv.url, "model": srv.state.model, "api_key_file": str(keyfile),
                        "poll_interval": 0.01, "timeout": 10, "_ansible_check_mode": True})
    res = e.value.args[0]
    assert res["ready"] is True and res["changed"] is False
    assert res["models"] == [srv.state.model] and res["smoke"]["text"] == "Hello!"
    assert res["time_to_ready_s"] > 0 and res["first_token_latency_s"] >= 0.05
    assert res["watch_backend"] is None
    assert "sk-test-file-0123456789" not in json.dumps(res)


def test_reasoning_model_counts_reasoning_tokens(run_module):
    with EngineServer() as srv:
        srv.state.tokens = []
        srv.state.reasoning = ["Okay", ", the user"]
        with pytest.raises(ExitJson) as e:
            run_module({"url": srv.url, "model": srv.state.model, "api_key": "sk-test", "poll_interval": 0.01,
                        "timeout": 5})
    assert e.value.args[0]["smoke"]["reasoning_text"] == "Okay, the user"


def test_unauthorized(run_module):
    with EngineServer() as srv:
        with pytest.raises(FailJson) as e:
            run_module({"url": srv.url, "model": srv.state.model, "api_key": "nope", "timeout": 10})
    res = e.value.args[0]
    assert res["ready"] is False and res["diagnosis"]["class"] == "unauthorized" and "401" in res["msg"]


def test_missing_key_file(run_module, tmp_path):
    with pytest.raises(FailJson) as e:
        run_module({"url": "http://127.0.0.1:9", "model": "m", "api_key_file": str(tmp_path / "nope")})
    assert "cannot read the API key file" in e.value.args[0]["msg"]


@pytest.mark.parametrize("content", ["", " \n\t\n"])
def test_empty_or_whitespace_key_file_is_refused_not_taken_as_no_auth(run_module, tmp_path, content):
    keyfile = tmp_path / "api_key"
    keyfile.write_text(content)
    with pytest.raises(FailJson) as e:
        run_module({"url": "http://127.0.0.1:9", "model": "m", "api_key_file": str(keyfile)})
    assert "empty or whitespace only" in e.value.args[0]["msg"]


def test_key_options_exclusive(run_module, tmp_path):
    with pytest.raises(FailJson) as e:
        run_module({"url": "http://127.0.0.1:9", "model": "m", "api_key": "a", "api_key_file": "/x"})
    assert "mutually exclusive" in e.value.args[0]["msg"]


# ------------------------------------------------------------------ containers through the SDK (mocked)
class _NotFound(Exception):
    pass


_NotFound.__name__ = "NotFound"


class _Container(object):
    def __init__(self, st):
        self.st = st

    @property
    def attrs(self):
        return {"State": {"Status": self.st["status"], "Running": self.st["status"] == "running",
                          "Restarting": False, "ExitCode": self.st["exit"], "OOMKilled": False},
                "RestartCount": self.st["restarts"]}

    def logs(self, tail, stdout=True, stderr=True):
        return "\n".join(self.st["logs"].splitlines()[-tail:]).encode()


class _Client(object):
    def __init__(self, states):
        self.states = states
        self.containers = self

    def get(self, name):
        if name not in self.states:
            raise _NotFound(name)
        return _Container(self.states[name])


def test_worker_dies_during_startup_fails_fast(run_module, monkeypatch):
    states = {"llmfleet-r1-head": {"status": "running", "exit": 0, "restarts": 0, "logs": "INFO waiting for ray"},
              "llmfleet-r1-worker-1": {"status": "running", "exit": 0, "restarts": 0, "logs": logs.MISSING_SHARD}}
    hosts = []

    polls = []

    class _DyingClient(_Client):
        # the worker exits when the watch looks at it the 3rd time (an event, not a timer)
        def get(self, name):
            if name == "llmfleet-r1-worker-1":
                polls.append(name)
                if len(polls) == 3:
                    states[name].update(status="exited", exit=1)
            return _Client.get(self, name)

    def factory(docker_host):
        hosts.append(docker_host)
        return _DyingClient(states)

    monkeypatch.setattr(llm_ready, "HAS_DOCKER_SDK", True)
    monkeypatch.setattr(llm_ready, "_sdk_client", factory)
    with EngineServer() as srv:
        srv.state.health_503 = 10 ** 6  # never healthy: only the watch can end the wait early
        with pytest.raises(FailJson) as e:
            run_module({"url": srv.url, "model": srv.state.model, "api_key": "sk-test", "timeout": 600,
                        "poll_interval": 0.05, "log_lines": 5,
                        "containers": [{"container": "llmfleet-r1-head", "host": "gpu-a"},
                                       {"container": "llmfleet-r1-worker-1", "host": "gpu-b",
                                        "docker_host": "ssh://root@10.0.0.12"}]})
    res = e.value.args[0]
    # it stopped right after the look that saw the exit (and its logs), not at the 600 s timeout
    assert len(polls) <= 4, len(polls)
    assert res["watch_backend"] == "docker-sdk"
    assert res["diagnosis"]["class"] == "missing_weights" and res["diagnosis"]["host"] == "gpu-b"
    assert "llmfleet-r1-worker-1 on gpu-b exited with code 1" in res["msg"]
    assert len(res["log_tail"]) == 5 and "FileNotFoundError" in res["log_tail"][-1]
    assert set(hosts) == {None, "ssh://root@10.0.0.12"}


def test_cli_fallback_when_sdk_missing(run_module, monkeypatch):
    monkeypatch.setattr(llm_ready, "HAS_DOCKER_SDK", False)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False, opt_dirs=None:
                        "/usr/bin/docker" if name == "docker" else None)
    calls = []

    def run_command(self, argv, **kw):
        calls.append(argv)
        if argv[1] == "inspect":
            return 0, json.dumps([{"State": {"Status": "exited", "Running": False, "ExitCode": 1},
                                   "RestartCount": 0}]), ""
        return 0, "", logs.PORT_IN_USE

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    with pytest.raises(FailJson) as e:
        run_module({"url": "http://127.0.0.1:9", "model": "m", "containers": [{"container": "llmfleet-qwq"}]})
    res = e.value.args[0]
    assert res["watch_backend"] == "docker-cli" and res["diagnosis"]["class"] == "port_in_use"
    assert ["/usr/bin/docker", "inspect", "--type", "container", "llmfleet-qwq"] in calls


def test_no_sdk_no_cli(run_module, monkeypatch):
    monkeypatch.setattr(llm_ready, "HAS_DOCKER_SDK", False)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False, opt_dirs=None: None)
    with pytest.raises(FailJson) as e:
        run_module({"url": "http://127.0.0.1:9", "model": "m", "containers": [{"container": "x"}]})
    assert "docker" in e.value.args[0]["msg"] and "required" in e.value.args[0]["msg"].lower()
