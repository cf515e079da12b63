"""Unit tests of plugin_utils/_drift.py: which engine containers restart and why (one test per rule)."""
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _drift

H1, H2, H3 = "gpu-a", "gpu-b", "gpu-c"
T0 = "2026-12-06T01:00:00.5Z"
T1 = "2026-12-06T02:00:00.123456789Z"
T2 = "2026-12-06T02:00:01.000000001Z"


def plan(r1_engine="vllm"):
    """r1: a two-node group on gpu-a (head) + gpu-b; qwq: a single-host engine on gpu-c; small: on gpu-a too."""
    deps = {
        "r1": {"engine": r1_engine, "nodes": 2, "head": H1, "config_hash": "r1hash",
               "hosts": {H1: {"container_name": "r1-head", "rank": 0}, H2: {"container_name": "r1-worker-1", "rank": 1}}},
        "qwq": {"engine": "vllm", "nodes": 1, "head": H3, "config_hash": "qwqhash",
                "hosts": {H3: {"container_name": "qwq", "rank": 0}}},
        "small": {"engine": "vllm", "nodes": 1, "head": H1, "config_hash": "smallhash",
                  "hosts": {H1: {"container_name": "small", "rank": 0}}},
    }
    hosts = {}
    for name, d in deps.items():
        for h, hp in d["hosts"].items():
            hosts.setdefault(h, []).append({"deployment": name, "container_name": hp["container_name"]})
    return {"deployments": deps, "hosts": hosts}


def running(h, started=T1):
    return {"exists": True, "config_hash": h, "running": True, "status": "running", "started_at": started}


def states(**over):
    """Every container running on the plan's hash, the head's Ray full; ``over`` replaces parts."""
    st = {
        H1: {"containers": {"r1-head": running("r1hash", T1), "small": running("smallhash")},
             "ray": {"r1-head": {"rc": 0, "nodes": 2, "error": ""}}, "files": []},
        H2: {"containers": {"r1-worker-1": running("r1hash", T2)}, "ray": {}, "files": []},
        H3: {"containers": {"qwq": running("qwqhash")}, "ray": {}, "files": []},
    }
    for k, v in over.items():
        st[k] = v
    return st


def test_all_in_sync_changes_nothing():
    out = _drift.decide(plan(), states())
    for h in (H1, H2, H3):
        assert out[h] == {"why": {}, "restart": [], "proven_ready": [], "group_why": {}, "drift": {}, "settings": {},
                          "in_sync": True}
    assert out[None] == {"restart": [], "group_why": {}}


def test_rule1_absent_hash_not_running_and_key():
    assert _drift.container_reason(None, "x") == "absent"
    assert _drift.container_reason({"exists": False}, "x") == "absent"
    assert _drift.container_reason(running("old"), "new") == "config hash old -> new"
    assert _drift.container_reason(dict(running("new"), config_hash=None), "new") == "config hash none -> new"
    assert _drift.container_reason(dict(running("x"), running=False, status="exited"), "x") == "not running (exited)"
    assert _drift.container_reason(running("x"), "x", key_changed=True) == "API key changed"
    assert _drift.container_reason(running("x"), "x") is None
    # the hash wins over the state, the state over the key
    assert _drift.container_reason(dict(running("old"), running=False), "new").startswith("config hash")
    assert _drift.container_reason(dict(running("x"), running=False, status="dead"), "x", True) == "not running (dead)"


def test_single_host_change_restarts_only_that_container():
    st = states()
    st[H3]["containers"]["qwq"] = running("stale")
    out = _drift.decide(plan(), st)
    assert out[H3]["why"] == {"qwq": "config hash stale -> qwqhash"}
    assert out[H3]["drift"] == {"qwq": {"qwq": "config hash stale -> qwqhash"}}
    assert out[H3]["restart"] == [] and not out[H3]["in_sync"]
    assert out[H1]["in_sync"] and out[H2]["in_sync"]


def test_api_key_file_differs_from_state_files():
    st = states()
    st[H3]["files"] = [{"path": "/etc/llmfleet/qwq/api_key", "kind": "key", "deployment": "qwq", "in_sync": False}]
    out = _drift.decide(plan(), st)
    assert out[H3]["why"] == {"qwq": "API key changed"}
    # an explicit key_changed map wins over the files
    out = _drift.decide(plan(), st, key_changed={H3: []})
    assert out[H3]["why"] == {}
    assert not out[H3]["in_sync"], "a file out of sync keeps the host out of sync"


