"""entrypoint.sh ray-head: vLLM's Ray workers do not get the API key (nor the head's interface
settings): they are listed in $VLLM_CONFIG_ROOT/ray_non_carry_over_env_vars.json, the file vLLM
reads to leave variables out of what it copies to its Ray workers."""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ENTRYPOINT = os.path.join(REPO, "roles", "inference_server", "files", "entrypoint.sh")


def run_head(tmp_path, env=None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # python3: the real one, except for the Ray wait (it imports ray): that one passes at once
    shim = bin_dir / "python3"
    shim.write_text("#!/bin/sh\nif [ \"$1\" = - ] && [ $# -eq 4 ]; then cat >/dev/null; exit 0; fi\n"
                    "exec %s \"$@\"\n" % sys.executable)
    shim.chmod(0o755)
    e = dict(PATH="%s:/usr/bin:/bin" % bin_dir, HOME=str(tmp_path / "home"))
    e.update(env or {})
    return subprocess.run(["sh", ENTRYPOINT, "ray-head", "16", "2", "5", "1", "true", "env"], env=e,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_key_and_interfaces_stay_on_the_head(tmp_path):
    key = tmp_path / "api_key"
    key.write_text("sk-head-only-0123456789abcdef")
    proc = run_head(tmp_path, {"LLMFLEET_API_KEY_FILE": str(key)})
    assert proc.returncode == 0, proc.stderr
    assert "VLLM_API_KEY=sk-head-only-0123456789abcdef" in proc.stdout  # the engine on the head has it
    path = tmp_path / "home" / ".config" / "vllm" / "ray_non_carry_over_env_vars.json"
    names = json.loads(path.read_text())
    assert {"VLLM_API_KEY", "LLMFLEET_API_KEY_FILE", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME",
            "NCCL_IB_HCA"} <= set(names)


def test_a_users_list_is_kept_and_vllm_config_root_is_honoured(tmp_path):
    root = tmp_path / "vcfg"
    root.mkdir()
    (root / "ray_non_carry_over_env_vars.json").write_text('["MY_VAR"]')
    proc = run_head(tmp_path, {"VLLM_CONFIG_ROOT": str(root)})
    assert proc.returncode == 0, proc.stderr
    names = json.loads((root / "ray_non_carry_over_env_vars.json").read_text())
    assert "MY_VAR" in names and "VLLM_API_KEY" in names


def test_xdg_config_home_is_where_vllm_looks_without_vllm_config_root(tmp_path):
    """vllm/envs.py: VLLM_CONFIG_ROOT defaults to $XDG_CONFIG_HOME/vllm when that is set."""
    xdg = tmp_path / "xdg"
    proc = run_head(tmp_path, {"XDG_CONFIG_HOME": str(xdg)})
    assert proc.returncode == 0, proc.stderr
    names = json.loads((xdg / "vllm" / "ray_non_carry_over_env_vars.json").read_text())
    assert "VLLM_API_KEY" in names
