"""End-to-end tests in the lab: real SSH hosts with their own Docker engines (tests/lab).

One lab (named "e2e", its own subnets and ports) is shared by the tests of a session and
removed at the end, even when a test fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest

from tests.lab import lab

REPO = lab.REPO
LAB = os.environ.get("LLMFLEET_E2E_LAB", "e2e")
HOSTS = int(os.environ.get("LLMFLEET_E2E_HOSTS", "3"))


class Lab:
    def __init__(self, state):
        self.state = state
        self.inventory = lab.inventory_path(state.name)

    @property
    def hosts(self):
        return self.state.hosts

    def playbook(self, playbook, *args, check=True, extra_vars=None, env=None):
        """Run ansible-playbook against the lab; returns (rc, output, recap dict)."""
        cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", self.inventory, playbook]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        cmd += list(args)
        e = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                 ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_RETRY_FILES_ENABLED="0")
        e.update(env or {})
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=e, check=False)
        output = proc.stdout + proc.stderr
        recap = parse_recap(output)
        if check and proc.returncode != 0:
            raise AssertionError("ansible-playbook %s failed (rc %d, %.0f s):\n%s" % (
                playbook, proc.returncode, time.time() - t0, output[-6000:]))
        return proc.returncode, output, recap

    def sh(self, host, command, check=True):
        """A shell command on a lab host (through the machine's Docker, for assertions)."""
        h = lab.host_of(self.state, host)
        proc = subprocess.run(["docker", "exec", h.container, "sh", "-c", command], capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("%s on %s: rc %d: %s" % (command, host, proc.returncode, proc.stderr))
        return proc.stdout


def parse_recap(output):
    recap = {}
    started = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            started = True
            continue
        if started and ":" in line and "ok=" in line:
            host, rest = line.split(":", 1)
            recap[host.strip()] = {k: int(v) for k, v in (kv.split("=") for kv in rest.split())}
    return recap


@contextlib.contextmanager
def running_lab(name, hosts, **up_kwargs):
    """A test file's own lab: a leftover of an aborted run removed first, brought up with
    tests.lab's up() arguments (each file its own name, subnets and SSH ports), yielded as a Lab
    (with .timings), and removed at the end even when a test fails (LLMFLEET_E2E_KEEP=1 keeps it)."""
    lab.down(name)
    try:
        st, timings = lab.up(name, hosts, **up_kwargs)
        print("lab %s up: %s" % (name, json.dumps(timings)))
        the_lab = Lab(st)
        the_lab.timings = timings
        yield the_lab
    finally:
        if not os.environ.get("LLMFLEET_E2E_KEEP"):
            lab.down(name)


@pytest.fixture(scope="session")
def lab_hosts():
    with running_lab(LAB, HOSTS, gpu_fixture="h200x8", ssh_port_base=2320, mgmt_subnet="172.31.240.0/24",
                     private_subnet="172.31.241.0/24", engine=("sim",)) as the_lab:
        yield the_lab
