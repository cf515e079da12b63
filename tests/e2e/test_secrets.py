"""Issues 9 and 15, secrets and exposure, in its own lab ("sec": 3 hosts, 172.31.150.0/24 management,
172.31.151.0/24 private, ssh 3121-3123).

One run of tests/e2e/playbooks/secrets-deploy.yml with ``-vvv`` uses every secret at once, both
engines, single host and multi-node:
  * S3 access key + secret: lab-h1 and lab-h2 fetch the Ray deployment's weights from moto's S3
    server (credentials checked: moto's IAM auth is on) on this machine's management gateway,
  * a hub token: lab-h3 fetches the single-host weights with the real ``huggingface_hub`` client
    from a Hugging-Face-compatible server (tests/unit/.../hub_server.py's handler, token checked,
    each file served after HUB_DELAY_S so that the sync is watched while it runs) on the same gateway,
  * API keys, one per deployment, each random: ``sec-r1`` (vLLM TP 4 x PP 2 over Ray on lab-h1 +
    lab-h2, exposure private) from a variable, ``sec-sgl`` (SGLang TP 8 over the same two hosts,
    --nnodes 2 / --node-rank) from a variable, ``sec-pub`` (vLLM, exposure public on lab-h3)
    from ``api_key_file``, ``sec-local`` (SGLang, exposure localhost on lab-h3) from a variable.
While the playbook runs, every host is sampled about once a second (every process's argv and
environment, the files under DURING_DIRS): the weight syncs are seen running and no secret is
anywhere but where it is meant to be (ALLOWED_FILES and the 0600 credentials file the role hands
to model_sync). Then every place a secret could end up is read and each must be absent
except where it is meant to be (ALLOWED_FILES, mode 0600 root, and the vLLM engine process's own
environment, where the entrypoint exports the key just before exec; SGLang holds its key in its
own memory only, docs/planner.md):
  * the ``-vvv`` output, the control node's build/lab/sec (except the lab's own key file) and
    ~/.ansible on the control node, the plan and the deployment records,
  * ``docker logs`` of every engine container (SGLang logs its server_args, key included, unless
    the entrypoint hides it: the simulator does as SGLang does),
  * on every lab host: ``ps auxww``, /proc/*/cmdline and /proc/*/environ of every process
    (inner engine containers included: they live in child PID namespaces, visible from the lab
    host, which the test checks), ``docker inspect`` of every inner container, and every file of
    the file system (/etc/llmfleet, the model paths, /etc/docker, /var/lib/docker with the inner
    containers' config and logs, /var/lib/llmfleet, ~/.ansible, /tmp, ...), raw and base64.
Exposure: ``ss -ltnp`` on every host against the deployments' exposure; Ray's own wildcard
sockets (docs/reliability.md, known gap) are listed exactly, and no other socket may be on a
wildcard address.
"""
from __future__ import annotations

import base64
import concurrent.futures
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.lab import lab as labmod

from .conftest import REPO, Lab

sys.path.insert(0, os.path.join(REPO, "tests", "unit", "plugins", "module_utils"))
import hub_server  # noqa: E402  (the unit tests' hub handler, served here on the lab gateway)

# The longer lab suite: `bash tests/run.sh nightly` (docs/testing.md), not CI.
pytestmark = pytest.mark.nightly

LAB = "sec"
MGMT = "172.31.150.0/24"
PRIVATE = "172.31.151.0/24"
GATEWAY = "172.31.150.1"  # this machine on the lab's management network
PLAYBOOK = os.path.join(REPO, "tests", "e2e", "playbooks", "secrets-deploy.yml")
BUCKET = "sec-models"
S3_PREFIX = "deepseek-ai/DeepSeek-R1-sec/"
HUB_REPO = "Qwen/QwQ-32B-sec"
R1_PATH = "/data/models/sec-r1"
QWQ_PATH = "/data/models/sec-qwq"
KiB = 1024
HUB_DELAY_S = 3.0  # before each file the hub serves: the hub sync lasts long enough to be watched

# Files on the lab hosts that may hold a secret, and which one (each must be 0600 root).
ALLOWED_FILES = {
    "/etc/llmfleet/sec-r1/api_key": "api_key_var",   # lab-h1 (head) and lab-h2 (worker)
    "/etc/llmfleet/sec-r1/ray_token": "ray_token",   # the Ray cluster's token, same two hosts
    "/etc/llmfleet/sec-sgl/api_key": "api_key_sgl",  # SGLang over lab-h1 (rank 0) and lab-h2 (rank 1)
    "/etc/llmfleet/sec-pub/api_key": "api_key_file",  # lab-h3
    "/etc/llmfleet/sec-local/api_key": "api_key_local",  # lab-h3, SGLang
}
# While a sync runs: the role's 0600 file that hands the source's secret to model_sync.
SYNC_CREDENTIALS = {R1_PATH + ".llmfleet-credentials.json": "s3_secret",
                    QWQ_PATH + ".llmfleet-credentials.json": "hub_token"}
# Ansible's copy action hands a file's content over as <remote tmp>/.source<suffix of dest>
# (ansible/plugins/action/copy.py), inside the task's own directory of ~/.ansible/tmp (0700 root).
ANSIBLE_TRANSFER = re.compile(r"^/root/\.ansible/tmp/ansible-tmp-[^/]+/\.source(\.[^/]*)?$")
DURING_DIRS = ["/root/.ansible", "/tmp", "/data/models", "/etc/llmfleet", "/opt/llmfleet", "/var/lib/docker/containers"]
RAY_TOKEN = "/etc/llmfleet/sec-r1/ray_token"
# Processes that may hold an API key in their environment: the vLLM engine that the entrypoint
# exec'd with VLLM_API_KEY (design: not in argv, not in docker inspect; /proc/PID/environ is
# readable by root only). No SGLang process, no Ray worker. {deployment container: (variable, secret name)}
ALLOWED_ENVIRON = {
    "llmfleet-sec-r1-head": ("VLLM_API_KEY", "api_key_var"),
    "llmfleet-sec-pub": ("VLLM_API_KEY", "api_key_file"),
}
# The lab's own infrastructure, not the collection's: sshd of every lab host.
LAB_INFRA_WILDCARD = {("sshd", 22)}
# docs/reliability.md, known gap: Ray 2.60's servers listen on 0.0.0.0 whatever
# --node-ip-address says. The processes whose wildcard sockets are expected, per role.
RAY_WILDCARD_PROCESSES = {"gcs_server", "raylet", "ray::IDLE", "ray::", "python", "python3", "default_worker.py",
                          "dashboard.py", "agent.py", "runtime_env_agent", "log_monitor.py", "monitor.py"}

