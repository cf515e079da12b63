# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files each host of a deployment gets (PRIVATE).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python, controller only. One folder per deployment, ``<config_dir>/<name>`` (0700 root),
holding the engine entrypoint, the API key (when the deployment has one) and the deployment
record (the plan of the deployment as applied, read by the watchdog and by reconfigure).
The plan lists them per host (``hosts.<host>.files``, docs/planner.md): the role writes exactly
these, teardown removes exactly these, and the drift check compares exactly these.
The entrypoint's content (sha256) is part of the list, so a changed entrypoint changes the
config hash and restarts the engines that run it.
"""

from __future__ import annotations

import hashlib
import os

ENTRYPOINT_IN_CONTAINER = "/run/llmfleet/entrypoint.sh"
KEY_IN_CONTAINER = "/run/llmfleet/api_key"
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENTRYPOINT_FILE = os.path.join(COLLECTION_ROOT, "roles", "inference_server", "files", "entrypoint.sh")
_DIGESTS = {}


def file_digest(path):
    """sha256 hex of a file of the collection (read once per path)."""
    if path not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[path] = hashlib.sha256(f.read()).hexdigest()
    return _DIGESTS[path]


class DeploymentFiles(object):
    """Where one deployment's files live on its hosts. ``config_dir`` is the deployment key
    (default /etc/llmfleet); ``has_key``: whether the deployment has an API key."""

    def __init__(self, config_dir, name, has_key, entrypoint_file=ENTRYPOINT_FILE):
        self.config_dir = config_dir.rstrip("/") or "/"
        self.name = name
        self.has_key = bool(has_key)
        self.entrypoint_file = entrypoint_file

    @property
    def dir(self):
        return "%s/%s" % (self.config_dir.rstrip("/"), self.name)

    @property
    def key_path(self):
        return self.dir + "/api_key" if self.has_key else None

    @property
    def entrypoint_path(self):
        return self.dir + "/entrypoint.sh"

    @property
    def record_path(self):
        return self.dir + "/deployment.json"

    def host_files(self):
        """The list every host of the deployment gets, in the order the role writes it.
        Each entry: kind (dir | entrypoint | key | record), path, mode, owner, group,
        container_path (where the engine sees it, or None), source (what the content is),
        sha256 (content digest when known on the control node, else None)."""
        def entry(kind, path, mode, container_path, source, sha256=None):
            return {"kind": kind, "path": path, "mode": mode, "owner": "root", "group": "root",
                    "container_path": container_path, "source": source, "sha256": sha256}
        out = [entry("dir", self.dir, "0700", None, None),
               entry("entrypoint", self.entrypoint_path, "0755", ENTRYPOINT_IN_CONTAINER,
                     "roles/inference_server/files/entrypoint.sh", file_digest(self.entrypoint_file))]
        if self.has_key:
            # the content is resolved at write time from the deployment's api_key / api_key_file
            # (lookup llmfleet.serving.api_key); the plan never holds the key
            out.append(entry("key", self.key_path, "0600", KEY_IN_CONTAINER, "api_key"))
        out.append(entry("record", self.record_path, "0600", None, "plan"))
        return out

    def mounts(self, model_path):
        """The container's bind mounts: the model (read-only), the key, the entrypoint."""
        out = [{"source": model_path, "target": model_path, "read_only": True}]
        for f in self.host_files():
            if f["container_path"]:
                out.append({"source": f["path"], "target": f["container_path"], "read_only": True})
        return out
