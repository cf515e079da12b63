#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: signing_key
short_description: Install a package repository's signing key only when its fingerprint is the pinned one
version_added: 0.1.0
description:
  - Reads a downloaded OpenPGP public key (ASCII-armored or binary) from O(src), computes the
    fingerprints of its primary keys (no C(gpg) needed) and fails unless every one of them is in
    O(fingerprints).
  - In check mode, a O(src) that does not exist yet (C(get_url) downloads nothing in check mode)
    reports a change without a check.
  - When they match, installs the key at O(dest) atomically (only when the content differs), so
    apt (C(signed-by=)) or dnf (C(gpgkey=file://)) never trusts a key that was not checked.
author:
  - llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  src:
    description: The downloaded key (on the managed host).
    type: path
    required: true
  dest:
    description: Where the checked key is installed (mode O(mode), owner root).
    type: path
    required: true
  fingerprints:
    description:
      - The allowed fingerprints (40 hex digits for v4 keys; spaces and a C(0x) prefix are ignored).
    type: list
    elements: str
    required: true
  mode:
    description: File mode of O(dest).
    type: raw
    default: '0644'
"""

EXAMPLES = r"""
- name: Download Docker's key to a staging path
  ansible.builtin.get_url:
    url: https://download.docker.com/linux/debian/gpg
    dest: /etc/apt/keyrings/.docker.asc.download
    mode: "0600"

- name: Install it only if it is Docker's release key
  llmfleet.serving.signing_key:
    src: /etc/apt/keyrings/.docker.asc.download
    dest: /etc/apt/keyrings/docker.asc
    fingerprints: [9DC858229FC7DD38854AE2D88D81803C0EBFCD88]
"""

RETURN = r"""
fingerprints:
  description: The fingerprints of the primary keys found in O(src).
  returned: always
  type: list
  elements: str
  sample: [9DC858229FC7DD38854AE2D88D81803C0EBFCD88]
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmfleet.serving.plugins.module_utils import _pgp


def main():
    module = AnsibleModule(
        argument_spec=dict(src=dict(type="path", required=True), dest=dict(type="path", required=True),
                           fingerprints=dict(type="list", elements="str", required=True),
                           mode=dict(type="raw", default="0644")),
        supports_check_mode=True,
    )
    p = module.params
    if not p["fingerprints"]:
        module.fail_json(msg="fingerprints: empty; pin the repository key's fingerprint (docs/roles)")
    if module.check_mode and not os.path.exists(p["src"]):
        # get_url downloads nothing in check mode: the key would be checked and installed.
        module.exit_json(changed=True, fingerprints=[],
                         msg="check mode: %s not downloaded; its fingerprint is checked on a real run" % p["src"])
    try:
        with open(p["src"], "rb") as f:
            data = f.read()
    except OSError as e:
        module.fail_json(msg="src: cannot read %s: %s" % (p["src"], e))
    try:
        ok, found = _pgp.check(data, p["fingerprints"])
    except _pgp.PGPError as e:
        module.fail_json(msg="%s is not an OpenPGP public key (%s): the download went wrong or the URL is not "
                             "a key" % (p["src"], e), fingerprints=[])
    if not ok:
        module.fail_json(msg="%s has key fingerprint(s) %s, not the pinned %s: the key at that URL changed or was "
                             "replaced; verify it with the vendor and update the fingerprint variable"
                         % (p["src"], ", ".join(found), ", ".join(_pgp.normalize(x) for x in p["fingerprints"])),
                         fingerprints=found)
    current = None
    if os.path.exists(p["dest"]):
        with open(p["dest"], "rb") as f:
            current = f.read()
    changed = current != data
    if changed and not module.check_mode:
        d = os.path.dirname(p["dest"]) or "."
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".signing-key-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        module.atomic_move(tmp, p["dest"])
    if not module.check_mode and os.path.exists(p["dest"]):
        changed = module.set_fs_attributes_if_different(
            module.load_file_common_arguments(dict(path=p["dest"], mode=p["mode"], owner="root", group="root")),
            changed)
    module.exit_json(changed=changed, fingerprints=found)


if __name__ == "__main__":
    main()