SCAN = r'''
import base64, json, os, stat, sys
secrets = json.loads(sys.stdin.readline())
needles = {}
for name, value in secrets.items():
    raw = value.encode()
    forms = [raw]
    for k in range(3):  # base64 at each alignment: the chars that depend only on the secret
        enc = base64.b64encode(b"\0" * k + raw)
        forms.append(enc[4 if k else 0:-4])
    needles[name] = forms
def hits(data):
    return sorted(n for n, forms in needles.items() if any(f in data for f in forms))
skip = ("/proc", "/sys", "/dev")
files, nfiles, nbytes = [], 0, 0
for root, dirs, names in os.walk("/"):
    if root in skip:
        dirs[:] = []
        continue
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
    for n in names:
        p = os.path.join(root, n)
        try:
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode):
                continue
            with open(p, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        nfiles += 1
        nbytes += len(data)
        h = hits(data)
        if h:
            files.append({"path": p, "mode": "%o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "secrets": h})
procs, npids, unreadable = [], 0, []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as fh:
            cmdline = fh.read()
        with open("/proc/%s/cgroup" % pid, "rb") as fh:
            cgroup = fh.read().decode(errors="replace")
        comm = open("/proc/%s/comm" % pid).read().strip()
    except OSError:
        continue
    npids += 1
    try:
        with open("/proc/%s/environ" % pid, "rb") as fh:
            environ = fh.read()
    except OSError as e:
        unreadable.append([int(pid), comm, str(e)])
        environ = b""
    env_hits = []
    for var in environ.split(b"\0"):
        for n in hits(var):
            env_hits.append([var.split(b"=", 1)[0].decode(errors="replace"), n])
    if hits(cmdline) or env_hits:
        procs.append({"pid": int(pid), "comm": comm, "cmdline": hits(cmdline), "environ": env_hits,
                      "cgroup": cgroup, "args": cmdline.replace(b"\0", b" ")[:200].decode(errors="replace")
                      if not hits(cmdline) else "(has a secret)"})
print(json.dumps({"files": files, "files_scanned": nfiles, "bytes_scanned": nbytes, "procs": procs,
                  "pids_scanned": npids, "environ_unreadable": unreadable,
                  "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}))
'''


def b64_forms(value):
    raw = value.encode()
    forms = [value]
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw).decode()
        forms.append(enc[4 if k else 0:-4])
    return forms


def found_in(text, secrets):
    return sorted(n for n, v in secrets.items() if any(f in text for f in b64_forms(v)))


def model_files(arch, shards, shard_size):
    names = ["model-%05d-of-%05d.safetensors" % (i, shards) for i in range(1, shards + 1)]
    files = {n: os.urandom(shard_size + 17 * i) for i, n in enumerate(names)}
    files["model.safetensors.index.json"] = json.dumps({
        "metadata": {"total_size": sum(len(v) for v in files.values())},
        "weight_map": {"layers.%d.weight" % i: n for i, n in enumerate(names)}}).encode()
    files["config.json"] = json.dumps({"architectures": [arch], "model_type": "llama"}).encode()
    files["tokenizer.json"] = b'{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}'
    return files


def private_file(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def deployments():
    common = {"engine": "vllm", "image": "llmfleet-lab/engine-sim:latest", "max_model_len": 32768,
              "gpu_runtime": "none", "env": {"LLMFLEET_SIM_LOAD_DELAY_S": "1"}}
    return [
        dict(common, name="sec-r1", hosts="lab_dual", model="deepseek-r1", model_path=R1_PATH, tensor_parallel=4,
             pipeline_parallel=2, gpus_per_host=4, port=8000, exposure="private", api_key="{{ secrets_api_key }}",
             env={"LLMFLEET_SIM_LOAD_DELAY_S": "1", "RAY_health_check_period_ms": "1000",
                  "RAY_health_check_failure_threshold": "3"}),
        dict(common, name="sec-sgl", engine="sglang", hosts="lab_dual", model="deepseek-r1", model_path=R1_PATH,
             tensor_parallel=8, gpus_per_host=4, port=8100, exposure="private", api_key="{{ secrets_api_key_sgl }}"),
        dict(common, name="sec-local", engine="sglang", hosts="lab_single", model="qwq-32b", model_path=QWQ_PATH,
             gpus_per_host=4, port=8000, exposure="localhost", api_key="{{ secrets_api_key_local }}"),
        dict(common, name="sec-pub", hosts="lab_single", model="qwq-32b", model_path=QWQ_PATH, gpus_per_host=4,
             port=8001, exposure="public", api_key_file="{{ secrets_api_key_path }}"),
    ]


class Secrets(object):
    pass


class SlowHub(hub_server._Handler):
    """The unit tests' hub handler; each file download starts after HUB_DELAY_S."""

    def do_GET(self):
        if "/resolve/" in self.path:
            time.sleep(HUB_DELAY_S)
        return super().do_GET()


SAMPLE = r'''
import base64, json, os, stat, sys
secrets = json.loads(sys.stdin.readline())
dirs = json.loads(sys.stdin.readline())
needles = {}
for name, value in secrets.items():
    raw = value.encode()
    forms = [raw]
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw)
        forms.append(enc[4 if k else 0:-4])
    needles[name] = forms
def hits(data):
    return sorted(n for n, forms in needles.items() if any(f in data for f in forms))
files = []
for top in dirs:
    for root, ds, names in os.walk(top):
        for n in names:
            p = os.path.join(root, n)
            try:
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
                    continue
                with open(p, "rb") as fh:
                    h = hits(fh.read())
            except OSError:
                continue
            if h:
                files.append([p, "%o" % stat.S_IMODE(st.st_mode), st.st_uid, h])
procs, syncing = [], False
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        cmdline = open("/proc/%s/cmdline" % pid, "rb").read()
        environ = open("/proc/%s/environ" % pid, "rb").read()
        cgroup = open("/proc/%s/cgroup" % pid).read()
        comm = open("/proc/%s/comm" % pid).read().strip()
    except OSError:
        continue
    syncing = syncing or b"model_sync" in cmdline
    env = [[v.split(b"=", 1)[0].decode(errors="replace"), n] for v in environ.split(b"\0") for n in hits(v)]
    if hits(cmdline) or env:
        procs.append({"pid": int(pid), "comm": comm, "cmdline": hits(cmdline), "environ": env, "cgroup": cgroup})
print(json.dumps({"files": files, "procs": procs, "syncing": syncing}))
'''


class Sampler(object):
    """Every host sampled about once a second while the playbook runs (one thread; the hosts of
    a round in parallel): the files under DURING_DIRS and every process's argv and environment."""

    def __init__(self, lab, values):
        self.lab, self.values = lab, values
        self.samples, self.errors = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="secret-sampler", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=120)

    def _one(self, h):
        res = docker(h, "python3", "-c", SAMPLE, input=json.dumps(self.values) + "\n" + json.dumps(DURING_DIRS) + "\n",
                     timeout=60)
        if res.returncode != 0:
            return h.name, None, res.stderr[-500:]
        return h.name, json.loads(res.stdout), None

    def _run(self):
        with concurrent.futures.ThreadPoolExecutor(len(self.lab.hosts)) as pool:
            while not self._stop.is_set():
                t = time.monotonic()
                for name, sample, err in pool.map(self._one, self.lab.hosts):
                    if sample is None:
                        self.errors.append((name, err))
                    else:
                        self.samples.append((t, name, sample))
                self._stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))


