# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to llmfleet.serving (may change without notice): everything preflight reads on a host,
in one call (module preflight_info), returned in the shapes the per-item tasks it replaces
registered, so plugin_utils/_preflight.host_data_from_raw reads either.

- images: ``docker image inspect`` of each image ({results: [{item, images}]});
- df: free disk at each model path or its nearest existing parent ({results: [{item, rc, stdout}]},
  stdout ``checked=PATH`` then ``df -PB1`` output);
- state / index: the weights' ``.llmfleet-state.json`` and ``model.safetensors.index.json``
  ({results: [{item, content (base64)} or {item, failed, msg}]});
- listening: ``ss -ltnH`` (or /proc/net/tcp*), containers: ``docker ps`` of the collection's
  labelled containers, clock: the control node's epoch given, then the host's."""

from __future__ import annotations

import base64
import json
import os
import time

MAX_READ = 64 << 20


def nearest_existing(path):
    p = path
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p or "/"


def read_images(run, images, docker="docker"):
    """{results: [{item, images}]} as a docker_image_info loop registers it (one inspect per image:
    a few processes inside this one call)."""
    results = []
    for i in images or []:
        rc, out, err = run([docker, "image", "inspect", i])
        try:
            found = json.loads(out or "[]")
        except ValueError:
            found = []
        if rc != 0 and not found and "no such" not in (err or "").lower():
            results.append({"item": i, "failed": True, "msg": (err or out or "docker image inspect failed").strip()[-300:]})
        else:
            results.append({"item": i, "images": found if isinstance(found, list) else []})
    return {"results": results}


def read_df(run, paths):
    results = []
    for p in paths:
        checked = nearest_existing(p)
        rc, out, err = run(["df", "-PB1", checked])
        results.append({"item": p, "rc": rc, "stdout": "checked=%s\n%s" % (checked, out or ""), "stderr": err or ""})
    return {"results": results}


def read_files(paths, name):
    results = []
    for p in paths:
        f = os.path.join(p, name)
        try:
            if os.path.getsize(f) > MAX_READ:
                raise OSError("larger than %d bytes" % MAX_READ)
            with open(f, "rb") as fh:
                results.append({"item": p, "content": base64.b64encode(fh.read()).decode("ascii"), "source": f})
        except OSError as e:
            results.append({"item": p, "failed": True, "msg": "%s: %s" % (f, e.strerror or e)})
    return {"results": results}


def read_listening(run):
    rc, out, err = run(["ss", "-ltnH"])
    if rc == 0:
        return {"rc": 0, "stdout": out}
    text = []
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                text.append(fh.read())
        except OSError:
            continue
    return {"rc": 0 if text else rc, "stdout": "".join(text), "stderr": err}


def read_containers(run, docker="docker"):
    rc, out, err = run([docker, "ps", "--filter", "label=llmfleet.deployment", "--format",
                        '{{.Label "llmfleet.deployment"}}'])
    return {"rc": rc, "stdout": out, "stderr": err}


def read_all(run, images, paths, control_epoch=None, docker="docker", clock=time.time):
    out = {"images": read_images(run, images, docker), "df": read_df(run, paths),
           "state": read_files(paths, ".llmfleet-state.json"), "index": read_files(paths, "model.safetensors.index.json"),
           "listening": read_listening(run), "containers": read_containers(run, docker)}
    if control_epoch is not None:
        out["clock"] = {"rc": 0, "stdout": "%s %.9f" % (control_epoch, clock())}
    return out
