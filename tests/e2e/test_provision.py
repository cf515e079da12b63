"""Issue 7's end-to-end proof: playbooks/provision.yml on a lab host built without Docker.

* container_runtime installs Debian's docker.io for real, starts dockerd without an init system
  (cgroups under a parent named after the lab host), merges daemon.json with a key the "user"
  put there first; the second run changes nothing and does not restart dockerd;
* gpu_host recognises the driver the fixture nvidia-smi reports (h200x8, 580.159.04 loaded)
  and changes nothing but the limits and sysctl files (then nothing at all);
* gpu_host --check on the same host without nvidia-smi lists the install steps (repository
  on a loopback mirror inside the lab host) and leaves the host as it was.

Its own lab "prov" (one host, subnets 172.31.230/231.0/24, SSH on 127.0.0.1:2421), always
removed at the end (LLMFLEET_E2E_KEEP=1 keeps it).
"""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.lab import lab

from .conftest import REPO, Lab

LAB = "prov"
PLAYBOOK = os.path.join(REPO, "playbooks", "provision.yml")
LAB_VARS = ["-i", os.path.join(REPO, "inventories", "lab-provision")]
# Log rotation other than the defaults, to see the variables reach daemon.json.
CR_VARS = {"provision_roles": ["container_runtime"], "container_runtime_log_max_size": "20m",
           "container_runtime_log_max_file": 3}
USER_DAEMON_JSON = {"debug": False, "labels": ["owner=user"]}
MIRROR_PORT = 8765
TIMINGS = {}


@pytest.fixture(scope="module")
def prov():
    lab.down(LAB)
    st, timings = lab.up(LAB, 1, gpu_fixture="h200x8", ssh_port_base=2420, mgmt_subnet="172.31.230.0/24",
                         private_subnet="172.31.231.0/24", engine=(), docker_on_hosts=False)
    print("lab up: %s" % json.dumps(timings))
    try:
        yield Lab(st)
    finally:
        print("provision timings: %s" % json.dumps(TIMINGS))
        if not os.environ.get("LLMFLEET_E2E_KEEP"):
            lab.down(LAB)


def changed_tasks(output):
    """Names of the tasks (and handlers) that reported changed in an ansible-playbook output."""
    names, task = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:TASK|RUNNING HANDLER) \[(?:[\w.]+ : )?(.*?)\] \**$", line)
        if m:
            task = m.group(1)
        elif line.startswith("changed: [") and task and task not in names:
            names.append(task)
    return names


def run(prov, name, *args, extra_vars=None):
    t0 = time.monotonic()
    rc, out, recap = prov.playbook(PLAYBOOK, *(LAB_VARS + list(args)), extra_vars=extra_vars)
    TIMINGS[name] = round(time.monotonic() - t0, 1)
    host = prov.hosts[0].name
    assert recap[host]["failed"] == 0 and recap[host]["unreachable"] == 0
    return out, recap[host]


def dockerd_pid(prov):
    return prov.sh("lab-h1", "cat /var/run/docker.pid").strip()


@pytest.fixture(scope="module")
def provisioned(prov):
    """Runs the real provisioning passes once; the tests below check what each left."""
    h = prov.hosts[0].name
    assert prov.sh(h, "command -v dockerd || echo none").strip() == "none"
    prov.sh(h, "mkdir -p /etc/docker && printf '%%s' '%s' > /etc/docker/daemon.json" % json.dumps(USER_DAEMON_JSON))
    runs = {}
    runs["cr1"] = run(prov, "container_runtime_first_s", extra_vars=CR_VARS)
    runs["cr1_pid"] = dockerd_pid(prov)
    runs["cr2"] = run(prov, "container_runtime_again_s", extra_vars=CR_VARS)
    runs["cr2_pid"] = dockerd_pid(prov)
    runs["gh1"] = run(prov, "gpu_host_first_s", extra_vars={"provision_roles": ["gpu_host"]})
    both = dict(CR_VARS, provision_roles=["gpu_host", "container_runtime"])
    runs["all"] = run(prov, "provision_again_s", extra_vars=both)
    runs["all_pid"] = dockerd_pid(prov)
    return runs


def test_container_runtime_installs_and_configures_docker(prov, provisioned):
    out, recap = provisioned["cr1"]
    changed = changed_tasks(out)
    assert "Install the Docker engine packages" in changed
    assert "Merge daemon.json (log rotation, data-root, NVIDIA runtime)" in changed
    assert "Launch dockerd" in changed
    # dockerd started after the merge reads daemon.json: no restart on top of the start.
    assert "Stop dockerd" not in changed
    assert recap["changed"] == len(changed)
    h = prov.hosts[0].name
    info = json.loads(prov.sh(h, "docker info --format '{{json .}}'"))
    assert info["ServerVersion"].startswith("20.10")
    assert info["LoggingDriver"] == "json-file"
    assert "owner=user" in info["Labels"]  # the user's key reached the running daemon
    merged = json.loads(prov.sh(h, "cat /etc/docker/daemon.json"))
    assert merged == {"debug": False, "labels": ["owner=user"], "log-driver": "json-file",
                      "log-opts": {"max-size": "20m", "max-file": "3"}}
    backups = prov.sh(h, "cat /etc/docker/daemon.json.*~")
    assert json.loads(backups) == USER_DAEMON_JSON
    args = prov.sh(h, "tr '\\0' ' ' < /proc/%s/cmdline" % provisioned["cr1_pid"])
    assert args.split() == ["dockerd", "--cgroup-parent", "/llmfleet-lab-prov-lab-h1"]


