# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How late the engine simulator's token schedulers release their deadlines.

20 sequences of 10 chunks each, 5 ms apart, offset by 0.7 ms (200 deadlines), through each
scheduler of ``tests/lab/engine_sim`` (``DeadlineScheduler``: loop timer + short sleep;
``TimerfdScheduler``: absolute timerfd). Prints the median, p99 and max lateness and the
earliest release per scheduler, ``--rounds`` times. This is a figure of the machine, not a test:
on a busy machine the lateness grows (the unit test only checks that no deadline is released
early, tests/unit/lab/test_engine_sim.py::test_scheduler_meets_absolute_deadlines).
Idle 2-core machine: median well under 1 ms for both.

    python benchmarks/sim_scheduler.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab", "engine_sim", "src"))

from engine_sim.engine import DeadlineScheduler, TimerfdScheduler  # noqa: E402
from engine_sim.lateness import lateness_round  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    for kind in (DeadlineScheduler, TimerfdScheduler):
        for r in range(args.rounds):
            late = sorted(x * 1000 for x in lateness_round(kind))
            print("%-18s round %d: median %.3f ms, p99 %.3f ms, max %.3f ms, earliest %+.3f ms" % (
                kind.__name__, r + 1, statistics.median(late), late[int(len(late) * 0.99) - 1], late[-1], late[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
