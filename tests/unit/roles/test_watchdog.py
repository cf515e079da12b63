"""roles/inference_server/files/llmfleet-watchdog: the decision logic and one run end to end,
with docker and HTTP replaced by fakes (the script is imported by path: it has no .py suffix)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "inference_server", "files",
                      "llmfleet-watchdog")


def _load():
    loader = importlib.machinery.SourceFileLoader("llmfleet_watchdog", SCRIPT)
    spec = importlib.util.spec_from_loader("llmfleet_watchdog", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


wd = _load()
CFG = {"failures": 3, "grace_s": 600, "backoff_s": 900}
T0 = 1_700_000_000.0


def dual(engine="vllm", exposure="private"):
    return {"name": "r1", "engine": engine, "nodes": 2, "head": "h1", "served_model_name": "deepseek-ai/DeepSeek-R1",
            "exposure": exposure, "endpoint": {"host": "10.0.0.1", "port": 8000, "base_url": "http://10.0.0.1:8000"},
            "api_key": {"host_path": None},
            "hosts": {"h1": {"container_name": "llmfleet-r1-head", "role": "head", "rank": 0, "private_address": "10.0.0.1"},
                      "h2": {"container_name": "llmfleet-r1-worker-1", "role": "worker", "rank": 1,
                             "private_address": "10.0.0.2"}}}


def running(started=T0):
    return {"exists": True, "status": "running", "running": True, "started_at": started}


def obs(problems=(), nodes=None, started=T0, container=None):
    return {"container": container or running(started), "problems": list(problems), "nodes": nodes, "dead": []}


# ----------------------------------------------------------------------------- decide

def test_healthy_resets_failures_and_remembers_the_ray_nodes():
    action, st, reason = wd.decide({"started_at": T0, "served": True, "failures": 2}, obs(nodes=["a", "b"]), T0 + 50, CFG)
    assert action == "healthy" and reason == "serves"
    assert st["failures"] == 0 and st["served"] is True and st["nodes"] == ["a", "b"]


def test_start_up_grace_counts_no_failure_until_it_has_served():
    action, st, reason = wd.decide({}, obs(["completion HTTP 503: loading"]), T0 + 100, CFG)
    assert action == "starting" and st["failures"] == 0
    assert "grace 500s left" in reason
    # past the grace period a never-serving engine fails
    action, st, dummy = wd.decide(st, obs(["completion HTTP 503: loading"]), T0 + 700, CFG)
    assert action == "failing" and st["failures"] == 1


def test_after_serving_failures_count_at_once_and_the_third_restarts():
    st = {"started_at": T0, "served": True, "failures": 0}
    actions = []
    for i in range(3):
        action, st, reason = wd.decide(st, obs(["completion failed after 30.0s: timed out"]), T0 + 60 + i, CFG)
        actions.append(action)
    assert actions == ["failing", "failing", "restart"]
    assert st["failures"] == 0 and st["last_restart"] == T0 + 62 and st["restarts"] == 1
    assert "timed out" in reason


def test_a_new_container_instance_starts_over():
    st = {"started_at": T0, "served": True, "failures": 2, "nodes": ["a", "b"]}
    action, st, dummy = wd.decide(st, obs(["completion HTTP 503"], started=T0 + 500), T0 + 510, CFG)
    assert action == "starting"
    assert st["failures"] == 0 and st["served"] is False and st["nodes"] is None


def test_backoff_limits_group_restarts():
    st = {"started_at": T0, "served": True, "failures": 2, "last_restart": T0 - 100}
    action, st, reason = wd.decide(st, obs(["Ray has 1/2 nodes alive"]), T0 + 60, CFG)
    assert action == "backoff" and st["failures"] == 3
    assert "back-off 900s" in reason
    action, st, dummy = wd.decide(st, obs(["Ray has 1/2 nodes alive"]), T0 + 900, CFG)
    assert action == "restart"


def test_a_node_that_died_and_rejoined_is_a_dead_rank():
    """Docker restarted the worker and it joined Ray again as a new node: the count is right but
    vLLM's actors on the old node are gone (vllm#16259)."""
    st = {"started_at": T0, "served": True, "failures": 0, "nodes": ["head", "w-old"]}
    action, st, reason = wd.decide(st, obs(nodes=["head", "w-new"]), T0 + 60, CFG)
    assert action == "failing"
    assert "Ray node(s) w-old died since the engine started" in reason
    # the remembered set is not replaced by the broken one
    assert st["nodes"] == ["head", "w-old"]