def test_container_runtime_second_run_changes_nothing(provisioned):
    out, recap = provisioned["cr2"]
    assert recap["changed"] == 0, changed_tasks(out)
    assert provisioned["cr2_pid"] == provisioned["cr1_pid"]  # not restarted


def test_gpu_host_recognises_the_loaded_driver(prov, provisioned):
    out, recap = provisioned["gh1"]
    assert "driver: skip (driver 580.159.04 is loaded and matches the pinned branch 580)" in out
    # Only the tuning files were written: no package, repository, nouveau or reboot step.
    assert changed_tasks(out) == ["Set memlock, stack and open-files limits",
                                  "Set the kernel parameters the inference engines rely on"]
    assert recap["changed"] == 2
    h = prov.hosts[0].name
    limits = prov.sh(h, "cat /etc/security/limits.d/90-llmfleet-gpu.conf")
    rows = {tuple(line.split()[:3]): line.split()[3] for line in limits.splitlines()
            if line.strip() and not line.startswith("#")}
    assert rows[("root", "hard", "memlock")] == "unlimited"
    assert rows[("*", "soft", "stack")] == "65536"
    assert rows[("*", "hard", "nofile")] == "1048576"
    sysctl = prov.sh(h, "cat /etc/sysctl.d/90-llmfleet-gpu.conf").split()
    assert "vm.max_map_count=1048576" in sysctl and "net.core.somaxconn=65535" in sysctl
    assert prov.sh(h, "ls /etc/modprobe.d/blacklist-nouveau.conf /etc/apt/sources.list.d/nvidia-cuda.list "
                      "2>/dev/null || true").strip() == ""


def test_provision_again_changes_nothing(provisioned):
    out, recap = provisioned["all"]
    assert "driver: skip" in out and "Install the Docker engine packages" in out
    assert recap["changed"] == 0, changed_tasks(out)
    assert provisioned["all_pid"] == provisioned["cr1_pid"]


def test_gpu_host_check_without_driver_lists_the_install(prov, provisioned):
    h = prov.hosts[0].name
    watched = ("/etc/modprobe.d/blacklist-nouveau.conf /etc/apt/keyrings/nvidia-cuda.asc "
               "/etc/apt/sources.list.d/nvidia-cuda.list /etc/security/limits.d/90-llmfleet-gpu.conf "
               "/etc/sysctl.d/90-llmfleet-gpu.conf")
    state = "ls -l %s 2>&1 | sort; md5sum %s 2>/dev/null; dpkg -l | md5sum" % (watched, watched)
    before = prov.sh(h, state)
    # A host without a driver: no nvidia-smi at all. NVIDIA's repository comes from a loopback
    # "mirror" inside the lab host (check mode asks for the key with HEAD; tests stay offline).
    prov.sh(h, "mv /usr/bin/nvidia-smi /usr/bin/nvidia-smi.prov-off")
    pid = None
    try:
        pid = prov.sh(h, "mkdir -p /srv/prov-mirror/cuda/debian12/x86_64 && echo key > "
                         "/srv/prov-mirror/cuda/debian12/x86_64/3bf863cc.pub && (setsid python3 -m http.server "
                         "%d --bind 127.0.0.1 --directory /srv/prov-mirror >/dev/null 2>&1 & echo $!)"
                      % MIRROR_PORT).strip()
        prov.sh(h, "for i in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:%d/ && exit 0; sleep 0.1; done; "
                   "exit 1" % MIRROR_PORT)
        out, recap = run(prov, "gpu_host_check_no_driver_s", "--check", extra_vars={
            "provision_roles": ["gpu_host"], "gpu_host_cuda_repo_base_url": "http://127.0.0.1:%d/cuda" % MIRROR_PORT})
    finally:
        if pid:
            prov.sh(h, "kill %s" % pid, check=False)
        prov.sh(h, "mv /usr/bin/nvidia-smi.prov-off /usr/bin/nvidia-smi")
    flat = " ".join(out.split())
    assert "driver: install (no NVIDIA driver is loaded; install branch 580)" in flat
    assert ("check mode: would install nvidia-driver-pinning-580, nvidia-open from "
            "http://127.0.0.1:%d/cuda/debian12/x86_64" % MIRROR_PORT) in flat
    assert changed_tasks(out) == [
        "Disable nouveau", "Install the build prerequisites", "Install NVIDIA's repository signing key",
        "Check the fingerprint of NVIDIA's repository signing key before apt trusts it", "Add NVIDIA's CUDA repository",
        "Install the headers of the running kernel %s" % os.uname().release]
    assert recap["changed"] == 6
    assert prov.sh(h, state) == before