def test_rule2_group_restarts_as_a_whole_when_a_member_changed():
    st = states()
    st[H2]["containers"]["r1-worker-1"] = {"exists": False}
    out = _drift.decide(plan(), st)
    assert out[H2]["why"] == {"r1-worker-1": "absent"}
    assert out[H1]["restart"] == ["r1"] and out[H2]["restart"] == ["r1"]
    assert out[H1]["drift"] == {"r1": {"r1-head": _drift.MEMBER_OF_CHANGED_GROUP}}
    assert "small" not in out[H1]["why"], "another deployment on the head's host is untouched"
    assert out[None]["restart"] == ["r1"]


def test_rule2_sglang_group_restarts_as_a_whole_too():
    st = states()
    st[H1]["ray"] = {}
    st[H1]["containers"]["r1-head"] = running("old", T1)
    out = _drift.decide(plan("sglang"), st)
    assert out[H2]["restart"] == ["r1"] and out[H2]["drift"] == {"r1": {"r1-worker-1": _drift.MEMBER_OF_CHANGED_GROUP}}


def test_rule2_member_host_not_in_play_restarts_the_group():
    st = states()
    del st[H2]
    out = _drift.decide(plan(), st)
    assert H2 not in out
    assert out[H1]["restart"] == ["r1"]
    assert out[H1]["drift"]["r1"] == {"r1-head": _drift.MEMBER_OF_CHANGED_GROUP}


def test_rule3_worker_started_before_the_head_did_not_rejoin():
    st = states()
    st[H2]["containers"]["r1-worker-1"] = running("r1hash", T0)
    out = _drift.decide(plan(), st)
    why = out[None]["group_why"]["r1"]
    assert "r1-worker-1 on gpu-b started at %s, before the head r1-head (%s)" % (T0, T1) in why
    assert out[H1]["restart"] == ["r1"] and out[H2]["restart"] == ["r1"]
    assert out[H1]["why"]["r1-head"] == why and out[H2]["why"]["r1-worker-1"] == why
    assert out[H1]["group_why"] == {"r1": why}


def test_rule3_start_times_compare_to_the_nanosecond():
    assert _drift.started_key("2026-12-06T02:00:00.5Z") == "2026-12-06T02:00:00.500000000"
    assert _drift.started_key("2026-12-06T02:00:00Z") == "2026-12-06T02:00:00.000000000"
    assert _drift.started_key("2026-12-06T02:00:00.123456789+00:00") == "2026-12-06T02:00:00.123456789"
    # 0.5 s is after 0.123456789 s although "5" < "123456789" as plain strings would compare the other way
    assert _drift.started_key("2026-12-06T02:00:00.5Z") > _drift.started_key("2026-12-06T02:00:00.123456789Z")
    st = states()
    st[H1]["containers"]["r1-head"] = running("r1hash", "2026-12-06T02:00:00.5Z")
    st[H2]["containers"]["r1-worker-1"] = running("r1hash", "2026-12-06T02:00:00.123456789Z")
    assert "before the head" in _drift.decide(plan(), st)[None]["group_why"]["r1"]
    st[H2]["containers"]["r1-worker-1"] = running("r1hash", "2026-12-06T02:00:00.6Z")
    assert _drift.decide(plan(), st)[None]["group_why"] == {}


def test_rule3_head_ray_missing_nodes_or_not_answering():
    st = states()
    st[H1]["ray"]["r1-head"] = {"rc": 0, "nodes": 1, "error": ""}
    out = _drift.decide(plan(), st)
    assert out[None]["group_why"] == {"r1": "the head r1-head's Ray holds 1 of 2 nodes"}
    assert out[H2]["why"] == {"r1-worker-1": "the head r1-head's Ray holds 1 of 2 nodes"}
    st[H1]["ray"]["r1-head"] = {"rc": 124, "nodes": None, "error": "Traceback...\nConnectionError: GCS gone\n"}
    out = _drift.decide(plan(), st)
    assert out[None]["group_why"] == {"r1": "the head r1-head's Ray does not answer (rc 124: ConnectionError: GCS gone)"}


def test_rule3_not_checked_for_sglang_or_when_head_changed_or_absent_or_head_host_out_of_play():
    st = states()
    st[H2]["containers"]["r1-worker-1"] = running("r1hash", T0)
    st[H1]["ray"]["r1-head"] = {"rc": 1, "nodes": None, "error": "x"}
    assert _drift.decide(plan("sglang"), st)[None]["group_why"] == {}
    st2 = states(**{H1: dict(st[H1], containers=dict(st[H1]["containers"], **{"r1-head": running("old")}))})
    st2[H2]["containers"]["r1-worker-1"] = running("r1hash", T0)
    out = _drift.decide(plan(), st2)
    assert out[None]["group_why"] == {} and out[None]["restart"] == ["r1"]
    assert out[H1]["why"] == {"r1-head": "config hash old -> r1hash"}
    del st[H1]
    out = _drift.decide(plan(), st)
    assert out[None]["group_why"] == {} and out[H2]["restart"] == ["r1"]


