# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight across hosts: compare the hosts of each deployment before anything starts (PRIVATE).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python (no Ansible imports), unit-tested without hosts (tests/unit/plugins/plugin_utils/
test_preflight.py). Three steps, see docs/preflight.md:

1. ``views(plan)``: per deployment its hosts (head first), image, model_path, weight size, ports
   per host and private addresses, read from the plan (``llmfleet_plan``) and nothing else: the
   planner made every one of these decisions (issue 13: one contract).
2. ``targets(views)``: per host what the host tasks must look at (images, paths, ports).
3. ``check(views, host_data, ...)``: compares, returns {"ok", "tables", "errors", "hosts"}; a
   failure renders one table per deployment (one row per host, one column per value, the
   mismatching columns marked) followed by the fixes.

``host_data`` per host is parsed from the raw outputs the playbook registered:
``parse_df``, ``parse_listening`` (``ss -ltnH`` or /proc/net/tcp), ``parse_clock``,
``image_ref`` (docker_image_info), ``parse_state`` / ``parse_index`` (file contents).
"""

from __future__ import annotations

import json

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _plan

CHECKS = ("gpu", "driver", "image", "interface", "disk", "ports", "clock")
DEFAULT_CLOCK_TOLERANCE_S = 2.0
DEFAULT_DISK_MARGIN = 0.10
MARK = " !"


# ---------------------------------------------------------------------------------------------
# 1. deployment views (read from the plan, nothing else)

def _view(p):
    hosts = [p["head"]] + list(p.get("workers") or [])
    return {"name": p["name"], "label": "llmfleet_deployments[%s]" % p["name"], "engine": p["engine"],
            "hosts": hosts, "head": p["head"], "image": p["image"], "model_path": p["model_path"],
            "weights_bytes": (p.get("sizing") or {}).get("weights_bytes"),
            # the ports each host claims, as the planner claimed them (_topology.port_claims)
            "ports": {h: [(c["port"], c["key"]) for c in p["hosts"][h]["port_claims"]] for h in hosts},
            "addresses": {h: p["hosts"][h].get("private_address") for h in hosts},
            "interfaces_planned": {h: p["hosts"][h].get("network_interface") for h in hosts}}


def views(plan):
    """One view per deployment of ``plan`` (``llmfleet_plan``, made by serving_plan), in the
    plan's order. The planner has already refused a bad inventory, so every deployment of the
    plan has hosts, an engine, an image, a model path and its port claims; preflight decides
    none of them itself. Raises ValueError when ``plan`` is not a plan."""
    deployments = plan.get("deployments") if isinstance(plan, dict) else None
    if not isinstance(deployments, dict):
        raise ValueError("plan: expected the plan of llmfleet.serving.serving_plan (a dict with 'deployments'), "
                         "got %s; run playbooks/prelude.yml (or serving_plan) first and pass its llmfleet_plan"
                         % type(plan).__name__)
    out = []
    for name, p in deployments.items():
        try:
            out.append(_view(p))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError("plan: deployment %r lacks %s: the plan is not one serving_plan made; plan again "
                             "with playbooks/prelude.yml" % (name, e)) from None
    return out


# ---------------------------------------------------------------------------------------------
# 2. what each host must report

def targets(view_list):
    """{"hosts": {host: {"images": [...], "paths": [...], "ports": [...]}}, "deployments": [names]}."""
    hosts = {}
    for v in view_list:
        for h in v["hosts"]:
            t = hosts.setdefault(h, {"images": [], "paths": [], "ports": []})
            if v["image"] and v["image"] not in t["images"]:
                t["images"].append(v["image"])
            if v["model_path"] and v["model_path"] not in t["paths"]:
                t["paths"].append(v["model_path"])
            for port, _key in v["ports"].get(h, []):
                if port not in t["ports"]:
                    t["ports"].append(port)
    return {"hosts": hosts, "deployments": [v["name"] for v in view_list]}


# ---------------------------------------------------------------------------------------------
# parsers of raw host outputs

def parse_df(text):
    """``df -PB1 PATH`` output -> {"filesystem", "size", "used", "avail", "mount"} or None."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return None
    # the last line is the data line; -P keeps one line per file system (a long device name too)
    parts = lines[-1].split()
    if len(parts) < 6 or not parts[3].isdigit():
        return None
    return {"filesystem": parts[0], "size": int(parts[1]), "used": int(parts[2]), "avail": int(parts[3]),
            "mount": " ".join(parts[5:])}


