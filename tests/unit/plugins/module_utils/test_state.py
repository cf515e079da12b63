"""Unit tests of module_utils/_state.py: one call reads a host (containers, Ray, files)."""
import base64
import grp
import hashlib
import json
import os
import pwd

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils import _state

ME = pwd.getpwuid(os.getuid())[0]
MY_GROUP = grp.getgrgid(os.getgid())[0]


def inspect_json(*containers):
    return json.dumps([{"Name": "/" + name, "Id": "0123456789abcdef", "Config": {"Labels": {_state.HASH_LABEL: h}},
                        "State": {"Running": running, "Status": "running" if running else "exited",
                                  "StartedAt": "2026-12-06T02:00:00.1Z"}} for name, h, running in containers])


class Docker(object):
    """A fake `docker` for run(argv): inspect answers from ``containers``; exec answers ``ray``."""

    def __init__(self, containers=(), ray=(0, "2\n", ""), inspect_rc=None, inspect_err=None):
        self.containers = {c[0]: c for c in containers}
        self.ray = ray
        self.inspect_rc, self.inspect_err = inspect_rc, inspect_err
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[1] == "inspect":
            names = argv[4:]
            found = [self.containers[n] for n in names if n in self.containers]
            missing = [n for n in names if n not in self.containers]
            rc = self.inspect_rc if self.inspect_rc is not None else (1 if missing else 0)
            err = self.inspect_err if self.inspect_err is not None else "".join(
                "Error: No such container: %s\n" % n for n in missing)
            return rc, inspect_json(*found) if found else "[]", err
        if argv[1] == "exec":
            return self.ray
        raise AssertionError(argv)


def test_one_inspect_for_every_container_and_ray_only_for_a_matching_running_head():
    d = Docker([("head", "h1", True), ("small", "h2", True)])
    st = _state.read_state(d, [{"name": "head", "config_hash": "h1", "ray_nodes": 2},
                               {"name": "small", "config_hash": "h2"}, {"name": "gone", "config_hash": "h3"}], [])
    inspects = [c for c in d.calls if c[1] == "inspect"]
    assert len(inspects) == 1 and inspects[0][4:] == ["head", "small", "gone"]
    head = dict(st["containers"]["head"])
    assert head.pop("settings")["restart_policy"] is None and head.pop("settings_diff") == []
    assert head == {"exists": True, "config_hash": "h1", "deployment_label": None, "running": True, "status": "running",
                    "started_at": "2026-12-06T02:00:00.1Z", "id": "0123456789ab"}
    assert st["containers"]["gone"] == {"exists": False}
    assert st["ray"] == {"head": {"rc": 0, "nodes": 2, "error": "", "via": "gcs"}}
    execs = [c for c in d.calls if c[1] == "exec"]
    assert execs == [["docker", "exec", "head", "timeout", "30", "python3", "-c", _state.RAY_ALIVE_NODES_PY]]
    assert st["in_sync"] is False and st["differences"] == ["gone: absent -> running, config hash h3"]


def test_ray_not_asked_of_a_stale_or_stopped_head():
    d = Docker([("head", "old", True)])
    st = _state.read_state(d, [{"name": "head", "config_hash": "new", "ray_nodes": 2}], [])
    assert st["ray"] == {} and [c for c in d.calls if c[1] == "exec"] == []
    assert st["differences"] == ["head: running, config hash old -> running, config hash new"]
    d = Docker([("head", "new", False)])
    st = _state.read_state(d, [{"name": "head", "config_hash": "new", "ray_nodes": 2}], [])
    assert st["ray"] == {} and st["differences"] == ["head: not running (exited), config hash new -> running, config hash new"]


def test_ray_missing_nodes_or_failing_is_a_difference():
    st = _state.read_state(Docker([("head", "h", True)], ray=(0, "1\n", "")), [{"name": "head", "config_hash": "h", "ray_nodes": 2}], [])
    assert st["differences"] == ["head: Ray holds 1 of 2 nodes"] and not st["in_sync"]
    st = _state.read_state(Docker([("head", "h", True)], ray=(124, "", "Traceback\nTimeout")),
                           [{"name": "head", "config_hash": "h", "ray_nodes": 2}], [])
    assert st["ray"]["head"] == {"rc": 124, "nodes": None, "error": "Traceback\nTimeout", "via": "gcs"}
    st = _state.read_state(Docker([("head", "h", True)], ray=(0, "warning only", "")),
                           [{"name": "head", "config_hash": "h", "ray_nodes": 2}], [])
    assert st["ray"]["head"]["rc"] == 1 and "unexpected output" in st["ray"]["head"]["error"]