def test_rule3_no_ray_report_means_no_ray_verdict():
    st = states()
    st[H1]["ray"] = {}
    assert _drift.decide(plan(), st)[None]["group_why"] == {}


def test_files_out_of_sync_make_the_host_out_of_sync_without_restarting():
    st = states()
    st[H3]["files"] = [{"path": "/etc/llmfleet/qwq/deployment.json", "kind": "record", "in_sync": False}]
    out = _drift.decide(plan(), st)
    assert out[H3]["why"] == {} and out[H3]["drift"] == {} and out[H3]["in_sync"] is False


def test_expected_containers_ask_ray_only_on_multi_node_vllm_heads():
    p = plan()
    assert _drift.expected_containers(p, H1) == [
        {"name": "r1-head", "config_hash": "r1hash", "deployment": "r1", "ray_nodes": 2},
        {"name": "small", "config_hash": "smallhash", "deployment": "small"}]
    assert _drift.expected_containers(p, H2) == [{"name": "r1-worker-1", "config_hash": "r1hash", "deployment": "r1"}]
    assert _drift.expected_containers(plan("sglang"), H1)[0].get("ray_nodes") is None
    assert _drift.expected_containers(p, "nowhere") == []


def test_expected_containers_count_ray_nodes_through_the_plans_dashboard_and_token():
    p = plan()
    p["deployments"]["r1"]["ray"] = {"address": "10.0.0.1:6379", "dashboard": "127.0.0.1:8265",
                                     "auth": "token", "token_path": "/etc/llmfleet/r1/ray_token"}
    assert _drift.expected_containers(p, H1)[0] == {
        "name": "r1-head", "config_hash": "r1hash", "deployment": "r1", "ray_nodes": 2,
        "ray_dashboard": "127.0.0.1:8265", "ray_token_file": "/etc/llmfleet/r1/ray_token"}
    assert "ray_dashboard" not in _drift.expected_containers(p, H2)[0]  # a worker is not asked


def test_role_settings_outside_the_plan_take_the_host_out_of_sync_without_restarting():
    st = states()
    st[H2]["containers"]["r1-worker-1"]["settings_diff"] = ["restart_policy no -> unless-stopped"]
    out = _drift.decide(plan(), st)
    assert out[H2]["why"] == {} and out[H2]["restart"] == [] and out[H2]["drift"] == {}
    assert out[H2]["settings"] == {"r1-worker-1": ["restart_policy no -> unless-stopped"]}
    assert out[H2]["in_sync"] is False and out[H1]["in_sync"] is True


def healthy(st, *heads):
    """The state read's health GET answered 200 for these (host, container) heads."""
    for h, c in heads:
        st[h].setdefault("health", {})[c] = {"ok": True, "status": 200, "error": ""}
    return st


ALL_HEADS = ((H1, "r1-head"), (H1, "small"), (H3, "qwq"))


def test_rule5_unchanged_and_healthy_deployments_are_proven_ready_on_every_member():
    out = _drift.decide(plan(), healthy(states(), *ALL_HEADS))
    assert out[H1]["proven_ready"] == ["r1", "small"]
    assert out[H2]["proven_ready"] == ["r1"]  # the worker's host skips its wait too
    assert out[H3]["proven_ready"] == ["qwq"]


def test_rule5_no_health_answer_means_the_full_readiness_wait():
    out = _drift.decide(plan(), states())  # no health GET made (or none asked)
    assert all(out[h]["proven_ready"] == [] for h in (H1, H2, H3))
    st = healthy(states(), *ALL_HEADS)
    st[H3]["health"]["qwq"] = {"ok": False, "status": 503, "error": ""}
    assert _drift.decide(plan(), st)[H3]["proven_ready"] == []


