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
import math
import re

from ansible_collections.llmfleet.serving.plugins.module_utils._api_key import key_problem
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _container
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _engine_flags
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _files
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _flags
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _layout
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _schema
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _sizing
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _topology
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _weights
from ansible_collections.llmfleet.serving.plugins.plugin_utils._catalog import resolve_model

ENTRYPOINT = _files.ENTRYPOINT_IN_CONTAINER
KEY_IN_CONTAINER = _files.KEY_IN_CONTAINER
# Ray token authentication (Ray >= 2.52, docs/reliability.md): a per-cluster token in a 0600 file
# on every Ray host (made on the head by the inference_server role), mounted read-only.
RAY_TOKEN_IN_CONTAINER = "/run/llmfleet/ray_token"
# Every engine container: no privilege gain through setuid binaries, and none of Docker's default
# capabilities (the engines, Ray and the entrypoint run as root on their own files and need none;
# GPUs come through the device requests). docs/reliability.md; lab: tests/e2e/test_secrets.py.
CONTAINER_HARDENING = {"security_opts": ["no-new-privileges:true"], "cap_drop": ["ALL"]}
ENGINES = ("vllm", "sglang")
EXPOSURES = ("localhost", "private", "public")
NCCL_DEBUG_LEVELS = ("VERSION", "WARN", "INFO", "TRACE")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$")
# Names that carry secrets: *TOKEN (HF_TOKEN, HFTOKEN, HUGGING_FACE_HUB_TOKEN), *API_KEY*, *SECRET*,
# *_KEY (SSH_PRIVATE_KEY), CREDENTIALS, ... A TOKEN inside a name (LLMFLEET_SIM_TTFT_PER_PROMPT_TOKEN_MS,
# MAX_TOKENS) is not a secret. A value that is a URL with a password (DATABASE_URL=postgres://u:p@h/db)
# is refused whatever its name (SECRET_URL_RE).
SECRET_ENV_RE = re.compile(r"(API_?KEY|SECRET|PASSWORD|PASSWD|PASSPHRASE|ACCESS_KEY|PRIVATE_?KEY|CREDENTIAL|"
                           r"TOKEN$|(^|_)KEY$|(^|_)AUTH($|_)|COOKIE|BEARER)", re.I)
SECRET_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]+@")
# Variables the planner writes into the container environment: a deployment key sets them.
# (NCCL_IB_HCA / NCCL_IB_DISABLE stay the user's to override: they come from the RDMA facts.)
PLANNER_ENV = {"HF_HUB_OFFLINE": "none (the engines load the weights from model_path, offline)",
               "NCCL_DEBUG": "nccl_debug", "NCCL_SOCKET_IFNAME": "network_interface",
               "GLOO_SOCKET_IFNAME": "network_interface", "VLLM_HOST_IP": "hostvars llmfleet_private_address",
               "SGLANG_HOST_IP": "hostvars llmfleet_private_address",
               "NCCL_IB_GID_INDEX": "nccl_ib_gid_index", "NCCL_NET_GDR_LEVEL": "nccl_net_gdr_level",
               "LLMFLEET_API_KEY_FILE": "api_key_file", "VLLM_API_KEY": "api_key_file",
               "RAY_gcs_rpc_server_reconnect_timeout_s": "none (the group watchdog relies on it)"}
RESERVED_PORTS = {22: "sshd (Ansible reaches the hosts through it)"}
# Ray's fixed per-node ports (ray start defaults): claimed so that two Ray clusters on one host collide
# in the plan, not at start. Client server on the head; the dashboard agent on every node.
RAY_CLIENT_SERVER_PORT = _topology.RAY_CLIENT_SERVER_PORT
RAY_DASHBOARD_AGENT_PORT = _topology.RAY_DASHBOARD_AGENT_PORT
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
    "data_parallel": (_AUTO_INT, "auto"),
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
    "ray_timeout_s": (_INT, 600),
    "dist_init_port": (_INT, 20000),
    "gpu_runtime": ("str", "nvidia"),
    "config_dir": ("str", "/etc/llmfleet"),
    "sizing_reserve_gib": ("float", 2.0),
    "weights": ("bool or dict", None),
}

