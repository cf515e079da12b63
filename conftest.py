"""Make the checkout importable as ``ansible_collections.llmfleet.serving``.

pytest runs from the repository root; the collection loader expects the
``ansible_collections/<namespace>/<name>`` layout, so a symlink to this checkout is
kept under ``build/collections`` (made by ``tests/collection_link.py``, the one place
that makes it; ``bash tests/run.sh setup`` makes it too) and put first on ``sys.path``.
The same path is the collections path in ``ansible.cfg``.
"""
import sys

from tests.collection_link import COLLECTIONS, LINK, ensure

ensure()
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

__all__ = ["COLLECTIONS", "LINK"]
