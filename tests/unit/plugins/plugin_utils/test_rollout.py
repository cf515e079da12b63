"""Unit tests of plugin_utils/_rollout.py: the rollout plan of playbooks/reconfigure.yml."""
import json

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _rollout


def plan(*deps):
    """deps: (name, hosts, served model)."""
    out = {"deployments": {}, "hosts": {}}
    for name, hosts, model in deps:
        out["deployments"][name] = {"name": name, "served_model_name": model, "config_hash": name + "-hash",
                                    "head": hosts[0],
                                    "hosts": {h: {"container_name": "c-%s-%d" % (name, i)} for i, h in enumerate(hosts)}}
        for i, h in enumerate(hosts):
            out["hosts"].setdefault(h, []).append({"deployment": name, "container_name": "c-%s-%d" % (name, i)})
    return out


FLEET = plan(("roll-a", ["h1"], "qwq"), ("roll-b", ["h2"], "qwq"), ("roll-c", ["h3"], "qwq"),
             ("r1", ["h4", "h5"], "r1"))


def drift(*names):
    """Every container of the named deployments drifts (config hash)."""
    out = {}
    for n in names:
        for h, hp in FLEET["deployments"][n]["hosts"].items():
            out.setdefault(h, {}).setdefault(n, {})[hp["container_name"]] = "config hash a -> b"
    return out


def test_only_drifting_replicas_roll_one_at_a_time_in_name_order():
    r = _rollout.rollout(FLEET, drift("roll-c", "roll-a"))
    assert [b["deployments"] for b in r["batches"]] == [["roll-a"], ["roll-c"]]
    assert [b["index"] for b in r["batches"]] == [0, 1]
    assert r["batch_sizes"] == [1, 1]
    assert r["summary"][1] == {"index": 1, "canary": False, "deployments": ["roll-c"], "hosts": ["h3"], "gateways": []}
    assert r["hosts"] == [{"host": "h1", "batch": 0}, {"host": "h3", "batch": 1}]
    assert r["drift"] == {"roll-a": {"h1/c-roll-a-0": "config hash a -> b"},
                          "roll-c": {"h3/c-roll-c-0": "config hash a -> b"}}


def test_no_drift_no_batches_and_serial_stays_valid():
    r = _rollout.rollout(FLEET, {})
    assert r["batches"] == [] and r["drift"] == {} and r["batch_sizes"] == [1]


def test_only_restricts_the_replicas_considered():
    r = _rollout.rollout(FLEET, drift("roll-a", "roll-b"), only=["roll-b"])
    assert list(r["drift"]) == ["roll-b"] and [b["deployments"] for b in r["batches"]] == [["roll-b"]]


def test_multi_host_replica_rolls_its_hosts_together():
    r = _rollout.rollout(FLEET, drift("r1", "roll-a"))
    assert [b["hosts"] for b in r["batches"]] == [["h4", "h5"], ["h1"]]
    assert r["batch_sizes"] == [2, 1]


def test_replicas_sharing_a_host_roll_together():
    p = plan(("a", ["h1"], "m"), ("b", ["h2"], "m"), ("c", ["h1", "h3"], "m"), ("d", ["h4"], "m"))
    dr = {"h1": {"a": {"x": "y"}, "c": {"x": "y"}}, "h2": {"b": {"x": "y"}}, "h4": {"d": {"x": "y"}}}
    r = _rollout.rollout(p, dr)
    assert [b["deployments"] for b in r["batches"]] == [["a", "c"], ["b"], ["d"]]
    assert r["batches"][0]["hosts"] == ["h1", "h3"]


def test_a_replica_bridging_two_batches_merges_them():
    p = plan(("a", ["h1"], "m"), ("b", ["h2"], "m"), ("c", ["h1", "h2"], "m"))
    dr = {"h1": {"a": {"x": "y"}, "c": {"x": "y"}}, "h2": {"b": {"x": "y"}}}
    r = _rollout.rollout(p, dr)
    assert [b["deployments"] for b in r["batches"]] == [["a", "b", "c"]]
    assert r["batches"][0]["hosts"] == ["h1", "h2"]
    assert len({x["host"] for x in r["hosts"]}) == len(r["hosts"]), "a host in two batches"


