"""The loop that follows a background model_sync job (plugin_utils/_sync_wait.py and the
model_sync_wait action plugin): thousands of rounds with a fake clock, no recursion."""
import json
import os
import shlex
import sys
from unittest.mock import MagicMock

from ansible.parsing.dataloader import DataLoader
from ansible.playbook.task import Task
from ansible.template import Templar

from ansible_collections.llmfleet.serving.plugins.action import model_sync_wait as action_mod
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _sync_wait as w


class FakeClock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def snapshot(done, total=688 * 2 ** 30, rate=50 * 2 ** 20):
    return {"phase": "fetching", "percent": 100.0 * done / total, "bytes_done": done, "bytes_total": total,
            "files_done": 3, "files_total": 163, "rate_bytes_per_s": rate, "rate_window_s": 60,
            "eta_s": (total - done) / rate}


def test_human_duration_and_bytes():
    assert w.human_duration(None) == "unknown"
    assert w.human_duration(42) == "42 s"
    assert w.human_duration(125) == "2 min 05 s"
    assert w.human_duration(3725) == "1 h 02 min"
    assert w.human_duration(3 * 86400 + 7200) == "3 d 2 h"
    assert w.human_bytes(5 * 2 ** 30) == "5.0 GiB" and w.human_bytes(12) == "12 B"


def test_progress_line_has_windowed_rate_and_human_eta():
    line = w.progress_line("gpu-a", snapshot(100 * 2 ** 30))
    assert line.startswith("gpu-a: fetching 14.5% (100.0 GiB of 688.0 GiB, 3/163 files)")
    assert "50.0 MiB/s over the last 1 min 00 s" in line and "ETA 3 h 20 min" in line
    assert "no progress file" in w.progress_line("gpu-a", None)


