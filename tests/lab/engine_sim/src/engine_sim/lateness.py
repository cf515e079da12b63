"""How late a token scheduler releases its deadlines: one measuring round, shared by the unit test
(nothing released early) and benchmarks/sim_scheduler.py (how late, a figure of the machine)."""

from __future__ import annotations

import asyncio
import time


def lateness_round(kind, sequences=20, chunks=10, step_s=0.005, offset_s=0.0007):
    """Run ``sequences`` x ``chunks`` absolute deadlines through scheduler class ``kind``.

    Sequence i starts ``i * offset_s`` after the first and asks for a deadline every ``step_s``.
    Returns each release's lateness in seconds (negative: released early)."""
    async def main():
        sched = kind(asyncio.get_running_loop())
        sched.start()
        t0 = time.monotonic() + 0.01
        late = []

        async def seq(offset):
            d = t0 + offset
            for dummy in range(chunks):
                await sched.until(d)
                late.append(time.monotonic() - d)
                d += step_s

        await asyncio.gather(*(seq(i * offset_s) for i in range(sequences)))
        sched.stop()
        return late
    return asyncio.run(main())
