#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_config
short_description: Merge settings into Docker's daemon.json without dropping anything already there
version_added: 0.1.0
description:
  - Reads the current C(daemon.json), merges the wanted O(settings) into it and writes the
    result atomically, only when the content changes.
  - Dicts are merged key by key (for example C(runtimes) and C(log-opts)); keys set by someone
    else are kept. Lists are merged as an ordered union unless O(list_merge=replace).
  - Values under C(log-opts) are turned into strings, because dockerd refuses numbers there.
  - Does not restart Docker; it returns RV(restart_needed) so that a handler can.
  - This is the check-mode and diff-aware equivalent of C(nvidia-ctk runtime configure --runtime=docker).
author:
  - llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  path:
    description: Path of the daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  settings:
    description:
      - Settings to merge into the file. A V(null) value means no opinion (the current value stays).
    type: dict
    required: true
  list_merge:
    description:
      - V(append_unique) keeps the current list items first and appends the missing wanted items.
      - V(replace) makes the wanted list the value.
    type: str
    choices: [append_unique, replace]
    default: append_unique
  backup:
    description: Keep a timestamped copy of the previous file when it changes.
    type: bool
    default: false
  validate:
    description:
      - V(auto) runs C(dockerd --validate --config-file) on the new content when C(dockerd) is
        found and supports C(--validate) (Docker 23 and later), and skips the check otherwise.
      - V(always) fails when the check cannot run. V(never) skips it.
    type: str
    choices: [auto, always, never]
    default: auto
  dockerd_path:
    description: The dockerd binary used by O(validate); searched in PATH when not given.
    type: path
  mode:
    description: File mode of the written file.
    type: raw
    default: '0644'
notes:
  - The parent directory is created (mode 0755) when missing.
seealso:
  - name: Docker daemon configuration file
    description: The keys dockerd reads and which are reloadable without a restart.
    link: https://docs.docker.com/reference/cli/dockerd/#daemon-configuration-file
"""

EXAMPLES = r"""
- name: Register the NVIDIA runtime and rotate container logs
  llmfleet.serving.docker_daemon_config:
    settings:
      runtimes:
        nvidia:
          path: nvidia-container-runtime
          runtimeArgs: []
      log-driver: json-file
      log-opts:
        max-size: 100m
        max-file: 3
  notify: Restart docker

- name: Put Docker's data on the NVMe disk, keep a backup of the old file
  llmfleet.serving.docker_daemon_config:
    settings:
      data-root: /data/docker
    backup: true
"""

RETURN = r"""
changed_keys:
  description: Top-level keys whose value changed (or would change in check mode).
  returned: always
  type: list
  elements: str
  sample: [log-opts, runtimes]
restart_needed:
  description: True when a changed key is not reloadable by SIGHUP, so dockerd must restart.
  returned: always
  type: bool
  sample: true
config:
  description: The merged configuration (what the file holds after the run).
  returned: always
  type: dict
  sample: {"log-driver": "json-file", "log-opts": {"max-file": "3", "max-size": "100m"}}
backup_file:
  description: Name of the backup file.
  returned: when O(backup=true) and the file changed
  type: str
  sample: /etc/docker/daemon.json.12345.2026-01-01@00:00:00~
validated:
  description: Whether dockerd validated the new content.
  returned: always
  type: bool
  sample: false
"""

import os
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native

from ansible_collections.llmfleet.serving.plugins.module_utils._daemon_json import (
    DaemonJsonError,
    plan,
    validate_unsupported,
)


def read_current(path):
    """Return the file content, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8")


def run_validation(module, text, directory):
    """Run dockerd --validate on ``text``; returns True when validated, False when skipped."""
    how = module.params["validate"]
    if how == "never":
        return False
    dockerd = module.params["dockerd_path"] or module.get_bin_path("dockerd")
    if not dockerd:
        if how == "always":
            module.fail_json(msg="validate=always but dockerd was not found")
        return False
    fd, tmp = tempfile.mkstemp(prefix=".daemon.json.", dir=directory if os.path.isdir(directory) else None)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(to_bytes(text))
        rc, out, err = module.run_command([dockerd, "--validate", "--config-file", tmp])
    finally:
        os.unlink(tmp)
    if rc == 0:
        return True
    if validate_unsupported(out + err):
        if how == "always":
            module.fail_json(msg="validate=always but %s does not support --validate (Docker < 23)" % dockerd)
        module.warn("%s does not support --validate (Docker < 23); the configuration was not validated" % dockerd)
        return False
    module.fail_json(msg="dockerd rejected the merged configuration; %s was left unchanged" % module.params["path"],
                     rc=rc, stdout=out, stderr=err, config_text=text)
    return False  # not reached


def write_file(module, path, text):
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(to_bytes(text))
    module.atomic_move(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/docker/daemon.json"),
            settings=dict(type="dict", required=True),
            list_merge=dict(type="str", choices=["append_unique", "replace"], default="append_unique"),
            backup=dict(type="bool", default=False),
            validate=dict(type="str", choices=["auto", "always", "never"], default="auto"),
            dockerd_path=dict(type="path"),
            mode=dict(type="raw", default="0644"),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        current = read_current(path)
        result = plan(current, module.params["settings"], module.params["list_merge"], path)
    except DaemonJsonError as exc:
        module.fail_json(msg=to_native(exc))
    except (IOError, OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg="cannot read %s: %s" % (path, to_native(exc)), exception=traceback.format_exc())

    changed = result["changed"]
    out = dict(
        changed=changed,
        changed_keys=result["changed_keys"],
        restart_needed=result["restart_needed"],
        config=result["after"],
        validated=False,
    )
    if module._diff:
        out["diff"] = dict(
            before=result["before_text"], after=result["after_text"] if changed else result["before_text"],
            before_header="%s (before)" % path, after_header="%s (after)" % path)

    if changed and not module.check_mode:
        out["validated"] = run_validation(module, result["after_text"], os.path.dirname(path))
        if module.params["backup"] and current is not None:
            out["backup_file"] = module.backup_local(path)
        try:
            write_file(module, path, result["after_text"])
        except (IOError, OSError) as exc:
            module.fail_json(msg="cannot write %s: %s" % (path, to_native(exc)), exception=traceback.format_exc())

    if os.path.exists(path):
        file_args = module.load_file_common_arguments(dict(path=path, mode=module.params["mode"]))
        out["changed"] = module.set_fs_attributes_if_different(file_args, out["changed"])
    module.exit_json(**out)


if __name__ == "__main__":
    main()
