# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmfleet.serving (may change without notice): read, in one call on a host, what
the role compares with the plan (module serving_state_info).

- every planned container: exists, ``llmfleet.config-hash`` label, running, status, start time
  (one ``docker inspect`` for all of them);
- for a running head of a multi-node vLLM group that matches the plan: how many Ray nodes are
  alive (one loopback GET of Ray's state API with the cluster token, else one ``docker exec``
  asking the head's GCS);
- every planned file or folder: exists, sha256, mode, owner, group, compared with what is
  expected, with the reason when it differs.

Read-only. The decisions across hosts (which groups restart) are made on the controller
(plugin_utils/_drift.py)."""

from __future__ import annotations

import base64
import fnmatch
import grp
import hashlib
import json
import os
import pwd
import stat

from urllib.error import HTTPError
from ansible.module_utils.urls import open_url

HASH_LABEL = "llmfleet.config-hash"
DEPLOYMENT_LABEL = "llmfleet.deployment"
MAX_READ = 1 << 20  # files[].read: larger files are not returned
# The Ray nodes alive, asked of the head's GCS directly (Ray 2.60: ray._raylet.GcsClient, what
# ray.nodes() reads) at the address `ray start --head` recorded (what address='auto' reads),
# without ray.init(): no driver, no core worker (0.6 s instead of 1.4 s in the lab). Ray's token
# authentication applies as to any client: the token comes from the container's
# RAY_AUTH_TOKEN_PATH (a wrong or missing token fails with AuthenticationError, rc 1).
# roles/inference_server/vars/main.yml carries the same line (workers.yml; a unit test keeps them equal).
RAY_ALIVE_NODES_PY = ("from ray._raylet import GcsClient; "
                      "n = GcsClient(address=open('/tmp/ray/ray_current_cluster').read().strip()).get_all_node_info(timeout=20); "
                      "print(sum(1 for v in n.values() if v.state == v.ALIVE))")


def _ulimits(items):
    """Sorted (name, soft, hard) of Docker's HostConfig.Ulimits or of "name:soft[:hard]" strings."""
    out = []
    for u in items or []:
        if isinstance(u, dict):
            out.append((str(u.get("Name")), int(u.get("Soft", 0)), int(u.get("Hard", 0))))
        else:
            parts = str(u).split(":")
            soft = int(parts[1]) if len(parts) > 1 else 0
            out.append((parts[0], soft, int(parts[2]) if len(parts) > 2 else soft))
    return sorted(out)


def settings_of(c):
    """The role-level settings of a container (not in the plan's hash) as docker inspect shows them."""
    hc = c.get("HostConfig") or {}
    log = hc.get("LogConfig") or {}
    return {"image": (c.get("Config") or {}).get("Image"), "restart_policy": (hc.get("RestartPolicy") or {}).get("Name"),
            "ipc_mode": hc.get("IpcMode"), "log_max_size": (log.get("Config") or {}).get("max-size"),
            "log_max_file": (log.get("Config") or {}).get("max-file"), "ulimits": _ulimits(hc.get("Ulimits"))}


def settings_diff(have, want):
    """["restart_policy no -> unless-stopped", ...] for every key of ``want`` (None: not compared)."""
    out = []
    for k in sorted(want or {}):
        w = want[k]
        if w is None:
            continue
        h = (have or {}).get(k)
        if k == "ulimits":
            w = _ulimits(w)
        elif w is not None and not isinstance(w, str):
            w = str(w)
        if h != w:
            out.append("%s %s -> %s" % (k, h, w))
    return out


def parse_inspect(stdout):
    """{name: state} from the JSON array ``docker inspect`` prints (names without the '/')."""
    out = {}
    try:
        data = json.loads(stdout or "[]")
    except ValueError:
        return out
    for c in data if isinstance(data, list) else []:
        name = (c.get("Name") or "").lstrip("/")
        st = c.get("State") or {}
        labels = (c.get("Config") or {}).get("Labels") or {}
        out[name] = {"exists": True, "config_hash": labels.get(HASH_LABEL), "deployment_label": labels.get(DEPLOYMENT_LABEL),
                     "running": bool(st.get("Running")),
                     "status": st.get("Status"), "started_at": st.get("StartedAt"), "id": (c.get("Id") or "")[:12],
                     "settings": settings_of(c)}
    return out


def read_containers(run, names, docker="docker"):
    """State of every container in ``names`` with one ``docker inspect``. ``run(argv)`` returns
    (rc, stdout, stderr). Raises RuntimeError when Docker itself does not answer."""
    if not names:
        return {}
    rc, out, err = run([docker, "inspect", "--type", "container"] + list(names))
    found = parse_inspect(out)
    if rc != 0 and not found:
        missing_only = all("no such" in line.lower() for line in (err or "").strip().splitlines()) and err.strip()
        if not missing_only:
            raise RuntimeError("docker inspect failed (rc %s): %s" % (rc, (err or out or "").strip()[-500:]))
    return {n: found.get(n, {"exists": False}) for n in names}


def _dashboard_get(url, token, timeout_s):
    """GET ``url`` with the Ray token as a bearer token; the parsed JSON (urllib, no dependency)."""
    resp = open_url(url, headers={"Authorization": "Bearer " + token}, timeout=timeout_s, use_proxy=False)
    try:
        return json.loads(resp.read().decode("utf-8"))
    finally:
        resp.close()


def dashboard_alive_nodes(data):
    """Alive nodes in the answer of Ray's state API ``GET /api/v0/nodes`` (Ray 2.60:
    ``{"result": true, "data": {"result": {"result": [{"state": "ALIVE", ...}], "total": N,
    "num_after_truncation": N}}}``). None when the answer is not that, or was truncated."""
    try:
        res = data["data"]["result"]
        nodes = res["result"]
        if not data.get("result", True) or not isinstance(nodes, list):
            return None
        if int(res.get("total", len(nodes))) > len(nodes):
            return None
        return sum(1 for n in nodes if isinstance(n, dict) and n.get("state") == "ALIVE")
    except (KeyError, TypeError, ValueError):
        return None


def ray_nodes(run, container, docker="docker", timeout_s=30, dashboard=None, token_file=None, http_get=None):
    """{rc, nodes, error, via}: the Ray nodes alive as the head ``container`` sees them.

    With ``dashboard`` (the plan's loopback ``127.0.0.1:PORT`` of the head, which runs on this
    host) and ``token_file`` (the plan's Ray token on this host), asks Ray's state API first: one
    local HTTP GET with the token (never on argv or in the result), about 0.1 s. When that does
    not answer as Ray's state API does (no dashboard in the image, token unreadable, refused),
    asks the head's GCS from inside the container (``RAY_ALIVE_NODES_PY``, about 0.6 s)."""
    notes = []
    if dashboard and token_file:
        try:
            with open(token_file) as f:
                token = f.read().strip()
            data = (http_get or _dashboard_get)("http://%s/api/v0/nodes?limit=10000&detail=false" % dashboard,
                                                token, min(10, int(timeout_s)))
            n = dashboard_alive_nodes(data)
            if n is not None:
                return {"rc": 0, "nodes": n, "error": "", "via": "dashboard"}
            notes.append("dashboard: unexpected answer")
        except Exception as e:  # pylint: disable=broad-except  # any failure: ask the GCS instead
            notes.append("dashboard: %s" % (type(e).__name__,))
    rc, out, err = run([docker, "exec", container, "timeout", str(int(timeout_s)), "python3", "-c", RAY_ALIVE_NODES_PY])
    res = {"rc": rc, "nodes": None, "error": "", "via": "gcs"}
    if rc == 0:
        try:
            res["nodes"] = int((out or "").strip().splitlines()[-1])
        except (ValueError, IndexError):
            res.update(rc=1, error="unexpected output: %r" % (out or "")[-200:])
    else:
        res["error"] = (err or out or "").strip()[-500:]
    if notes:
        res["fallback"] = "; ".join(notes)
    return res


def _health_status(url, timeout_s):
    """HTTP status of a GET of ``url`` (urllib raises for 4xx/5xx: their code is returned)."""
    try:
        resp = open_url(url, timeout=timeout_s, use_proxy=False, validate_certs=False)
    except HTTPError as e:
        return e.code
    try:
        return resp.getcode()
    finally:
        resp.close()


def health(url, timeout_s=5, health_get=None):
    """{ok, status, error}: one GET of an engine's health URL (200 = ok); never raises."""
    try:
        code = (health_get or _health_status)(url, timeout_s)
        return {"ok": code == 200, "status": code, "error": ""}
    except Exception as e:  # pylint: disable=broad-except  # refused, timeout: not healthy
        return {"ok": False, "status": None, "error": "%s: %s" % (type(e).__name__, str(e)[-200:])}


def _name(getter, num):
    try:
        return getter(num)[0]
    except KeyError:
        return str(num)


def sha256_of(path, bufsize=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(bufsize), b""):
            h.update(chunk)
    return h.hexdigest()


def file_state(want):
    """Compare one expected file or folder ``want`` ({path, state: file|directory, sha256, mode,
    owner, group}; unset keys are not compared) with the host. Returns the entry with
    ``in_sync`` and ``why`` (a list of differences, the content's hash never shown), and with
    ``read`` set the file's ``content`` (base64; never set it for a secret)."""
    path = want["path"]
    kind = want.get("state") or "file"
    res = {k: want[k] for k in ("path", "kind", "deployment") if want.get(k) is not None}
    res["state"] = kind
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        res.update(exists=False, in_sync=False, why=["absent"])
        return res
    except OSError as e:
        res.update(exists=False, in_sync=False, why=["cannot be read: %s" % e])
        return res
    why = []
    is_dir, is_file = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
    have = {"mode": "%04o" % stat.S_IMODE(st.st_mode), "owner": _name(pwd.getpwuid, st.st_uid),
            "group": _name(grp.getgrgid, st.st_gid)}
    if kind == "directory" and not is_dir:
        why.append("not a directory")
    elif kind == "file" and not is_file:
        why.append("not a regular file")
    elif kind == "file" and want.get("sha256"):
        try:
            if sha256_of(path) != want["sha256"]:
                why.append("content differs")
        except OSError as e:
            why.append("cannot be read: %s" % e)
    if kind == "file" and is_file and want.get("read") and st.st_size <= MAX_READ:
        try:
            with open(path, "rb") as f:
                res["content"] = base64.b64encode(f.read()).decode("ascii")
        except OSError:
            pass
    for k in ("mode", "owner", "group"):
        w = want.get(k)
        if w is None:
            continue
        w = ("%04o" % int(str(w), 8)) if k == "mode" else str(w)
        if have[k] != w:
            why.append("%s %s -> %s" % (k, have[k], w))
    res.update(have, exists=True, in_sync=not why, why=why)
    return res


def _container_view(s):
    if not s.get("exists"):
        return "absent"
    return "%s, config hash %s" % ("running" if s.get("running") else "not running (%s)" % s.get("status"),
                                   s.get("config_hash") or "none")


def _file_view(f):
    if not f.get("exists"):
        return "absent"
    return "%s %s %s:%s" % (f.get("state"), f.get("mode"), f.get("owner"), f.get("group"))


def find(specs):
    """{folder: [full paths of its entries matching the glob pattern]} for [{path, pattern}]
    (a missing folder lists nothing)."""
    out = {}
    for spec in specs or []:
        try:
            names = sorted(os.listdir(spec["path"]))
        except OSError:
            names = []
        out[spec["path"]] = [os.path.join(spec["path"], n) for n in names
                             if fnmatch.fnmatchcase(n, spec.get("pattern") or "*")]
    return out


def read_state(run, containers, files, docker="docker", ray_timeout_s=30, probes=None, finds=None, http_get=None,
               health_get=None):
    """Everything ``serving_state_info`` returns. ``containers``: [{name, config_hash, ray_nodes?,
    ray_dashboard?, ray_token_file?, health_url?}] (``ray_nodes``: count them, see ``ray_nodes()``;
    ``health_url``: one GET of it when the container runs with the planned hash, in ``health``);
    ``settings`` (optional, per container): the role-level settings docker_container would apply
    ({image, restart_policy, ipc_mode, log_max_size, log_max_file, ulimits}); a difference makes
    the container differ (``settings_diff``) although its hash matches.
    ``files``: [{path, state?, sha256?, mode?, owner?, group?, kind?, deployment?}];
    ``probes``: paths whose existence is returned (``probes``); ``finds``: [{path, pattern}]
    folders listed (``found``), so that the tasks that would stat or list them need no call.

    ``differences`` lists what must change, ``diff`` ({before, after}, one line per item that
    differs, never a file's content) is what --diff shows."""
    names = [c["name"] for c in containers]
    cstate = read_containers(run, names, docker=docker)
    for c in containers:
        s = cstate[c["name"]]
        if s.get("exists"):
            s["settings_diff"] = settings_diff(s.get("settings"), c.get("settings"))
    ray = {}
    for c in containers:
        s = cstate[c["name"]]
        if c.get("ray_nodes") and s.get("exists") and s.get("running") and s.get("config_hash") == c.get("config_hash"):
            ray[c["name"]] = ray_nodes(run, c["name"], docker=docker, timeout_s=ray_timeout_s,
                                       dashboard=c.get("ray_dashboard"), token_file=c.get("ray_token_file"),
                                       http_get=http_get)
    checked = {}
    for c in containers:
        s = cstate[c["name"]]
        if c.get("health_url") and s.get("exists") and s.get("running") and s.get("config_hash") == c.get("config_hash"):
            checked[c["name"]] = health(c["health_url"], health_get=health_get)
    fstate = [file_state(f) for f in files]
    reasons, before, after = [], [], []
    for c in containers:
        n, s = c["name"], cstate[c["name"]]
        want = "running, config hash %s" % c.get("config_hash")
        r = ray.get(n)
        if not s.get("exists") or s.get("config_hash") != c.get("config_hash") or not s.get("running"):
            reasons.append("%s: %s -> %s" % (n, _container_view(s), want))
        elif s.get("settings_diff"):
            reasons.append("%s: %s" % (n, ", ".join(s["settings_diff"])))
        elif r is not None and (r["rc"] != 0 or (r["nodes"] or 0) < int(c["ray_nodes"])):
            reasons.append("%s: Ray holds %s of %s nodes" % (n, r["nodes"], c["ray_nodes"]))
            before.append("%s: Ray nodes %s" % (n, r["nodes"]))
            after.append("%s: Ray nodes %s" % (n, c["ray_nodes"]))
            continue
        else:
            continue
        before.append("%s: %s" % (n, _container_view(s)))
        after.append("%s: %s" % (n, want))
    for f in fstate:
        if not f["in_sync"]:
            reasons.append("%s: %s" % (f["path"], ", ".join(f["why"])))
            before.append("%s: %s" % (f["path"], _file_view(f)))
            after.append("%s: %s" % (f["path"], ", ".join(f["why"])))
    return {"containers": cstate, "ray": ray, "health": checked, "files": fstate, "in_sync": not reasons, "differences": reasons,
            "probes": {p: os.path.exists(p) for p in probes or []}, "found": find(finds),
            "diff": {"before": "".join(x + "\n" for x in before), "after": "".join(x + "\n" for x in after)}}
