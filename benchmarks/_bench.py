# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the sync benchmarks (sync_throughput.py, hub_throughput.py) share: a peer timed in its
own process (wall and CPU seconds of its process tree), the fixed cost of a Python start, the
bytes a peer wrote, and the removal of what it published (after which the host's dirty pages
drain before the next peer starts, so no peer pays for the writeback of the one before it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time


def timed_run(cmd, env, preexec_fn=None):
    """Run ``cmd``; ``(wall seconds, CPU seconds of its tree, exit code, stderr text, the kernel's
    part of those CPU seconds)``: a byte mover's CPU is mostly system time (socket reads, page
    cache writes), which grows with contention on a many-core host."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec_fn)
    err = proc.stderr.read()
    dummy, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return (wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status), err.decode("utf-8", "replace"),
            usage.ru_stime)


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
    settle()


def dirty_kib(meminfo="/proc/meminfo"):
    """Dirty + Writeback pages of the host in KiB (0 where /proc/meminfo cannot be read)."""
    total = 0
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith(("Dirty:", "Writeback:")):
                    total += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return total


def settle(limit_kib=32 * 1024, timeout=60.0, sleep=time.sleep, clock=time.monotonic, meminfo="/proc/meminfo"):
    """``sync``, then wait (at most ``timeout`` seconds) until the host's dirty and writeback pages
    are under ``limit_kib``: a peer that left gigabytes dirty (bare s5cmd exits before the
    kernel writes its copy) must not slow down the next one. True when settled."""
    os.sync()
    deadline = clock() + timeout
    while dirty_kib(meminfo) >= limit_kib:
        if clock() >= deadline:
            print("  (dirty pages still %d MiB after %.0f s; going on)" % (dirty_kib(meminfo) // 1024, timeout),
                  flush=True)
            return False
        sleep(0.2)
    return True