@pytest.fixture(scope="module")
def sec(tmp_path_factory):
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    work = str(tmp_path_factory.mktemp("secrets"))
    s = Secrets()
    s.values = {
        "api_key_var": "sec-apikey-var-" + uuid.uuid4().hex,
        "api_key_file": "sec-apikey-file-" + uuid.uuid4().hex,
        "api_key_sgl": "sec-apikey-sgl-" + uuid.uuid4().hex,
        "api_key_local": "sec-apikey-local-" + uuid.uuid4().hex,
        "hub_token": "hf_sec" + uuid.uuid4().hex,
    }
    labmod.down(LAB)
    moto = httpd = None
    try:
        t0 = time.monotonic()
        st, timings = labmod.up(LAB, 3, ssh_port_base=3120, mgmt_subnet=MGMT, private_subnet=PRIVATE, engine=("sim",))
        s.lab = Lab(st)
        s.lab_up_s = time.monotonic() - t0
        print("lab %s up in %.1f s: %s" % (LAB, s.lab_up_s, json.dumps(timings)))
        # S3 with credentials checked: an IAM user (random secret from moto), then auth on.
        moto = ThreadedMotoServer(ip_address=GATEWAY, port=0, verbose=False)
        moto.start()
        endpoint = "http://%s:%d" % (GATEWAY, moto._server.server_port)
        access, secret = hub_server.moto_auth(endpoint)
        s.values["s3_secret"] = secret
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access,
                          aws_secret_access_key=secret)
        s3.create_bucket(Bucket=BUCKET)
        s.r1_files = model_files("DeepseekV3ForCausalLM", 3, 64 * KiB)
        for name, data in s.r1_files.items():
            s3.put_object(Bucket=BUCKET, Key=S3_PREFIX + name, Body=data)
        # The hub: the unit tests' handler (real HF routes and headers), token required.
        httpd = hub_server._server(SlowHub, GATEWAY)  # with every switch the handler reads
        httpd.repos, httpd.token = {}, s.values["hub_token"]
        s.qwq_files = model_files("Qwen2ForCausalLM", 2, 48 * KiB)
        httpd.repos[HUB_REPO] = hub_server.HubRepo(HUB_REPO, s.qwq_files)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        s.hub = httpd
        key_path = os.path.join(work, "sec-pub.key")
        private_file(key_path, s.values["api_key_file"])
        variables = {
            "secrets_s3": {"endpoint_url": endpoint, "bucket": BUCKET, "prefix": S3_PREFIX, "access_key": access,
                           "secret_key": secret, "path": R1_PATH},
            "secrets_hub": {"endpoint": "http://%s:%d" % (GATEWAY, httpd.server_address[1]), "repo_id": HUB_REPO,
                            "token": s.values["hub_token"], "path": QWQ_PATH},
            "secrets_api_key": s.values["api_key_var"],
            "secrets_api_key_sgl": s.values["api_key_sgl"],
            "secrets_api_key_local": s.values["api_key_local"],
            "secrets_api_key_path": key_path,
            "llmfleet_deployments": deployments(),
        }
        vars_file = os.path.join(work, "vars.json")
        private_file(vars_file, json.dumps(variables))
        t0 = time.monotonic()
        sampler = Sampler(s.lab, dict(s.values))
        sampler.start()
        try:
            rc, out, recap = s.lab.playbook(PLAYBOOK, "-e", "@" + vars_file, "-vvv", check=False)
        finally:
            sampler.stop()
            os.unlink(vars_file)
        s.deploy_s = time.monotonic() - t0
        s.during = sampler
        with open(os.path.join(work, "deploy-vvv.log"), "w") as fh:
            fh.write(out)
        assert rc == 0, "deploy failed (rc %d):\n%s" % (rc, out[-8000:])
        s.output, s.recap = out, recap
        # The Ray cluster's token, made on the head by the role: a secret like the others from now on.
        s.values["ray_token"] = s.lab.sh("lab-h1", "cat %s" % RAY_TOKEN)
        assert len(s.values["ray_token"]) >= 32
        print("deploy with -vvv (S3 + hub weights, 3 deployments, Ray over 2 hosts): %.1f s, output %d lines"
              % (s.deploy_s, out.count("\n")))
        yield s
    finally:
        if httpd:
            httpd.shutdown()
            httpd.server_close()
        if moto:
            hub_server.moto_auth_off()
            moto.stop()
        if not os.environ.get("LLMFLEET_E2E_KEEP"):
            labmod.down(LAB)