def _port_of(addr):
    try:
        return int(addr.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def parse_listening(text):
    """Listening TCP ports from ``ss -ltnH`` (or ``ss -ltn`` with its header) or /proc/net/tcp[6]."""
    ports = set()
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "sl" or parts[0] == "State":
            continue
        if parts[0].endswith(":") and len(parts) > 3 and ":" in parts[1]:
            # /proc/net/tcp: "0: 0100007F:1F40 00000000:0000 0A ..."; 0A = LISTEN
            if parts[3] == "0A":
                try:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
                except ValueError:
                    pass
            continue
        # ss: "LISTEN 0 4096 0.0.0.0:8000 0.0.0.0:*" (State Recv-Q Send-Q Local Peer)
        if parts[0] == "LISTEN" and len(parts) >= 4:
            p = _port_of(parts[3])
        elif len(parts) >= 3 and parts[0].isdigit():  # -H without the state column on some versions
            p = _port_of(parts[2])
        else:
            continue
        if p is not None:
            ports.add(p)
    return sorted(ports)


def parse_clock(text, control_after=None):
    """``<control epoch before> <host epoch>`` (the shell task prints both) plus the control epoch
    read after the task -> {"before", "host", "after", "low", "high", "skew"}: the host's offset
    lies within [low, high] = [host - after, host - before]; ``skew`` is the midpoint estimate."""
    try:
        parts = (text or "").split()
        before, host = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        return None
    after = float(control_after) if control_after not in (None, "") else before
    after = max(after, before)
    return {"before": before, "host": host, "after": after, "low": host - after, "high": host - before,
            "skew": host - (before + after) / 2.0}


def parse_state(text):
    """Contents of ``<model_path>/.llmfleet-state.json`` -> True when it says complete."""
    try:
        data = json.loads(text or "")
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("complete") is True


def parse_index(text):
    """``metadata.total_size`` of model.safetensors.index.json text, or None."""
    try:
        data = json.loads(text or "")
        return int(data["metadata"]["total_size"])
    except (ValueError, KeyError, TypeError):
        return None


def image_ref(info, image):
    """Identity of ``image`` from docker_image_info's ``images`` list: the repo digest of its
    repository (``repo@sha256:...``) when the image came from a registry, else its image ID
    (loaded or built locally). None when the image is not on the host."""
    repo = image.split("@")[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: -(len(last) - last.index(":"))]
    for img in info or []:
        if not isinstance(img, dict):
            continue
        digests = img.get("RepoDigests") or []
        for dg in digests:
            if dg.split("@")[0] == repo or dg.split("@")[0].endswith("/" + repo):
                return dg.split("@", 1)[1]
        if digests:
            return digests[0].split("@", 1)[1]
        if img.get("Id"):
            return img["Id"]
    return None


# ---------------------------------------------------------------------------------------------
# 3. comparison

def _gib(n):
    return "%.1f GiB" % (n / float(1 << 30))


def _short(ref):
    if not ref:
        return "not pulled"
    return ref if len(ref) <= 19 else ref[:19]


def _iface_in_subnet(facts, head_address):
    """The first interface (name, address/prefix) of ``facts`` whose IPv4 subnet (not a /32)
    contains the head's private address, or None."""
    for name, address, net, dummy in _plan.ipv4_subnets_containing(facts, head_address):
        if net.prefixlen < 32:
            return name, "%s/%s" % (address, net.prefixlen)
    return None


def _ports_text(ports):
    return ",".join(str(p) for p in ports) if ports else "-"


def check(view_list, host_data, checks=CHECKS, clock_tolerance_s=DEFAULT_CLOCK_TOLERANCE_S,
          disk_margin=DEFAULT_DISK_MARGIN):
    """Compare; returns {"ok", "errors": [{deployment, check, host, variable, message}],
    "tables": {deployment: text}, "rows": {deployment: [row dicts]}, "message"}.

    ``host_data[host]``: {"gpu_facts": {...} | None, "images": {image: ref | None},
    "disks": {path: {"checked": path, "df": parse_df(...), "complete": bool, "index_size": int|None}},
    "listening": [ports] | None, "containers": [deployment labels of running containers] | None,
    "clock": parse_clock(...) | None, "errors": {what: message}}."""
    checks = set(checks or CHECKS)
    unknown = checks - set(CHECKS)
    if unknown:
        raise ValueError("unknown preflight check(s) %s: use %s" % (", ".join(sorted(unknown)), ", ".join(CHECKS)))
    errors = []
    tables = {}
    rows_out = {}
    for v in view_list:
        name, label, hosts = v["name"], v["label"], v["hosts"]
        multi = len(hosts) > 1
        marked = set()
        fixes = []
        rows = []
        for rank, h in enumerate(hosts):
            hd = host_data.get(h) or {}
            f = hd.get("gpu_facts") or {}
            row = {"host": h, "role": "single" if not multi else ("head" if rank == 0 else "worker"),
                   "GPUs": f.get("gpu_count"), "GPU model": f.get("product_name"), "GPU MiB": _plan.gpu_memory_mib(f),
                   "driver": f.get("driver_version"), "CUDA": f.get("cuda_version")}
            if v["image"]:
                ref = (hd.get("images") or {}).get(v["image"])
                row["image"] = ref
            rows.append(row)

        def mark_all(col):
            marked.add(col)

        def mark(row, col):
            marked.add(col)
            row.setdefault("_bad", set()).add(col)

        # same across the group
        if multi:
            same = []
            if "gpu" in checks:
                same += [("GPUs", label + ".hosts", "use hosts with the same GPU count (or set gpus_per_host to "
                          "the smallest count)"),
                         ("GPU model", label + ".hosts", "use hosts with the same GPU model: mixed models split "
                          "the layers unevenly and the smallest memory decides (vLLM #7815)"),
                         ("GPU MiB", label + ".hosts", "use hosts with the same GPU memory")]
            if "driver" in checks:
                same += [("driver", "gpu_host_driver_branch (role gpu_host)", "install the same NVIDIA driver "
                          "on every host of the group (NCCL hangs or fails between versions, vLLM #13388)"),
                         ("CUDA", "gpu_host_driver_branch (role gpu_host)", "the same driver gives the same "
                          "CUDA version")]
            for col, var, fix in same:
                values = [r[col] for r in rows]
                known = [x for x in values if x is not None]
                if len(set(map(str, known))) > 1 or (known and len(known) < len(values)):
                    head_val = rows[0][col]
                    for r in rows:
                        if str(r[col]) != str(head_val):
                            mark(r, col)
                    mark_all(col)
                    errors.append({"deployment": name, "check": col, "host": None, "variable": var,
                                   "message": "%s differs: %s" % (col, ", ".join("%s=%s" % (r["host"], r[col])
                                                                                 for r in rows))})
                    fixes.append("%s differs across the hosts: %s (%s)" % (col, fix, var))
            if "image" in checks and v["image"]:
                refs = {r["host"]: r.get("image") for r in rows}
                pulled = [x for x in refs.values() if x]
                if len(set(pulled)) > 1:
                    head_ref = refs[hosts[0]] or pulled[0]
                    for r in rows:
                        if r.get("image") and r["image"] != head_ref:
                            mark(r, "image")
                    errors.append({"deployment": name, "check": "image", "host": None, "variable": label + ".image",
                                   "message": "image %s differs: %s" % (v["image"], ", ".join(
                                       "%s=%s" % (h, refs[h] or "not pulled") for h in hosts))})
                    fixes.append("image %s is a different build on some hosts (version mismatch, gpustack #1640): "
                                 "pin it by digest (%s: repo@sha256:...) or pull the same tag everywhere"
                                 % (v["image"], label + ".image"))
        for r in rows:
            if "image" in r:
                r["image"] = _short(r["image"])

        # private interface of the group's subnet (head's private address)
        if multi and "interface" in checks:
            head_addr = v["addresses"].get(hosts[0])
            for r in rows:
                f = (host_data.get(r["host"]) or {}).get("gpu_facts") or {}
                found = _iface_in_subnet(f, head_addr)
                if found:
                    r["private interface"] = "%s %s" % (found[0], found[1])
                else:
                    r["private interface"] = "none in subnet of %s" % head_addr
                    mark(r, "private interface")
                    errors.append({"deployment": name, "check": "interface", "host": r["host"],
                                   "variable": "hostvars[%s].llmfleet_private_address" % r["host"],
                                   "message": "host %s has no interface in the subnet of the head's private address "
                                   "%s" % (r["host"], head_addr)})
                    fixes.append("host %s has no IPv4 interface in the subnet of %s (head %s): put it on the private "
                                 "network, or correct llmfleet_private_address of %s / %s (NCCL and GLOO need a "
                                 "common network, vLLM #7074)" % (r["host"], head_addr, hosts[0], hosts[0], r["host"]))

        # free disk at model_path
        if "disk" in checks and v["model_path"]:
            col = "disk %s" % v["model_path"]
            for r in rows:
                hd = host_data.get(r["host"]) or {}
                dk = (hd.get("disks") or {}).get(v["model_path"]) or {}
                size = dk.get("index_size") or v["weights_bytes"]
                df = dk.get("df")
                if dk.get("complete"):
                    r[col] = "published"
                    continue
                if not df:
                    r[col] = "unknown"
                    continue
                if not size:
                    r[col] = "%s free (size unknown)" % _gib(df["avail"])
                    continue
                need = int(size * (1.0 + disk_margin))
                r[col] = "%s free, need %s" % (_gib(df["avail"]), _gib(need))
                if df["avail"] < need:
                    mark(r, col)
                    short = need - df["avail"]
                    errors.append({"deployment": name, "check": "disk", "host": r["host"], "variable": label + ".model_path",
                                   "message": "host %s: %s (file system %s at %s) has %d bytes free, the weights need %d "
                                   "(+%d%%): short by %d bytes (%s)" % (
                                       r["host"], v["model_path"], df["filesystem"], df["mount"], df["avail"], need,
                                       round(disk_margin * 100), short, _gib(short))})
                    fixes.append("host %s: free %s at %s (file system %s mounted at %s), or set %s.model_path to a "
                                 "file system with room"
                                 % (r["host"], _gib(short), v["model_path"], df["filesystem"], df["mount"], label))

        # ports free, unless the deployment's own containers run there
        if "ports" in checks:
            for r in rows:
                hd = host_data.get(r["host"]) or {}
                claims = v["ports"].get(r["host"], [])
                if not claims:
                    r["ports"] = "-"
                    continue
                listening = hd.get("listening")
                if listening is None:
                    r["ports"] = "unknown"
                    continue
                own = name in (hd.get("containers") or [])
                busy = [(p, k) for p, k in claims if p in listening]
                if busy and not own:
                    mark(r, "ports")
                    r["ports"] = "in use: %s" % _ports_text([port for port, dummy in busy])
                    for p, k in busy:
                        errors.append({"deployment": name, "check": "ports", "host": r["host"],
                                       "variable": "%s.%s" % (label, k),
                                       "message": "port %d (%s) is in use on host %s" % (p, k, r["host"])})
                        fixes.append("port %d (%s) is in use on host %s by a process that is not a container of %s: "
                                     "stop it, or set %s.%s to a free port (vLLM #12997)"
                                     % (p, k, r["host"], name, label, k))
                else:
                    r["ports"] = "%s %s" % (_ports_text([port for port, dummy in claims]),
                                            "(own containers)" if busy else "free")

        # clocks
        if "clock" in checks:
            for r in rows:
                ck = (host_data.get(r["host"]) or {}).get("clock")
                if not ck:
                    r["clock skew s"] = "unknown"
                    continue
                r["clock skew s"] = "%+.1f" % ck["skew"]
                if ck["low"] > clock_tolerance_s or ck["high"] < -clock_tolerance_s:
                    mark(r, "clock skew s")
                    errors.append({"deployment": name, "check": "clock", "host": r["host"],
                                   "variable": "llmfleet_preflight_clock_tolerance_s",
                                   "message": "host %s clock is %+.1f s off the control node's (tolerance %.1f s)"
                                   % (r["host"], ck["skew"], clock_tolerance_s)})
                    fixes.append("host %s: its clock is %+.1f s off the control node's (tolerance %.1f s): sync it "
                                 "with NTP (chrony / systemd-timesyncd); or raise llmfleet_preflight_clock_tolerance_s"
                                 % (r["host"], ck["skew"], clock_tolerance_s))

        # host-level read errors are shown, not failed on
        for r in rows:
            for what, msg in sorted(((host_data.get(r["host"]) or {}).get("errors") or {}).items()):
                fixes.append("note: host %s: %s: %s" % (r["host"], what, msg))

        rows_out[name] = [{k: val for k, val in r.items() if k != "_bad"} for r in rows]
        bad = [e for e in errors if e["deployment"] == name]
        tables[name] = render_table(name, rows, marked, fixes if bad else [n for n in fixes if n.startswith("note:")])
    ok = not errors
    failed = [n for n in tables if any(e["deployment"] == n for e in errors)]
    message = ("preflight passed for %s" % ", ".join(tables) if ok else
               "preflight failed for %s:\n\n%s" % (", ".join(failed), "\n\n".join(tables[n] for n in failed)))
    return {"ok": ok, "errors": errors, "tables": tables, "rows": rows_out, "message": message}


def render_table(name, rows, marked, fixes):
    """A Markdown table: one row per host, one column per value; the header and each cell of a
    mismatching column carry `` !``. Then the fixes, one per line."""
    cols = []
    for r in rows:
        for k in r:
            if k != "_bad" and k not in cols:
                cols.append(k)
    header = [c + (MARK if c in marked else "") for c in cols]
    body = []
    for r in rows:
        bad = r.get("_bad") or set()
        body.append([("-" if r.get(c) is None else str(r.get(c))) + (MARK if c in bad else "") for c in cols])
    widths = [max(len(x) for x in [header[i]] + [b[i] for b in body]) for i in range(len(cols))]

    def line(cells):
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + " |"
    out = ["deployment %s (hosts %s; ! marks a mismatch):" % (name, ", ".join(r["host"] for r in rows)),
           line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    if fixes:
        out.append("fix:")
        out += ["  - " + f for f in fixes]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# raw registered results of playbooks/preflight.yml -> host_data

def _loop_results(reg):
    return [r for r in ((reg or {}).get("results") or []) if isinstance(r, dict) and not r.get("skipped")]


def host_data_from_raw(raw):
    """One host's ``host_data`` from what playbooks/preflight.yml registered (``raw`` keys:
    gpu_facts, images (docker_image_info loop), df (shell loop: "checked=PATH" line + df output),
    state / index (slurp loops), listening (ss), containers (docker ps), clock (shell),
    clock_after (control epoch))."""
    import base64

    errors = {}
    images = {}
    for r in _loop_results(raw.get("images")):
        if r.get("failed"):
            images[r.get("item")] = None
            errors["image %s" % r.get("item")] = str(r.get("msg") or "docker_image_info failed")[:200]
        else:
            images[r.get("item")] = image_ref(r.get("images"), str(r.get("item")))
    disks = {}
    for r in _loop_results(raw.get("df")):
        text = r.get("stdout") or ""
        checked = None
        for line in text.splitlines():
            if line.startswith("checked="):
                checked = line[len("checked="):]
        disks[r.get("item")] = {"checked": checked, "df": parse_df(text), "complete": False, "index_size": None}
        if r.get("rc"):
            errors["df %s" % r.get("item")] = (r.get("stderr") or "")[:200]

    def _content(r):
        try:
            return base64.b64decode(r.get("content") or "").decode("utf-8", "replace")
        except (TypeError, ValueError):
            return ""
    for r in _loop_results(raw.get("state")):
        if not r.get("failed") and r.get("item") in disks:
            disks[r["item"]]["complete"] = parse_state(_content(r))
    for r in _loop_results(raw.get("index")):
        if not r.get("failed") and r.get("item") in disks:
            disks[r["item"]]["index_size"] = parse_index(_content(r))
    ls = raw.get("listening") or {}
    listening = None
    if ls.get("rc") == 0 and not ls.get("skipped"):
        listening = parse_listening(ls.get("stdout"))
    elif ls:
        errors["listening ports"] = (ls.get("stderr") or ls.get("msg") or "not read")[:200]
    ps = raw.get("containers") or {}
    containers = [x.strip() for x in (ps.get("stdout") or "").splitlines() if x.strip()] if ps.get("rc") == 0 else []
    ck = raw.get("clock") or {}
    clock = parse_clock(ck.get("stdout"), raw.get("clock_after")) if ck.get("rc") == 0 else None
    gf = raw.get("gpu_facts")
    if isinstance(gf, dict) and gf.get("gpu_count") is None and gf.get("reason"):
        errors["gpu facts"] = str(gf.get("reason"))[:200]
    return {"gpu_facts": gf if isinstance(gf, dict) else None, "images": images, "disks": disks,
            "listening": listening, "containers": containers, "clock": clock, "errors": errors}