# flags the planner sets itself: a deployment key is the place to change them (see _flags)
OWNED_FLAGS = _flags.OWNED_FLAGS


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
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if typ == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if typ == "dict[str,str]":
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (str, int, float))
                                               and not isinstance(v, bool) for k, v in value.items())
    if typ == "str or list[str]":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if typ == "bool or dict":
        return isinstance(value, (bool, dict))
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
    # "=" makes NCCL match the names exactly: NCCL_IB_HCA=mlx5_1 would also take mlx5_10 .. mlx5_19
    return {"NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": "=" + ",".join(devs), "NCCL_NET_GDR_LEVEL": str(gdr_level),
            "NCCL_IB_GID_INDEX": str(gid_index)}


def config_hash(obj):
    """sha256 (first 16 hex) of the sorted JSON of ``obj``."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


_GPU_MEMORY_FIELDS = ("memory_total_mib", "memory_usable_mib", "memory_reserved_mib")


def gpu_facts_problems(facts):
    """[(field, message)] for GPU facts the planner cannot size against: ``gpus`` not a list of
    dicts, or a memory figure that is not a finite number of 0 or more (None means unknown)."""
    gpus = facts.get("gpus")
    if gpus is None:
        return []
    if not isinstance(gpus, list):
        return [("gpus", "must be a list of GPUs, got %s" % type(gpus).__name__)]
    out = []
    for i, g in enumerate(gpus):
        if not isinstance(g, dict):
            out.append(("gpus[%d]" % i, "must be a dict, got %s" % type(g).__name__))
            continue
        for key in _GPU_MEMORY_FIELDS:
            v = g.get(key)
            if v is not None and not (_schema.is_number(v) and math.isfinite(v) and v >= 0):
                shown = repr(v) if _schema.is_number(v) or isinstance(v, bool) else "a %s" % type(v).__name__
                out.append(("gpus[%d].%s" % (i, key), "must be a number of MiB (0 or more), got %s" % shown))
    return out


def gpu_memory_mib(facts):
    """The smallest GPU's memory as CUDA sees it (nvidia-smi total less what the driver reserves,
    ``memory_usable_mib`` of gpu_facts; the total where facts predate that field), or None."""
    mems = [g.get("memory_usable_mib") or g.get("memory_total_mib")
            for g in (facts or {}).get("gpus") or [] if g.get("memory_usable_mib") or g.get("memory_total_mib")]
    return min(mems) if mems else None


def _gpu_memory_bytes(facts):
    mib = gpu_memory_mib(facts)
    return mib * _sizing.MIB if mib else None


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
        self.containers = {}   # (host, container name) -> deployment
        self.play_hosts = None  # (pattern, hosts) of the deploy plays, when known
        self.check_file = None  # path -> None or the reason it cannot be used

    def err(self, variable, message):
        self.errors.append(PlanError(variable, message))


def build_plan(deployments, hostvars=None, groups=None, catalog=None, is_vaulted=None, check_file=None,
               play_hosts=None):
    """Plan every deployment. Returns {"deployments": {name: plan}, "hosts": {host: [refs]}};
    raises PlanErrors with every refusal found.

    ``check_file(path)``, when given, is called for each ``api_key_file`` and returns None when
    the file is usable or a short reason (e.g. "does not exist on the control node"); the action
    plugin passes one that looks on the control node. Without it the path is not checked.

    ``play_hosts``, when given, is (pattern, [hosts]) of the deploy plays (``llmfleet_hosts``,
    default the group gpu_hosts): a deployment host outside it would never be deployed."""
    ctx = _Ctx(hostvars, groups, catalog, is_vaulted)
    ctx.check_file = check_file
    ctx.play_hosts = play_hosts
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
        if p is not None and not _check_cross(ctx, p, label):
            p = None
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
                if typ == "float" and isinstance(v, float) and not math.isfinite(v):
                    fix = " (a finite number: .nan / .inf are not sizes or fractions)"
                elif typ in ("float", _INT, _AUTO_INT) and isinstance(v, str) and _looks_numeric(v):
                    fix = " (write the number without quotes: %s)" % v.strip()
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


def _looks_numeric(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


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


# ---------------------------------------------------------------------------------------------
# validation steps of _plan_one (each adds its refusals to ctx and returns what the plan needs)

def _check_strings(ctx, d, label):
    """env (secrets, the planner's own variables), image, model_path, served_model_name."""
    for k, v in d["env"].items():
        var = "%s.env.%s" % (label, k)
        if SECRET_ENV_RE.search(k) or (isinstance(v, str) and SECRET_URL_RE.match(v.strip())):
            ctx.err(var, "secrets do not belong in the container environment (visible in docker inspect): use "
                    "api_key / api_key_file for the API key; the engines need no other secret (weights are local)")
        elif k in PLANNER_ENV or k.upper() in PLANNER_ENV:
            ctx.err(var, "is set by the planner (from %s): env must not override it; change that setting instead"
                    % PLANNER_ENV.get(k, PLANNER_ENV.get(k.upper())))
    for var, msg in _schema.image_errors(d["image"], label + ".image"):
        ctx.err(var, msg)
    for var, msg in _schema.path_errors(d["model_path"], label + ".model_path"):
        ctx.err(var, msg)
    for var, msg in _schema.path_errors(d["config_dir"], label + ".config_dir", what="config_dir", system_ok=True):
        ctx.err(var, msg)
    served = d["served_model_name"]
    if isinstance(served, str) and (not served.strip() or served.strip().startswith("-") or served != served.strip()):
        ctx.err(label + ".served_model_name", "%r: a served model name must not be empty, start with '-' (the engine "
                "would read it as an option) or have spaces around it" % served)


def _check_model_entry(ctx, d, label):
    """Type checks of the model entry the deployment names, before it is resolved. False when the
    model cannot be resolved safely (the refusals say why)."""
    model = d["model"]
    errs = []
    if isinstance(model, dict):
        errs += _schema.model_entry_errors(model, label + ".model")
        if isinstance(model.get("key"), str) and model["key"] in ctx.catalog:
            errs += _schema.model_entry_errors(ctx.catalog[model["key"]], "llmfleet_models[%s]" % model["key"])
    elif isinstance(model, str) and model in ctx.catalog:
        errs += _schema.model_entry_errors(ctx.catalog[model], "llmfleet_models[%s]" % model)
    elif isinstance(model, str) and not model.strip():
        errs.append((label + ".model", "is empty: name a model of catalog/models.yml or llmfleet_models"))
    for var, msg in errs:
        if not any(e.variable == var and e.message == msg for e in ctx.errors):
            ctx.err(var, msg)
    return not errs


def _engine_args(ctx, d, label, engine, version, model, dp, n_err):
    """(argv, values): the engine arguments after the planner's own, from every source through the
    same checks (_flags), merged option by option; (None, None) when refused."""
    name = model.get("name")
    trust = model.get("trust_remote_code") is True
    if isinstance(d["model"], dict) and "engine_flags" in d["model"]:
        model_var = "%s.model.engine_flags.%s" % (label, engine)
    else:
        model_var = "llmfleet_models[%s].engine_flags.%s" % (name, engine)
    planner = []
    if dp > 1:
        planner += ["--data-parallel-size" if engine == "vllm" else "--dp-size", str(dp)]
    if trust:
        planner.append("--trust-remote-code")
    sources = [_flags.Source("planner", planner, user=False),
               _flags.Source(model_var, list(((model.get("engine_flags") or {}).get(engine)) or [])),
               _flags.Source(label + ".extra_args", d["extra_args"])]
    errs = []
    for src in sources:
        errs += _flags.check_source(engine, version, src, label, trust_remote_code=trust)
    if not errs:
        argv, merrs = _flags.merge(sources, label)
        errs += merrs
    for var, msg in errs:
        ctx.err(var, msg)
    if errs:
        return None, None
    values = {}
    for src in sources:
        values.update(src.values)
    return argv, values


def _check_context(ctx, d, label, engine, model, max_len, values, warnings):
    """max_model_len above the model's max_position_embeddings: refused unless rope scaling is
    configured (the model entry's rope_scaling, vLLM --hf-overrides / SGLang
    --json-model-override-args with rope_scaling, or vLLM's VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)."""
    limit = model.get("max_position_embeddings")
    if not _schema.is_int(limit) or max_len <= limit:
        return
    rope = bool(model.get("rope_scaling")) or any(
        "rope_scaling" in str(values.get(o) or "") or "rope_parameters" in str(values.get(o) or "")
        for o in ("--hf-overrides", "--json-model-override-args"))
    allow = engine == "vllm" and str(d["env"].get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "")).strip() in ("1", "true")
    if rope or allow:
        warnings.append("max_model_len %d is above the model's max_position_embeddings %d: %s"
                        % (max_len, limit, "rope scaling is configured" if rope else
                           "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 lets vLLM start; outputs past %d tokens may be poor"
                           % limit))
        return
    ctx.err(label + ".max_model_len", "%d is above the model's max_position_embeddings %d: the engine refuses it at "
            "start. Lower max_model_len to %d or less, or configure rope scaling (rope_scaling in the model entry, "
            "e.g. {rope_type: yarn, factor: 4.0, original_max_position_embeddings: %d})"
            % (max_len, limit, limit, limit))