def docker(st_host, *args, **kw):
    return subprocess.run(["docker", "exec", "-i", st_host.container] + list(args), capture_output=True, text=True,
                          check=False, **kw)


def inner_containers(s, host):
    """{name: (id, host-visible pid)} of every container of the lab host's own Docker engine."""
    out = s.lab.sh(host, "docker ps -aq | xargs -r docker inspect -f '{{.Name}} {{.Id}} {{.State.Pid}}'")
    return {n.lstrip("/"): (i, int(p)) for n, i, p in (line.split() for line in out.splitlines() if line.strip())}


def ansible_tmp_clean(s, host, timeout=30):
    """Ansible's async wrapper removes its payload just after the job's result is written."""
    deadline = time.monotonic() + timeout
    while s.lab.sh(host, "find /root/.ansible/tmp -mindepth 1 -maxdepth 1 2>/dev/null || true").strip():
        assert s.lab.sh(host, "stat -c %a /root/.ansible/tmp").strip() == "700"
        assert time.monotonic() < deadline, "Ansible's tmp dir on %s was not cleaned up" % host
        time.sleep(0.5)


def test_deploy_served_with_every_secret_in_use(sec):
    assert set(sec.recap) >= {"lab-h1", "lab-h2", "lab-h3"}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in sec.recap.values()), sec.recap
    # the secrets were really needed: the hub refused nothing and served the weights with the
    # token, S3 checked the signature (auth on), the engines answer 401 without the key
    assert any(m == "GET" and "/resolve/" in p for m, p, dummy in sec.hub.requests)
    for h, path, files in (("lab-h1", R1_PATH, sec.r1_files), ("lab-h2", R1_PATH, sec.r1_files),
                           ("lab-h3", QWQ_PATH, sec.qwq_files)):
        assert sorted(sec.lab.sh(h, "ls %s" % path).split()) == sorted(files), h
    private = {h.name: h.private_ip for h in sec.lab.hosts}
    url = "http://%s:8000/v1/models" % private["lab-h1"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=30)
    assert err.value.code == 401
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + sec.values["api_key_var"]})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.load(resp)["data"]


def test_no_secret_in_the_vvv_output_nor_on_the_control_node(sec):
    assert found_in(sec.output, sec.values) == []
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in sec.output or "censored" in sec.output
    # the output holds the plan (the planner's result, every deployment) and the roles' reports
    assert "TASK [Plan (fails with every error" in sec.output and '"sec-sgl"' in sec.output
    leaks = []
    lab_dir = os.path.join(REPO, "build", "lab", LAB)
    own_key = os.path.realpath(os.path.join(lab_dir, "api_key"))
    for top in (lab_dir, os.path.expanduser("~/.ansible")):
        for root, _dirs, names in os.walk(top):
            for n in names:
                p = os.path.join(root, n)
                if os.path.realpath(p) == own_key or not os.path.isfile(p) or os.path.islink(p):
                    continue
                try:
                    with open(p, "rb") as fh:
                        text = fh.read().decode("latin-1")
                except OSError:
                    continue
                if found_in(text, sec.values):
                    leaks.append((p, found_in(text, sec.values)))
    assert not leaks, leaks


def test_secrets_only_in_their_0600_files_and_the_engine_environment(sec):
    secrets_line = json.dumps(sec.values) + "\n"
    report = {}
    t0 = time.monotonic()
    for h in sec.lab.hosts:
        ansible_tmp_clean(sec, h.name)
    with concurrent.futures.ThreadPoolExecutor(len(sec.lab.hosts)) as pool:  # one scan per host, at once
        scans = dict(zip([h.name for h in sec.lab.hosts], pool.map(
            lambda h: docker(h, "python3", "-c", SCAN, input=secrets_line, timeout=300), sec.lab.hosts)))
    scan_s = time.monotonic() - t0
    for h in sec.lab.hosts:
        inner = inner_containers(sec, h.name)
        proc = scans[h.name]
        assert proc.returncode == 0, proc.stderr
        scan = json.loads(proc.stdout)
        # inner containers share the lab host's PID view (child PID namespaces): their
        # processes were scanned, and their environments could be read
        running = {n: (i, p) for n, (i, p) in inner.items() if p}
        assert running, "no engine container on %s" % h.name
        for name, (cid, pid) in running.items():
            assert pid in scan["pids"], (h.name, name, pid)
        assert not [u for u in scan["environ_unreadable"] if u[0] in {p for dummy, p in running.values()}]
        report[h.name] = scan
        # the file system: only the allowed files, 0600 root, with the secret meant for them
        for f in scan["files"]:
            assert f["path"] in ALLOWED_FILES, "secret %s in %s on %s (mode %s)" % (
                f["secrets"], f["path"], h.name, f["mode"])
            assert f["secrets"] == [ALLOWED_FILES[f["path"]]], (h.name, f)
            assert (f["mode"], f["uid"]) == ("600", 0), (h.name, f)
        # processes: no secret in any argv; in an environment only the engine's key
        for p in scan["procs"]:
            assert not p["cmdline"], "secret in argv on %s: pid %d %s" % (h.name, p["pid"], p["comm"])
            owner = [n for n, (cid, dummy) in running.items() if cid in p["cgroup"]]
            for var, name in p["environ"]:
                assert owner and ALLOWED_ENVIRON.get(owner[0]) == (var, name), \
                    "secret %s in the environment (%s) of pid %d %s on %s (container %s)" % (
                        name, var, p["pid"], p["comm"], h.name, owner)
        # ps as a user would run it, docker inspect of every inner container
        ps = sec.lab.sh(h.name, "ps auxww")
        assert found_in(ps, sec.values) == [], h.name
        inspect = sec.lab.sh(h.name, "docker ps -aq | xargs -r docker inspect")
        assert json.loads(inspect) and found_in(inspect, sec.values) == [], h.name
        # the same seen from inside each running inner container (its own /proc)
        for name in running:
            proc = docker(h, "docker", "exec", "-i", name, "sh", "-c",
                          "cat /proc/[0-9]*/cmdline 2>/dev/null; echo; ps auxww 2>/dev/null || true")
            assert found_in(proc.stdout, sec.values) == [], (h.name, name)
    # where the secrets are, exactly: each key file once, the engines' own environment
    where = sorted((h, f["path"], f["secrets"][0]) for h, s in report.items() for f in s["files"])
    assert where == [("lab-h1", "/etc/llmfleet/sec-r1/api_key", "api_key_var"),
                     ("lab-h1", RAY_TOKEN, "ray_token"),
                     ("lab-h1", "/etc/llmfleet/sec-sgl/api_key", "api_key_sgl"),
                     ("lab-h2", "/etc/llmfleet/sec-r1/api_key", "api_key_var"),
                     ("lab-h2", RAY_TOKEN, "ray_token"),
                     ("lab-h2", "/etc/llmfleet/sec-sgl/api_key", "api_key_sgl"),
                     ("lab-h3", "/etc/llmfleet/sec-local/api_key", "api_key_local"),
                     ("lab-h3", "/etc/llmfleet/sec-pub/api_key", "api_key_file")]
    envs = sorted((h, p["comm"], tuple(e)) for h, s in report.items() for p in s["procs"] for e in p["environ"])
    assert {(h, e[1]) for h, _c, e in envs} == {("lab-h1", "api_key_var"), ("lab-h3", "api_key_file")}
    summary = ", ".join("%s %d files %.0f MiB %d pids" % (h, s["files_scanned"], s["bytes_scanned"] / 2 ** 20, s["pids_scanned"])
                        for h, s in sorted(report.items()))
    print("scanned in %.1f s (all checks %.1f s): %s; API key in the environment of %s" % (
        scan_s, time.monotonic() - t0, summary, envs))


