# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmfleet.serving.serving_plan: plans on the controller, touches no host."""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.llmfleet.serving.plugins.module_utils._catalog import (
    CatalogError,
    load_catalog,
    merge_catalog,
)
from ansible_collections.llmfleet.serving.plugins.module_utils._plan import PlanErrors, build_plan

try:  # ansible-core >= 2.19: EncryptedString, or a decrypted str tagged VaultedValue
    from ansible.parsing.vault import VaultHelper
except ImportError:  # pragma: no cover - older cores
    VaultHelper = None

HOSTVAR_KEYS = ("llmfleet_gpu_facts", "llmfleet_private_address", "llmfleet_public_address", "ansible_host")


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
        names = groups.get(hosts, [hosts]) if isinstance(hosts, str) else (hosts or [])
        for h in names:
            if isinstance(h, str) and h not in out:
                out.append(h)
    return out


def collect_hostvars(hosts, hostvars, template):
    """The subset of hostvars the planner reads, templated."""
    out = {}
    for h in hosts:
        try:
            hv = hostvars[h]
        except KeyError:
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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("deployments", "models", "catalog_path"))

    def _template(self, value):
        return self._templar.template(value)

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
        try:
            plan = build_plan(deployments, hostvars, groups, catalog, is_vaulted=is_vaulted)
        except PlanErrors as e:
            result.update(failed=True, msg=str(e), errors=[x.to_dict() for x in e.errors])
            return result
        result["plan"] = plan
        result["ansible_facts"] = {"llmfleet_plan": plan}
        return result
