"""Issue 8, group watchdog, in its own lab ("wd", 2 hosts): a dual-host vLLM group (Ray head on
lab-h1, worker on lab-h2, TP 8 x PP 2, engine simulator with real Ray) deployed with
playbooks/deploy.yml; the role installs roles/inference_server/files/llmfleet-watchdog on the
hosts (no systemd in the lab: manager auto -> none, said in a debug message) and the test runs
it on the head as the timer would.

The simulator normally exits when a Ray node holding its GPUs dies (so Docker would restart the
head by itself); real vLLM keeps its API server up with dead actors (vllm#16259, #4221). The
deployment sets LLMFLEET_SIM_RAY_POLL_S very high, so the simulator keeps serving like real vLLM
and only the watchdog can notice the dead rank. The fault: the worker's raylet is killed; `ray
start --block` exits, Docker restarts the worker container and it rejoins Ray as a new node.

Figures printed for docs/roles/watchdog.md: kill -> end of the restarting run, and head started
-> first completion.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _catalog, _plan
from tests.lab import lab as labmod

from .conftest import REPO, running_lab

# The longer lab suite: `bash tests/run.sh nightly` (docs/testing.md), not CI.
pytestmark = pytest.mark.nightly

LAB = "wd"
DEP = "wd-r1"
HEAD, WORKER = "llmfleet-wd-r1-head", "llmfleet-wd-r1-worker-1"
DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
FAKE_MODEL = os.path.join(REPO, "tests", "e2e", "playbooks", "fake-model.yml")
MODEL = "deepseek-ai/DeepSeek-R1"
SCRIPT = "/usr/local/lib/llmfleet/llmfleet-watchdog"
# What the timer would run, with lab-sized numbers (2 failed checks, 60 s start-up grace).
WATCHDOG = "python3 %s --failures 2 --grace-s 60 --backoff-s 0 --timeout-s 20 --stop-timeout-s 10 %s" % (SCRIPT, DEP)

DEPLOYMENT = {
    "name": DEP, "hosts": "lab_dual", "engine": "vllm", "image": "llmfleet-lab/engine-sim:latest",
    "model": "deepseek-r1", "model_path": "/srv/models/DeepSeek-R1", "tensor_parallel": 8, "pipeline_parallel": 2,
    "max_model_len": 32768, "port": 8000, "exposure": "private", "api_key_file": "{{ llmfleet_lab_key_file }}",
    "gpu_runtime": "none",
    "env": {"LLMFLEET_SIM_LOAD_DELAY_S": "1",
            # keep serving after a Ray node died, as real vLLM does (see the module doc)
            "LLMFLEET_SIM_RAY_POLL_S": "1000000",
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}}
# (a worker's raylet gives up on a stopped head after the planner's RAY_gcs_rpc_server_reconnect_timeout_s,
# 15 s, and the watchdog waits that + 5 s; env may not override the planner's own variables)
VARS = {"llmfleet_hosts": "lab-h1,lab-h2", "llmfleet_deployments": [DEPLOYMENT],
        "inference_server_ulimits": ["stack:67108864:67108864"]}


@pytest.fixture(scope="module")
def wd():
    with running_lab(LAB, 2, ssh_port_base=3220, mgmt_subnet="172.31.140.0/24",
                     private_subnet="172.31.141.0/24", engine=("sim",)) as lab:
        lab.playbook(FAKE_MODEL, extra_vars={"fake_model_hosts": "lab_dual", "fake_model_dir": "/srv/models/DeepSeek-R1",
                                             "fake_model_shards": 163})
        t0 = time.time()
        rc, lab.deploy_output, recap = lab.playbook(DEPLOY, extra_vars=VARS)
        print("deploy: %.1f s" % (time.time() - t0))
        yield lab


def key():
    with open(os.path.join(REPO, "build", "lab", LAB, "api_key")) as f:
        return f.read().strip()


def serves(lab):
    """A one-token completion from the control node; True when it answers 200."""
    ip = {h.name: h.private_ip for h in lab.hosts}["lab-h1"]
    req = urllib.request.Request("http://%s:8000/v1/completions" % ip, method="POST",
                                 data=json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": 1}).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + key()})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200 and bool(json.load(resp)["choices"])
    except (OSError, ValueError):
        return False


def started_at(lab, host, container):
    return lab.sh(host, "docker inspect -f '{{.State.StartedAt}}' %s" % container).strip()


def watchdog(lab):
    line = lab.sh("lab-h1", WATCHDOG).strip()
    assert line.count("\n") == 0 and line.startswith("llmfleet-watchdog: deployment=%s " % DEP), line
    assert key() not in line
    return line


def test_role_installs_the_script_and_says_why_no_timer(wd):
    lab = wd
    assert "systemd is not PID 1 here" in lab.deploy_output
    for host in ("lab-h1", "lab-h2"):
        assert lab.sh(host, "stat -c '%a %U' " + SCRIPT).split() == ["644", "root"]
    assert lab.sh("lab-h1", "ls /etc/systemd/system/llmfleet-watchdog@* /etc/cron.d/llmfleet-watchdog-* 2>&1 || true"
                  ).count("No such file") == 2


def test_a_healthy_group_is_left_alone(wd):
    lab = wd
    before = (started_at(lab, "lab-h1", HEAD), started_at(lab, "lab-h2", WORKER))
    for dummy in range(3):
        line = watchdog(lab)
        assert "action=healthy" in line and "nodes=2/2" in line, line
    assert (started_at(lab, "lab-h1", HEAD), started_at(lab, "lab-h2", WORKER)) == before
    state = json.loads(lab.sh("lab-h1", "cat /var/lib/llmfleet/watchdog/%s.json" % DEP))
    assert state["failures"] == 0 and len(state["nodes"]) == 2 and "last_restart" not in state


def test_a_dead_worker_restarts_the_whole_group_and_it_serves_again(wd):
    lab = wd
    old_head = started_at(lab, "lab-h1", HEAD)
    killed = time.time()
    lab.sh("lab-h2", "docker exec %s pkill -9 -f raylet" % WORKER, check=False)
    # Docker restarts the worker, which rejoins Ray as a new node; the engine keeps serving with
    # its dead rank (as real vLLM does), so a completion alone would not tell.
    lines, restart_line = [], None
    deadline = time.time() + 90
    while time.time() < deadline and restart_line is None:
        time.sleep(2)
        line = watchdog(lab)
        lines.append(line)
        if "action=restart" in line:
            restart_line, decided = line, time.time()
    assert restart_line, "\n".join(lines)
    assert "died since the engine started" in restart_line
    # the settle time is the planner's reconnect timeout of the workers (their env in the plan) + 5 s
    record = json.loads(lab.sh("lab-h1", "cat /etc/llmfleet/%s/deployment.json" % DEP))
    settle = int(float(record["hosts"]["lab-h2"]["env"]["RAY_gcs_rpc_server_reconnect_timeout_s"])) + 5
    assert "result=\"stopped %s, waited %ds for the Ray workers to leave, started it\"" % (HEAD, settle) in restart_line
    assert any("action=failing" in line and "failures=1/2" in line for line in lines), lines
    detect = decided - killed
    # the group serves again: the new head waited for both nodes
    deadline = time.time() + 150
    while time.time() < deadline and not serves(lab):
        time.sleep(1)
    back = time.time() - decided
    assert serves(lab), "the group did not serve again within %.0f s" % back
    print("worker raylet killed -> group restart done (the run that decided it: stop, settle %d s, start) in "
          "%.1f s (checks: %d); head started -> serving again in %.1f s" % (settle, detect, len(lines), back))
    assert started_at(lab, "lab-h1", HEAD) != old_head
    nodes = lab.sh("lab-h1", "docker exec %s python3 -c \"import ray; ray.init(address='auto', logging_level='ERROR'); "
                             "print(sum(1 for n in ray.nodes() if n['Alive']), len(ray.nodes()))\"" % HEAD)
    assert nodes.split()[-2:] == ["2", "2"], nodes  # a fresh cluster: both ranks, no dead node
    # the watchdog sees the new instance serve and goes back to healthy, no second restart
    line = watchdog(lab)
    assert "action=healthy" in line and "nodes=2/2" in line, line


# ----------------------------------------------------------------------------- systemd, for real
# The lab hosts have no init system. Here the role installs the units into a Debian rootfs with
# systemd (the lab's base image + systemd) through a chroot connection; then systemd-nspawn boots
# it and the test reads systemd's own view: the timer is enabled, fires the service every
# interval and the script logs its one line in the journal (no docker there: action=error).
NSPAWN_DEP = "wd-ns"
PLAYBOOK = os.path.join(REPO, "tests", "e2e", "playbooks", "watchdog-units.yml")


def nspawn_rootfs(root):
    """A rootfs of the lab's base image with systemd (an image built once, then exported)."""
    base = labmod.base_image()[0]
    tag = "%s/wd-nspawn:%s" % (labmod.PREFIX, base.rsplit(":", 1)[-1])
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode != 0:
        subprocess.run(["docker", "build", "-q", "-t", tag, "-"], check=True, capture_output=True, text=True, input=(
            "FROM %s\nRUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            "--no-install-recommends systemd systemd-sysv dbus && rm -rf /var/lib/apt/lists/*\n" % base))
    cid = subprocess.run(["docker", "create", tag, "/bin/true"], check=True, capture_output=True, text=True).stdout.strip()
    try:
        os.makedirs(root)
        exp = subprocess.Popen(["docker", "export", cid], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-C", root, "-x"], stdin=exp.stdout, check=True)
        assert exp.wait() == 0
    finally:
        subprocess.run(["docker", "rm", cid], capture_output=True, check=False)


def nspawn_plan():
    """The plan of one single-host deployment on the chroot host "ns", made by the planner
    (plugins/plugin_utils/_plan.py) as playbooks/prelude.yml would make it."""
    dep = {"name": NSPAWN_DEP, "hosts": "ns", "engine": "vllm", "image": "llmfleet-lab/engine-sim:latest",
           "model": "deepseek-r1-distill-qwen-7b", "model_path": "/srv/models/m", "gpus_per_host": 1,
           "max_model_len": 4096, "exposure": "localhost", "gpu_runtime": "none"}
    return _plan.build_plan([dep], {"ns": {"ansible_host": "127.0.0.1"}}, {}, _catalog.load_catalog())


def test_cron_manager_writes_the_heads_cron_file_and_both_removers_find_it(wd):
    """The cron file's name is made in one place (filter llmfleet.serving.watchdog_cron_path) for
    the writer, the keep-list of a later run and the teardown: a deploy with manager cron writes
    it on the head only; a deploy with manager auto (no systemd here: none) removes it; a cron
    deploy again, then playbooks/teardown.yml, removes it as well. Runs last: it tears down."""
    lab = wd
    cron = "/etc/cron.d/llmfleet-watchdog-" + DEP
    absent = "ls %s 2>&1 || true" % cron
    rc, out, recap = lab.playbook(DEPLOY, extra_vars=dict(VARS, inference_server_watchdog_manager="cron"))
    assert rc == 0, out[-3000:]
    text = lab.sh("lab-h1", "stat -c '%%a %%U' %s && cat %s" % (cron, cron))
    assert text.startswith("644 root\n"), text
    assert " root /usr/bin/python3 %s " % SCRIPT in text and text.rstrip().endswith("| logger -t llmfleet-watchdog"), text
    assert "No such file" in lab.sh("lab-h2", absent)  # the head runs the group's watchdog
    rc, out, recap = lab.playbook(DEPLOY, extra_vars=VARS)
    assert rc == 0, out[-3000:]
    assert "No such file" in lab.sh("lab-h1", absent)
    rc, out, recap = lab.playbook(DEPLOY, extra_vars=dict(VARS, inference_server_watchdog_manager="cron"))
    assert rc == 0 and "No such file" not in lab.sh("lab-h1", absent), out[-3000:]
    rc, out, recap = lab.playbook(os.path.join(REPO, "playbooks", "teardown.yml"), extra_vars=VARS)
    assert rc == 0, out[-3000:]
    assert "No such file" in lab.sh("lab-h1", absent)
    assert lab.sh("lab-h1", "docker ps -aq --filter name=%s" % HEAD).strip() == ""


def test_systemd_timer_fires_the_watchdog_service(tmp_path):
    if not shutil.which("systemd-nspawn"):
        pytest.skip("systemd-nspawn is absent (Debian package systemd-container)")
    root = str(tmp_path / "root")
    nspawn_rootfs(root)
    # The plan from the planner itself (no hand-made copy that drifts from its schema), and its
    # deployment record written where the role would write it (the watchdog reads that record).
    plan = nspawn_plan()
    record = next(f for f in plan["deployments"][NSPAWN_DEP]["hosts"]["ns"]["files"] if f["kind"] == "record")
    os.makedirs(os.path.join(root, os.path.dirname(record["path"]).lstrip("/")))
    with open(os.path.join(root, record["path"].lstrip("/")), "w") as f:
        json.dump(plan["deployments"][NSPAWN_DEP], f)
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    ns:\n      ansible_connection: community.general.chroot\n"
                   "      ansible_host: %s\n      ansible_python_interpreter: /usr/bin/python3\n" % root)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
                           str(inv), PLAYBOOK, "-e", json.dumps({"inference_server_plan": plan,
                                                                 "inference_server_watchdog_manager": "systemd",
                                                                 "inference_server_watchdog_interval_s": 3})],
                          cwd=REPO, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    units = os.path.join(root, "etc", "systemd", "system")
    assert os.path.islink(os.path.join(units, "timers.target.wants", "llmfleet-watchdog@%s.timer" % NSPAWN_DEP))
    verify = subprocess.run(["systemd-analyze", "verify", os.path.join(units, "llmfleet-watchdog@.timer"),
                             os.path.join(units, "llmfleet-watchdog@.service")], capture_output=True, text=True,
                            check=False)
    assert verify.returncode == 0, verify.stderr

    boot = subprocess.Popen(["systemd-nspawn", "-b", "--register=no", "--keep-unit", "--private-network",
                             "-M", "llmfleet-wd-ns-%d" % os.getpid(), "-D", root],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        leader = None
        deadline = time.time() + 60
        while time.time() < deadline and leader is None:
            time.sleep(0.5)
            kids = subprocess.run(["pgrep", "-P", str(boot.pid)], capture_output=True, text=True,
                                  check=False).stdout.split()
            leader = kids[0] if kids else None
        assert leader, "systemd-nspawn did not start"

        def inside(*cmd):
            return subprocess.run(["nsenter", "-t", leader, "-m", "-u", "-i", "-n", "-p", "--"] + list(cmd),
                                  capture_output=True, text=True, check=False)
        journal = ""
        deadline = time.time() + 90
        while time.time() < deadline:
            time.sleep(2)
            journal = inside("journalctl", "--no-pager", "-o", "cat", "-u", "llmfleet-watchdog@%s.service" % NSPAWN_DEP).stdout
            if journal.count("llmfleet-watchdog: deployment=%s" % NSPAWN_DEP) >= 2:
                break
        timers = inside("systemctl", "list-timers", "--all", "--no-pager").stdout
        print("systemd in nspawn:\n%s\n%s" % (timers, journal))
        assert "llmfleet-watchdog@%s.timer" % NSPAWN_DEP in timers
        # fired at least twice (3 s interval), the script ran and logged its one line each time
        assert journal.count("llmfleet-watchdog: deployment=%s action=error" % NSPAWN_DEP) >= 2, journal
        assert "docker: command not found" in journal
    finally:
        boot.send_signal(signal.SIGTERM)  # nspawn powers the container off
        try:
            boot.wait(30)
        except subprocess.TimeoutExpired:
            boot.kill()
            boot.wait()
        subprocess.run(["rm", "-rf", root], check=False)
