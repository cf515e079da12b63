# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmfleet.serving (may change without notice): which engine containers restart and why.

Controller-only, pure: compares what every host reported (``serving_state_info``: its containers,
the Ray node count of its running heads, its planned files) with the plan, across the members of
each multi-node group. The rules, each with a unit test (tests/unit/plugins/plugin_utils/test_drift.py):

1. A container is changed when it is absent, its ``llmfleet.config-hash`` label differs from the
   plan's hash, it is not running, or its API-key file is missing or differs (a key is read only
   at start). A role-level setting outside the plan that differs (image, restart policy, IPC
   mode, log rotation, ulimits) restarts nothing by itself: it only takes the host out of sync,
   so that docker_container runs and applies it as it always did.
2. A multi-node group (Ray head + workers, SGLang ranks) restarts as a whole when any member is
   changed, or when a member's host is not among the hosts that reported (not in this play): a
   lone member cannot rejoin a group safely.
3. A multi-node vLLM group whose members all match the plan is still broken when a member started
   before the current head (after the head's host restarted, the workers had joined the old
   head's Ray), or when the head's Ray does not answer or holds fewer nodes than the plan.
4. Every member of a restarting group gets a reason: its own, else the group's, else
   "member of a changed group".
5. A deployment is proven ready (``proven_ready``: its readiness wait is skipped) only when this
   run changes none of its containers (every member host reported, no member changed, restarting,
   in a broken group or with a role setting to apply) and the one GET of its head's health URL in
   the same state read answered 200. Anything else keeps the full readiness wait.
"""

from __future__ import annotations

import re

from ansible_collections.llmfleet.serving.plugins.plugin_utils._plan import RAY_TOKEN_IN_CONTAINER

HASH_LABEL = "llmfleet.config-hash"
MEMBER_OF_CHANGED_GROUP = "member of a changed group"
NOT_IN_PLAY = "not in this play"
KEY_KINDS = ("key", "api_key")


def started_key(started_at):
    """Docker's ``State.StartedAt`` (RFC 3339, nanoseconds, UTC 'Z') as a sortable string:
    ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnn`` (the fraction padded to 9 digits)."""
    s = started_at or ""
    frac = re.sub(r"(Z|[+-]\d\d:\d\d)$", "", s[20:])
    return "%s.%s" % (s[:19], (frac + "000000000")[:9])


def deployments_of(plan, host):
    """The deployments planned on ``host``: [(name, deployment plan, host plan)] in plan order."""
    out = []
    for ref in (plan.get("hosts") or {}).get(host) or []:
        dep = plan["deployments"][ref["deployment"]]
        out.append((ref["deployment"], dep, dep["hosts"][host]))
    return out


def host_containers(plan, host):
    """The containers planned on ``host``, as the role's tasks loop over them: each
    ``{d: deployment, nodes, engine, head, hash: config hash, s: host plan, ray_token: the host
    path of the Ray token mounted into it, None without one}``, in plan order."""
    out = []
    for name, dep, hp in deployments_of(plan, host):
        token = None
        for mount in hp.get("mounts") or []:
            if isinstance(mount, dict) and mount.get("target") == RAY_TOKEN_IN_CONTAINER:
                token = mount.get("source")
        out.append({"d": name, "nodes": dep["nodes"], "engine": dep["engine"], "head": dep["head"],
                    "hash": dep["config_hash"], "s": hp, "ray_token": token})
    return out


def watchdog_cron_path(deployment):
    """The cron file of a deployment's group watchdog: ``/etc/cron.d/llmfleet-watchdog-NAME``,
    every character of NAME outside ``A-Za-z0-9_-`` made ``_`` (cron skips files with dots)."""
    return "/etc/cron.d/llmfleet-watchdog-" + re.sub(r"[^A-Za-z0-9_-]", "_", deployment)


def expected_containers(plan, host):
    """What ``serving_state_info`` reads on ``host``: each planned container with its hash, and for
    the head of a multi-node vLLM group the Ray node count to check."""
    out = []
    for name, dep, hp in deployments_of(plan, host):
        c = {"name": hp["container_name"], "config_hash": dep["config_hash"], "deployment": name}
        base = (dep.get("endpoint") or {}).get("base_url")
        if base and int(hp.get("rank") or 0) == 0:
            c["health_url"] = health_url(dep)
        if dep.get("engine") == "vllm" and int(dep.get("nodes") or 1) > 1 and int(hp.get("rank") or 0) == 0:
            c["ray_nodes"] = int(dep["nodes"])
            ray = dep.get("ray") or {}
            if ray.get("dashboard") and ray.get("token_path"):
                c.update(ray_dashboard=ray["dashboard"], ray_token_file=ray["token_path"])
        out.append(c)
    return out


def expected_files(plan, host, key_digest, record_digest, read_records=False, watchdog=None):
    """What ``serving_state_info`` compares on ``host``: the plan's files of this host
    (``hosts.<h>.files``) with what each would hold, and the watchdog's script and folders.

    ``key_digest(deployment)`` / ``record_digest(deployment)``: sha256 of the API key and of the
    deployment record as the role writes them (computed on the control node, never returned by
    the host); the entrypoint's sha256 is the plan's; a Ray token's content is random, so only
    its presence, owner and mode are compared. ``read_records``: the records' content comes back
    (reconfigure diffs against them). ``watchdog``: {script, state_dir, sha256} or None."""
    out = []
    for name, _dep, hp in deployments_of(plan, host):
        for f in hp.get("files") or []:
            kind = f.get("kind")
            e = {"path": f["path"], "mode": f.get("mode"), "owner": f.get("owner"), "group": f.get("group"),
                 "kind": kind, "deployment": name, "state": "directory" if kind == "dir" else "file"}
            if kind == "entrypoint":
                e["sha256"] = f.get("sha256")
            elif kind == "key":
                e["sha256"] = key_digest(name)
            elif kind == "record":
                e.update(sha256=record_digest(name), read=bool(read_records))
            out.append(e)
    if watchdog:
        wd = {"owner": "root", "group": "root", "kind": "watchdog"}
        script = watchdog["script"]
        out.append(dict(wd, path=script.rsplit("/", 1)[0] or "/", state="directory", mode="0700"))
        out.append(dict(wd, path=watchdog["state_dir"], state="directory", mode="0700"))
        out.append(dict(wd, path=script, state="file", mode="0644", sha256=watchdog["sha256"]))
    return out


def expected_reads(plan, host, settings=None):
    """``expected_containers`` with the role-level settings each container gets (``settings``:
    restart_policy, ipc_mode, log_max_size, log_max_file, ulimits; the image is the plan's)."""
    out = []
    hosts = {n: hp for n, _d, hp in deployments_of(plan, host)}
    for c in expected_containers(plan, host):
        if settings is not None:
            c["settings"] = dict(settings, image=hosts[c["deployment"]].get("image"))
            if c["settings"].get("log_max_file") is not None:
                c["settings"]["log_max_file"] = str(c["settings"]["log_max_file"])
        out.append(c)
    return out


def health_url(dep):
    """The URL whose GET 200 says the deployment's API server is up: the plan's endpoint + /health."""
    return dep["endpoint"]["base_url"].rstrip("/") + "/health"


def proven_ready(name, dep, states, why, restart, group_why):
    """Rule 5: True when this run changes nothing of deployment ``name`` and its head answered
    its health GET with 200 in the same state read."""
    if name in restart or name in group_why:
        return False
    for h, hp in dep["hosts"].items():
        st = states.get(h)
        if st is None or hp["container_name"] in (why.get(h) or {}):
            return False
        if ((st.get("containers") or {}).get(hp["container_name"]) or {}).get("settings_diff"):
            return False
    head = dep["hosts"][dep["head"]]["container_name"]
    return bool(((states[dep["head"]].get("health") or {}).get(head) or {}).get("ok"))


def container_reason(state, want_hash, key_changed=False):
    """Rule 1: why one container must change (None when it matches). ``state`` is what
    serving_state_info reported for it ({exists, config_hash, running, status, started_at})."""
    if not state or not state.get("exists"):
        return "absent"
    have = state.get("config_hash")
    if have != want_hash:
        return "config hash %s -> %s" % (have or "none", want_hash)
    if not state.get("running"):
        return "not running (%s)" % (state.get("status") or "unknown")
    if key_changed:
        return "API key changed"
    return None


def _group_reason(name, dep, states, why):
    """Rule 3 for one multi-node vLLM deployment whose head matches the plan; None when healthy."""
    head = dep["head"]
    hp = dep["hosts"][head]
    cname = hp["container_name"]
    hs = states.get(head)
    if hs is None:
        return None
    head_state = (hs.get("containers") or {}).get(cname)
    if not head_state or not head_state.get("exists") or not head_state.get("running") or cname in why.get(head, {}):
        return None
    head_started = started_key(head_state.get("started_at"))
    for h, s in dep["hosts"].items():
        if h == head or h not in states:
            continue
        st = (states[h].get("containers") or {}).get(s["container_name"])
        if st and st.get("exists") and started_key(st.get("started_at")) < head_started:
            return "%s on %s started at %s, before the head %s (%s): it did not rejoin the current head" % (
                s["container_name"], h, st.get("started_at"), cname, head_state.get("started_at"))
    ray = (hs.get("ray") or {}).get(cname)
    if ray is None:
        return None
    if ray.get("rc", 1) != 0:
        err = (ray.get("error") or "").strip().splitlines()
        return "the head %s's Ray does not answer (rc %s: %s)" % (cname, ray.get("rc", "?"), err[-1] if err else "")
    if ray.get("nodes") is None or int(ray["nodes"]) < int(dep["nodes"]):
        return "the head %s's Ray holds %s of %d nodes" % (cname, ray.get("nodes"), int(dep["nodes"]))
    return None


def decide(plan, states, key_changed=None):
    """Decide for every host that reported. ``states``: {host: serving_state_info result}; hosts of
    the plan missing from it are not in this play. ``key_changed``: {host: [deployments whose API-key
    file is missing or differs]} (default: taken from each state's ``files``, entries of kind
    ``key``, the plan's name, or ``api_key``).

    Returns {host: {"why": {container: reason}, "restart": [deployments restarting as a whole],
    "proven_ready": [deployments whose readiness wait can be skipped, rule 5],
    "group_why": {deployment: reason}, "drift": {deployment: {container: reason}},
    "in_sync": bool}} plus, under the key None, the fleet-wide ``restart`` and ``group_why``."""
    deps = plan.get("deployments") or {}
    if key_changed is None:
        key_changed = {h: [f.get("deployment") for f in (st.get("files") or []) if f.get("kind") in KEY_KINDS
                           and not f.get("in_sync")] for h, st in states.items()}
    # Rule 1, per host
    why = {}
    for h, st in states.items():
        w = {}
        for name, dep, hp in deployments_of(plan, h):
            r = container_reason((st.get("containers") or {}).get(hp["container_name"]), dep["config_hash"],
                                 name in (key_changed.get(h) or ()))
            if r:
                w[hp["container_name"]] = r
        why[h] = w
    # Rule 3, per multi-node vLLM deployment
    group_why = {}
    for name, dep in sorted(deps.items()):
        if int(dep.get("nodes") or 1) > 1 and dep.get("engine") == "vllm":
            r = _group_reason(name, dep, states, why)
            if r:
                group_why[name] = r
    # Rule 2
    restart = []
    for name, dep in sorted(deps.items()):
        if int(dep.get("nodes") or 1) <= 1 or not any(h in states for h in dep["hosts"]):
            continue
        if name in group_why or any(h not in states or s["container_name"] in why[h] for h, s in dep["hosts"].items()):
            restart.append(name)
    # Rule 4
    out = {}
    for h in states:
        w = dict(why[h])
        drift = {}
        mine = deployments_of(plan, h)
        for name, dep, hp in mine:
            c = hp["container_name"]
            if c not in w and name in group_why:
                w[c] = group_why[name]
            r = w.get(c, MEMBER_OF_CHANGED_GROUP if name in restart else None)
            if r is not None:
                drift.setdefault(name, {})[c] = r
        files_ok = all(f.get("in_sync") for f in (states[h].get("files") or []))
        settings = {c: s["settings_diff"] for c, s in sorted((states[h].get("containers") or {}).items())
                    if s.get("settings_diff")}
        out[h] = {"why": w, "restart": [n for n, _d, _hp in mine if n in restart],
                  "proven_ready": [n for n, d, _hp in mine if proven_ready(n, d, states, why, restart, group_why)],
                  "group_why": {n: group_why[n] for n, _d, _hp in mine if n in group_why},
                  "drift": drift, "settings": settings, "in_sync": not drift and files_ok and not settings}
    out[None] = {"restart": restart, "group_why": group_why}
    return out


DEPLOYMENT_LABEL = "llmfleet.deployment"


def teardown_reads(plan, host):
    """What ``serving_state_info`` reads on ``host`` before a teardown: the plan's containers of
    this host (their deployment label is compared, nothing else) and the plan's folders, listed."""
    containers = [{"name": hp["container_name"], "config_hash": dep["config_hash"], "deployment": name}
                  for name, dep, hp in deployments_of(plan, host)]
    finds = [{"path": f["path"], "pattern": "*"} for _n, _d, hp in deployments_of(plan, host)
             for f in hp.get("files") or [] if f.get("kind") == "dir"]
    return {"containers": containers, "finds": finds}


def teardown(plan, host, state):
    """What a teardown removes on ``host``: only what this inventory's plan started there.

    - ``containers``: the plan's container names on this host whose ``llmfleet.deployment`` label
      (``state.containers[name].deployment_label``) is the planned deployment; another
      inventory's or a user's container of the same name stays.
    - ``files``: the plan's files (not folders) of this host's deployments.
    - ``dirs``: the plan's deployment folders that hold nothing but the plan's files
      (``state.found[folder]``: what the folder holds now); a folder with anything else stays,
      and a folder the plan does not list is never named.
    - ``kept``: {path or container: why it stays}, for the operator."""
    cstate = state.get("containers") or {}
    found = state.get("found") or {}
    containers, files, dirs, kept = [], [], [], {}
    for name, _dep, hp in deployments_of(plan, host):
        c = hp["container_name"]
        st = cstate.get(c) or {}
        if st.get("exists"):
            label = st.get("deployment_label")
            if label == name:
                containers.append(c)
            else:
                kept[c] = "its %s label is %s, not %s" % (DEPLOYMENT_LABEL, label or "missing", name)
        planned = hp.get("files") or []
        mine = [f["path"] for f in planned if f.get("kind") != "dir"]
        files.extend(mine)
        for f in planned:
            if f.get("kind") != "dir":
                continue
            if f["path"] not in found:
                continue  # not listed: absent, or not read; never removed blindly
            other = sorted(x for x in found[f["path"]] if x not in mine)
            if other:
                kept[f["path"]] = "holds files the plan did not write: %s" % ", ".join(other[:5])
            else:
                dirs.append(f["path"])
    return {"containers": containers, "files": files, "dirs": dirs, "kept": kept}
