# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection: the controller-side loop that follows a background ``model_sync``
job (action plugin ``model_sync_wait``).  Not a public API; it may change without notice.

One ``while`` loop, no recursion, no task retries: it asks for the job's status every
``poll_interval`` seconds, reads the progress file every ``progress_every`` seconds and prints
one line (phase, percent, bytes, windowed rate, human ETA), and returns the job's result once it
has finished.  It lasts as long as the async limit (plus a margin), however many rounds that
takes.  A status call that fails (a dropped SSH connection, a job file caught mid-write) is
retried quietly; only ``max_errors`` failures in a row stop the loop, with a message that says
the job may still be running.
"""

from __future__ import annotations

import json
import time

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(num):
    if num is None:
        return "?"
    num = float(num)
    for unit in _UNITS:
        if abs(num) < 1024 or unit == _UNITS[-1]:
            return "%d B" % num if unit == "B" else "%.1f %s" % (num, unit)
        num /= 1024.0
    return "?"  # pragma: no cover


def human_duration(seconds):
    """``3725`` -> ``'1 h 2 min'``; ``None`` (no rate yet) -> ``'unknown'``."""
    if seconds is None:
        return "unknown"
    seconds = int(round(max(0, float(seconds))))
    if seconds < 60:
        return "%d s" % seconds
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return "%d min %02d s" % (minutes, sec) if minutes < 10 else "%d min" % minutes
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return "%d h %02d min" % (hours, minutes)
    days, hours = divmod(hours, 24)
    return "%d d %d h" % (days, hours)


def progress_line(label, p):
    """One line from a progress snapshot written by ``_sync_core.Progress``."""
    if not isinstance(p, dict):
        return "%s: sync running (no progress file yet)" % label
    rate = p.get("rate_bytes_per_s")
    window = p.get("rate_window_s")
    line = "%s: %s %.1f%% (%s of %s, %s/%s files)" % (
        label, p.get("phase", "?"), float(p.get("percent") or 0), human_bytes(p.get("bytes_done")),
        human_bytes(p.get("bytes_total")), p.get("files_done", "?"), p.get("files_total", "?"))
    if p.get("phase") in ("fetching", "verifying"):
        line += ", %s/s" % human_bytes(rate or 0)
        if window:
            line += " over the last %s" % human_duration(window)
        line += ", ETA %s" % human_duration(p.get("eta_s"))
        if p.get("bytes_resumed"):
            line += " (%s kept from an earlier run)" % human_bytes(p["bytes_resumed"])
    return line


def job_status(jid, exists, text):
    """The async job file's content read as ``async_status`` reads it (same answers)."""
    if not exists:
        return {"failed": True, "finished": True, "started": True, "ansible_job_id": jid,
                "msg": "could not find job %s (the async job never started, or its file was removed)" % jid}
    try:
        data = json.loads(text)
    except ValueError:
        if not text.strip():  # not written yet: running
            return {"started": True, "finished": False, "ansible_job_id": jid}
        # caught mid-write (the wrapper writes in place): ask again next round
        return {"started": True, "finished": False, "ansible_job_id": jid}
    if not isinstance(data, dict):
        return {"failed": True, "finished": True, "msg": "unexpected async job file content for %s" % jid}
    if "started" not in data:
        data["finished"] = True
        data["ansible_job_id"] = jid
    elif "finished" not in data:
        data["finished"] = False
    data["finished"] = bool(data["finished"])
    return data


class JobWaiter(object):
    """Follow one async job.

    ``status()`` returns the async_status result (``finished`` true once the job ended, then the
    job's own result); ``progress()`` returns the parsed progress file or ``None``; ``emit(line)``
    shows a line.  ``sleep`` and ``clock`` are injectable so that tests run thousands of rounds
    without waiting.
    """

    def __init__(self, status, progress, emit, label="sync", poll_interval=10.0, progress_every=60.0,
                 timeout=172800, max_errors=30, sleep=time.sleep, clock=time.monotonic):
        self.status = status
        self.progress = progress
        self.emit = emit
        self.label = label
        self.poll_interval = max(0.0, float(poll_interval))
        self.progress_every = max(self.poll_interval, float(progress_every))
        # the async wrapper kills the job at its limit and reports that; wait a little longer
        self.deadline_s = float(timeout) + max(60.0, 3 * self.poll_interval)
        self.max_errors = max(1, int(max_errors))
        self.sleep = sleep
        self.clock = clock
        self.rounds = 0
        self.lines = 0

    def run(self):
        start = self.clock()
        next_line = start + self.progress_every
        errors = 0
        last_error = None
        while True:
            self.rounds += 1
            try:
                res = self.status()
            except Exception as exc:  # connection dropped, host rebooting...: try again next round
                res, last_error = None, "%s: %s" % (type(exc).__name__, exc)
            if res is not None and res.get("finished"):
                return res
            if res is None or res.get("failed") or res.get("unreachable"):
                errors += 1
                if res is not None:
                    last_error = res.get("msg") or "async_status failed"
                if errors >= self.max_errors:
                    return {"failed": True, "finished": False, "rounds": self.rounds,
                            "msg": "lost track of the model_sync job after %d failed status checks in a row "
                                   "(last: %s); the job may still be running on the host: run the play again "
                                   "to attach to the published result" % (errors, last_error)}
            else:
                errors = 0
            now = self.clock()
            if now - start > self.deadline_s:
                return {"failed": True, "finished": False, "rounds": self.rounds,
                        "msg": "model_sync did not finish within its async limit (%d s); raise "
                               "model_weights_async_timeout or the bandwidth" % int(self.deadline_s)}
            if now >= next_line:
                try:
                    snapshot = self.progress()
                except Exception:
                    snapshot = None
                self.emit(progress_line(self.label, snapshot))
                self.lines += 1
                if self.progress_every > 0:  # the next multiple of progress_every after now
                    next_line += (int((now - next_line) // self.progress_every) + 1) * self.progress_every
            self.sleep(self.poll_interval)