def test_rule5_anything_this_run_changes_is_not_proven():
    # a changed worker: the whole group restarts, the head's earlier 200 proves nothing
    st = healthy(states(), *ALL_HEADS)
    st[H2]["containers"]["r1-worker-1"] = running("old")
    out = _drift.decide(plan(), st)
    assert "r1" not in out[H1]["proven_ready"] and out[H2]["proven_ready"] == [] and out[H1]["proven_ready"] == ["small"]
    # a broken Ray group (rule 3)
    st = healthy(states(), *ALL_HEADS)
    st[H1]["ray"]["r1-head"] = {"rc": 0, "nodes": 1, "error": ""}
    assert _drift.decide(plan(), st)[H2]["proven_ready"] == []
    # a member host not in this play
    st = healthy(states(), *ALL_HEADS)
    del st[H2]
    assert _drift.decide(plan(), st)[H1]["proven_ready"] == ["small"]
    # a role setting docker_container will apply (it may recreate the container)
    st = healthy(states(), *ALL_HEADS)
    st[H3]["containers"]["qwq"]["settings_diff"] = ["image a -> b"]
    assert _drift.decide(plan(), st)[H3]["proven_ready"] == []
    # a new API key restarts the engine
    st = healthy(states(), *ALL_HEADS)
    st[H3]["files"] = [{"kind": "key", "deployment": "qwq", "in_sync": False}]
    assert _drift.decide(plan(), st)[H3]["proven_ready"] == []


def test_rule5_a_file_rewritten_without_restart_keeps_the_proof():
    st = healthy(states(), *ALL_HEADS)
    st[H3]["files"] = [{"path": "/etc/llmfleet/qwq/deployment.json", "kind": "record", "in_sync": False}]
    out = _drift.decide(plan(), st)
    assert out[H3]["in_sync"] is False and out[H3]["proven_ready"] == ["qwq"]


def test_expected_containers_ask_the_health_of_the_api_server_only():
    p = plan()
    for d in p["deployments"].values():
        d["endpoint"] = {"base_url": "http://10.0.0.9:8000/"}
    c1 = _drift.expected_containers(p, H1)
    assert [c.get("health_url") for c in c1] == ["http://10.0.0.9:8000/health", "http://10.0.0.9:8000/health"]
    assert "health_url" not in _drift.expected_containers(p, H2)[0]  # a worker serves no API


def teardown_plan():
    p = plan()
    for name, d in p["deployments"].items():
        for h, hp in d["hosts"].items():
            base = "/etc/llmfleet/%s" % name
            hp["files"] = [{"kind": "dir", "path": base}, {"kind": "entrypoint", "path": base + "/entrypoint.sh"},
                           {"kind": "key", "path": base + "/api_key"}, {"kind": "record", "path": base + "/deployment.json"}]
    return p


def labelled(dep):
    return {"exists": True, "config_hash": "x", "deployment_label": dep, "running": True}


def test_teardown_reads_only_the_plans_containers_and_folders_of_the_host():
    r = _drift.teardown_reads(teardown_plan(), H1)
    assert r == {"containers": [{"name": "r1-head", "config_hash": "r1hash", "deployment": "r1"},
                                {"name": "small", "config_hash": "smallhash", "deployment": "small"}],
                 "finds": [{"path": "/etc/llmfleet/r1", "pattern": "*"}, {"path": "/etc/llmfleet/small", "pattern": "*"}]}
    assert _drift.teardown_reads(teardown_plan(), "not-planned") == {"containers": [], "finds": []}


def test_teardown_removes_containers_only_with_the_planned_deployment_label():
    st = {"containers": {"r1-head": labelled("r1"), "small": labelled("other-inventory")}, "found": {}}
    out = _drift.teardown(teardown_plan(), H1, st)
    assert out["containers"] == ["r1-head"]
    assert out["kept"]["small"] == "its llmfleet.deployment label is other-inventory, not small"
    st = {"containers": {"r1-head": dict(labelled(None)), "small": {"exists": False}}, "found": {}}
    out = _drift.teardown(teardown_plan(), H1, st)
    assert out["containers"] == [] and "label is missing" in out["kept"]["r1-head"] and "small" not in out["kept"]


def test_teardown_removes_the_plans_files_and_only_folders_holding_nothing_else():
    base = "/etc/llmfleet/r1"
    st = {"containers": {}, "found": {
        base: [base + "/api_key", base + "/deployment.json", base + "/entrypoint.sh"],
        "/etc/llmfleet/small": ["/etc/llmfleet/small/entrypoint.sh", "/etc/llmfleet/small/notes.txt"]}}
    out = _drift.teardown(teardown_plan(), H1, st)
    assert out["files"] == [base + "/entrypoint.sh", base + "/api_key", base + "/deployment.json",
                            "/etc/llmfleet/small/entrypoint.sh", "/etc/llmfleet/small/api_key",
                            "/etc/llmfleet/small/deployment.json"]
    assert out["dirs"] == [base]  # empty once the plan's files are gone
    assert out["kept"] == {"/etc/llmfleet/small": "holds files the plan did not write: /etc/llmfleet/small/notes.txt"}
    # a folder not listed (absent, or not read) is never named; config_dir never is
    out = _drift.teardown(teardown_plan(), H1, {"containers": {}, "found": {}})
    assert out["dirs"] == [] and all(not p.endswith("/etc/llmfleet") for p in out["files"] + out["dirs"])