def _gpu_memory(ctx, d, label, hosts, facts, warnings):
    """GPU memory per GPU for the sizing: the facts' smallest GPU, or gpu_memory_gib. A declared size
    above what the facts say is refused; one below them is used, with a warning."""
    mems = [_gpu_memory_bytes(facts[h]) for h in hosts]
    fact_mem = min(mems) if mems and all(mems) else None
    declared = d["gpu_memory_gib"]
    if not (declared and declared > 0):
        return fact_mem
    mem = int(declared * _sizing.GIB)
    if fact_mem is not None:
        if mem > fact_mem * 1.01:
            ctx.err(label + ".gpu_memory_gib", "%s GiB declared, but the GPU facts say %.1f GiB (smallest GPU of %s): "
                    "remove gpu_memory_gib (the facts are used) or lower it"
                    % (declared, fact_mem / float(_sizing.GIB), ", ".join(hosts)))
        elif mem < fact_mem * 0.99:
            warnings.append("gpu_memory_gib %s is below the %.1f GiB the GPU facts report: the sizing uses the "
                            "declared %s GiB" % (declared, fact_mem / float(_sizing.GIB), declared))
    return mem


def _check_cross(ctx, p, label):
    """Rules across deployments: one container name per host."""
    ok = True
    for h, hp in p["hosts"].items():
        other = ctx.containers.get((h, hp["container_name"]))
        if other:
            ctx.err(label + ".name", "container name %s on host %s is also deployment %s's: rename one deployment "
                    "(container names derive from the name and the role)" % (hp["container_name"], h, other))
            ok = False
        else:
            ctx.containers[(h, hp["container_name"])] = p["name"]
    return ok


