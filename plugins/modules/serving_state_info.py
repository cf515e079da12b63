#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: serving_state_info
short_description: Read in one call what the inference_server role compares with the plan on a host
description:
  - Reads every planned engine container with one C(docker inspect) (exists, C(llmfleet.config-hash) label,
    running, status, start time), the Ray node count of each running head that matches the plan and has
    O(containers[].ray_nodes) set (one loopback GET of Ray's state API, else one C(docker exec) asking the
    head's GCS), and every planned file or folder
    (exists, sha256, mode, owner, group).
  - Returns what differs from what is expected (O(containers), O(files)) and RV(in_sync). Changes nothing.
    One round trip per host, so a run with nothing to change costs almost nothing
    (C(docs/roles/inference_server.md)). The decisions across the hosts of a group are made on the
    control node by M(llmfleet.serving.serving_drift).
  - The expected sha256 of a file is never shown in the output (C(no_log)); neither is a file's content.
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
attributes:
  check_mode:
    support: full
    details: Reads only; the same in check mode.
  diff_mode:
    support: full
    details: Returns one line per container or file that differs (before / after), never a file's content.
  idempotent:
    support: full
options:
  containers:
    description: The planned containers of this host.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Container name.
        type: str
        required: true
      config_hash:
        description: The plan's config hash (the C(llmfleet.config-hash) label the container must carry).
        type: str
        required: true
      ray_nodes:
        description: For the head of a multi-node vLLM group, the Ray nodes it must hold.
        type: int
      ray_dashboard:
        description:
          - With O(containers[].ray_token_file), the head's loopback dashboard C(127.0.0.1:PORT) (the plan's
            C(ray.dashboard)). The nodes are then counted with one GET of Ray's state API (C(/api/v0/nodes)) with
            the cluster token as bearer token. When it does not answer so, they are counted by asking the head's
            GCS from inside the container (C(docker exec), no C(ray.init)).
        type: str
      ray_token_file:
        description: The Ray cluster token file on this host (the plan's C(ray.token_path)); read, never returned.
        type: path
      health_url:
        description:
          - The engine's health URL (the plan's endpoint + C(/health)), for the container that serves the API.
            When the container runs with the planned hash, one GET of it is returned in RV(health); it changes
            nothing of RV(in_sync) (a no-op deploy uses it to skip the readiness wait of a deployment that
            nothing changed, M(llmfleet.serving.serving_drift) returns it as C(proven_ready)).
        type: str
      deployment:
        description: Deployment name (returned as is).
        type: str
      settings:
        description:
          - The settings outside the plan's hash that C(community.docker.docker_container) would apply
            (C(image), C(restart_policy), C(ipc_mode), C(log_max_size), C(log_max_file), C(ulimits) as
            C(name:soft:hard) strings); each one set is compared with C(docker inspect).
        type: dict
  files:
    description: The planned files and folders of this host.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path on the host.
        type: str
        required: true
      state:
        description: What the path must be.
        type: str
        choices: [file, directory]
        default: file
      sha256:
        description: Expected sha256 of a file's content (hex); not compared when unset.
        type: str
      mode:
        description: Expected mode, octal string such as C("0600").
        type: str
      owner:
        description: Expected owner name.
        type: str
      group:
        description: Expected group name.
        type: str
      read:
        description:
          - Return the file's content (base64, up to 1 MiB) in RV(files). For records such as the deployment
            record that C(playbooks/reconfigure.yml) diffs against; never for a secret.
        type: bool
        default: false
      kind:
        description: What the file is for (for example C(api_key), C(entrypoint), C(record)); returned as is.
        type: str
      deployment:
        description: Deployment name (returned as is).
        type: str
  probes:
    description: Paths whose existence is returned in RV(probes) (for example C(/run/systemd/system)).
    type: list
    elements: str
    default: []
  finds:
    description: Folders to list, each C(path) and a glob C(pattern); the matches are returned in RV(found).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The folder.
        type: str
        required: true
      pattern:
        description: Glob pattern of the entries' names.
        type: str
        default: "*"
  docker_cli:
    description: The Docker command line client.
    type: str
    default: docker
  ray_timeout:
    description: Seconds one Ray node count may take.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Read what runs on this host
  llmfleet.serving.serving_state_info:
    containers:
      - {name: llmfleet-r1-head, config_hash: 3f2a9c01d4e5b6a7, ray_nodes: 2}
    files:
      - {path: /etc/llmfleet/r1, state: directory, mode: "0700", owner: root, group: root}
      - {path: /etc/llmfleet/r1/api_key, sha256: "{{ key | hash('sha256') }}", mode: "0600", kind: api_key}
  register: state