def test_canary_first_and_only_first():
    r = _rollout.rollout(FLEET, drift("roll-a", "roll-b", "roll-c"), canary_deployment="roll-b")
    assert [b["deployments"] for b in r["batches"]] == [["roll-b"], ["roll-a"], ["roll-c"]]
    assert [b["canary"] for b in r["batches"]] == [True, False, False]
    # a canary that does not drift is ignored; the gate switched off means no canary
    r = _rollout.rollout(FLEET, drift("roll-a", "roll-c"), canary_deployment="roll-b")
    assert r["batches"][0]["deployments"] == ["roll-a"] and r["batches"][0]["canary"]
    r = _rollout.rollout(FLEET, drift("roll-a"), canary=False)
    assert not r["batches"][0]["canary"]


def test_gateways_route_by_model_or_by_listed_replica_in_gateway_order():
    gws = [{"host": "gw1", "gateway_deployment": "roll-a", "gateway_name": "front"},
           {"host": "gw2", "gateway_deployment": "r1"},
           {"host": "gw3", "gateway_replicas": [{"name": "roll-b", "url": "http://x"}]},
           {"host": "gw4"}]
    r = _rollout.rollout(FLEET, drift("roll-b", "r1"), gateways=gws)
    b_r1, b_rollb = r["batches"]
    assert b_r1["deployments"] == ["r1"] and b_r1["gateways"] == [{"host": "gw2", "replica": "r1", "backend": "r1"}]
    assert b_rollb["gateways"] == [{"host": "gw1", "replica": "roll-b", "backend": "front"},
                                   {"host": "gw3", "replica": "roll-b", "backend": "llmfleet"}]


def test_batch_plan_touches_only_the_batch_replicas():
    p = plan(("a", ["h1"], "m"), ("other", ["h1"], "m"), ("b", ["h2"], "m"))
    r = _rollout.rollout(p, {"h1": {"a": {"c-a-0": "x"}}, "h2": {"b": {"c-b-0": "x"}}})
    bp = r["batches"][0]["plan"]
    assert list(bp["deployments"]) == ["a"]
    assert bp["hosts"] == {"h1": [{"deployment": "a", "container_name": "c-a-0"}]}
    assert list(p["deployments"]) == ["a", "other", "b"], "the input plan is not modified"


def test_rollback_plan_only_when_every_replica_has_a_running_plan():
    p = plan(("a", ["h1"], "m"), ("c", ["h1", "h2"], "m"))
    dr = {"h1": {"a": {"x": "y"}, "c": {"x": "y"}}}
    old_a = {"name": "a", "config_hash": "old", "hosts": {"h1": {"container_name": "c-a-0"}}}
    old_c = {"name": "c", "config_hash": "old", "hosts": {"h1": {"container_name": "c-c-0"}, "h2": {"container_name": "c-c-1"}}}
    r = _rollout.rollout(p, dr, running={"a": old_a, "c": old_c})
    rb = r["batches"][0]["rollback_plan"]
    assert rb["deployments"] == {"a": old_a, "c": old_c}
    assert rb["hosts"] == {"h1": [{"deployment": "a", "container_name": "c-a-0"}, {"deployment": "c", "container_name": "c-c-0"}],
                           "h2": [{"deployment": "c", "container_name": "c-c-1"}]}
    assert r["before"] == {"a": old_a, "c": old_c}
    r = _rollout.rollout(p, dr, running={"a": old_a})
    assert r["batches"][0]["rollback_plan"] == {}
    assert r["before"]["c"] == {}


def test_running_plans_from_deployment_json():
    good = {"name": "a", "config_hash": "h"}
    assert _rollout.running_plans({"a": json.dumps(good), "b": "{broken", "c": "{}", "d": good}) == {"a": good, "d": good}


def test_canary_verdict():
    ok = {"deployment": "a", "baseline_checks": [{"passed": True}], "thresholds": [{"passed": True}]}
    assert _rollout.canary_verdict([ok]) == []
    assert _rollout.canary_verdict([]) == []
    slow = dict(ok, baseline_checks=[{"passed": False}], msg="regression against the baseline b: median_tpot_ms")
    assert _rollout.canary_verdict([ok, slow]) == ["a: regression against the baseline b: median_tpot_ms"]
    assert _rollout.canary_verdict([dict(ok, thresholds=[{"passed": False}])]) == ["a: a check failed"]
    assert _rollout.canary_verdict([{"deployment": "b", "msg": "connection refused"}]) == ["b: connection refused"]


def test_config_hashes_of_every_deployment():
    assert _rollout.rollout(FLEET, {})["config_hashes"]["r1"] == "r1-hash"