def test_absent_head_is_not_restarted():
    gone = {"exists": False, "status": "absent", "running": False, "started_at": None}
    action, st, reason = wd.decide({"failures": 2}, obs(["head container x is absent"], container=gone), T0, CFG)
    assert action == "absent" and st["failures"] == 0
    assert "run the role" in reason


def test_stopped_head_counts_from_its_old_start():
    stopped = {"exists": True, "status": "exited", "running": False, "started_at": T0}
    st = {"started_at": T0, "served": True, "failures": 2}
    action, dummy, dummy2 = wd.decide(st, obs(["head container is exited"], container=stopped), T0 + 5000, CFG)
    assert action == "restart"


# ----------------------------------------------------------------------------- probes

def test_parse_time_handles_docker_nanoseconds_and_zero_time():
    assert wd.parse_time("2023-11-14T22:13:20.123456789Z") == pytest.approx(T0 + 0.123456789)
    assert wd.parse_time("2023-11-14T23:13:20+01:00") == T0
    assert wd.parse_time("0001-01-01T00:00:00Z") is None
    with pytest.raises(ValueError):
        wd.parse_time("yesterday")


def test_endpoint_url_is_what_the_head_itself_reaches():
    assert wd.endpoint_url(dual()) == "http://10.0.0.1:8000"
    assert wd.endpoint_url(dual(exposure="public")) == "http://127.0.0.1:8000"
    assert wd.endpoint_url(dual(exposure="localhost")) == "http://127.0.0.1:8000"


class FakeDocker:
    def __init__(self, state=None, nodes=None, ray_rc=0, restart_rc=0):
        self.state = state if state is not None else {"Status": "running", "Running": True,
                                                      "StartedAt": "2023-11-14T22:13:20.5Z"}
        self.nodes, self.ray_rc, self.restart_rc = nodes, ray_rc, restart_rc
        self.calls = []

    def __call__(self, args, timeout):
        self.calls.append(list(args))
        if args[0] == "inspect":
            if self.state == "absent":
                return 1, "", "Error: No such container: %s" % args[-1]
            return 0, json.dumps(self.state) + "\n", ""
        if args[0] == "exec":
            assert args[2:4] == ["python3", "-c"] and "ray.nodes()" in args[4]
            if self.ray_rc:
                return self.ray_rc, "", "ConnectionError: Could not find any running Ray instance."
            return 0, "2025-01-01 INFO some ray noise\n" + json.dumps(self.nodes) + "\n", ""
        if args[0] in ("restart", "stop", "start"):
            return self.restart_rc, args[-1] + "\n", ""
        raise AssertionError(args)


class FakeHttp:
    def __init__(self, status=200, body=None, exc=None):
        self.status, self.exc = status, exc
        self.body = body if body is not None else {"choices": [{"text": " the"}]}
        self.calls = []

    def __call__(self, url, body, headers, timeout):
        self.calls.append((url, body, headers, timeout))
        if self.exc:
            raise self.exc
        return self.status, self.body