def test_no_secret_anywhere_while_the_weights_sync(sec):
    """The samples taken while the playbook ran: the hub sync (slowed) was seen running, and no
    secret was in any argv, in an environment but the vLLM engines' own key, or in a file under
    DURING_DIRS but the key files and the role's 0600 credentials file for model_sync."""
    during = sec.during
    assert not during.errors, during.errors[:3]
    rounds = {t for t, _h, _s in during.samples}
    syncing = sorted({h for _t, h, smp in during.samples if smp["syncing"]})
    assert "lab-h3" in syncing, "the hub sync on lab-h3 was never seen running (%d rounds)" % len(rounds)
    seen_files = set()
    for t, h, smp in during.samples:
        for path, mode, uid, names in smp["files"]:
            if ANSIBLE_TRANSFER.match(path):
                # Ansible's own hand-over of a no_log copy's content (the key files, the credentials
                # file): in the task's remote tmp dir (~/.ansible/tmp is 0700 root: ansible_tmp_clean)
                # for the length of that task
                assert uid == 0, (h, path, mode, uid, names)
                seen_files.add((h, "~/.ansible/tmp/ansible-tmp-*/.source* (%s)" % mode))
                continue
            allowed = ALLOWED_FILES.get(path) or SYNC_CREDENTIALS.get(path)
            assert allowed and names == [allowed], "secret %s in %s on %s during the deploy" % (names, path, h)
            assert (mode, uid) == ("600", 0), (h, path, mode, uid)
            seen_files.add((h, path))
        for p in smp["procs"]:
            assert not p["cmdline"], "secret in argv on %s during the deploy: pid %d %s" % (h, p["pid"], p["comm"])
            for var, name in p["environ"]:
                owner = [n for n, (cid, _pid) in inner_containers(sec, h).items() if cid in p["cgroup"]]
                assert owner and ALLOWED_ENVIRON.get(owner[0]) == (var, name), \
                    "secret %s in the environment (%s) of pid %d %s on %s during the deploy (container %s)" % (
                        name, var, p["pid"], p["comm"], h, owner)
    print("during the deploy: %d rounds over %d hosts, weight syncs seen running on %s; files holding a "
          "secret at some point: %s" % (len(rounds), len(sec.lab.hosts), syncing, sorted(seen_files)))


def test_no_secret_in_docker_logs_and_sglang_logged_its_arguments_hidden(sec):
    """``docker logs`` of every container on every host: no secret. SGLang (the simulator does as
    SGLang 0.5.x) logs ``server_args={...}`` with its key: the entrypoint's launcher shows ``***``."""
    sglang = []
    for h in sec.lab.hosts:
        for name in inner_containers(sec, h.name):
            logs_text = sec.lab.sh(h.name, "docker logs %s 2>&1" % name)
            assert found_in(logs_text, sec.values) == [], (h.name, name, found_in(logs_text, sec.values))
            args = [line for line in logs_text.splitlines() if "server_args={" in line]
            if args:
                assert "'api_key': '***'" in args[0], (h.name, name, args[0][:300])
                sglang.append((h.name, name))
    assert sorted(sglang) == [("lab-h1", "llmfleet-sec-sgl-head"), ("lab-h2", "llmfleet-sec-sgl-worker-1"),
                              ("lab-h3", "llmfleet-sec-local")], sglang
    # and they serve with their keys: 401 without, 200 with (rank 0 of the two-node group)
    url = "http://%s:8100/v1/models" % labmod.host_of(sec.lab.state, "lab-h1").private_ip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=30)
    assert err.value.code == 401
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + sec.values["api_key_sgl"]})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.load(resp)["data"]
    # the localhost one, from lab-h3 itself, the key read from its file in the client's memory (not argv)
    local = sec.lab.sh("lab-h3", "python3 -c 'import urllib.request as u; k = open(\"/etc/llmfleet/sec-local/api_key\")"
                                 ".read().strip(); print(u.urlopen(u.Request(\"http://127.0.0.1:8000/v1/models\", "
                                 "headers={\"Authorization\": \"Bearer \" + k}), timeout=30).status)'")
    assert local.strip() == "200", local
    print("SGLang logged server_args with the key hidden: %s" % sglang)