"""

RETURN = r"""
in_sync:
  description: Every container and file matches.
  returned: success
  type: bool
  sample: true
differences:
  description: What differs, one line each.
  returned: success
  type: list
  elements: str
  sample: ["llmfleet-r1-head: absent -> running, config hash 3f2a9c01d4e5b6a7"]
containers:
  description: Per container name, C(exists), C(config_hash), C(running), C(status), C(started_at), C(id).
  returned: success
  type: dict
  sample: {"llmfleet-r1-head": {"exists": true, "config_hash": "3f2a9c01d4e5b6a7", "running": true,
           "status": "running", "started_at": "2026-12-06T02:03:04.123456789Z", "id": "0123456789ab"}}
ray:
  description: >-
    Per checked head, C(rc), C(nodes) (alive Ray nodes), C(error), C(via) (C(dashboard) or C(gcs)) and, when
    the dashboard did not answer, C(fallback) (why).
  returned: success
  type: dict
  sample: {"llmfleet-r1-head": {"rc": 0, "nodes": 2, "error": "", "via": "dashboard"}}
files:
  description: >-
    Per expected file, C(path), C(exists), C(mode), C(owner), C(group), C(in_sync), C(why), the C(kind) and
    C(deployment) given, and C(content) (base64) when O(files[].read) is set.
  returned: success
  type: list
  elements: dict
  sample: [{"path": "/etc/llmfleet/r1/api_key", "exists": true, "mode": "0600", "in_sync": true, "why": []}]
health:
  description: Per container with O(containers[].health_url) that runs with the planned hash, C(ok) (HTTP 200), C(status), C(error).
  returned: success
  type: dict
  sample: {"llmfleet-r1-head": {"ok": true, "status": 200, "error": ""}}
probes:
  description: Per path of O(probes), whether it exists.
  returned: success
  type: dict
  sample: {"/run/systemd/system": false}
found:
  description: Per folder of O(finds), the full paths of its entries that match.
  returned: success
  type: dict
  sample: {"/etc/cron.d": ["/etc/cron.d/llmfleet-watchdog-r1"]}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.serving.plugins.module_utils._state import read_state


def main():
    module = AnsibleModule(
        argument_spec=dict(
            containers=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True), config_hash=dict(type="str", required=True),
                ray_nodes=dict(type="int"), ray_dashboard=dict(type="str"), ray_token_file=dict(type="path"),
                health_url=dict(type="str"), deployment=dict(type="str"), settings=dict(type="dict"))),
            files=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="str", required=True), state=dict(type="str", choices=["file", "directory"], default="file"),
                sha256=dict(type="str", no_log=True), mode=dict(type="str"), owner=dict(type="str"),
                group=dict(type="str"), kind=dict(type="str"), deployment=dict(type="str"),
                read=dict(type="bool", default=False))),
            probes=dict(type="list", elements="str", default=[]),
            finds=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="str", required=True), pattern=dict(type="str", default="*"))),
            docker_cli=dict(type="str", default="docker"),
            ray_timeout=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def run(argv):
        return module.run_command(argv)

    try:
        state = read_state(run, p["containers"], p["files"], docker=p["docker_cli"], ray_timeout_s=p["ray_timeout"],
                           probes=p["probes"], finds=p["finds"])
    except RuntimeError as e:
        module.fail_json(msg="serving_state_info: %s (is the Docker engine running on this host?)" % e)
    diff = state.pop("diff")
    result = dict(changed=False, **state)
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
