# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmfleet.serving.model_sync_wait: follows a background model_sync job with one
loop (no task recursion, no retries noise) and prints its progress. Logic: plugin_utils/_sync_wait.py."""

from __future__ import annotations

import base64
import json

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.llmfleet.serving.plugins.plugin_utils._sync_wait import JobWaiter, job_status

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("jid", "progress_file", "poll_interval", "progress_every", "timeout", "label",
                             "max_errors"))

    def _async_dir(self):
        return self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        args = self._task.args
        jid = args.get("jid")
        if not jid:
            result.update(failed=True, msg="model_sync_wait: jid is required (the ansible_job_id of the "
                                           "model_sync task started with async and poll: 0)")
            return result
        try:
            poll_interval = float(args.get("poll_interval", 10))
            progress_every = float(args.get("progress_every", 60))
            timeout = float(args.get("timeout", 172800))
            max_errors = int(args.get("max_errors", 30))
        except (TypeError, ValueError) as exc:
            result.update(failed=True, msg="model_sync_wait: poll_interval, progress_every, timeout and "
                                           "max_errors must be numbers (model_weights_poll_interval, "
                                           "model_weights_progress_every, model_weights_async_timeout): %s" % exc)
            return result
        progress_file = args.get("progress_file")
        label = args.get("label") or task_vars.get("inventory_hostname", "sync")
        async_dir = self._async_dir()

        shell = self._connection._shell
        posix = getattr(shell, "SHELL_FAMILY", "sh") != "powershell"

        def cat(path):
            """(exists, text) of a file on the host: one command on the open connection, no module
            (no payload copied, no Python started: a round costs one SSH exec)."""
            quoted = shell.quote(path)
            res = self._low_level_execute_command("test -e %s || echo __LLMFLEET_ABSENT__; cat %s 2>/dev/null; true"
                                                  % (quoted, quoted), sudoable=True)
            out = res.get("stdout", "")
            if res.get("rc") not in (0, None):
                raise RuntimeError("reading %s failed: %s" % (path, res.get("stderr", "")[-300:]))
            if out.startswith("__LLMFLEET_ABSENT__"):
                return False, ""
            return True, out

        def status():
            if not posix:
                return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                            module_args={"jid": jid, "mode": "status", "_async_dir": async_dir})
            exists, text = cat(shell.join_path(async_dir, jid))
            return job_status(jid, exists, text)

        def progress():
            if not progress_file:
                return None
            if posix:
                exists, text = cat(progress_file)
                return json.loads(text) if exists and text.strip() else None
            res = self._execute_module(module_name="ansible.legacy.slurp", task_vars=task_vars,
                                       module_args={"src": progress_file})
            if res.get("failed") or "content" not in res:
                return None
            return json.loads(base64.b64decode(res["content"]))

        waiter = JobWaiter(status, progress, display.display, label=label, poll_interval=poll_interval,
                           progress_every=progress_every, timeout=timeout, max_errors=max_errors)
        try:
            job = waiter.run()
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        for key in ("invocation", "_ansible_parsed", "ansible_job_id", "results_file", "started",
                    "stdout", "stderr", "stdout_lines", "stderr_lines", "finished"):
            job.pop(key, None)
        result.update(job)
        result["rounds"] = waiter.rounds
        result["changed"] = bool(job.get("changed", False))
        return result