def _outside_play(ctx, hosts, label):
    """True (and a refusal) when some of ``hosts`` are outside the hosts the deploy plays run on."""
    if ctx.play_hosts is None or not hosts:
        return False
    pattern, members = ctx.play_hosts
    outside = [h for h in hosts if h not in set(members or ())]
    if outside:
        ctx.err(label + ".hosts", "host(s) %s are not in %s, the hosts the deploy plays run on: the deployment "
                "would never be deployed. Add them to that group, or set llmfleet_hosts to a group that holds "
                "them" % (", ".join(outside), pattern))
    return bool(outside)


def _plan_one(ctx, dep, label):
    n_err = len(ctx.errors)
    d = _validate_keys(ctx, dep, label)
    if d is None:
        return None
    name = d["name"]
    hosts = _resolve_hosts(ctx, d, label)
    if _outside_play(ctx, hosts, label):
        return None

    engine = d["engine"]
    version = None
    version_warnings = []
    if engine not in ENGINES:
        ctx.err(label + ".engine", "unknown engine %r%s: use one of %s"
                % (engine, did_you_mean(engine, ENGINES), ", ".join(ENGINES)))
        engine = None
    else:
        try:
            version = _engine_flags.resolve_version(engine, d["engine_version"])
            version_warnings = _engine_flags.version_warnings(engine, d["engine_version"])
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
    for k in ("port", "ray_port", "ray_dashboard_port", "dist_init_port"):
        if not 1 <= d[k] <= 65535:
            ctx.err("%s.%s" % (label, k), "%d is not a TCP port (1-65535)" % d[k])
        elif d[k] in RESERVED_PORTS:
            ctx.err("%s.%s" % (label, k), "%d is the port of %s: choose another port" % (d[k], RESERVED_PORTS[d[k]]))
    _check_strings(ctx, d, label)

    # API key
    key = d.get("api_key")
    key_file = d.get("api_key_file")
    key_source = None
    if key is not None and key_file is not None:
        ctx.err(label + ".api_key", "set api_key or api_key_file, not both")
    elif key is not None:
        key_source = "vault" if ctx.is_vaulted(key) else "inline"
        why = key_problem(str(key))
        if why:
            ctx.err(label + ".api_key", "the key %s" % why)
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
    if not _check_model_entry(ctx, d, label):
        return None
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
    broken = [(h, problem) for h, f in facts.items() if isinstance(f, dict) for problem in gpu_facts_problems(f)]
    for h, (field, message) in broken:
        ctx.err("hostvars[%s].llmfleet_gpu_facts.%s" % (h, field), message + ": gather them again with "
                "llmfleet.serving.gpu_facts, or correct the inventory that sets them")
    if broken:
        return None
    counts = {h: f.get("gpu_count") for h, f in facts.items() if isinstance(f, dict) and _schema.is_int(f.get("gpu_count"))}
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
    # parallel layout: TP x PP x DP, engine-true (heads, KV heads, layers), see _layout
    layout, lerrs = _layout.choose(engine, model, nodes, gph, d["tensor_parallel"], d["pipeline_parallel"],
                                   d["data_parallel"])
    for key, message in lerrs or ():
        ctx.err("%s.%s" % (label, key), message)
    if layout is None:
        return None
    tp, pp, dp = layout["tp"], layout["pp"], layout["dp"]
    gph = layout["gpus_per_host"]
    total = gph * nodes
    warnings = list(version_warnings) + layout["warnings"]
    notes = list(layout["notes"])

    # engine arguments: every source through the same checks, then merged option by option (_flags)
    argv, values = _engine_args(ctx, d, label, engine, version, model, dp, n_err)
    if argv is None:
        return None
    cat_flags, extra = [], argv
    kv_dtype = values.get("--kv-cache-dtype")

    # sizing
    max_len = (d["max_model_len"] if (d["max_model_len"] or 0) >= 1 else None) or model.get("max_position_embeddings")
    if not max_len:
        ctx.err(label + ".max_model_len", "the model's max_position_embeddings is unknown: set max_model_len")
        return None
    _check_context(ctx, d, label, engine, model, max_len, values, warnings)
    mem = _gpu_memory(ctx, d, label, hosts, facts, warnings)
    sizing = _sizing.size_deployment(model, tp, pp, max_len, mem, u, kv_dtype,
                                     int(d["sizing_reserve_gib"] * _sizing.GIB), dtype=values.get("--dtype"))
    sizing["dp"] = dp
    if dp > 1:
        sizing["lines"].append("data parallel: %d ranks, each with the figures above on its own %d GPUs"
                               % (dp, tp * pp))
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
    _claim_ports(ctx, d, label, engine, hosts, nodes, values)
    devices = _claim_gpus(ctx, name, label, hosts, gph, counts)
    if len(ctx.errors) > n_err:
        return None

    served = d["served_model_name"] or model.get("served_model_name") or model.get("hf_id") or model.get("name")
    model_path = d["model_path"] or "/data/models/%s" % str(model.get("hf_id") or model.get("name")).rsplit("/", 1)[-1]
    image = d["image"] or DEFAULT_IMAGES[engine].format(version=version)
    wjob, werrs = _weights.job(d["weights"], model, model_path, hosts, addrs, label)
    for variable, message in werrs:
        ctx.err(variable, message)
    if werrs:
        return None
    return _assemble(ctx, d, group=_topology.group(name, engine, version, hosts, addrs, ifaces, devices, gph, tp, pp),
                     files=_files.DeploymentFiles(d["config_dir"], name, key_source),
                     settings=_container.EngineSettings(
                         model_path, served, max_len, u, d["exposure"], _ports(d), d["ray_timeout_s"],
                         tuple(cat_flags), tuple(extra)),
                     facts=facts, key=(key_source, key_file), wjob=wjob, sizing=sizing, warnings=warnings,
                     model=model, image=image, notes=notes, dp=dp)


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


