# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deployment planner: inventory deployments -> validated plan (PRIVATE to this collection).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python (no Ansible imports): build_plan() takes the deployments list, the hostvars of the
hosts involved, the inventory groups and the model catalog, and returns the plan described in
docs/planner.md, or raises PlanErrors listing every refusal (PlanError: .variable, .message).
The API key value never enters the plan: only whether there is one, where it comes from and
the paths of the file that holds it.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import ipaddress
import json
import re

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _engine_flags
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _sizing
from ansible_collections.llmfleet.serving.plugins.plugin_utils._catalog import resolve_model

ENTRYPOINT = "/run/llmfleet/entrypoint.sh"
KEY_IN_CONTAINER = "/run/llmfleet/api_key"
# Ray token authentication (Ray >= 2.52, docs/reliability.md): a per-cluster token in a 0600 file
# on every Ray host, mounted read-only; Ray's fixed side listeners, claimed like the other ports.
RAY_TOKEN_IN_CONTAINER = "/run/llmfleet/ray_token"
# Every engine container: no privilege gain through setuid binaries, and none of Docker's default
# capabilities (the engines, Ray and the entrypoint run as root on their own files and need none;
# GPUs come through the device requests). docs/reliability.md; lab: tests/e2e/test_secrets.py.
CONTAINER_HARDENING = {"security_opts": ["no-new-privileges:true"], "cap_drop": ["ALL"]}
ENGINES = ("vllm", "sglang")
EXPOSURES = ("localhost", "private", "public")
NCCL_DEBUG_LEVELS = ("VERSION", "WARN", "INFO", "TRACE")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$")
# Names that carry secrets: *_TOKEN (HF_TOKEN, HUGGING_FACE_HUB_TOKEN), *API_KEY*, *SECRET*, ...
# A TOKEN inside a name (LLMFLEET_SIM_TTFT_PER_PROMPT_TOKEN_MS, MAX_TOKENS) is not a secret.
SECRET_ENV_RE = re.compile(r"(API_?KEY|SECRET|PASSWORD|PASSWD|ACCESS_KEY|(^|_)TOKEN$)", re.I)
DEFAULT_IMAGES = {"vllm": "vllm/vllm-openai:v{version}", "sglang": "lmsysorg/sglang:v{version}-cu126"}

# NCCL settings for RDMA, as in shared/reference/002 (elastic RDMA on ECS)
RDMA_DEFAULTS = {"NCCL_IB_DISABLE": "0", "NCCL_NET_GDR_LEVEL": "5", "NCCL_IB_GID_INDEX": "1"}

_INT = "int"
_AUTO_INT = "int or auto"
# key -> (type, default). Types: "str", "int", "int or auto", "float", "bool", "list[str]",
# "dict[str,str]", "str or list[str]", "str or dict", "str or dict[str,str]"
DEPLOYMENT_KEYS = {
    "name": ("str", None),
    "hosts": ("str or list[str]", None),
    "head": ("str", None),
    "engine": ("str", "vllm"),
    "engine_version": ("str", None),
    "image": ("str", None),
    "model": ("str or dict", None),
    "model_path": ("str", None),
    "served_model_name": ("str", None),
    "gpus_per_host": (_AUTO_INT, "auto"),
    "gpu_memory_gib": ("float", None),
    "tensor_parallel": (_AUTO_INT, "auto"),
    "pipeline_parallel": (_AUTO_INT, "auto"),
    "max_model_len": (_INT, None),
    "gpu_memory_utilization": ("float", 0.9),
    "port": (_INT, 8000),
    "exposure": ("str", "private"),
    "api_key_file": ("str", None),
    "api_key": ("str", None),
    "network_interface": ("str or dict[str,str]", "auto"),
    "nccl_debug": ("str", "WARN"),
    "nccl_ib_gid_index": (_INT, 1),
    "nccl_net_gdr_level": (_INT, 5),
    "extra_args": ("list[str]", []),
    "env": ("dict[str,str]", {}),
    "ray_port": (_INT, 6379),
    "ray_dashboard_port": (_INT, 8265),
    "ray_client_server_port": (_INT, 10001),
    "ray_dashboard_agent_port": (_INT, 52365),
    "ray_timeout_s": (_INT, 600),
    "dist_init_port": (_INT, 20000),
    "gpu_runtime": ("str", "nvidia"),
    "config_dir": ("str", "/etc/llmfleet"),
    "sizing_reserve_gib": ("float", 2.0),
}