def test_docker_down_raises_but_missing_containers_do_not():
    with pytest.raises(RuntimeError) as e:
        _state.read_containers(Docker(inspect_rc=1, inspect_err="Cannot connect to the Docker daemon"), ["a"])
    assert "Cannot connect" in str(e.value)
    assert _state.read_containers(Docker(), ["a", "b"]) == {"a": {"exists": False}, "b": {"exists": False}}
    assert _state.read_containers(Docker(), []) == {}


def test_file_state_compares_content_mode_owner(tmp_path):
    f = tmp_path / "api_key"
    f.write_text("sk-secret")
    os.chmod(str(f), 0o600)
    sha = hashlib.sha256(b"sk-secret").hexdigest()
    want = {"path": str(f), "sha256": sha, "mode": "0600", "owner": ME, "group": MY_GROUP, "kind": "api_key",
            "deployment": "r1"}
    res = _state.file_state(want)
    assert res["in_sync"] and res["why"] == [] and res["mode"] == "0600" and res["kind"] == "api_key"
    assert "sha256" not in res, "the expected hash is not echoed"
    res = _state.file_state(dict(want, sha256="0" * 64, mode="644", owner="nobody-here"))
    assert res["why"] == ["content differs", "mode 0600 -> 0644", "owner %s -> nobody-here" % ME]
    assert "sk-secret" not in json.dumps(res)
    assert _state.file_state({"path": str(tmp_path / "nope")}) == {
        "path": str(tmp_path / "nope"), "state": "file", "exists": False, "in_sync": False, "why": ["absent"]}


def test_file_state_directories(tmp_path):
    d = tmp_path / "dep"
    d.mkdir()
    os.chmod(str(d), 0o700)
    assert _state.file_state({"path": str(d), "state": "directory", "mode": "0700"})["in_sync"]
    assert _state.file_state({"path": str(d), "state": "file"})["why"] == ["not a regular file"]
    f = tmp_path / "f"
    f.write_text("x")
    assert _state.file_state({"path": str(f), "state": "directory"})["why"] == ["not a directory"]


def test_probes_finds_and_diff(tmp_path):
    (tmp_path / "llmfleet-watchdog-a").write_text("")
    (tmp_path / "other").write_text("")
    st = _state.read_state(Docker(), [], [{"path": str(tmp_path / "missing"), "mode": "0600"}],
                           probes=[str(tmp_path), str(tmp_path / "nope")],
                           finds=[{"path": str(tmp_path), "pattern": "llmfleet-watchdog-*"},
                                  {"path": str(tmp_path / "nope"), "pattern": "*"}])
    assert st["probes"] == {str(tmp_path): True, str(tmp_path / "nope"): False}
    assert st["found"] == {str(tmp_path): [str(tmp_path / "llmfleet-watchdog-a")], str(tmp_path / "nope"): []}
    assert st["diff"] == {"before": "%s: absent\n" % (tmp_path / "missing"), "after": "%s: absent\n" % (tmp_path / "missing")}
    st = _state.read_state(Docker(), [], [])
    assert st["in_sync"] and st["diff"] == {"before": "", "after": ""}


def test_role_settings_compared_with_docker_inspect():
    c = {"Name": "/e", "Config": {"Image": "img:1", "Labels": {_state.HASH_LABEL: "h"}},
         "State": {"Running": True, "Status": "running"},
         "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}, "IpcMode": "host",
                        "LogConfig": {"Type": "json-file", "Config": {"max-size": "100m", "max-file": "5"}},
                        "Ulimits": [{"Name": "stack", "Soft": 67108864, "Hard": 67108864}]}}
    want = {"image": "img:1", "restart_policy": "unless-stopped", "ipc_mode": "host", "log_max_size": "100m",
            "log_max_file": 5, "ulimits": ["stack:67108864:67108864"]}

    def run(argv):
        return 0, json.dumps([c]), ""
    st = _state.read_state(run, [{"name": "e", "config_hash": "h", "settings": want}], [])
    assert st["containers"]["e"]["settings_diff"] == [] and st["in_sync"]
    st = _state.read_state(run, [{"name": "e", "config_hash": "h", "settings": dict(
        want, restart_policy="always", ulimits=["memlock:-1:-1", "stack:67108864"], image=None)}], [])
    assert st["containers"]["e"]["settings_diff"] == [
        "restart_policy unless-stopped -> always",
        "ulimits [('stack', 67108864, 67108864)] -> [('memlock', -1, -1), ('stack', 67108864, 67108864)]"]
    assert not st["in_sync"] and st["differences"][0].startswith("e: restart_policy")


def test_read_returns_a_record_content_only_when_asked(tmp_path):
    f = tmp_path / "deployment.json"
    f.write_text('{"name": "q"}\n')
    assert "content" not in _state.file_state({"path": str(f)})
    res = _state.file_state({"path": str(f), "read": True, "kind": "record"})
    assert base64.b64decode(res["content"]) == b'{"name": "q"}\n'


