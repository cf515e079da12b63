"""Make the checkout importable as ``ansible_collections.llmfleet.serving``.

pytest runs from the repository root; the collection loader expects the
``ansible_collections/<namespace>/<name>`` layout, so a symlink to this checkout is
kept under ``build/collections`` (ignored by git) and put first on ``sys.path``.
The same path is the collections path in ``ansible.cfg``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "llmfleet", "serving")

if not os.path.islink(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    try:
        os.symlink(ROOT, LINK)
    except FileExistsError:
        pass
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