# flags the planner sets itself: a deployment key is the place to change them
OWNED_FLAGS = {
    "vllm": {"--served-model-name": "served_model_name", "--tensor-parallel-size": "tensor_parallel",
             "--pipeline-parallel-size": "pipeline_parallel", "--max-model-len": "max_model_len",
             "--gpu-memory-utilization": "gpu_memory_utilization", "--host": "exposure", "--port": "port",
             "--distributed-executor-backend": "hosts", "--model": "model_path", "model_tag": "model_path"},
    "sglang": {"--model-path": "model_path", "--served-model-name": "served_model_name", "--tp-size": "tensor_parallel",
               "--pp-size": "pipeline_parallel", "--nnodes": "hosts", "--node-rank": "hosts",
               "--dist-init-addr": "dist_init_port", "--host": "exposure", "--port": "port",
               "--mem-fraction-static": "gpu_memory_utilization", "--context-length": "max_model_len",
               "--config": "api_key_file"},
}


class PlanError(Exception):
    """One refusal: ``variable`` names what to fix (e.g. llmfleet_deployments[r1].port)."""

    def __init__(self, variable, message):
        super().__init__("%s: %s" % (variable, message))
        self.variable = variable
        self.message = message

    def to_dict(self):
        return {"variable": self.variable, "message": self.message}


class PlanErrors(Exception):
    """Every refusal found in one planning pass."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("the plan is refused (%d error%s):\n- %s" % (
            len(self.errors), "" if len(self.errors) == 1 else "s", "\n- ".join(str(e) for e in self.errors)))


def default_is_vaulted(value):
    """True for values that come from Ansible Vault (2.19 EncryptedString, older
    AnsibleVaultEncryptedUnicode, or tagged with VaultedValue); the action plugin passes its own."""
    cls = type(value).__name__
    return cls in ("EncryptedString", "AnsibleVaultEncryptedUnicode") or bool(getattr(value, "__ENCRYPTED__", False))


def type_name(value):
    """The YAML type of a value (Ansible 2.19 tags values: _AnsibleTaggedInt is an int)."""
    for typ, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"),
                      (dict, "dict")):
        if isinstance(value, typ):
            return name
    return type(value).__name__


def did_you_mean(word, choices):
    m = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return " (did you mean %r?)" % m[0] if m else ""


def _check_type(value, typ):
    if typ == "str":
        return isinstance(value, str)
    if typ == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == _AUTO_INT:
        return value == "auto" or (isinstance(value, int) and not isinstance(value, bool))
    if typ == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if typ == "dict[str,str]":
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (str, int, float))
                                               and not isinstance(v, bool) for k, v in value.items())
    if typ == "str or list[str]":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if typ == "str or dict":
        return isinstance(value, (str, dict))
    if typ == "str or dict[str,str]":
        return isinstance(value, str) or (isinstance(value, dict) and all(isinstance(v, str) for v in value.values()))
    raise AssertionError(typ)


def _is_ip(text):
    try:
        ipaddress.IPv4Address(str(text))
        return True
    except ValueError:
        return False


def host_address(hostvars, host):
    """The host's private address: llmfleet_private_address, else ansible_host, else the name."""
    hv = hostvars.get(host) or {}
    return str(hv.get("llmfleet_private_address") or hv.get("ansible_host") or host)


def ipv4_subnets_containing(facts, address):
    """Yield (interface name, its address, its IPv4Network, whether it holds ``address`` itself)
    for every non-loopback IPv4 address in ``facts`` whose subnet contains ``address``, in the
    facts' order; nothing when ``address`` is not an IPv4 address."""
    try:
        ip = ipaddress.IPv4Address(str(address))
    except ValueError:
        return
    for iface in (facts or {}).get("interfaces") or []:
        for a in iface.get("ipv4") or []:
            try:
                net = ipaddress.IPv4Network("%s/%s" % (a["address"], a.get("prefix", 32)), strict=False)
            except (KeyError, ValueError):
                continue
            if ip in net and not net.network_address.is_loopback:
                yield iface.get("name"), a["address"], net, str(a["address"]) == str(ip)


def choose_interface(facts, address):
    """Name of the interface whose IPv4 subnet contains ``address`` (None when none does).
    An interface holding the address itself wins over one whose subnet merely contains it."""
    best = None
    for name, dummy, net, holds in ipv4_subnets_containing(facts, address):
        if holds:
            return name
        if best is None or net.prefixlen > best[0]:
            best = (net.prefixlen, name)
    return best[1] if best else None


def active_rdma_devices(facts):
    """RDMA device names of a host (those with at least one ACTIVE port when port states are known)."""
    facts = facts or {}
    names = list(facts.get("rdma_devices") or [])
    detail = {d.get("name"): d for d in facts.get("rdma") or [] if isinstance(d, dict)}
    out = []
    for n in names:
        ports = (detail.get(n) or {}).get("ports")
        if ports and not any(str(p.get("state") or "").upper() == "ACTIVE" for p in ports):
            continue
        out.append(n)
    return out


def rdma_env(facts, gid_index=1, gdr_level=5):
    """NCCL_IB_* environment for a host with RDMA devices (reference 002); {} without."""
    devs = active_rdma_devices(facts)
    if not devs:
        return {}
    return {"NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": ",".join(devs), "NCCL_NET_GDR_LEVEL": str(gdr_level),
            "NCCL_IB_GID_INDEX": str(gid_index)}