def _ports(d):
    return _topology.Ports(d["port"], d["ray_port"], d["ray_dashboard_port"], d["dist_init_port"])


def _assemble(ctx, d, group, files, settings, facts, key, wjob, sizing, warnings, model, image, notes=(), dp=1):
    """The plan of one validated deployment: per host its container spec (_container), its files
    (_files) and its part of the weights job (_weights); the config hash over all hosts' specs."""
    key_source, key_file = key
    hplans = {}
    for m in group.members:
        env = _container.environment(group, m, d["nccl_debug"],
                                     rdma_env(facts[m.host], d["nccl_ib_gid_index"], d["nccl_net_gdr_level"]),
                                     files.has_key, d["env"], _is_ip(m.address))
        hp = {"role": m.role, "rank": m.rank}
        hp.update(_container.spec(group, m, settings, image, env, files.mounts(settings.model_path), d["gpu_runtime"]))
        ray_env, ray_mounts = _ray_auth(files.config_dir, group.name, group.engine, group.nodes)
        hp["env"].update(ray_env)
        hp["mounts"] = list(hp["mounts"]) + ray_mounts
        hp.update(copy.deepcopy(CONTAINER_HARDENING))
        host_files = files.host_files()
        if ray_mounts:
            # the Ray cluster token (written by the role, content never in the plan): listed so that
            # the state check sees it missing and teardown removes it with the deployment's files
            host_files.insert(len(host_files) - 1, {
                "kind": "ray_token", "path": ray_mounts[0]["source"], "mode": "0600", "owner": "root",
                "group": "root", "container_path": RAY_TOKEN_IN_CONTAINER, "source": "ray_token", "sha256": None})
        hp.update({"private_address": m.address, "network_interface": m.interface, "files": host_files,
                   "port_claims": [{"port": p, "key": k} for p, k in
                                   _topology.port_claims(group.engine, [x.host for x in group.members],
                                                         settings.ports)[m.host]]})
        hplans[m.host] = hp
    # what restarts when what changes: every host's container spec and files (the entrypoint's
    # sha256 among them), not the labels (they carry the hash) nor the weights step
    chash = config_hash({"engine": group.engine, "version": group.version, "gpu_runtime": d["gpu_runtime"],
                         "hosts": {h: {k: v for k, v in hp.items() if k not in ("labels", "weights")}
                                   for h, hp in hplans.items()},
                         "api_key_source": key_source,
                         # a new pinned weights revision restarts the deployment
                         "model_revision": model.get("revision") or None})
    for h, hp in hplans.items():
        hp["labels"] = {"llmfleet.deployment": group.name, "llmfleet.role": hp["role"],
                        "llmfleet.rank": str(hp["rank"]), "llmfleet.config-hash": chash}
        hp["weights"] = _weights.host_step(wjob, h)
    head, name, port = group.head, group.name, settings.ports.api
    ep_host = {"public": (ctx.hostvars.get(head.host) or {}).get("llmfleet_public_address") or head.address,
               "private": head.address, "localhost": "127.0.0.1"}[d["exposure"]]
    return {
        "name": name, "engine": group.engine, "engine_version": group.version, "image": image, "config_hash": chash,
        "head": head.host, "workers": [m.host for m in group.members[1:]], "tp": group.tp, "pp": group.pp,
        "nodes": group.nodes, "gpus_per_host": group.gpus_per_host, "gpus_total": group.gpus_total,
        "model": model.get("name"), "model_path": settings.model_path,
        "served_model_name": settings.served_model_name, "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization, "exposure": d["exposure"],
        "gpu_runtime": d["gpu_runtime"], "config_dir": files.config_dir, "files_dir": files.dir,
        "api_key": {"source": key_source, "control_path": key_file, "host_path": files.key_path,
                    "container_path": KEY_IN_CONTAINER if key_source else None},
        "endpoint": {"host": ep_host, "port": port, "base_url": "http://%s:%d" % (ep_host, port)},
        "ray": ({"address": "%s:%d" % (head.address, d["ray_port"]),
                 "dashboard": "127.0.0.1:%d" % d["ray_dashboard_port"], "timeout_s": d["ray_timeout_s"],
                 "auth": "token", "token_path": _ray_token_host_path(files.config_dir, group.name)}
                if group.engine == "vllm" and group.multi_node else None),
        "dist_init_addr": ("%s:%d" % (head.address, d["dist_init_port"])
                           if group.engine == "sglang" and group.multi_node else None),
        "weights": wjob, "sizing": sizing, "warnings": warnings, "notes": list(notes), "hosts": hplans,
        "dp": dp, "model_revision": model.get("revision"), "trust_remote_code": bool(model.get("trust_remote_code")),
    }