HELPERS = r'''
import json, os
out = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        cmd = open("/proc/%s/cmdline" % pid, "rb").read()
        if not cmd.endswith(b"\0compile_worker\0"):
            continue
        env = open("/proc/%s/environ" % pid, "rb").read().split(b"\0")
        out.append({"pid": int(pid), "cgroup": open("/proc/%s/cgroup" % pid).read(),
                    "names": sorted(v.split(b"=", 1)[0].decode() for v in env if b"=" in v)})
    except OSError:
        continue
print(json.dumps(out))
'''


def test_vllm_api_key_stays_on_the_head_not_in_the_ray_workers_of_the_worker_host(sec):
    """vLLM over Ray sends its driver's variables to its Ray workers (the simulator as vLLM 0.32,
    docs/engine-simulator.md): the head's log lists what it sent, without VLLM_API_KEY, and the
    worker on lab-h2 (a process started with what it was sent) has no key in its environment."""
    head_log = sec.lab.sh("lab-h1", "docker logs llmfleet-sec-r1-head 2>&1")
    copied = [line for line in head_log.splitlines() if "Copying the following environment variables to workers" in line]
    assert copied, head_log[-3000:]
    assert "VLLM_API_KEY" not in copied[-1] and "'NCCL_DEBUG'" in copied[-1], copied[-1]
    found = {}
    for host in ("lab-h1", "lab-h2"):
        inner = inner_containers(sec, host)
        res = docker(labmod.host_of(sec.lab.state, host), "python3", "-c", HELPERS, timeout=60)
        assert res.returncode == 0, res.stderr
        for helper in json.loads(res.stdout):
            owner = [n for n, (cid, _pid) in inner.items() if cid in helper["cgroup"]]
            assert "VLLM_API_KEY" not in helper["names"], (host, owner, helper["names"])
            assert "NCCL_DEBUG" in helper["names"], (host, owner, helper["names"])
            found.setdefault(host, []).append(owner[0] if owner else None)
    # one worker per node of the group, in the Ray containers: the one on lab-h2 is the worker host's
    assert found == {"lab-h1": ["llmfleet-sec-r1-head"], "lab-h2": ["llmfleet-sec-r1-worker-1"]}, found
    print("Ray workers' helpers: %s; head sent: %s" % (found, copied[-1].split("workers: ", 1)[-1][:300]))


def listening(s, host):
    """[(address, port, process name, pid)] from ss -ltnpH on a lab host."""
    rows = []
    for line in s.lab.sh(host, "ss -ltnpH").splitlines():
        parts = line.split()
        local = parts[3]
        addr, port = local.rsplit(":", 1)
        users = re.findall(r'\("([^"]+)",pid=(\d+)', line)
        name, pid = users[0] if users else ("?", "0")
        rows.append((addr.strip("[]"), int(port), name, int(pid)))
    return rows


def container_of(s, host, pid, inner):
    cgroup = s.lab.sh(host, "cat /proc/%d/cgroup 2>/dev/null || true" % pid)
    owner = [n for n, (cid, dummy) in inner.items() if cid in cgroup]
    return owner[0] if owner else None


WILDCARD = ("0.0.0.0", "*", "::")


def test_listening_sockets_follow_the_exposure(sec):
    private = {h.name: h.private_ip for h in sec.lab.hosts}
    ray_gap = []
    for h in sec.lab.hosts:
        rows = listening(sec, h.name)
        inner = inner_containers(sec, h.name)
        engine = {"lab-h1": {8000: private["lab-h1"], 8100: private["lab-h1"]}, "lab-h2": {},
                  "lab-h3": {8000: "127.0.0.1", 8001: "0.0.0.0"}}
        for port, addr in engine[h.name].items():
            bound = sorted(a for a, p, _n, _pid in rows if p == port)
            assert bound == [addr], (h.name, port, bound)
        assert not [r for r in rows if r[1] == 8265 and r[0] != "127.0.0.1"], h.name
        # nothing of the collection on the management address
        assert not [r for r in rows if r[0] == h.mgmt_ip], (h.name, rows)
        for addr, port, name, pid in rows:
            if addr not in WILDCARD or (name, port) in LAB_INFRA_WILDCARD:
                continue
            if h.name == "lab-h3" and port == 8001:
                continue  # exposure public
            owner = container_of(sec, h.name, pid, inner)
            cmd = sec.lab.sh(h.name, "tr '\\0' ' ' < /proc/%d/cmdline 2>/dev/null || true" % pid)
            # only Ray's own servers, inside the Ray deployment's containers
            assert owner in ("llmfleet-sec-r1-head", "llmfleet-sec-r1-worker-1"), (h.name, addr, port, name, owner)
            if " serve " in cmd:
                # the engine is Ray's driver (--distributed-executor-backend ray): its core
                # worker's gRPC server, on a port of Ray's choosing, never the API port
                assert "--distributed-executor-backend ray" in cmd and port not in (8000, 8001), (h.name, port, cmd)
                name = "ray driver in %s" % name
            else:
                assert name in RAY_WILDCARD_PROCESSES or name.startswith("ray::"), (h.name, addr, port, name, cmd)
                assert "ray" in cmd.lower(), (h.name, addr, port, name, cmd)
            ray_gap.append((h.name, owner, name, port, " ".join(cmd.split()[:3])[:90]))
    assert ray_gap, "Ray binds no wildcard socket any more: update docs/reliability.md's known gap and this test"
    assert {r[0] for r in ray_gap} == {"lab-h1", "lab-h2"}
    names = sorted({r[2] for r in ray_gap})
    assert "gcs_server" in names and "raylet" in names
    print("Ray sockets on a wildcard address (known gap):\n  %s" % "\n  ".join(map(str, sorted(ray_gap))))


# -- Ray token authentication and the listener audit ---------------------------------------------

ENGINE_IMAGE = "llmfleet-lab/engine-sim:latest"


def probe(s, host, script, env=(), token=False, timeout=120):
    """Run ``python -c script`` on a lab host in a fresh container of the engine image on the host
    network: a Ray client that is not part of the cluster. With ``token``, the host's copy of the
    cluster token is mounted (lab-h1/h2 only) and RAY_AUTH_TOKEN_PATH points at it."""
    args = ["docker", "run", "--rm", "--network", "host"]
    for e in env:
        args += ["-e", e]
    if token:
        args += ["-v", "%s:/run/t:ro" % RAY_TOKEN, "-e", "RAY_AUTH_MODE=token", "-e", "RAY_AUTH_TOKEN_PATH=/run/t"]
    args += [ENGINE_IMAGE, "timeout", str(timeout - 10), "python", "-c", script]
    return docker(labmod.host_of(s.lab.state, host), *args, timeout=timeout)