def test_expected_files_carry_what_each_task_writes_and_the_watchdog():
    p = teardown_plan()
    p["deployments"]["qwq"]["hosts"][H3]["files"][1]["sha256"] = "e" * 64
    p["deployments"]["qwq"]["hosts"][H3]["files"].append({"kind": "ray_token", "path": "/etc/llmfleet/qwq/ray_token"})
    out = _drift.expected_files(p, H3, key_digest=lambda d: "k-" + d, record_digest=lambda d: "r-" + d,
                                read_records=True, watchdog={"script": "/usr/local/lib/llmfleet/llmfleet-watchdog",
                                                             "state_dir": "/var/lib/llmfleet/watchdog", "sha256": "w"})
    by = {f["path"]: f for f in out}
    assert by["/etc/llmfleet/qwq"]["state"] == "directory" and "sha256" not in by["/etc/llmfleet/qwq"]
    assert by["/etc/llmfleet/qwq/entrypoint.sh"]["sha256"] == "e" * 64
    assert by["/etc/llmfleet/qwq/api_key"]["sha256"] == "k-qwq" and by["/etc/llmfleet/qwq/api_key"]["deployment"] == "qwq"
    assert by["/etc/llmfleet/qwq/deployment.json"]["sha256"] == "r-qwq" and by["/etc/llmfleet/qwq/deployment.json"]["read"]
    assert "sha256" not in by["/etc/llmfleet/qwq/ray_token"]  # random content: presence, owner and mode only
    assert by["/usr/local/lib/llmfleet"] == {"owner": "root", "group": "root", "kind": "watchdog",
                                             "path": "/usr/local/lib/llmfleet", "state": "directory", "mode": "0700"}
    assert by["/usr/local/lib/llmfleet/llmfleet-watchdog"]["sha256"] == "w"
    assert by["/var/lib/llmfleet/watchdog"]["state"] == "directory"
    # no key lookup for a deployment without a key file in the plan; nothing for another host's plan
    assert all(f["deployment"] == "qwq" for f in out if f["kind"] != "watchdog")
    assert _drift.expected_files(p, "elsewhere", key_digest=None, record_digest=None) == []


def test_expected_reads_add_the_role_settings_with_the_plans_image():
    p = plan()
    p["deployments"]["qwq"]["hosts"][H3]["image"] = "vllm:1"
    c = _drift.expected_reads(p, H3, {"restart_policy": "unless-stopped", "log_max_file": 5, "ulimits": []})
    assert c[0]["settings"] == {"restart_policy": "unless-stopped", "log_max_file": "5", "ulimits": [], "image": "vllm:1"}
    assert "settings" not in _drift.expected_reads(p, H3)[0]


def test_host_containers_in_plan_order_with_the_fields_the_role_reads():
    p = plan()
    p["deployments"]["r1"]["hosts"][H1]["mounts"] = [
        {"source": "/etc/llmfleet/r1/api_key", "target": "/run/llmfleet/api_key"},
        {"source": "/etc/llmfleet/r1/ray_token", "target": "/run/llmfleet/ray_token"}]
    mine = _drift.host_containers(p, H1)
    assert [(m["d"], m["s"]["container_name"], m["ray_token"]) for m in mine] == [
        ("r1", "r1-head", "/etc/llmfleet/r1/ray_token"), ("small", "small", None)]
    assert mine[0] == {"d": "r1", "nodes": 2, "engine": "vllm", "head": H1, "hash": "r1hash",
                       "s": p["deployments"]["r1"]["hosts"][H1], "ray_token": "/etc/llmfleet/r1/ray_token"}
    assert _drift.host_containers(p, "not-planned") == []


def test_watchdog_cron_path_is_one_name_for_writing_keeping_and_removing():
    assert _drift.watchdog_cron_path("r1") == "/etc/cron.d/llmfleet-watchdog-r1"
    # cron ignores files with dots in their names: everything outside A-Za-z0-9_- becomes _
    assert _drift.watchdog_cron_path("qwen2.5-72b") == "/etc/cron.d/llmfleet-watchdog-qwen2_5-72b"
    assert _drift.watchdog_cron_path("a/../b c") == "/etc/cron.d/llmfleet-watchdog-a____b_c"