def test_observe_dual_vllm_reads_state_ray_and_a_real_completion():
    docker = FakeDocker(nodes=[["a", True, "10.0.0.1"], ["b", True, "10.0.0.2"], ["c", False, "10.0.0.2"]])
    http = FakeHttp()
    o = wd.observe(dual(), docker, http, "sekret", 30)
    assert o["problems"] == [] and o["nodes"] == ["a", "b"] and o["dead"] == ["c"]
    assert o["container"]["started_at"] == pytest.approx(T0 + 0.5)
    url, body, headers, timeout = http.calls[0]
    assert url == "http://10.0.0.1:8000/v1/completions"
    assert body["max_tokens"] == 1 and body["model"] == "deepseek-ai/DeepSeek-R1"
    assert headers == {"Authorization": "Bearer sekret"} and timeout == 30


def test_observe_reports_missing_ray_nodes_and_failed_completions():
    o = wd.observe(dual(), FakeDocker(nodes=[["a", True, "x"], ["b", False, "y"]]),
                   FakeHttp(exc=OSError("timed out")), None, 30)
    assert o["problems"][0] == "Ray has 1/2 nodes alive"
    assert o["problems"][1].startswith("completion failed after") and "timed out" in o["problems"][1]
    o = wd.observe(dual(), FakeDocker(ray_rc=1), FakeHttp(500, {"error": {"message": "EngineDeadError"}}), None, 30)
    assert o["problems"] == ["Ray does not answer: rc 1: ConnectionError: Could not find any running Ray instance.",
                             "completion HTTP 500: EngineDeadError"]


def test_observe_sglang_and_single_skip_ray():
    docker = FakeDocker()
    o = wd.observe(dual("sglang"), docker, FakeHttp(200, {"choices": []}), None, 30)
    assert [c[0] for c in docker.calls] == ["inspect"]
    assert o["problems"] == ["completion without choices: {'choices': []}"]


def test_observe_stops_at_a_head_that_does_not_run():
    docker = FakeDocker(state={"Status": "restarting", "Running": False, "Restarting": True,
                               "StartedAt": "2023-11-14T22:13:20Z"})
    http = FakeHttp()
    o = wd.observe(dual(), docker, http, None, 30)
    assert o["problems"] == ["head container llmfleet-r1-head is restarting"] and not http.calls


# ----------------------------------------------------------------------------- main

def _setup(tmp_path, dep=None):
    cfg = tmp_path / "etc"
    (cfg / "r1").mkdir(parents=True)
    dep = dep or dual()
    key = cfg / "r1" / "api_key"
    key.write_text("k-123\n")
    dep["api_key"]["host_path"] = str(key)
    (cfg / "r1" / "deployment.json").write_text(json.dumps(dep))
    return ["--config-dir", str(cfg), "--state-dir", str(tmp_path / "state"), "--grace-s", "60",
            "--failures", "2", "--ray-settle-s", "0", "r1"]


def _run(argv, docker, http, now):
    out = io.StringIO()
    rc = wd.main(argv, docker=docker, http=http, clock=lambda: now, out=out)
    return rc, out.getvalue()


def test_main_restarts_the_head_after_consecutive_failures_and_logs_one_line(tmp_path):
    argv = _setup(tmp_path)
    ok = FakeDocker(nodes=[["a", True, "x"], ["b", True, "y"]])
    rc, line = _run(argv, ok, FakeHttp(), T0 + 100)
    assert rc == 0 and line.count("\n") == 1
    assert "action=healthy" in line and "nodes=2/2" in line and "k-123" not in line
    # the worker died and rejoined as node c: twice -> group restart of the head container
    broken = FakeDocker(nodes=[["a", True, "x"], ["b", False, "y"], ["c", True, "y"]])
    rc, line = _run(argv, broken, FakeHttp(), T0 + 130)
    assert "action=failing" in line and "failures=1/2" in line and "died since the engine started" in line
    assert not [c for c in broken.calls if c[0] == "restart"]
    rc, line = _run(argv, broken, FakeHttp(), T0 + 160)
    assert "action=restart" in line
    assert "result=\"stopped llmfleet-r1-head, waited 0s for the Ray workers to leave, started it\"" in line
    assert [c for c in broken.calls if c[0] in ("stop", "start", "restart")] == [
        ["stop", "--time", "30", "llmfleet-r1-head"], ["start", "llmfleet-r1-head"]]
    state = json.loads((tmp_path / "state" / "r1.json").read_text())
    assert state["last_restart"] == T0 + 160 and state["last"]["action"] == "restart"
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == "0o700"


