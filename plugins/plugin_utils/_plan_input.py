# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan as a filter's input (PRIVATE, controller only).

This file is private to the collection (leading underscore): its API may change without notice.
The filters that read the plan (host_containers, state_reads, teardown_reads) refuse the same
things the same way: an input that is not the plan, and a plan missing the parts they read,
each as an error naming the filter, never a traceback.
"""

from __future__ import annotations

from contextlib import contextmanager

from ansible.errors import AnsibleError, AnsibleFilterError


@contextmanager
def plan_input(name, plan):
    """``with plan_input("state_reads", plan):`` refuses what is not the plan before the block
    runs, and turns a KeyError / TypeError / AttributeError inside it (a plan that is not the
    serving_plan result) into an AnsibleFilterError naming the filter."""
    if not isinstance(plan, dict) or not isinstance(plan.get("deployments"), dict):
        raise AnsibleFilterError("%s: the input must be the plan (hostvars['localhost'].llmfleet_plan)" % name)
    try:
        yield
    except AnsibleError:
        raise
    except (KeyError, TypeError, AttributeError) as e:
        raise AnsibleFilterError("%s: the plan is not the serving_plan result: %r" % (name, e))
