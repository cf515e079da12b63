# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmfleet.serving.serving_plan: plans on the controller, touches no host."""

from __future__ import annotations

import glob
import os
import re

import yaml
from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.llmfleet.serving.plugins.module_utils._api_key import KeyFileError
from ansible_collections.llmfleet.serving.plugins.module_utils._api_key import read_key_file
from ansible_collections.llmfleet.serving.plugins.plugin_utils._catalog import (
    CatalogError,
    load_catalog,
    merge_catalog,
)
from ansible_collections.llmfleet.serving.plugins.plugin_utils._plan import (
    ROLE_PREFIXES,
    PlanErrors,
    build_plan,
    misspelt_variables,
)

try:  # ansible-core >= 2.19: EncryptedString, or a decrypted str tagged VaultedValue
    from ansible.parsing.vault import VaultHelper
except ImportError:  # pragma: no cover - older cores
    VaultHelper = None

HOSTVAR_KEYS = ("llmfleet_gpu_facts", "llmfleet_private_address", "llmfleet_public_address", "ansible_host")
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_KNOWN_ROLE_VARIABLES = {}


def known_role_variables(root=COLLECTION_ROOT):
    """Every role variable the collection knows: the options of roles/*/meta/argument_specs.yml
    (all entry points) and every prefixed name its roles and playbooks mention (results they set
    or register, such as gateway_status). Read once per root."""
    if root in _KNOWN_ROLE_VARIABLES:
        return _KNOWN_ROLE_VARIABLES[root]
    names = set()
    word = re.compile(r"\b(?:%s)\w+" % "|".join(re.escape(p) for p in ROLE_PREFIXES))
    for spec in glob.glob(os.path.join(root, "roles", "*", "meta", "argument_specs.y*ml")):
        with open(spec) as f:
            data = yaml.safe_load(f) or {}
        for entry in (data.get("argument_specs") or {}).values():
            names.update((entry or {}).get("options") or {})
    for top in ("roles", "playbooks"):
        for dirpath, _dirs, files in os.walk(os.path.join(root, top)):
            for fn in files:
                if fn.endswith((".yml", ".yaml", ".j2")):
                    with open(os.path.join(dirpath, fn), errors="replace") as f:
                        names.update(word.findall(f.read()))
    _KNOWN_ROLE_VARIABLES[root] = names
    return names


def variable_names(task_vars, hosts):
    """Names of the variables in play: the control node's (extra vars, group_vars/all, ...) and
    those of the deployments' hosts (their host and group vars)."""
    names = set(task_vars)
    hostvars = task_vars.get("hostvars") or {}
    for h in hosts:
        hv = _host(hostvars, h)
        try:
            names.update(hv.keys() if hv is not None else ())
        except (AttributeError, ReferenceError, AnsibleError):
            continue
    return names


def is_vaulted(value):
    """True when ``value`` comes from Ansible Vault (inline !vault or a vaulted variable file)."""
    if VaultHelper is not None:
        try:
            if VaultHelper.get_ciphertext(value, with_tags=False) is not None:
                return True
        except Exception:  # noqa: BLE001 - any failure means "not provably vaulted"
            pass
    return type(value).__name__ in ("AnsibleVaultEncryptedUnicode", "EncryptedString")


def hosts_of(deployments, groups):
    """Every host name the deployments name (directly or through a group)."""
    out = []
    for dep in deployments if isinstance(deployments, list) else []:
        hosts = dep.get("hosts") if isinstance(dep, dict) else None
        names = groups.get(hosts, [hosts]) if isinstance(hosts, str) else (hosts if isinstance(hosts, list) else [])
        for h in names:
            if isinstance(h, str) and h not in out:
                out.append(h)
    return out


def _host(hostvars, host):
    """hostvars[host], or None for a name that is not an inventory host (Ansible 2.19's HostVars
    returns an Undefined for it, which raises ReferenceError outside a template)."""
    try:
        if host not in hostvars:
            return None
        return hostvars[host]
    except (KeyError, TypeError, ReferenceError, AnsibleError):
        return None