def test_main_dry_run_and_healthy_never_restart(tmp_path):
    argv = _setup(tmp_path)
    docker = FakeDocker(nodes=[["a", True, "x"], ["b", True, "y"]])
    for i in range(5):
        rc, line = _run(argv, docker, FakeHttp(), T0 + 100 + i)
        assert "action=healthy" in line
    docker = FakeDocker(nodes=[["a", True, "x"]])
    for i in range(2):
        rc, line = _run(["--dry-run"] + argv, docker, FakeHttp(), T0 + 200 + i)
    assert "action=restart" in line and "dry run" in line
    assert not [c for c in docker.calls if c[0] == "restart"]


def test_main_errors_exit_2_without_a_traceback(tmp_path):
    rc, line = _run(["--config-dir", str(tmp_path), "--state-dir", str(tmp_path / "s"), "nope"], FakeDocker(),
                    FakeHttp(), T0)
    assert rc == 2 and "action=error" in line and "deployment.json" in line

    def no_docker(args, timeout):
        raise wd.WatchdogError("docker: command not found")
    rc, line = _run(_setup(tmp_path), no_docker, FakeHttp(), T0)
    assert rc == 2 and "docker: command not found" in line


def test_main_refuses_bad_names_and_values(tmp_path):
    for argv in (["../x"], ["--failures", "0", "x"]):
        with pytest.raises(SystemExit) as err:
            wd.main(argv, out=io.StringIO())
        assert err.value.code == 2


def test_main_is_single_flight(tmp_path):
    argv = _setup(tmp_path)
    (tmp_path / "state").mkdir()
    import fcntl
    with open(tmp_path / "state" / "r1.json.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        docker = FakeDocker()
        rc, line = _run(argv, docker, FakeHttp(), T0)
    assert rc == 0 and "action=busy" in line and docker.calls == []


def test_ray_settle_follows_the_workers_reconnect_timeout():
    dep = dual()
    assert wd.ray_settle_s(dep) == 65
    dep["hosts"]["h2"]["env"] = {"RAY_gcs_rpc_server_reconnect_timeout_s": "10"}
    assert wd.ray_settle_s(dep) == 15


def test_restart_group_vllm_ray_stops_waits_starts_and_others_restart():
    dep = dual()
    dep["hosts"]["h2"]["env"] = {"RAY_gcs_rpc_server_reconnect_timeout_s": "10"}
    docker, slept = FakeDocker(), []
    err, done = wd.restart_group(dep, docker, 30, sleep=slept.append)
    assert err is None and slept == [15]
    assert docker.calls == [["stop", "--time", "30", "llmfleet-r1-head"], ["start", "llmfleet-r1-head"]]
    docker = FakeDocker(restart_rc=1)
    err, done = wd.restart_group(dual("sglang"), docker, 10, sleep=slept.append)
    assert docker.calls == [["restart", "--time", "10", "llmfleet-r1-head"]]
    assert err.startswith("docker restart llmfleet-r1-head failed: rc 1") and done == "restarted llmfleet-r1-head"


def test_read_key_refuses_an_empty_or_blank_key_file(tmp_path):
    f = tmp_path / "api_key"
    dep = {"api_key": {"host_path": str(f)}}
    f.write_text("  \n")
    with pytest.raises(wd.WatchdogError, match="is empty"):
        wd.read_key(dep)
    f.write_text("k" * 32 + "\n")
    assert wd.read_key(dep) == "k" * 32
    assert wd.read_key({"api_key": {"host_path": None}}) is None
