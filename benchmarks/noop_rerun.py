# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time a no-op re-run of playbooks/deploy.yml against `ansible all -m setup` on the same hosts.

Brings up a 3-host lab (or uses a running one: --keep leaves it up), deploys the lab's two
deployments once (QwQ single host, R1 Ray head + worker), then runs N rounds, each round one
`ansible all -m setup` and one no-op deploy (interleaved, so a busy neighbour slows both), and
prints the medians, their ratio and the load average. Every no-op run must report changed=0.

    flock /work/lab.lock python benchmarks/noop_rerun.py [--runs 5] [--name noop] [--keep]
    ... --profile   # one extra no-op run with ansible.posix.profile_tasks (the slowest tasks)
    ... --fact-cache  # also time it with a jsonfile fact cache (GPU facts not read again)

Goal (issue 16): the no-op deploy at most 3 times `ansible -m setup` ("goal_3x_met" in the JSON
line). Figures and the before/after profile: docs/roles/inference_server.md ("A run with nothing
to change").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
COLLECTIONS = os.path.join(ROOT, "build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "llmfleet", "serving")
BIN = os.path.dirname(sys.executable)


def _env(extra=None):
    e = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
             ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_STDOUT_CALLBACK="default")
    e.update(extra or {})
    return e


def _run(cmd, env=None):
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env(env), check=False)
    return time.monotonic() - t0, proc.returncode, proc.stdout + proc.stderr


def recap(output):
    out, started = {}, False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            started = True
        elif started and "ok=" in line:
            host, rest = line.split(":", 1)
            out[host.strip()] = {k: int(v) for k, v in (kv.split("=") for kv in rest.split())}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="noop", help="lab name (default noop)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="leave the lab up (and reuse a running one)")
    p.add_argument("--no-deploy", action="store_true", help="the lab is already deployed")
    p.add_argument("--profile", action="store_true", help="one more no-op run with profile_tasks")
    p.add_argument("--fact-cache", action="store_true",
                   help="also time the no-op deploy with a jsonfile fact cache (GPU facts read once, then cached)")
    a = p.parse_args(argv)
    if not os.path.islink(LINK):
        os.makedirs(os.path.dirname(LINK), exist_ok=True)
        os.symlink(ROOT, LINK)
    from tests.lab import lab

    st = lab.load_state(a.name)
    started_here = st is None
    if st is None:
        st, timings = lab.up(a.name, 3, ssh_port_base=2360, mgmt_subnet="172.31.236.0/24",
                             private_subnet="172.31.237.0/24", engine=("sim",))
        print("lab up: %s" % json.dumps(timings), flush=True)
    inv = lab.inventory_path(a.name)
    play = os.path.join(BIN, "ansible-playbook")
    try:
        if not a.no_deploy:
            fake = os.path.join(ROOT, "tests", "e2e", "playbooks", "fake-model.yml")
            for hosts, d, n in (("lab_dual", "/srv/models/DeepSeek-R1", 163), ("lab_single", "/srv/models/QwQ-32B", 14)):
                s, rc, out = _run([play, "-i", inv, fake, "-e", json.dumps(
                    {"fake_model_hosts": hosts, "fake_model_dir": d, "fake_model_shards": n})])
                if rc:
                    raise SystemExit("fake model failed:\n" + out[-3000:])
            s, rc, out = _run([play, "-i", inv, "playbooks/deploy.yml"])
            if rc:
                raise SystemExit("first deploy failed:\n" + out[-5000:])
            print("first deploy: %.1f s" % s, flush=True)
        cache = {"ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile", "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "86400",
                 "ANSIBLE_CACHE_PLUGIN_CONNECTION": os.path.join(lab.lab_dir(a.name), "facts")}
        if a.fact_cache:  # fill the cache once
            _run([play, "-i", inv, "playbooks/deploy.yml"], env=cache)
        setup_s, noop_s, cached_s, loads = [], [], [], []
        for i in range(a.runs):
            loads.append(os.getloadavg()[0])
            s, rc, out = _run([os.path.join(BIN, "ansible"), "-i", inv, "all", "-m", "ansible.builtin.setup"])
            if rc:
                raise SystemExit("ansible -m setup failed:\n" + out[-3000:])
            setup_s.append(s)
            s, rc, out = _run([play, "-i", inv, "playbooks/deploy.yml"])
            r = recap(out)
            if rc or any(v.get("changed") for v in r.values()):
                raise SystemExit("the no-op deploy changed something or failed (rc %d):\n%s" % (rc, out[-5000:]))
            noop_s.append(s)
            line = "round %d: setup %.2f s, no-op deploy %.2f s" % (i + 1, setup_s[-1], s)
            if a.fact_cache:
                s, rc, out = _run([play, "-i", inv, "playbooks/deploy.yml"], env=cache)
                if rc or any(v.get("changed") for v in recap(out).values()):
                    raise SystemExit("the cached no-op deploy changed something or failed (rc %d):\n%s" % (rc, out[-5000:]))
                cached_s.append(s)
                line += ", with cached facts %.2f s" % s
            print(line + " (load %.1f)" % loads[-1], flush=True)
        ms, mn = statistics.median(setup_s), statistics.median(noop_s)
        result = {"hosts": len(st.hosts), "runs": a.runs, "setup_median_s": round(ms, 2),
                  "noop_deploy_median_s": round(mn, 2), "ratio": round(mn / ms, 2), "goal_3x_met": mn / ms <= 3,
                  "load_avg_1m": [round(x, 1) for x in loads], "cpus": os.cpu_count()}
        if cached_s:
            result["noop_deploy_cached_facts_median_s"] = round(statistics.median(cached_s), 2)
            result["ratio_cached_facts"] = round(statistics.median(cached_s) / ms, 2)
        print(json.dumps(result))
        if a.profile:
            s, rc, out = _run([play, "-i", inv, "playbooks/deploy.yml"],
                              env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
                                   "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "100"})
            m = re.search(r"^=+\s*$(.*)", out, re.S | re.M)
            print("profiled no-op deploy: %.2f s\n%s" % (s, (m.group(1) if m else out[-6000:]).strip()))
    finally:
        if started_here and not a.keep:
            lab.down(a.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
