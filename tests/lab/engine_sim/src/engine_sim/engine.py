"""The simulated engine: admission queue, deadline scheduler, timing model.

Timing is scheduled against absolute deadlines: the first chunk of a request is due at
``admitted + ttft(prompt)``; every next chunk at ``previous deadline + itl(running)``. A
late wake-up therefore never shifts the following tokens, and one scheduler wakes all
sequences that are due in the same tick (one timer for the whole engine, not one per token
per request).

The event loop's own timers have millisecond granularity (epoll's timeout), too coarse for
sub-millisecond accuracy. On Linux the scheduler therefore arms a ``timerfd`` (CLOCK_MONOTONIC,
absolute, nanosecond resolution) registered with the loop as a reader: the loop wakes exactly
at the next deadline without blocking. Elsewhere :class:`DeadlineScheduler` uses a loop timer
until ``SPIN_S`` before the deadline and a short blocking ``time.sleep`` for the rest.

The engine keeps its own timeline of the last ``TIMELINE_LEN`` requests (:attr:`Engine.timeline`,
served as ``GET /sim/timeline``): arrival, admission, every chunk's planned deadline, the time it
was actually sent, and the running count its next gap was planned with. Tests compare against
what the server planned and did, not against their own wall clock.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import heapq
import itertools
import os
import time
from collections import deque

SPIN_S = 0.0015     # below this distance to the next deadline, sleep precisely (blocking)
EARLY_S = 0.00005   # release what is due within this slack in the same tick
TIMELINE_LEN = 4096  # requests kept in Engine.timeline


def _wake(fut):
    if not fut.done():
        fut.set_result(None)


class DeadlineScheduler(object):
    """``await sched.until(deadline)`` returns at ``deadline`` (time.monotonic clock)."""

    def __init__(self, loop=None):
        self.loop = loop or asyncio.get_event_loop()
        self.heap = []
        self._seq = itertools.count()
        self._wake = None
        self._target = float("inf")
        self._task = None

    def start(self):
        if self._task is None:
            self._task = self.loop.create_task(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def until(self, deadline):
        fut = self.loop.create_future()
        heapq.heappush(self.heap, (deadline, next(self._seq), fut))
        if deadline < self._target:
            w = self._wake
            if w is not None and not w.done():
                w.set_result(None)
        return fut

    async def _run(self):
        heap = self.heap
        loop = self.loop
        clock = time.monotonic
        heappop = heapq.heappop
        while True:
            if not heap:
                self._target = float("inf")
                self._wake = w = loop.create_future()
                await w
                continue
            deadline = heap[0][0]
            delta = deadline - clock()
            if delta > SPIN_S:
                self._target = deadline
                self._wake = w = loop.create_future()
                handle = loop.call_at(deadline - SPIN_S, _wake, w)
                await w
                handle.cancel()
                continue
            self._target = float("-inf")   # busy: no need to be woken
            if delta > 0:
                await asyncio.sleep(0)          # let ready callbacks and I/O run first
                delta = heap[0][0] - clock()
                if delta > SPIN_S:
                    continue
                if delta > 0:
                    time.sleep(delta)
            now = clock() + EARLY_S
            while heap and heap[0][0] <= now:
                fut = heappop(heap)[2]
                if not fut.done():
                    fut.set_result(None)
            await asyncio.sleep(0)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1


def _libc():
    if not hasattr(time, "CLOCK_MONOTONIC") or os.name != "posix":
        return None
    # time.monotonic() must be CLOCK_MONOTONIC for absolute timerfd deadlines
    if time.get_clock_info("monotonic").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                         ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


class TimerfdScheduler(object):
    """Same interface as :class:`DeadlineScheduler`, woken by a Linux timerfd."""

    def __init__(self, loop=None):
        self.loop = loop or asyncio.get_event_loop()
        self.heap = []
        self._seq = itertools.count()
        self._libc = _libc()
        if self._libc is None:
            raise OSError("timerfd is not available")
        self._fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._spec = _Itimerspec()
        self._armed = float("inf")
        self._started = False

    def start(self):
        if not self._started:
            self.loop.add_reader(self._fd, self._fire)
            self._started = True
            if self.heap:
                self._arm(self.heap[0][0])

    def stop(self):
        if self._started:
            self.loop.remove_reader(self._fd)
            self._started = False
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _arm(self, deadline):
        self._armed = deadline
        if deadline <= 0:
            deadline = 1e-9
        sec = int(deadline)
        self._spec.it_value.tv_sec = sec
        self._spec.it_value.tv_nsec = max(1, int((deadline - sec) * 1e9))
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def until(self, deadline):
        fut = self.loop.create_future()
        heapq.heappush(self.heap, (deadline, next(self._seq), fut))
        if deadline < self._armed and self._started:
            self._arm(deadline)
        return fut

    def _fire(self):
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            pass
        heap = self.heap
        heappop = heapq.heappop
        now = time.monotonic() + EARLY_S
        while heap and heap[0][0] <= now:
            fut = heappop(heap)[2]
            if not fut.done():
                fut.set_result(None)
        if heap:
            self._arm(heap[0][0])
        else:
            self._armed = float("inf")


def make_scheduler(loop=None):
    """A :class:`TimerfdScheduler` where Linux has timerfd, else a :class:`DeadlineScheduler`."""
    if os.environ.get("LLMFLEET_SIM_SCHEDULER", "") != "sleep":
        try:
            return TimerfdScheduler(loop)
        except OSError:
            pass
    return DeadlineScheduler(loop)


class Slots(object):
    """At most ``limit`` running sequences; the others wait in FIFO order."""

    def __init__(self, limit, loop=None):
        self.limit = max(1, int(limit))
        self.loop = loop or asyncio.get_event_loop()
        self.running = 0
        self.waiters = deque()

    @property
    def waiting(self):
        return sum(1 for f in self.waiters if not f.done())

    async def acquire(self):
        if self.running < self.limit and not self.waiters:
            self.running += 1
            return
        fut = self.loop.create_future()
        self.waiters.append(fut)
        try:
            await fut       # the releaser hands its slot over: running is unchanged
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()
            raise

    def release(self):
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.running -= 1


class Engine(object):
    """Shared state of the simulated engine (timing config, scheduler, slots, metrics)."""

    def __init__(self, cfg, max_num_seqs, metrics, loop=None):
        self.cfg = cfg
        self.loop = loop or asyncio.get_event_loop()
        self.sched = make_scheduler(self.loop)
        self.slots = Slots(max_num_seqs, self.loop)
        self.metrics = metrics
        self.kv_tokens = 0
        # Newest last; each entry a dict, see generate(). Times are this process's time.monotonic().
        self.timeline = deque(maxlen=TIMELINE_LEN)

    def start(self):
        self.sched.start()

    @property
    def running(self):
        return self.slots.running

    def kv_usage(self):
        cap = self.cfg.kv_cache_tokens
        return min(1.0, self.kv_tokens / float(cap)) if cap else 0.0

    def plan_length(self, max_tokens, min_tokens, ignore_eos, default_len):
        """How many tokens this request generates and why it ends."""
        cfg = self.cfg
        if max_tokens is None:
            total, reason = default_len, "stop"
        else:
            total, reason = max_tokens, "length"
        if not ignore_eos and cfg.eos_after and cfg.eos_after < total:
            total, reason = max(cfg.eos_after, min_tokens or 0, 1), "stop"
            if max_tokens is not None and total >= max_tokens:
                total, reason = max_tokens, "length"
        return total, reason

    async def generate(self, prompt_tokens, total, arrival):
        """Async iterator of ``(start_index, n_tokens, is_last)`` chunks, on schedule.

        Holds a running slot from admission to the end (also on cancellation)."""
        cfg = self.cfg
        m = self.metrics
        slots = self.slots
        sched = self.sched
        clock = time.monotonic
        await slots.acquire()
        admitted = clock()
        # planned[i]: chunk i's deadline; sent[i]: when it was handed to the server to write;
        # running[i]: the running count chunk i+1's gap was planned with.
        rec = {"arrival": arrival, "admitted": admitted, "prompt_tokens": prompt_tokens,
               "planned": [], "sent": [], "running": []}
        self.timeline.append(rec)
        self.kv_tokens += prompt_tokens
        m.prompt_tokens += prompt_tokens
        held = prompt_tokens
        produced = 0
        try:
            m.queue.observe(admitted - arrival)
            deadline = admitted + cfg.ttft_s(prompt_tokens)
            tpc = cfg.tokens_per_chunk
            last_emit = None
            first_emit = None
            while produced < total:
                await sched.until(deadline)
                n = tpc if total - produced > tpc else total - produced
                start = produced
                produced += n
                self.kv_tokens += n
                held += n
                m.generation_tokens += n
                now = clock()
                rec["planned"].append(deadline)
                rec["sent"].append(now)
                if last_emit is None:
                    first_emit = now
                    m.ttft.observe(now - arrival)
                else:
                    m.itl.observe(now - last_emit)
                last_emit = now
                yield start, n, produced >= total
                running = slots.running
                rec["running"].append(running)
                deadline += cfg.itl_s(running)
            end = clock()
            m.e2e.observe(end - arrival)
            m.req_prompt.observe(prompt_tokens)
            m.req_gen.observe(produced)
            if produced > 1 and first_emit is not None:
                m.tpot.observe((end - first_emit) / (produced - 1))
        finally:
            self.kv_tokens -= held
            slots.release()