GCS = '''
from ray._raylet import GcsClient
from ray._common.usage import usage_lib
try:
    meta = usage_lib.get_cluster_metadata(GcsClient(address="%s"))
    print("CONNECTED ray_version=%%s" %% (meta or {}).get("ray_version"))
except Exception as e:
    print("REFUSED %%s: %%s" %% (type(e).__name__, " ".join(str(e).split())[:300]))
'''

HTTP = '''
import os, urllib.request, urllib.error
req = urllib.request.Request("%s", headers={"Authorization": "Bearer " + open("/run/t").read()}
                             if os.path.exists("/run/t") else {})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print("HTTP", r.status)
except urllib.error.HTTPError as e:
    print("HTTP", e.code)
'''

CLIENT = '''
import ray.util
try:
    ray.util.connect("%s", connection_retries=2)
    print("CONNECTED")
except Exception as e:
    print("REFUSED %%s: %%s" %% (type(e).__name__, " ".join(str(e).split())[:200]))
'''


def test_ray_refuses_a_client_without_the_token(sec):
    head = labmod.host_of(sec.lab.state, "lab-h1").private_ip
    gcs = GCS % ("%s:6379" % head)
    t0 = time.monotonic()
    # positive control: with the cluster's token (lab-h2's copy), the same client reaches the GCS
    ok = probe(sec, "lab-h2", gcs, token=True)
    assert "CONNECTED ray_version=2." in ok.stdout, (ok.stdout, ok.stderr[-2000:])
    # from a host outside the cluster: no token, then a wrong one
    none = probe(sec, "lab-h3", gcs, env=["RAY_AUTH_MODE=disabled"])
    wrong = probe(sec, "lab-h3", gcs, env=["RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=" + "0" * 64])
    for out in (none, wrong):
        assert "REFUSED" in out.stdout and "CONNECTED" not in out.stdout, (out.stdout, out.stderr[-2000:])
    # the dashboard agent (its HTTP port takes job submissions: ShadowRay) and the client server
    agent = "http://%s:52365/api/jobs/" % head
    assert probe(sec, "lab-h3", HTTP % agent).stdout.split() == ["HTTP", "401"]
    with_token = probe(sec, "lab-h2", HTTP % agent, token=True).stdout.split()
    assert with_token[0] == "HTTP" and with_token[1] != "401", with_token
    client = probe(sec, "lab-h3", CLIENT % ("%s:10001" % head), env=["RAY_AUTH_MODE=disabled"])
    assert "REFUSED" in client.stdout and "CONNECTED" not in client.stdout, (client.stdout, client.stderr[-2000:])
    print("Ray with the token: %s; without: %s; wrong token: %s; agent HTTP without/with token: 401/%s; "
          "client server without: %s (%.1f s)"
          % (ok.stdout.strip(), none.stdout.strip(), wrong.stdout.strip(), with_token[1],
             client.stdout.strip() or client.stderr[-200:], time.monotonic() - t0))


# Unauthenticated HTTP listeners off loopback that docs/reliability.md names (exactly these):
# {(owner, what): why}. Owner "engine" is every engine port; the others are Ray's, on the head.
DOCUMENTED_OPEN_HTTP = {
    ("engine", "vllm"): "vLLM checks its key on /v1 only: /health, /ping, /version, /metrics, /tokenize, "
                        "/detokenize and /invocations answer without it",
    ("engine", "sglang"): "SGLang checks its key on every path but /health* and /metrics (sglang/srt/utils/auth.py)",
    ("ray", "autoscaler metrics"): "Ray's autoscaler Prometheus metrics (monitor.py, port 44217), read-only",
    ("ray", "dashboard metrics"): "Ray's dashboard Prometheus metrics (dashboard.py, port 44227), read-only",
    ("ray", "agent metrics"): "the dashboard agent's Prometheus metrics export (a port of Ray's choosing), read-only",
}
PROBE_PATHS = ("/", "/metrics", "/api/jobs/", "/api/version", "/v1/models", "/invocations", "/tokenize")
HTTP_PROBE = r'''
import json, sys, urllib.request, urllib.error
out = {}
for target in json.loads(sys.argv[1]):
    codes = {}
    for path in %r:
        if codes and not isinstance(codes["/"], int):
            break  # no HTTP answer at all: a gRPC (or other) server
        try:
            method = "POST" if path in ("/invocations", "/tokenize") else "GET"
            data = json.dumps({"model": "x", "prompt": "hi", "max_tokens": 1}).encode() if method == "POST" else None
            req = urllib.request.Request("http://%%s%%s" %% (target, path), data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=3) as r:
                codes[path] = r.status
                if path == "/":
                    codes["body"] = r.read(4096).decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            codes[path] = e.code
        except Exception as e:
            codes[path] = type(e).__name__
    out[target] = codes
print(json.dumps(out))
''' % (PROBE_PATHS,)


def _ray_open_kind(cmd, port):
    if "monitor.py" in cmd and port == 44217:
        return "autoscaler metrics"
    if "dashboard.py" in cmd and port == 44227:
        return "dashboard metrics"
    if cmd.startswith("ray::DashboardAgent"):
        return "agent metrics"
    return None