class _FakeNodeInfo(object):
    """A GcsNodeInfo as ray._raylet.GcsClient returns it (protobuf: state and its enum on the message)."""
    ALIVE, DEAD = 0, 1

    def __init__(self, state):
        self.state = state


def _run_ray_snippet(code, nodes, address_file_text="172.31.0.1:6379\n", fail=None):
    """Run the Ray node-count line as the head container would, against a fake ray._raylet."""
    import io
    import sys
    import types
    seen = {}

    class GcsClient(object):
        def __init__(self, address):
            seen["address"] = address

        def get_all_node_info(self, timeout=None):
            seen["timeout"] = timeout
            if fail:
                raise fail
            return {i: _FakeNodeInfo(s) for i, s in enumerate(nodes)}

    def fake_open(path, *a, **k):
        seen["file"] = path
        return io.StringIO(address_file_text)

    raylet = types.ModuleType("ray._raylet")
    raylet.GcsClient = GcsClient
    ray = types.ModuleType("ray")
    ray._raylet = raylet
    old = {k: sys.modules.get(k) for k in ("ray", "ray._raylet")}
    sys.modules.update({"ray": ray, "ray._raylet": raylet})
    out = io.StringIO()
    try:
        stdout, sys.stdout = sys.stdout, out
        try:
            exec(compile(code, "<ray-nodes>", "exec"), {"open": fake_open, "__name__": "__main__"})
        finally:
            sys.stdout = stdout
    finally:
        for k, v in old.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return out.getvalue(), seen


def test_ray_node_count_asks_the_gcs_at_the_recorded_address_without_a_driver():
    assert "ray.init" not in _state.RAY_ALIVE_NODES_PY
    out, seen = _run_ray_snippet(_state.RAY_ALIVE_NODES_PY, [0, 1, 0])
    assert out == "2\n"  # dead nodes are not counted
    assert seen == {"file": "/tmp/ray/ray_current_cluster", "address": "172.31.0.1:6379", "timeout": 20}
    out, _seen = _run_ray_snippet(_state.RAY_ALIVE_NODES_PY, [])
    assert out == "0\n"


def test_ray_node_count_failure_is_an_error_not_a_count():
    class AuthenticationError(Exception):
        pass
    with pytest.raises(AuthenticationError):  # python3 exits 1: ray_nodes() reports rc 1, never a count
        _run_ray_snippet(_state.RAY_ALIVE_NODES_PY, [0, 0], fail=AuthenticationError("InvalidAuthToken"))


def test_the_role_waits_for_workers_with_the_same_ray_line():
    import yaml
    role_vars = os.path.join(os.path.dirname(os.path.dirname(_state.__file__)), "..", "roles", "inference_server",
                             "vars", "main.yml")
    with open(role_vars) as f:
        assert yaml.safe_load(f)["__inference_server_ray_alive_nodes_py"] == _state.RAY_ALIVE_NODES_PY


def _nodes_answer(*states, total=None):
    nodes = [{"node_id": "n%d" % i, "state": st} for i, st in enumerate(states)]
    return {"result": True, "msg": "", "data": {"result": {
        "total": len(nodes) if total is None else total, "num_after_truncation": len(nodes), "result": nodes}}}


def test_dashboard_alive_nodes_reads_rays_state_api_answer():
    assert _state.dashboard_alive_nodes(_nodes_answer("ALIVE", "DEAD", "ALIVE")) == 2
    assert _state.dashboard_alive_nodes(_nodes_answer()) == 0
    assert _state.dashboard_alive_nodes(_nodes_answer("ALIVE", total=5)) is None  # truncated: not a count
    assert _state.dashboard_alive_nodes({"result": False, "msg": "boom", "data": {}}) is None
    assert _state.dashboard_alive_nodes({"detail": "Unauthorized"}) is None
    assert _state.dashboard_alive_nodes([]) is None


HEAD = [{"name": "head", "config_hash": "h", "ray_nodes": 2}]


