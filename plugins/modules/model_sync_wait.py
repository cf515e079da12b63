#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_sync_wait
short_description: Follow a background model_sync job and print its progress
version_added: 0.2.0
description:
  - Runs on the control node (action plugin). Reads the async job's status file on the host every
    O(poll_interval) seconds (one shell command on the open connection, no module; the same answer as
    M(ansible.builtin.async_status), which is used on PowerShell hosts) in one loop (no task recursion, no C(until)/C(retries)), so it lasts as long as the
    async limit
    however many rounds that takes; every O(progress_every) seconds reads the job's progress file and prints
    one line with the phase, percent, bytes, the rate over the last minute and an ETA.
  - Returns the job's own result once it has finished (C(changed), C(files_fetched), ...), and fails with it
    when the job failed.
  - A failed status check (dropped connection) is retried; O(max_errors) failures in a row end the loop.
author: llmfleet developers (@llmfleet)
extends_documentation_fragment:
  - llmfleet.serving._attributes
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  jid:
    description: The C(ansible_job_id) registered from the task started with C(async) and C(poll) set to V(0).
    type: str
    required: true
  progress_file:
    description: The job's progress file on the host (C(<path>.llmfleet-progress.json) for model_sync).
    type: path
  poll_interval:
    description: Seconds between status checks.
    type: float
    default: 10
  progress_every:
    description: Seconds between progress lines.
    type: float
    default: 60
  timeout:
    description: The job's async limit in seconds; the loop gives up a little after it.
    type: int
    default: 172800
  max_errors:
    description: Failed status checks in a row after which the loop gives up.
    type: int
    default: 30
  label:
    description: Prefix of the progress lines. Default the inventory host name.
    type: str
"""

EXAMPLES = r"""
- name: Start model_sync in the background
  llmfleet.serving.model_sync:
    source: s3
    bucket: models
    prefix: deepseek-ai/DeepSeek-R1
    path: /data/models/DeepSeek-R1
  async: 172800
  poll: 0
  register: job

- name: Follow it
  llmfleet.serving.model_sync_wait:
    jid: "{{ job.ansible_job_id }}"
    progress_file: /data/models/DeepSeek-R1.llmfleet-progress.json
    timeout: 172800
  register: sync
"""

RETURN = r"""
rounds:
  description: Status checks made.
  returned: always
  type: int
  sample: 2881
files_fetched:
  description: The job's own return values (see model_sync) once it finished.
  returned: when the job finished
  type: int
  sample: 163
"""