def collect_hostvars(hosts, hostvars, template):
    """The subset of hostvars the planner reads, templated."""
    out = {}
    for h in hosts:
        hv = _host(hostvars, h)
        if hv is None:
            continue
        out[h] = {}
        for k in HOSTVAR_KEYS:
            try:
                if k in hv:
                    out[h][k] = template(hv[k])
            except AnsibleError:
                continue
    return out


def read_inputs(args, task_vars, template):
    """What the planner and the preflight read on the controller: the deployments, the catalog
    (with the user's models), the inventory groups and the hostvars of the hosts involved.
    Raises CatalogError for a broken catalog."""
    deployments = args.get("deployments")
    if deployments is None:
        deployments = template(task_vars.get("llmfleet_deployments", []))
    models = args.get("models")
    if models is None:
        models = template(task_vars.get("llmfleet_models", {})) or {}
    catalog = merge_catalog(load_catalog(args.get("catalog_path")), models)
    groups = task_vars.get("groups") or {}
    hostvars = collect_hostvars(hosts_of(deployments, groups), task_vars.get("hostvars") or {}, template)
    return deployments, catalog, groups, hostvars


def play_hosts(task_vars, groups, template):
    """(pattern, hosts) the deploy plays run on (``llmfleet_hosts``, default the group gpu_hosts),
    when that pattern is a plain group name of the inventory; else None (not checked)."""
    try:
        pattern = template(task_vars.get("llmfleet_hosts", "gpu_hosts"))
    except AnsibleError:
        return None
    if isinstance(pattern, str) and pattern in groups:
        return pattern, list(groups[pattern])
    return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("deployments", "models", "catalog_path"))

    def _template(self, value):
        return self._templar.template(value)

    def _key_path(self, path):
        """The absolute path of an api_key_file on the control node (a relative one is looked up
        in the playbook's files/, as the file lookup does); None when not found."""
        p = os.path.expanduser(path)
        if not os.path.isabs(p):
            try:
                p = self._find_needle("files", p)
            except AnsibleError:
                return None
        return p

    def _check_key_file(self, path):
        """None when the API key file can be read on the control node, else why not."""
        if not isinstance(path, str) or not path:
            return None  # the planner's type check names it
        p = self._key_path(path)
        if p is None:
            return "does not exist on the control node (a relative path is looked up in the playbook's files/)"
        if not os.path.exists(p):
            return "does not exist on the control node"
        if not os.path.isfile(p):
            return "is not a regular file on the control node"
        if not os.access(p, os.R_OK):
            return "cannot be read on the control node"
        try:  # the same reader as llm_ready / llm_benchmark: content rules, owner-only mode
            read_key_file(p, check_mode=True)
        except KeyFileError as e:
            return str(e).replace("API key file %s " % p, "", 1)
        return None

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        result["changed"] = False
        args = self._task.args
        try:
            deployments, catalog, groups, hostvars = read_inputs(args, task_vars, self._template)
        except CatalogError as e:
            result.update(failed=True, msg=str(e))
            return result
        errors, plan = [], None
        try:
            plan = build_plan(deployments, hostvars, groups, catalog, is_vaulted=is_vaulted,
                              check_file=self._check_key_file, play_hosts=play_hosts(task_vars, groups, self._template))
        except PlanErrors as e:
            errors = list(e.errors)
        errors += misspelt_variables(variable_names(task_vars, hosts_of(deployments, groups)), known_role_variables())
        if errors:
            e = PlanErrors(errors)
            result.update(failed=True, msg=str(e), errors=[x.to_dict() for x in e.errors])
            return result
        for dep in plan["deployments"].values():  # readers get the file the check read
            key = dep["api_key"]
            if key.get("source") == "file":
                key["control_path"] = self._key_path(key["control_path"]) or key["control_path"]
        result["plan"] = plan
        result["ansible_facts"] = {"llmfleet_plan": plan}
        return result
