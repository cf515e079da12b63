# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the sync benchmarks (sync_throughput.py, hub_throughput.py) share: a peer timed in its
own process (wall and CPU seconds of its process tree), the fixed cost of a Python start, the
bytes a peer wrote, and the removal of what it published."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time


def timed_run(cmd, env, preexec_fn=None):
    """Run ``cmd``; ``(wall seconds, CPU seconds of its tree, exit code, stderr text)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec_fn)
    err = proc.stderr.read()
    dummy, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status), err.decode("utf-8", "replace")


def startup_cost(code, tries=3):
    """Best of ``tries`` of ``python -c code``: ``(wall seconds, CPU seconds)``, the fixed cost a
    Python peer pays before its first byte."""
    return min(timed_run([sys.executable, "-c", code], None)[:2] for dummy in range(tries))


def rotated(items, r):
    """Round ``r``'s order: interleaved rounds, the first peer moving along each round."""
    return items[r % len(items):] + items[:r % len(items)]


def tree_bytes(dest, keep=lambda root, name: True):
    """Bytes of the files under ``dest`` (model_sync's own ``.llmfleet*`` files left out)."""
    return sum(os.path.getsize(os.path.join(root, n)) for root, dummy, names in os.walk(dest)
               for n in names if not n.startswith(".llmfleet") and keep(root, n))


def remove_published(dest):
    """Remove a peer's copy: a directory, or model_sync's link to a version directory with its
    staging, versions and progress file beside it."""
    if os.path.islink(dest):
        os.unlink(dest)
    else:
        shutil.rmtree(dest, ignore_errors=True)
    for extra in (".llmfleet-staging", ".llmfleet-versions"):
        shutil.rmtree(dest + extra, ignore_errors=True)
    if os.path.exists(dest + ".llmfleet-progress.json"):
        os.unlink(dest + ".llmfleet-progress.json")
