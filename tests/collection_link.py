"""The collection link: ``build/collections/ansible_collections/llmfleet/serving`` -> this checkout.

Ansible finds a collection only under ``ansible_collections/<namespace>/<name>``; this
checkout is the collection itself, so a symlink to it is kept under ``build/collections``
(ignored by git). ``ansible.cfg``'s ``collections_path`` starts with that folder, and
pytest (``conftest.py``) puts it first on ``sys.path``.

The one place that makes the link, used by ``bash tests/run.sh setup`` (and so by
``tests/lab/demo.sh``) and by ``conftest.py``::

    python3 -m tests.collection_link      # prints the link; safe to run again
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "llmfleet", "serving")


def ensure(root=ROOT, link=LINK):
    """Create (or repair) the link to ``root``; returns the link path."""
    if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(root):
        return link
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link):  # a stale link (the checkout moved): point it here
        os.remove(link)
    elif os.path.exists(link):
        raise SystemExit("%s exists and is not a symlink: remove it, then run "
                         "`python3 -m tests.collection_link`" % link)
    try:
        os.symlink(root, link)
    except FileExistsError:  # made by a parallel run in between
        pass
    return link


def main():
    print("collection link: %s -> %s" % (os.path.relpath(ensure(), ROOT), os.path.realpath(LINK)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