def config_hash(obj):
    """sha256 (first 16 hex) of the sorted JSON of ``obj``."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def _gpu_memory_bytes(facts):
    mems = [g.get("memory_total_mib") for g in (facts or {}).get("gpus") or [] if g.get("memory_total_mib")]
    return min(mems) * _sizing.MIB if mems else None


class _Ctx(object):
    def __init__(self, hostvars, groups, catalog, is_vaulted):
        self.hostvars = hostvars or {}
        self.groups = groups or {}
        self.catalog = catalog or {}
        self.is_vaulted = is_vaulted or default_is_vaulted
        self.errors = []
        self.ports = {}        # (host, port) -> "deployment (key)"
        self.gpus_used = {}    # host -> next free GPU index
        self.gpu_users = {}    # host -> [(deployment, count)]
        self.check_file = None  # path -> None or the reason it cannot be used

    def err(self, variable, message):
        self.errors.append(PlanError(variable, message))


def build_plan(deployments, hostvars=None, groups=None, catalog=None, is_vaulted=None, check_file=None):
    """Plan every deployment. Returns {"deployments": {name: plan}, "hosts": {host: [refs]}};
    raises PlanErrors with every refusal found.

    ``check_file(path)``, when given, is called for each ``api_key_file`` and returns None when
    the file is usable or a short reason (e.g. "does not exist on the control node"); the action
    plugin passes one that looks on the control node. Without it the path is not checked."""
    ctx = _Ctx(hostvars, groups, catalog, is_vaulted)
    ctx.check_file = check_file
    plan = {"deployments": {}, "hosts": {}}
    if not isinstance(deployments, list):
        raise PlanErrors([PlanError("llmfleet_deployments", "must be a list of deployment dicts, got %s"
                                    % type_name(deployments))])
    if not deployments:
        raise PlanErrors([PlanError("llmfleet_deployments", "is empty: nothing to plan; add at least one "
                                    "deployment (docs/planner.md), or check that the inventory defining it is "
                                    "the one given with -i")])
    seen = {}
    for i, dep in enumerate(deployments):
        label = "llmfleet_deployments[%d]" % i
        if isinstance(dep, dict) and isinstance(dep.get("name"), str):
            label = "llmfleet_deployments[%s]" % dep["name"]
            if dep["name"] in seen:
                ctx.err(label + ".name", "deployment name %r is used twice (entries %d and %d): names must be unique"
                        % (dep["name"], seen[dep["name"]], i))
                continue
            seen[dep["name"]] = i
        p = _plan_one(ctx, dep, label)
        if p is not None:
            plan["deployments"][p["name"]] = p
            for h, hp in p["hosts"].items():
                plan["hosts"].setdefault(h, []).append({"deployment": p["name"], "container_name": hp["container_name"],
                                                        "role": hp["role"]})
    if ctx.errors:
        raise PlanErrors(ctx.errors)
    return plan


# Prefixes of the roles' variables (roles/<role>/meta/argument_specs.yml): a variable with one of
# these prefixes that no role declares, but that is close to one that does, is a typo the role
# would silently ignore (it would use its default).
ROLE_PREFIXES = ("inference_server_", "gateway_", "model_weights_", "gpu_host_", "container_runtime_",
                 "monitoring_")


def misspelt_variables(names, known, prefixes=ROLE_PREFIXES, cutoff=0.8):
    """PlanErrors for the names in ``names`` that start with one of ``prefixes``, are not in
    ``known`` (the declared role variables and the names the collection itself sets) and are
    close to a known name: typos such as inference_server_restart_polcy. Names starting with
    '_' (internal) are never reported; a name with no close match is left alone (a user's own)."""
    known = set(known)
    errors = []
    for n in sorted(set(str(x) for x in names)):
        if n in known or not n.startswith(tuple(prefixes)):
            continue
        m = difflib.get_close_matches(n, sorted(k for k in known if k.startswith(tuple(prefixes))), n=1,
                                      cutoff=cutoff)
        if m:
            errors.append(PlanError(n, "no role declares this variable (did you mean %s?): rename it, or the "
                                       "role uses its default for %s" % (m[0], m[0])))
    return errors


def _validate_keys(ctx, dep, label):
    if not isinstance(dep, dict):
        ctx.err(label, "each deployment must be a dict, got %s" % type_name(dep))
        return None
    ok = True
    for k in dep:
        if k not in DEPLOYMENT_KEYS:
            ctx.err("%s.%s" % (label, k), "unknown key %r%s; known keys: %s"
                    % (k, did_you_mean(k, DEPLOYMENT_KEYS), ", ".join(sorted(DEPLOYMENT_KEYS))))
            ok = False
    d = {}
    for k, (typ, default) in DEPLOYMENT_KEYS.items():
        if k in dep and dep[k] is not None:
            v = dep[k]
            if k in ("api_key",) and ctx.is_vaulted(v):
                d[k] = v
                continue
            if not _check_type(v, typ):
                shown = "<hidden>" if k == "api_key" else repr(v)
                fix = (' (quote it: "%s")' % v if typ == "str" and isinstance(v, (int, float)) and k != "api_key"
                       else "")
                if k == "api_key":
                    fix = ": use a vault-encrypted string or api_key_file"
                ctx.err("%s.%s" % (label, k), "must be %s, got %s %s%s" % (typ, type_name(v), shown, fix))
                ok = False
                continue
            d[k] = v
        else:
            d[k] = copy.deepcopy(default)
    for k in ("name", "hosts", "model"):
        if d.get(k) in (None, "", []):
            ctx.err("%s.%s" % (label, k), "is required")
            ok = False
    if isinstance(d.get("name"), str) and d["name"] and not NAME_RE.match(d["name"]):
        ctx.err(label + ".name", "%r: use lower-case letters, digits and '-' (container names derive from it)"
                % d["name"])
        ok = False
    return d if ok else None


def _resolve_hosts(ctx, d, label):
    hosts = d["hosts"]
    if isinstance(hosts, str):
        if hosts in ctx.groups:
            hosts = list(ctx.groups[hosts])
        elif hosts in ctx.hostvars:
            hosts = [hosts]
        else:
            ctx.err(label + ".hosts", "%r is neither an inventory group nor a host%s"
                    % (hosts, did_you_mean(hosts, list(ctx.groups) + list(ctx.hostvars))))
            return None
    if not hosts:
        ctx.err(label + ".hosts", "the group %r has no hosts" % d["hosts"])
        return None
    dups = sorted(set(h for h in hosts if hosts.count(h) > 1))
    if dups:
        ctx.err(label + ".hosts", "host(s) %s listed twice: each host runs one rank" % ", ".join(dups))
        return None
    head = d.get("head")
    if head is None:
        head = hosts[0]
    elif head not in hosts:
        ctx.err(label + ".head", "head %r is not one of the deployment's hosts (%s)%s: set head to one of them, "
                "or add it to hosts" % (head, ", ".join(hosts), did_you_mean(head, list(hosts) + list(ctx.hostvars))))
        return None
    return [head] + [h for h in hosts if h != head]


def _plan_one(ctx, dep, label):
    n_err = len(ctx.errors)
    d = _validate_keys(ctx, dep, label)
    if d is None:
        return None
    name = d["name"]
    hosts = _resolve_hosts(ctx, d, label)

    engine = d["engine"]
    version = None
    if engine not in ENGINES:
        ctx.err(label + ".engine", "unknown engine %r%s: use one of %s"
                % (engine, did_you_mean(engine, ENGINES), ", ".join(ENGINES)))
        engine = None
    else:
        try:
            version = _engine_flags.resolve_version(engine, d["engine_version"])
        except _engine_flags.UnknownEngineError as e:
            ctx.err(label + ".engine_version", "%s: set engine_version to one of %s"
                    % (e, ", ".join(_engine_flags.versions(engine))))
    for k in ("exposure", "gpu_runtime", "nccl_debug"):
        allowed = {"exposure": EXPOSURES, "gpu_runtime": ("nvidia", "none"), "nccl_debug": NCCL_DEBUG_LEVELS}[k]
        if d[k] not in allowed:
            ctx.err("%s.%s" % (label, k), "%r is not one of %s%s"
                    % (d[k], ", ".join(allowed), did_you_mean(d[k], allowed)))
    u = d["gpu_memory_utilization"]
    if not 0 < u <= 1:
        ctx.err(label + ".gpu_memory_utilization", "%s is outside (0, 1]: set a fraction such as 0.9" % u)
    # numbers that must be positive (0 or less would be passed on, or silently replaced by a default)
    for k, low, fix in (("max_model_len", 1, "leave it out for the model's max_position_embeddings"),
                        ("gpu_memory_gib", 0, "leave it out to read it from the GPU facts"),
                        ("sizing_reserve_gib", None, "use 0 or more GiB"),
                        ("ray_timeout_s", 1, "use a number of seconds such as 600")):
        v = d.get(k)
        if v is None:
            continue
        if low is None and v < 0:
            ctx.err("%s.%s" % (label, k), "must not be negative (got %s): %s" % (v, fix))
        elif low == 1 and v < 1:
            ctx.err("%s.%s" % (label, k), "must be at least 1 (got %s): %s" % (v, fix))
        elif low == 0 and v <= 0:
            ctx.err("%s.%s" % (label, k), "must be above 0 (got %s): %s" % (v, fix))
    for k in ("port", "ray_port", "ray_dashboard_port", "ray_client_server_port", "ray_dashboard_agent_port",
              "dist_init_port"):
        if not 1 <= d[k] <= 65535:
            ctx.err("%s.%s" % (label, k), "%d is not a TCP port (1-65535)" % d[k])
    for k in d["env"]:
        if SECRET_ENV_RE.search(k):
            ctx.err("%s.env.%s" % (label, k), "secrets do not belong in the container environment "
                    "(visible in docker inspect): use api_key / api_key_file")

    # API key
    key = d.get("api_key")
    key_file = d.get("api_key_file")
    key_source = None
    if key is not None and key_file is not None:
        ctx.err(label + ".api_key", "set api_key or api_key_file, not both")
    elif key is not None:
        key_source = "vault" if ctx.is_vaulted(key) else "inline"
    elif key_file is not None:
        key_source = "file"
        reason = ctx.check_file(key_file) if ctx.check_file else None
        if reason:
            ctx.err(label + ".api_key_file", "%r %s: create it (one line, mode 0600) or point api_key_file at the "
                    "file that holds the key" % (key_file, reason))
    if d["exposure"] != "localhost" and key_source is None:
        ctx.err(label + ".api_key_file", "exposure %s needs an API key: set api_key_file (a file on the control "
                "node) or api_key from a vault variable, or use exposure: localhost" % d["exposure"])
    if d["exposure"] == "public" and key_source == "inline":
        ctx.err(label + ".api_key", "a plain-text API key is refused for exposure public: encrypt it "
                "(ansible-vault encrypt_string) or use api_key_file")

    # model
    model = None
    try:
        model = resolve_model(d["model"], ctx.catalog, d.get("model_path"))
    except KeyError:
        ctx.err(label + ".model", "unknown model %r%s: use a key of catalog/models.yml or llmfleet_models, or a dict "
                "{path: <dir with config.json>, ...}" % (d["model"], did_you_mean(d["model"], ctx.catalog)))
    except ValueError as e:
        ctx.err(label + ".model", str(e))
    if hosts is None or engine is None or model is None:
        return None

    # GPUs per host
    facts = {h: (ctx.hostvars.get(h) or {}).get("llmfleet_gpu_facts") for h in hosts}
    counts = {h: f.get("gpu_count") for h, f in facts.items() if isinstance(f, dict) and f.get("gpu_count") is not None}
    gph = d["gpus_per_host"]
    if gph == "auto":
        missing = [h for h in hosts if h not in counts]
        if missing:
            ctx.err(label + ".gpus_per_host", "is auto but host(s) %s have no llmfleet_gpu_facts: run "
                    "llmfleet.serving.gpu_facts first, or set gpus_per_host" % ", ".join(missing))
            return None
        if len(set(counts.values())) > 1:
            ctx.err(label + ".hosts", "hosts of one multi-node group must have the same GPU count: %s; "
                    "use hosts with equal GPUs, or set gpus_per_host to the smallest count"
                    % ", ".join("%s=%s" % (h, counts[h]) for h in hosts))
            return None
        gph = counts[hosts[0]]
    else:
        bad = ["%s has %d" % (h, counts[h]) for h in hosts if h in counts and counts[h] < gph]
        if bad:
            ctx.err(label + ".gpus_per_host", "%d GPUs per host planned but %s: lower gpus_per_host"
                    % (gph, ", ".join(bad)))
            return None
    if gph < 1:
        ctx.err(label + ".gpus_per_host", "must be at least 1 (got %d)" % gph)
        return None
    nodes = len(hosts)
    total = gph * nodes
    tp, pp = d["tensor_parallel"], d["pipeline_parallel"]
    if engine == "vllm":
        tp = gph if tp == "auto" else tp
        pp = (total // tp if tp and total % tp == 0 else nodes) if pp == "auto" else pp
    else:
        pp = 1 if pp == "auto" else pp
        tp = (total // pp if pp and total % pp == 0 else total) if tp == "auto" else tp
    if tp < 1 or pp < 1 or tp * pp != total:
        fix_pp = total // tp if tp and total % tp == 0 else None
        ctx.err(label + ".tensor_parallel", "tensor_parallel x pipeline_parallel = %d x %d = %d, but %d host(s) x %d "
                "GPUs = %d GPUs are planned: TP x PP must equal the GPUs%s"
                % (tp, pp, tp * pp, nodes, gph, total,
                   " (set pipeline_parallel: %d)" % fix_pp if fix_pp else " (set tensor_parallel: %d)" % gph))
        return None

    # engine arguments (catalog flags + extra_args), validated against the engine's flag table
    cat_flags = list(((model.get("engine_flags") or {}).get(engine)) or [])
    extra = list(d["extra_args"])
    for src, argv in (("llmfleet_models[%s].engine_flags.%s" % (model.get("name"), engine), cat_flags),
                      (label + ".extra_args", extra)):
        values, unknown = _engine_flags.parse_args(engine, version, argv)
        if unknown:
            ctx.err(src, "%s %s does not accept %s%s" % (
                engine, version, ", ".join(repr(u) for u in unknown),
                "".join(did_you_mean(u.split("=")[0], _engine_flags.known_flags(engine, version)) for u in unknown[:1])
                + (" (vLLM >= 0.10 enables reasoning with --reasoning-parser alone)" if "--enable-reasoning" in unknown
                   else "")))
        if src.endswith("extra_args"):
            for flag in values:
                if flag == "--api-key":
                    ctx.err(src, "--api-key on the command line exposes the key (ps, docker inspect): "
                            "use api_key or api_key_file")
                elif flag in OWNED_FLAGS[engine]:
                    ctx.err(src, "%s is set by the planner: set %s.%s instead" % (flag, label, OWNED_FLAGS[engine][flag]))
    kv_dtype = _engine_flags.parse_args(engine, version, cat_flags + extra)[0].get("--kv-cache-dtype")

    # sizing
    max_len = (d["max_model_len"] if (d["max_model_len"] or 0) >= 1 else None) or model.get("max_position_embeddings")
    if not max_len:
        ctx.err(label + ".max_model_len", "the model's max_position_embeddings is unknown: set max_model_len")
        return None
    warnings = []
    if model.get("max_position_embeddings") and max_len > model["max_position_embeddings"]:
        warnings.append("max_model_len %d is above the model's max_position_embeddings %d: the engine needs "
                        "rope scaling for it" % (max_len, model["max_position_embeddings"]))
    mem = None
    if d["gpu_memory_gib"] and d["gpu_memory_gib"] > 0:
        mem = int(d["gpu_memory_gib"] * _sizing.GIB)
    else:
        mems = [_gpu_memory_bytes(facts[h]) for h in hosts]
        if all(mems):
            mem = min(mems)
    sizing = _sizing.size_deployment(model, tp, pp, max_len, mem, u, kv_dtype,
                                     int(d["sizing_reserve_gib"] * _sizing.GIB))
    if sizing["fits"] is False:
        ctx.err(label + ".max_model_len", "the model does not fit in the GPU memory planned:\n    %s\n  fix: lower "
                "max_model_len, add GPUs (tensor_parallel / pipeline_parallel / hosts), raise "
                "gpu_memory_utilization, or use a quantized model" % "\n    ".join(sizing["lines"]))

    # addresses, interfaces, ports, GPUs
    addrs = {h: host_address(ctx.hostvars, h) for h in hosts}
    if nodes > 1:
        for h in hosts:
            if not _is_ip(addrs[h]):
                ctx.err("hostvars[%s].llmfleet_private_address" % h, "multi-node deployment %s needs the host's private "
                        "IPv4 address (got %r from ansible_host): set llmfleet_private_address" % (name, addrs[h]))
    ifaces = {}
    for h in hosts:
        ni = d["network_interface"]
        if isinstance(ni, dict):
            ni = ni.get(h, "auto")
        if ni == "auto":
            ni = choose_interface(facts[h], addrs[h])
            if ni is None and nodes > 1:
                ctx.err(label + ".network_interface", "auto: host %s has no interface whose IPv4 subnet contains %s "
                        "(from its gpu facts): set network_interface (or a dict host: name), or "
                        "llmfleet_private_address" % (h, addrs[h]))
        ifaces[h] = ni
    _claim_ports(ctx, d, label, engine, hosts, nodes)
    devices = _claim_gpus(ctx, name, label, hosts, gph, counts)
    if len(ctx.errors) > n_err:
        return None

    served = d["served_model_name"] or model.get("served_model_name") or model.get("hf_id") or model.get("name")
    model_path = d["model_path"] or "/data/models/%s" % str(model.get("hf_id") or model.get("name")).rsplit("/", 1)[-1]
    image = d["image"] or DEFAULT_IMAGES[engine].format(version=version)
    head_ip = addrs[hosts[0]]
    key_host_path = "%s/%s/api_key" % (d["config_dir"].rstrip("/"), name)
    ep_host_path = "%s/%s/entrypoint.sh" % (d["config_dir"].rstrip("/"), name)

    hplans = {}
    for rank, h in enumerate(hosts):
        role = "single" if nodes == 1 else ("head" if rank == 0 else "worker")
        cname = "llmfleet-%s" % name if role == "single" else (
            "llmfleet-%s-head" % name if role == "head" else "llmfleet-%s-worker-%d" % (name, rank))
        env = {"HF_HUB_OFFLINE": "1", "NCCL_DEBUG": d["nccl_debug"]}
        if ifaces[h]:
            env["NCCL_SOCKET_IFNAME"] = ifaces[h]
            env["GLOO_SOCKET_IFNAME"] = ifaces[h]
        if _is_ip(addrs[h]) and engine == "vllm":
            env["VLLM_HOST_IP"] = addrs[h]
        if nodes > 1:
            env.update(rdma_env(facts[h], d["nccl_ib_gid_index"], d["nccl_net_gdr_level"]))
        if engine == "vllm" and role == "worker":
            # A worker's raylet gives up on a head that went away after this long (Ray's default 60 s),
            # so that it exits, Docker restarts it and it joins the new head (the group watchdog,
            # docs/roles/watchdog.md, waits for exactly this).
            env["RAY_gcs_rpc_server_reconnect_timeout_s"] = "15"
        if key_source:
            env["LLMFLEET_API_KEY_FILE"] = KEY_IN_CONTAINER
        ray_env, ray_mounts = _ray_auth(d["config_dir"], name, engine, nodes)
        env.update(ray_env)
        env.update({k: str(v) for k, v in d["env"].items()})
        mounts = [{"source": model_path, "target": model_path, "read_only": True}]
        if key_source:
            mounts.append({"source": key_host_path, "target": KEY_IN_CONTAINER, "read_only": True})
        mounts += ray_mounts
        mounts.append({"source": ep_host_path, "target": ENTRYPOINT, "read_only": True})
        # --host: every address for public, the private address for private, loopback for localhost
        bind = {"public": "0.0.0.0", "private": addrs[h], "localhost": "127.0.0.1"}[d["exposure"]]
        command = _command(engine, role, rank, d, tp, pp, nodes, gph, total, model_path, served, max_len, bind,
                           head_ip, addrs[h], cat_flags, extra)
        ports = [d["port"]] if (role != "worker" or engine == "sglang") else []
        if role == "head" and engine == "vllm":
            ports += [d["ray_port"], d["ray_dashboard_port"]]
        if engine == "sglang" and nodes > 1 and rank == 0:
            ports.append(d["dist_init_port"])
        gpus = gph if d["gpu_runtime"] == "nvidia" else 0
        dev_req = ([{"driver": "nvidia", "device_ids": [str(i) for i in devices[h]], "capabilities": [["gpu"]]}]
                   if gpus else [])
        hplans[h] = {"role": role, "rank": rank, "container_name": cname, "image": image, "command": command,
                     "env": env, "mounts": mounts, "ports": ports, "private_address": addrs[h],
                     "network_interface": ifaces[h], "gpus": gpus, "gpu_devices": devices[h],
                     "device_requests": dev_req}
        hplans[h].update(copy.deepcopy(CONTAINER_HARDENING))
    chash = config_hash({"engine": engine, "version": version, "gpu_runtime": d["gpu_runtime"],
                         "hosts": {h: {k: v for k, v in hp.items() if k != "labels"} for h, hp in hplans.items()},
                         "api_key_source": key_source})
    for h, hp in hplans.items():
        hp["labels"] = {"llmfleet.deployment": name, "llmfleet.role": hp["role"], "llmfleet.rank": str(hp["rank"]),
                        "llmfleet.config-hash": chash}
    ep_host = {"public": (ctx.hostvars.get(hosts[0]) or {}).get("llmfleet_public_address") or head_ip,
               "private": head_ip, "localhost": "127.0.0.1"}[d["exposure"]]
    return {
        "name": name, "engine": engine, "engine_version": version, "image": image, "config_hash": chash,
        "head": hosts[0], "workers": hosts[1:], "tp": tp, "pp": pp, "nodes": nodes, "gpus_per_host": gph,
        "gpus_total": total, "model": model.get("name"), "model_path": model_path, "served_model_name": served,
        "max_model_len": max_len, "gpu_memory_utilization": u, "exposure": d["exposure"],
        "gpu_runtime": d["gpu_runtime"],
        "api_key": {"source": key_source, "control_path": key_file, "host_path": key_host_path if key_source else None,
                    "container_path": KEY_IN_CONTAINER if key_source else None},
        "endpoint": {"host": ep_host, "port": d["port"], "base_url": "http://%s:%d" % (ep_host, d["port"])},
        "ray": ({"address": "%s:%d" % (head_ip, d["ray_port"]), "dashboard": "127.0.0.1:%d" % d["ray_dashboard_port"],
                 "timeout_s": d["ray_timeout_s"], "auth": "token",
                 "token_path": _ray_token_host_path(d["config_dir"], name)} if engine == "vllm" and nodes > 1 else None),
        "dist_init_addr": "%s:%d" % (head_ip, d["dist_init_port"]) if engine == "sglang" and nodes > 1 else None,
        "sizing": sizing, "warnings": warnings, "hosts": hplans,
    }


def _claim_ports(ctx, d, label, engine, hosts, nodes):
    name = d["name"]
    claims = []
    for rank, h in enumerate(hosts):
        if engine == "sglang" or rank == 0:
            claims.append((h, d["port"], "port"))
    if engine == "vllm" and nodes > 1:
        claims += [(hosts[0], d["ray_port"], "ray_port"), (hosts[0], d["ray_dashboard_port"], "ray_dashboard_port")]
        claims += _ray_side_ports(d, hosts)
    if engine == "sglang" and nodes > 1:
        claims.append((hosts[0], d["dist_init_port"], "dist_init_port"))
    mine = {}
    for h, port, key in claims:
        other = ctx.ports.get((h, port)) or mine.get((h, port))
        if other:
            ctx.err("%s.%s" % (label, key), "port %d on host %s is already used by %s: set %s to a free port"
                    % (port, h, other, key))
        else:
            mine[(h, port)] = "deployment %s (%s)" % (name, key)
    ctx.ports.update(mine)


def _ray_token_host_path(config_dir, name):
    return "%s/%s/ray_token" % (config_dir.rstrip("/"), name)


def _ray_auth(config_dir, name, engine, nodes):
    """(env, mounts) that turn on Ray's token authentication in every container of a vLLM
    multi-node group: RAY_AUTH_MODE=token and the path of the cluster's token, a 0600 file on
    each host (written by the inference_server role) mounted read-only. Only the path is in the
    environment, so the token is in neither docker inspect nor argv. ({}, []) otherwise."""
    if engine != "vllm" or nodes < 2:
        return {}, []
    return ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": RAY_TOKEN_IN_CONTAINER},
            [{"source": _ray_token_host_path(config_dir, name), "target": RAY_TOKEN_IN_CONTAINER, "read_only": True}])


def _ray_side_ports(d, hosts):
    """Ray's listeners besides GCS and dashboard, pinned and claimed like the other ports: the
    client server on the head, the dashboard agent's HTTP (job API) on every node. Both answer
    only with the cluster's token (they bind the node's private address and loopback)."""
    return ([(hosts[0], d["ray_client_server_port"], "ray_client_server_port")]
            + [(h, d["ray_dashboard_agent_port"], "ray_dashboard_agent_port") for h in hosts])


def _claim_gpus(ctx, name, label, hosts, gph, counts):
    out = {}
    for h in hosts:
        start = ctx.gpus_used.get(h, 0)
        users = ctx.gpu_users.setdefault(h, [])
        if h in counts and start + gph > counts[h]:
            ctx.err(label + ".gpus_per_host", "host %s has %d GPUs: %s already take %d, %s needs %d more: use other "
                    "hosts or fewer GPUs" % (h, counts[h], ", ".join("%s (%d)" % u for u in users), start, name, gph))
        out[h] = list(range(start, start + gph))
        ctx.gpus_used[h] = start + gph
        users.append((name, gph))
    return out


def _command(engine, role, rank, d, tp, pp, nodes, gph, total, model_path, served, max_len, bind, head_ip, my_ip,
             cat_flags, extra):
    u = "%g" % d["gpu_memory_utilization"]
    sh = ["/bin/sh", ENTRYPOINT]
    if engine == "sglang":
        argv = ["python3", "-m", "sglang.launch_server", "--model-path", model_path, "--served-model-name", served,
                "--tp", str(tp)]
        if pp > 1:
            argv += ["--pp-size", str(pp)]
        if nodes > 1:
            argv += ["--nnodes", str(nodes), "--node-rank", str(rank),
                     "--dist-init-addr", "%s:%d" % (head_ip, d["dist_init_port"])]
        argv += ["--host", bind, "--port", str(d["port"]), "--mem-fraction-static", u,
                 "--context-length", str(max_len)]
        # SGLang serves /metrics only when asked (vLLM always does): monitoring needs it.
        if "--enable-metrics" not in extra and "--enable-metrics" not in cat_flags:
            argv.append("--enable-metrics")
        return sh + ["serve", "--"] + argv + cat_flags + extra
    if role == "worker":
        return sh + ["ray-worker", "ray", "start", "--address=%s:%d" % (head_ip, d["ray_port"]),
                     "--node-ip-address=%s" % my_ip, "--dashboard-agent-listen-port=%d" % d["ray_dashboard_agent_port"],
                     "--num-gpus=%d" % gph, "--block"]
    argv = ["vllm", "serve", model_path, "--served-model-name", served, "--tensor-parallel-size", str(tp)]
    if pp > 1:
        argv += ["--pipeline-parallel-size", str(pp)]
    argv += ["--max-model-len", str(max_len), "--gpu-memory-utilization", u, "--host", bind, "--port", str(d["port"])]
    if role == "single":
        return sh + ["serve", "--"] + argv + cat_flags + extra
    argv += ["--distributed-executor-backend", "ray"]
    return sh + ["ray-head", str(total), str(nodes), str(d["ray_timeout_s"]),
                 "ray", "start", "--head", "--node-ip-address=%s" % my_ip, "--port=%d" % d["ray_port"],
                 "--dashboard-host=127.0.0.1", "--dashboard-port=%d" % d["ray_dashboard_port"],
                 "--ray-client-server-port=%d" % d["ray_client_server_port"],
                 "--dashboard-agent-listen-port=%d" % d["ray_dashboard_agent_port"],
                 "--num-gpus=%d" % gph, "--"] + argv + cat_flags + extra
