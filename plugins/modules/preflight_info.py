#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: preflight_info
short_description: Read in one call everything the preflight compares on a host
description:
  - The host half of C(playbooks/preflight.yml), in one round trip. It reads the engine images (C(docker image inspect)),
    free disk at each model path or its nearest existing parent (C(df -PB1)), the weights' state file
    C(.llmfleet-state.json) and C(model.safetensors.index.json), the listening TCP ports (C(ss -ltnH), else
    C(/proc/net/tcp*)), the running containers labelled C(llmfleet.deployment), and the host's clock next to the
    control node's epoch given.
  - Each part is returned in the shape the single-purpose task it replaces registered, so
    M(llmfleet.serving.group_preflight) compares them the same way. Changes nothing.
version_added: 0.2.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.INFO_MODULE
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
options:
  images:
    description: Engine images to look up.
    type: list
    elements: str
    default: []
  paths:
    description: Model paths (free disk, weights state and index).
    type: list
    elements: str
    default: []
  control_epoch:
    description: The control node's epoch (seconds) just before the call; returned beside the host's in RV(clock).
    type: str
  docker_cli:
    description: The Docker command line client.
    type: str
    default: docker
"""

EXAMPLES = r"""
- name: Preflight - read the host (one call)
  llmfleet.serving.preflight_info:
    images: [vllm/vllm-openai:v0.32.0]
    paths: [/srv/models/DeepSeek-R1]
    control_epoch: "{{ now(utc=true).timestamp() }}"
  register: pf
"""

RETURN = r"""
images:
  description: C(results), one per image, C(item) and C(images) (the inspect output; empty when absent) or C(failed) and C(msg).
  returned: success
  type: dict
df:
  description: C(results), one per path, C(item), C(rc), C(stdout) (C(checked=PATH) then the C(df -PB1) output), C(stderr).
  returned: success
  type: dict
state:
  description: C(results), one per path, C(item) and C(content) (base64 of C(.llmfleet-state.json)) or C(failed) and C(msg).
  returned: success
  type: dict
index:
  description: C(results), one per path, C(item) and C(content) (base64 of C(model.safetensors.index.json)) or C(failed) and C(msg).
  returned: success
  type: dict
listening:
  description: C(rc) and C(stdout) of the listening TCP sockets.
  returned: success
  type: dict
containers:
  description: C(rc) and C(stdout) (one deployment label per running container of the collection).
  returned: success
  type: dict
clock:
  description: C(rc) and C(stdout) (C(<control epoch> <host epoch>)).
  returned: when O(control_epoch) is set
  type: dict
  sample: {"rc": 0, "stdout": "1796522400.12 1796522400.134000000"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.serving.plugins.module_utils._preflight_read import read_all


def main():
    module = AnsibleModule(
        argument_spec=dict(
            images=dict(type="list", elements="str", default=[]),
            paths=dict(type="list", elements="str", default=[]),
            control_epoch=dict(type="str"),
            docker_cli=dict(type="str", default="docker"),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def run(argv):
        return module.run_command(argv)

    module.exit_json(changed=False, **read_all(run, p["images"], p["paths"], control_epoch=p["control_epoch"],
                                               docker=p["docker_cli"]))


if __name__ == "__main__":
    main()