def test_48h_download_polled_every_60s_and_more_rounds_than_that():
    """A 48 h job polled every 60 s needs 2,880 rounds: run 3,500 (and 50,000 at a fast poll,
    as deep as any recursion limit could never go) and get the job's result back."""
    for rounds_needed, interval in ((3500, 60.0), (50000, 0.1)):
        clock = FakeClock()
        calls = {"status": 0, "progress": 0}
        lines = []

        def status():
            calls["status"] += 1
            if calls["status"] < rounds_needed:
                return {"started": True, "finished": False}
            return {"started": True, "finished": True, "changed": True, "files_fetched": 163}

        def progress():
            calls["progress"] += 1
            return snapshot(calls["status"] * 2 ** 20)

        waiter = w.JobWaiter(status, progress, lines.append, label="h1", poll_interval=interval,
                             progress_every=max(60.0, interval), timeout=rounds_needed * interval * 2,
                             sleep=clock.sleep, clock=clock)
        limit = sys.getrecursionlimit()
        res = waiter.run()
        assert sys.getrecursionlimit() == limit
        assert res["finished"] and res["files_fetched"] == 163
        assert waiter.rounds == rounds_needed == calls["status"]
        expected_lines = int((rounds_needed - 1) * interval // max(60.0, interval))
        assert abs(len(lines) - expected_lines) <= 1 and calls["progress"] == len(lines)
        assert all(line.startswith("h1: fetching") for line in lines)


def test_failed_status_checks_are_retried_quietly_then_give_up():
    clock = FakeClock()
    answers = iter([ConnectionError("ssh dropped"), {"failed": True, "msg": "boom"}, {"finished": False},
                    {"finished": True, "failed": True, "msg": "model_sync: no space"}])

    def status():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    res = w.JobWaiter(status, lambda: None, lambda line: None, poll_interval=1, sleep=clock.sleep,
                      clock=clock).run()
    assert res == {"finished": True, "failed": True, "msg": "model_sync: no space"}

    def down():
        raise ConnectionError("host unreachable")

    waiter = w.JobWaiter(down, lambda: None, lambda line: None, poll_interval=1, max_errors=5,
                         sleep=clock.sleep, clock=clock)
    res = waiter.run()
    assert res["failed"] and waiter.rounds == 5
    assert "5 failed status checks" in res["msg"] and "host unreachable" in res["msg"]


def test_gives_up_after_the_async_limit():
    clock = FakeClock()
    waiter = w.JobWaiter(lambda: {"finished": False}, lambda: None, lambda line: None, poll_interval=10,
                         timeout=3600, sleep=clock.sleep, clock=clock)
    res = waiter.run()
    assert res["failed"] and "async limit" in res["msg"]
    assert 360 < waiter.rounds < 380


def run_action(args, answers, progress=None, monkeypatch=None):
    """The action plugin with a fake connection: the host's files are read with one shell
    command a round (``cat``), as on a real POSIX host."""
    task = Task()
    task.args = args
    task.action = "llmfleet.serving.model_sync_wait"
    connection = MagicMock()
    connection._shell.SHELL_FAMILY = "sh"
    connection._shell.quote = shlex.quote
    connection._shell.join_path = os.path.join
    action = action_mod.ActionModule(task, connection, MagicMock(), DataLoader(), Templar(loader=DataLoader()),
                                     MagicMock())
    action._remote_expand_user = lambda path, sudoable=True: path.replace("~", "/root")
    action.get_shell_option = lambda name, default=None: default
    calls = []

    def low_level(cmd, sudoable=True, **kw):
        calls.append(cmd)
        if "progress" in cmd:
            return {"rc": 0, "stdout": json.dumps(progress)}
        answer = next(answers)
        if answer is None:
            return {"rc": 0, "stdout": "__LLMFLEET_ABSENT__\n"}
        return {"rc": 0, "stdout": answer if isinstance(answer, str) else json.dumps(answer)}

    action._low_level_execute_command = low_level
    action._execute_module = MagicMock(side_effect=AssertionError("no module is run on a POSIX host"))
    shown = []
    monkeypatch.setattr(action_mod.display, "display", lambda msg, *a, **k: shown.append(msg))
    return action.run(task_vars={"inventory_hostname": "lab-h1"}), calls, shown


def test_action_plugin_returns_the_job_result(monkeypatch):
    answers = iter(["", '{"started": 1, "finished": 0, "ansible_job_id": "1.2"}'] * 2
                   + [{"changed": True, "files_fetched": 2, "invocation": {"module_args": {"path": "/d/m"}}}])
    res, calls, shown = run_action({"jid": "1.2", "progress_file": "/d/m.llmfleet-progress.json",
                                    "poll_interval": 0, "progress_every": 0},
                                   answers, progress=snapshot(2 ** 30), monkeypatch=monkeypatch)
    assert not res.get("failed") and res["changed"] is True and res["files_fetched"] == 2
    assert res["rounds"] == 5 and "invocation" not in res
    status_calls = [c for c in calls if "progress" not in c]
    assert status_calls[0] == ("test -e /root/.ansible_async/1.2 || echo __LLMFLEET_ABSENT__; "
                               "cat /root/.ansible_async/1.2 2>/dev/null; true")
    assert shown and shown[0].startswith("lab-h1: fetching")


def test_action_plugin_reports_a_job_that_never_started(monkeypatch):
    res, calls, shown = run_action({"jid": "9.9", "poll_interval": 0}, iter([None]), monkeypatch=monkeypatch)
    assert res["failed"] and "could not find job 9.9" in res["msg"] and res["rounds"] == 1


def test_job_status_reads_the_job_file_as_async_status_does():
    assert w.job_status("1", True, "") == {"started": True, "finished": False, "ansible_job_id": "1"}
    assert w.job_status("1", True, '{"started": 1, "fini')["finished"] is False  # mid-write: ask again
    assert w.job_status("1", True, '{"started": 1, "finished": 0}')["finished"] is False
    done = w.job_status("1", True, '{"changed": false, "msg": "x"}')
    assert done["finished"] is True and done["ansible_job_id"] == "1"
    assert w.job_status("1", False, "")["failed"] is True


def test_action_plugin_refuses_bad_arguments(monkeypatch):
    res, calls, shown = run_action({"progress_file": "/x"}, iter([]), monkeypatch=monkeypatch)
    assert res["failed"] and "jid is required" in res["msg"]
    res, calls, shown = run_action({"jid": "1", "poll_interval": "soon"}, iter([]), monkeypatch=monkeypatch)
    assert res["failed"] and "model_weights_poll_interval" in res["msg"] and not calls
