#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: llm_ready
short_description: Wait until an OpenAI-compatible LLM engine really serves, or explain why not
description:
  - Waits for C(/health) to answer 200, then C(/v1/models) to list O(model), then runs one real
    B(streamed) completion (chat or completions) and parses its SSE body (at least one content
    token and a C([DONE]) marker or a C(finish_reason)).
  - While waiting it watches the engine containers given in O(containers). If one exits, is removed
    or its RestartCount increases, the wait stops at once and the module fails with a diagnosis
    classified from the container's log tail (C(cuda_oom), C(nccl_ray), C(missing_weights),
    C(port_in_use), C(unknown_flag), C(host_oom), C(generic)) and the last log lines.
  - On timeout the containers' logs are classified as well (an NCCL hang keeps the container running).
  - HTTP uses only the Python standard library. Containers are read through the Docker SDK for
    Python when installed, otherwise through the C(docker) CLI (C(docker inspect), C(docker logs)).
version_added: 0.1.0
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.INFO_MODULE
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
options:
  url:
    description: Base URL of the engine (or gateway), without C(/v1).
    type: str
    required: true
  model:
    description: The served model name that C(/v1/models) must list and the smoke request uses.
    type: str
    required: true
  api_key:
    description: API key sent as C(Authorization Bearer). Mutually exclusive with O(api_key_file).
    type: str
  api_key_file:
    description: File on the target host holding the API key (first line, whitespace stripped).
    type: path
  endpoint:
    description: Smoke request through C(/v1/chat/completions) (V(chat)) or C(/v1/completions) (V(completions)).
    type: str
    choices: [chat, completions]
    default: chat
  prompt:
    description: Prompt of the smoke request.
    type: str
    default: Say hello.
  max_tokens:
    description: C(max_tokens) of the smoke request.
    type: int
    default: 16
  timeout:
    description: Seconds to wait in total before failing.
    type: int
    default: 900
  poll_interval:
    description: Seconds between attempts (and container checks).
    type: float
    default: 2.0
  request_timeout:
    description: Timeout in seconds of the smoke request (C(/health) and C(/v1/models) use at most 5 s).
    type: float
    default: 60.0
  health_path:
    description: Path of the health endpoint.
    type: str
    default: /health
  containers:
    description:
      - Engine containers to watch while waiting (head and workers).
      - Containers are read on the host where the module runs, or through O(containers[].docker_host)
        when given (passed to Docker as its host, for example C(ssh://root@worker-1)); the usual way for
        multi-host groups is to list the local containers and run a separate watch per host.
    type: list
    elements: dict
    default: []
    suboptions:
      container:
        description: Container name or id.
        type: str
        required: true
      host:
        description: Host name shown in the diagnosis.
        type: str
      docker_host:
        description: Docker daemon address (C(unix://), C(tcp://), C(ssh://)); default the local daemon.
        type: str
      restart_count:
        description:
          - The container's RestartCount when it was started, for example V(0) for a container that
            this run just created; a higher count at any point of the wait is a restart.
          - Default, its count when the wait begins. A container that died and was restarted by
            its restart policy between its start and the wait would then look healthy.
        type: int
  docker_cli:
    description: Name or path of the C(docker) CLI used when the Docker SDK is not installed.
    type: str
    default: docker
  log_lines:
    description: Number of log lines returned in RV(log_tail) and classified.
    type: int
    default: 50
  validate_certs:
    description: Verify TLS certificates for C(https) URLs.
    type: bool
    default: true
requirements:
  - Python Docker SDK (C(docker)) or the C(docker) CLI, only when O(containers) is given.
notes:
  - This module is read-only; it sends one small generation request and reads container state and
    logs, and runs the same in check mode.
"""

EXAMPLES = r"""
- name: Wait for the engine to serve (single host)
  llmfleet.serving.llm_ready:
    url: http://10.0.0.11:8000
    model: Qwen/QwQ-32B
    api_key_file: /etc/llmfleet/qwq/api_key
    containers:
      - container: llmfleet-qwq
    timeout: 1800
  register: ready

- name: Ray head of a dual-host group; the worker's daemon is reached over SSH
  llmfleet.serving.llm_ready:
    url: http://10.0.0.11:8000
    model: deepseek-ai/DeepSeek-R1
    api_key: "{{ vault_r1_key }}"
    endpoint: chat
    containers:
      - container: llmfleet-r1-head
        host: gpu-a
      - container: llmfleet-r1-worker-1
        host: gpu-b
        docker_host: ssh://root@10.0.0.12

- name: Show timings
  ansible.builtin.debug:
    msg: "ready in {{ ready.time_to_ready_s }} s, first token {{ ready.first_token_latency_s }} s"
"""

RETURN = r"""
ready:
  description: Whether the engine served a streamed completion.
  returned: always
  type: bool
  sample: true
phase:
  description: Where the wait ended (C(health), C(models), C(smoke)).
  returned: always
  type: str
  sample: smoke
time_to_ready_s:
  description: Seconds from the module start to a successful smoke completion.
  returned: success
  type: float
  sample: 41.2
first_token_latency_s:
  description: Time to the first streamed token of the smoke request.
  returned: success
  type: float
  sample: 0.183
models:
  description: Model ids listed by C(/v1/models) at the last look.
  returned: always
  type: list
  elements: str
  sample: [deepseek-ai/DeepSeek-R1]
smoke:
  description:
    - The smoke request - C(status), C(tokens) (content chunks), C(text), C(reasoning_text), C(finish_reason),
      C(done), C(first_token_latency_s), C(total_s), C(error), C(usage).
  returned: when the smoke request was attempted
  type: dict
diagnosis:
  description:
    - Why the engine is not ready - C(class) (C(cuda_oom), C(nccl_ray), C(missing_weights), C(port_in_use),
      C(unknown_flag), C(host_oom), C(unauthorized), C(generic)), C(hint), C(line) (the matching log line),
      C(container), C(host), C(reason), C(exit_code), C(restart_count), C(summary).
  returned: on failure when known
  type: dict
log_tail:
  description: Last O(log_lines) lines of the failed container (on timeout, of every watched container, prefixed).
  returned: always
  type: list
  elements: str
attempts:
  description: Number of polling rounds.
  returned: always
  type: int
last_error:
  description: The last thing that was not ready yet.
  returned: always
  type: str
watch_backend:
  description: C(docker-sdk), C(docker-cli) or null when no container is watched.
  returned: always
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmfleet.serving.plugins.module_utils._api_key import KeyFileError, read_key_file
from ansible_collections.llmfleet.serving.plugins.module_utils._ready import (
    CLIBackend,
    ContainerWatch,
    Endpoint,
    NotReady,
    SDKBackend,
    wait_ready,
)

try:
    import docker  # noqa: F401  (Docker SDK for Python)
    HAS_DOCKER_SDK = True
    DOCKER_IMPORT_ERROR = None
except ImportError:
    HAS_DOCKER_SDK = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()


def _sdk_client(docker_host):
    if docker_host:
        return docker.DockerClient(base_url=docker_host)
    return docker.from_env()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            model=dict(type="str", required=True),
            api_key=dict(type="str", no_log=True),
            api_key_file=dict(type="path"),
            endpoint=dict(type="str", choices=["chat", "completions"], default="chat"),
            prompt=dict(type="str", default="Say hello."),
            max_tokens=dict(type="int", default=16, no_log=False),
            timeout=dict(type="int", default=900),
            poll_interval=dict(type="float", default=2.0),
            request_timeout=dict(type="float", default=60.0),
            health_path=dict(type="str", default="/health"),
            containers=dict(type="list", elements="dict", default=[], options=dict(
                container=dict(type="str", required=True),
                host=dict(type="str"),
                docker_host=dict(type="str"),
                restart_count=dict(type="int"),
            )),
            docker_cli=dict(type="str", default="docker"),
            log_lines=dict(type="int", default=50),
            validate_certs=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("api_key", "api_key_file")],
        supports_check_mode=True,
    )
    p = module.params

    api_key = p["api_key"]
    if p["api_key_file"]:
        # one reader for every key file (module_utils/_api_key.py): an empty or whitespace-only
        # file is refused, never taken as "no authentication"
        try:
            api_key = read_key_file(p["api_key_file"])
        except KeyFileError as e:
            module.fail_json(msg="api_key_file: %s" % e)
        module.no_log_values.add(api_key)

    try:
        endpoint = Endpoint(p["url"], api_key=api_key, validate_certs=p["validate_certs"])
    except ValueError as e:
        module.fail_json(msg=str(e))

    watch = None
    backend_name = None
    if p["containers"]:
        if HAS_DOCKER_SDK:
            backend = SDKBackend(_sdk_client)
        else:
            cli = module.get_bin_path(p["docker_cli"])
            if cli is None:
                module.fail_json(msg=missing_required_lib("docker (Docker SDK for Python) or the docker CLI",
                                                          reason="to watch the engine containers"),
                                 exception=DOCKER_IMPORT_ERROR)
            backend = CLIBackend(module.run_command, cli)
        watch = ContainerWatch(backend, [dict(c) for c in p["containers"]])
        backend_name = backend.name

    try:
        result = wait_ready(endpoint, p["model"], p["timeout"], watch=watch, endpoint_kind=p["endpoint"],
                            prompt=p["prompt"], max_tokens=p["max_tokens"], poll_interval=p["poll_interval"],
                            request_timeout=p["request_timeout"], log_lines=p["log_lines"],
                            health_path=p["health_path"])
    except NotReady as e:
        module.fail_json(msg=e.msg, watch_backend=backend_name, **e.result)
    except Exception as e:  # the SDK raises its own types when the daemon is unreachable
        module.fail_json(msg="llm_ready: %s: %s" % (type(e).__name__, e), exception=traceback.format_exc(),
                         ready=False, watch_backend=backend_name)
    module.exit_json(changed=False, watch_backend=backend_name, **result)


if __name__ == "__main__":
    main()