def _claim_ports(ctx, d, label, engine, hosts, nodes, values=None):
    """Claim the ports each host of the deployment listens on; refuse one already claimed there.
    Besides the deployment keys: Ray's fixed per-node ports (client server on the head, dashboard
    agent on every node) for vLLM multi-node, and every ``--*-port`` option among the engine flags
    (on the hosts that run the engine's server)."""
    name = d["name"]
    claims = [(h, port, key) for h, pk in _topology.port_claims(engine, hosts, _ports(d)).items() for port, key in pk]
    for option, value in sorted((values or {}).items()):
        if option.endswith("-port") and isinstance(value, str) and value.strip().isdigit():
            for rank, h in enumerate(hosts):
                if engine == "sglang" or rank == 0:
                    claims.append((h, int(value), "extra_args %s" % option))
    mine = {}
    for h, port, key in claims:
        other = ctx.ports.get((h, port)) or mine.get((h, port))
        var = key if key in DEPLOYMENT_KEYS else "extra_args" if key.startswith("extra_args") else "hosts"
        if other:
            ctx.err("%s.%s" % (label, var), "port %d%s on host %s is already used by %s: %s"
                    % (port, "" if var == key else " (%s)" % key, h, other,
                       "set %s to a free port" % key if var == key else
                       "change the option's port" if var == "extra_args" else
                       "Ray uses this port on every node of a cluster: put the two Ray deployments on other hosts"))
        else:
            mine[(h, port)] = "deployment %s (%s)" % (name, key)
    ctx.ports.update(mine)


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