def test_every_listener_off_loopback_is_authenticated_or_documented(sec):
    """ss on every host; each socket off loopback (but the lab's sshd) is probed over HTTP without
    credentials: a 2xx answer is an unauthenticated listener, which must be one docs/reliability.md
    names. A socket that speaks no HTTP must be one of Ray's gRPC servers (token-checked:
    test_ray_refuses_a_client_without_the_token), in the Ray deployment's containers."""
    found, grpc, authed = {}, [], []
    for h in sec.lab.hosts:
        inner = inner_containers(sec, h.name)
        rows = [r for r in listening(sec, h.name) if not r[0].startswith("127.") and r[0] != "::1"
                and (r[2], r[1]) not in LAB_INFRA_WILDCARD]
        targets = sorted({"%s:%d" % (h.private_ip if a in WILDCARD else a, p) for a, p, _n, _pid in rows})
        res = docker(h, "python3", "-c", HTTP_PROBE, json.dumps(targets), timeout=300)
        assert res.returncode == 0, res.stderr
        codes = json.loads(res.stdout)
        for addr, port, name, pid in rows:
            target = "%s:%d" % (h.private_ip if addr in WILDCARD else addr, port)
            owner = container_of(sec, h.name, pid, inner)
            cmd = sec.lab.sh(h.name, "tr '\\0' ' ' < /proc/%d/cmdline 2>/dev/null || true" % pid).strip()
            c = codes[target]
            c.setdefault("/v1/models", None)
            body = c.pop("body", "")
            open_paths = sorted(p for p, v in c.items() if isinstance(v, int) and 200 <= v < 300)
            is_http = any(isinstance(v, int) for v in c.values())
            where = (h.name, addr, port, name, owner, cmd[:80], c)
            if not is_http:
                # gRPC (or another non-HTTP protocol): only Ray's, only in the Ray group's containers
                assert owner in ("llmfleet-sec-r1-head", "llmfleet-sec-r1-worker-1"), where
                assert "ray" in cmd.lower() or " serve " in cmd, where
                grpc.append((h.name, port, name))
                continue
            if not open_paths:
                authed.append((h.name, port, name, sorted(set(c.values()), key=str)))
                continue
            if owner and "sglang" in cmd:
                kind = ("engine", "sglang")
                assert c["/v1/models"] == 401, where
                assert set(open_paths) <= {"/metrics"}, where
            elif owner and (" serve " in cmd or "vllm" in cmd):
                kind = ("engine", "vllm")
                # the key guards /v1: what answers without it is exactly vLLM's open set
                assert c["/v1/models"] == 401, where
                assert set(open_paths) <= {"/metrics", "/invocations", "/tokenize"}, where
            else:
                kind = ("ray", _ray_open_kind(cmd, port))
                assert owner == "llmfleet-sec-r1-head" or kind[1] == "agent metrics", where
                # Prometheus' exposition server: the same read-only metrics text on every path
                assert "# HELP " in body or "# TYPE " in body or body == "", (where, body[:200])
                assert owner in ("llmfleet-sec-r1-head", "llmfleet-sec-r1-worker-1"), where
            assert kind in DOCUMENTED_OPEN_HTTP, "unauthenticated listener not in docs/reliability.md: %s" % (where,)
            found.setdefault(kind, []).append((h.name, target, open_paths))
    # the engine's open paths are really open (the simulator has vLLM's auth scope): a completion
    # through /invocations without the key, which /v1/completions refuses
    base = "http://%s:8000" % labmod.host_of(sec.lab.state, "lab-h1").private_ip
    req = urllib.request.Request(base + "/v1/models", headers={"Authorization": "Bearer " + sec.values["api_key_var"]})
    with urllib.request.urlopen(req, timeout=30) as resp:
        model = json.load(resp)["data"][0]["id"]
    body = json.dumps({"model": model, "prompt": "hi", "max_tokens": 2}).encode()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(base + "/v1/completions", data=body, method="POST",
                                                      headers={"Content-Type": "application/json"}), timeout=30)
    assert err.value.code == 401
    with urllib.request.urlopen(urllib.request.Request(base + "/invocations", data=body, method="POST",
                                                       headers={"Content-Type": "application/json"}), timeout=30) as r:
        assert json.load(r)["object"] == "text_completion"
    assert ("engine", "vllm") in found
    assert {h for h, _t, _p in found[("engine", "vllm")]} == {"lab-h1", "lab-h3"}
    # SGLang's rank 0 on its private address (the localhost one is not off loopback)
    assert [t for h, t, _p in found[("engine", "sglang")]] == ["%s:8100" % labmod.host_of(sec.lab.state, "lab-h1").private_ip]
    print("authenticated HTTP: %s\nnon-HTTP (Ray gRPC, token-checked): %s\nunauthenticated, documented:\n  %s" % (
        authed, sorted(set(grpc)), "\n  ".join("%s: %s" % (k, v) for k, v in sorted(found.items()))))


def test_engine_containers_have_no_capabilities_and_no_privilege_gain(sec):
    """Every engine container (vLLM single, Ray head and worker) runs with cap_drop ALL and
    no-new-privileges, and still serves (test_deploy_served_with_every_secret_in_use): every
    process in it has no effective capability and NoNewPrivs set."""
    seen = []
    for h in sec.lab.hosts:
        for name, (cid, pid) in inner_containers(sec, h.name).items():
            if not pid:
                continue
            cfg = json.loads(sec.lab.sh(h.name, "docker inspect -f '{{json .HostConfig}}' %s" % name))
            assert cfg["CapDrop"] == ["ALL"] and not cfg.get("CapAdd"), (h.name, name, cfg["CapDrop"], cfg.get("CapAdd"))
            assert "no-new-privileges:true" in (cfg.get("SecurityOpt") or []), (h.name, name, cfg.get("SecurityOpt"))
            out = sec.lab.sh(h.name, "docker exec %s sh -c 'for s in /proc/[0-9]*/status; do "
                                     "grep -h \"^CapEff\\|^NoNewPrivs\" $s | tr \"\\n\" \" \"; echo; done'" % name)
            procs = [line.split() for line in out.splitlines() if line.strip()]
            assert len(procs) >= 2, (h.name, name, out)
            for p in procs:
                assert p[p.index("CapEff:") + 1] == "0000000000000000", (h.name, name, p)
                assert p[p.index("NoNewPrivs:") + 1] == "1", (h.name, name, p)
            seen.append((h.name, name, len(procs)))
    assert {n for _h, n, _c in seen} >= {"llmfleet-sec-r1-head", "llmfleet-sec-r1-worker-1", "llmfleet-sec-pub",
                                         "llmfleet-sec-local", "llmfleet-sec-sgl-head", "llmfleet-sec-sgl-worker-1"}, seen
    print("no capabilities, no-new-privileges: %s" % seen)