def test_ray_nodes_asked_of_the_dashboard_with_the_token_and_no_docker_exec(tmp_path):
    tok = tmp_path / "ray_token"
    tok.write_text("s3cret-token\n")
    calls = []

    def http_get(url, token, timeout):
        calls.append((url, token, timeout))
        return _nodes_answer("ALIVE", "ALIVE")
    d = Docker([("head", "h", True)])
    c = [dict(HEAD[0], ray_dashboard="127.0.0.1:8265", ray_token_file=str(tok))]
    st = _state.read_state(d, c, [], http_get=http_get)
    assert calls == [("http://127.0.0.1:8265/api/v0/nodes?limit=10000&detail=false", "s3cret-token", 10)]
    assert st["ray"] == {"head": {"rc": 0, "nodes": 2, "error": "", "via": "dashboard"}} and st["in_sync"]
    assert [x for x in d.calls if x[1] == "exec"] == []
    assert "s3cret" not in json.dumps(st)

    def one_alive(url, token, timeout):
        return _nodes_answer("ALIVE", "DEAD")
    st = _state.read_state(Docker([("head", "h", True)]), c, [], http_get=one_alive)
    assert st["differences"] == ["head: Ray holds 1 of 2 nodes"] and not st["in_sync"]


@pytest.mark.parametrize("failure", ["refused", "unauthorized", "not ray", "no token file"])
def test_ray_nodes_fall_back_to_the_gcs_when_the_dashboard_does_not_answer(tmp_path, failure):
    tok = tmp_path / "ray_token"
    if failure != "no token file":
        tok.write_text("t")

    def http_get(url, token, timeout):
        if failure == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        if failure == "unauthorized":
            raise OSError("HTTP Error 401: Unauthorized")
        return {"hello": "world"}
    d = Docker([("head", "h", True)], ray=(0, "1\n", ""))
    c = [dict(HEAD[0], ray_dashboard="127.0.0.1:8265", ray_token_file=str(tok))]
    st = _state.read_state(d, c, [], http_get=http_get)
    r = st["ray"]["head"]
    assert r["via"] == "gcs" and r["nodes"] == 1 and r["fallback"].startswith("dashboard: ")
    assert len([x for x in d.calls if x[1] == "exec"]) == 1
    assert st["differences"] == ["head: Ray holds 1 of 2 nodes"]  # the GCS's count decides, not the failure


def test_dashboard_get_sends_the_token_as_bearer_on_loopback():
    import http.server
    import threading
    seen = {}

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen["auth"], seen["path"] = self.headers.get("Authorization"), self.path
            body = json.dumps(_nodes_answer("ALIVE")).encode()
            self.send_response(200 if seen["auth"] == "Bearer tok" else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/api/v0/nodes" % srv.server_address[1]
        assert _state.dashboard_alive_nodes(_state._dashboard_get(url, "tok", 5)) == 1
        assert seen == {"auth": "Bearer tok", "path": "/api/v0/nodes"}
        with pytest.raises(OSError):  # 401: urllib raises HTTPError, ray_nodes() falls back to the GCS
            _state._dashboard_get(url, "wrong", 5)
    finally:
        srv.shutdown()
        srv.server_close()


def test_health_asked_once_of_a_matching_running_api_server_only():
    asked = []

    def health_get(url, timeout):
        asked.append(url)
        return 200 if "good" in url else 503
    d = Docker([("ok", "h", True), ("sick", "h", True), ("stale", "old", True), ("down", "h", False)])
    c = [{"name": n, "config_hash": "h", "health_url": "http://127.0.0.1:1/%s" % ("good" if n == "ok" else n)}
         for n in ("ok", "sick", "stale", "down")]
    st = _state.read_state(d, c, [], health_get=health_get)
    assert asked == ["http://127.0.0.1:1/good", "http://127.0.0.1:1/sick"]
    assert st["health"] == {"ok": {"ok": True, "status": 200, "error": ""}, "sick": {"ok": False, "status": 503, "error": ""}}
    assert st["differences"] == ["stale: running, config hash old -> running, config hash h",
                                 "down: not running (exited), config hash h -> running, config hash h"]


def test_health_refused_is_not_healthy_and_changes_no_decision():
    def refused(url, timeout):
        raise ConnectionRefusedError(111, "Connection refused")
    st = _state.read_state(Docker([("e", "h", True)]), [{"name": "e", "config_hash": "h", "health_url": "http://x/health"}],
                           [], health_get=refused)
    assert st["health"]["e"]["ok"] is False and "ConnectionRefusedError" in st["health"]["e"]["error"]
    assert st["in_sync"]  # health only feeds the readiness skip, never the drift


def test_health_get_on_loopback_200_and_503():
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path == "/health" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = "http://127.0.0.1:%d" % srv.server_address[1]
        assert _state.health(base + "/health") == {"ok": True, "status": 200, "error": ""}
        assert _state.health(base + "/other") == {"ok": False, "status": 503, "error": ""}
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_deployment_label_is_read_for_teardown():
    c = {"Name": "/e", "Config": {"Labels": {_state.HASH_LABEL: "h", _state.DEPLOYMENT_LABEL: "lab-r1"}},
         "State": {"Running": True, "Status": "running"}}
    assert _state.parse_inspect(json.dumps([c]))["e"]["deployment_label"] == "lab-r1"
