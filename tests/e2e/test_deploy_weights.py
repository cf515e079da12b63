"""Issue 13 in the lab: playbooks/deploy-r1-dual.yml is one flow, with the weights step for real.

A real S3 server (moto, tests/lab/s3_weights.py) on the lab's management gateway holds a tiny
DeepSeek-R1-shaped model. deploy-r1-dual.yml on the lab's two-host group: plan -> preflight ->
the head fetches from S3, verifies and publishes at the plan's model_path -> the worker copies
from the head over the private network -> Ray head + worker -> vLLM (simulator) -> ready. A second
run reports changed=0 and rewrites no file (mtimes of the plan's files and of the model kept).
Teardown then removes exactly the plan's containers and files.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid

import pytest

from tests.lab import s3_weights

from .conftest import REPO
from .test_deploy import LAB_VARS, chat_stream, container_ids, key

DEPLOY_R1 = os.path.join(REPO, "playbooks", "deploy-r1-dual.yml")
TEARDOWN = os.path.join(REPO, "playbooks", "teardown.yml")
PEER_SSH = os.path.join(REPO, "tests", "e2e", "playbooks", "weights-peer-ssh.yml")
NAME = "lab-r1s3"
MODEL_PATH = "/srv/models/DeepSeek-R1-s3"
FILES_DIR = "/etc/llmfleet/" + NAME


def deployment():
    d = dict([x for x in LAB_VARS["llmfleet_deployments"] if x["name"] == "lab-r1"][0])
    d.update(name=NAME, model_path=MODEL_PATH, port=8100, ray_port=6390, ray_dashboard_port=8275)
    return {"llmfleet_deployments": [d]}


@pytest.fixture(scope="module")
def weights_lab(lab_hosts, tmp_path_factory):
    lab = lab_hosts
    work = str(tmp_path_factory.mktemp("deploy-weights"))
    server = s3_weights.Server(s3_weights.gateway_of(lab.state.mgmt_subnet), "deepseek-ai/DeepSeek-R1-tiny/",
                               s3_weights.tiny_model(8))
    try:
        variables = server.variables()
        variables.update(deployment())
        vars_file = os.path.join(work, "vars-%s.json" % uuid.uuid4().hex[:8])
        s3_weights.write_private(vars_file, json.dumps(variables))  # the S3 secret never on a command line
        lab.playbook(PEER_SSH, extra_vars={"weights_peer_key": s3_weights.peer_key(work)})
        lab.vars_file, lab.server = vars_file, server
        yield lab
        lab.playbook(TEARDOWN, "-e", "@" + vars_file)
    finally:
        server.stop()


def stat_all(lab, host, paths):
    out = lab.sh(host, "stat -c '%n %Y.%Z %a %U' " + " ".join(paths) + " 2>/dev/null || true")
    return sorted(out.splitlines())


def test_weights_from_s3_to_head_then_peer_copy_to_worker_then_serve(weights_lab):
    lab = weights_lab
    rc, out, recap = lab.playbook(DEPLOY_R1, "-e", "@" + lab.vars_file)
    assert set(recap) >= {"lab-h1", "lab-h2"} and all(r["failed"] == 0 for r in recap.values()), recap
    assert lab.server.secret not in out
    expected = {n: hashlib.sha256(b).hexdigest() for n, b in lab.server.files.items()}
    for host in ("lab-h1", "lab-h2"):
        got = {}
        for line in lab.sh(host, "cd %s && sha256sum *" % MODEL_PATH).splitlines():
            digest, name = line.split()
            got[name] = digest
        assert got == expected, host
        state = json.loads(lab.sh(host, "cat %s/.llmfleet-state.json" % MODEL_PATH))
        assert state["complete"] is True
    # the head fetched from S3, the worker copied from the head (the role's peer mode)
    assert json.loads(lab.sh("lab-h1", "cat %s/.llmfleet-state.json" % MODEL_PATH))["source"]["type"] == "s3"
    assert json.loads(lab.sh("lab-h2", "cat %s/.llmfleet-state.json" % MODEL_PATH))["source"]["type"] in ("peer", "s3")
    assert "llmfleet-%s-head" % NAME in container_ids(lab, "lab-h1")
    assert "llmfleet-%s-worker-1" % NAME in container_ids(lab, "lab-h2")
    private = {h.name: h.private_ip for h in lab.hosts}
    content, usage = chat_stream("http://%s:8100" % private["lab-h1"], "deepseek-ai/DeepSeek-R1", key(lab))
    assert content
    # the plan's files, with the plan's modes, and the argv passed whole (no "--" separator)
    assert lab.sh("lab-h1", "stat -c '%a %U' {0} {0}/api_key {0}/entrypoint.sh {0}/deployment.json".format(
        FILES_DIR)).split() == ["700", "root", "600", "root", "755", "root", "600", "root"]
    args = json.loads(lab.sh("lab-h1", "docker inspect --format '{{json .Args}}' llmfleet-%s-head" % NAME))
    assert "--" not in args and args[1:5] == ["ray-head", "16", "2", "600"]


def test_second_run_changes_nothing_and_rewrites_no_file(weights_lab):
    lab = weights_lab
    paths = [FILES_DIR + "/" + f for f in ("api_key", "entrypoint.sh", "deployment.json")] + [MODEL_PATH + "/*"]
    before = {h: stat_all(lab, h, paths) for h in ("lab-h1", "lab-h2")}
    ids = {h: container_ids(lab, h) for h in ("lab-h1", "lab-h2")}
    rc, out, recap = lab.playbook(DEPLOY_R1, "-e", "@" + lab.vars_file)
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), recap
    assert {h: stat_all(lab, h, paths) for h in before} == before
    assert {h: container_ids(lab, h) for h in ids} == ids


def test_teardown_removes_the_plans_containers_and_files_only(weights_lab):
    lab = weights_lab
    # another inventory's deployment on the same host, and a file of the user's in config_dir
    lab.sh("lab-h1", "docker run -d --name llmfleet-other-inv --label llmfleet.deployment=other-inv "
                     "--network host llmfleet-lab/engine-sim:latest sleep 600")
    lab.sh("lab-h1", "mkdir -p /etc/llmfleet/other-inv && echo keep > /etc/llmfleet/other-inv/notes && "
                     "echo mine > %s/operator-notes" % FILES_DIR)
    try:
        lab.playbook(TEARDOWN, "-e", "@" + lab.vars_file)
        assert not [n for n in container_ids(lab, "lab-h1") if NAME in n]
        assert not [n for n in container_ids(lab, "lab-h2") if NAME in n]
        assert "llmfleet-other-inv" in container_ids(lab, "lab-h1")
        assert lab.sh("lab-h1", "cat /etc/llmfleet/other-inv/notes").strip() == "keep"
        # the plan's files are gone; its folder stays because it holds a file the plan did not write
        assert lab.sh("lab-h1", "ls -A %s" % FILES_DIR).split() == ["operator-notes"]
        assert lab.sh("lab-h2", "test -e %s && echo yes || echo no" % FILES_DIR).strip() == "no"
    finally:
        lab.sh("lab-h1", "docker rm -f llmfleet-other-inv; rm -rf /etc/llmfleet/other-inv %s/operator-notes"
               % FILES_DIR, check=False)
