#!/bin/sh
# llmfleet.serving engine entrypoint, mounted read-only at /run/llmfleet/entrypoint.sh.
# The plan (plugins/plugin_utils/_container.py) gives docker_container the two lists whole:
#
#   entrypoint.sh serve                                     ENGINE ARGV...
#   entrypoint.sh ray-worker                                RAY START ARGV...
#   entrypoint.sh ray-head GPUS NODES TIMEOUT_S N RAY-START-ARGV(N args) ENGINE ARGV...
#
# Mode arguments are read by position (ray-head: the N arguments after N are `ray start`); the
# rest is exec'd as given. Nothing is searched for or re-split.
#
# The API key is read from the 0600 file named by LLMFLEET_API_KEY_FILE just before `exec`,
# so it is neither in argv (ps) nor in the container's configuration (docker inspect):
# vLLM gets it as VLLM_API_KEY; SGLang in its own process only (SGLANG_LAUNCHER below), never
# in a file, its argv or its environment. A key file that is named but missing, unreadable,
# empty or whitespace only stops the start: an empty key never means "no authentication".
set -eu

log() { echo "llmfleet-entrypoint: $*" >&2; }

export_key() {
    key_file=${LLMFLEET_API_KEY_FILE:-}
    [ -n "$key_file" ] || return 0
    if [ ! -r "$key_file" ]; then
        log "the API key file $key_file cannot be read: refusing to start without authentication"
        exit 78
    fi
    VLLM_API_KEY=$(cat "$key_file")
    case "$VLLM_API_KEY" in
    *[![:space:]]*) ;;
    *)
        log "the API key file $key_file is empty or whitespace only: refusing to start without authentication"
        exit 78
        ;;
    esac
    export VLLM_API_KEY
}

# SGLang (0.5.x) has no way to take its key but --api-key, directly or through a --config YAML
# file that it merges into its argument list, and it logs its arguments at start, the key in
# clear: `server_args={..., 'api_key': '...'}` (sglang/srt/entrypoints/engine.py, INFO), so the
# key would be in `docker logs` whatever the way in. So SGLang runs under this launcher, in its
# own process: it reads the 0600 key file, makes every log record and everything written to
# stdout/stderr of that process show `***` for the key (SGLang logs server_args from this
# process only; its scheduler processes never log it), adds `--api-key KEY` to sys.argv in
# memory (/proc/PID/cmdline keeps the exec'd argv) and runs sglang.launch_server as
# `python3 -m` would. No file holds the key but the mounted 0600 one: a rotation leaves no
# old key behind in the container.
SGLANG_LAUNCHER='
import logging, os, runpy, sys
with open(os.environ["LLMFLEET_API_KEY_FILE"]) as f:
    key = f.read().rstrip("\n")
forms = sorted({key, repr(key)[1:-1], __import__("json").dumps(key)[1:-1]}, key=len, reverse=True)
def redact(text):
    for form in forms:
        text = text.replace(form, "***")
    return text
make_record = logging.getLogRecordFactory()
def record(*args, **kwargs):
    r = make_record(*args, **kwargs)
    try:
        msg = r.getMessage()
    except Exception:
        return r
    if redact(msg) != msg:
        r.msg, r.args = redact(msg), None
    return r
logging.setLogRecordFactory(record)
class Redacted(object):
    def __init__(self, stream):
        self._stream = stream
    def write(self, text):
        return self._stream.write(redact(text) if isinstance(text, str) else text)
    def __getattr__(self, name):
        return getattr(self._stream, name)
sys.stdout, sys.stderr = Redacted(sys.stdout), Redacted(sys.stderr)
sys.argv = [sys.argv[0]] + sys.argv[1:] + ["--api-key", key]
del key
runpy.run_module("sglang.launch_server", run_name="__main__", alter_sys=True)
'

# exec the engine (SGLang with a key: through SGLANG_LAUNCHER, never with the key in its environment)
exec_engine() {
    export_key
    case " $* " in
    *" sglang.launch_server "*)
        if [ -n "${VLLM_API_KEY:-}" ]; then
            unset VLLM_API_KEY
            if [ $# -lt 3 ] || [ "$2" != -m ] || [ "$3" != sglang.launch_server ]; then
                log "SGLang with an API key runs as PYTHON -m sglang.launch_server ARGS only: refusing to start"
                exit 78
            fi
            py=$1
            shift 3
            exec "$py" -c "$SGLANG_LAUNCHER" "$@"
        fi
        ;;
    esac
    exec "$@"
}

# vLLM copies the driver's environment (VLLM_* in 0.x, everything in newer releases) into its
# Ray workers on every host, unless listed in $VLLM_CONFIG_ROOT/ray_non_carry_over_env_vars.json:
# keep the API key on the head, and each host's own interface settings on its host.
keep_on_head() {
    # where vLLM looks (vllm/envs.py): $VLLM_CONFIG_ROOT, else $XDG_CONFIG_HOME/vllm, else ~/.config/vllm
    python3 - "${VLLM_CONFIG_ROOT:-${XDG_CONFIG_HOME:-${HOME:-/root}/.config}/vllm}" <<'PY'
import json, os, sys
keep = ["VLLM_API_KEY", "LLMFLEET_API_KEY_FILE", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_IB_HCA"]
os.makedirs(sys.argv[1], exist_ok=True)
path = os.path.join(sys.argv[1], "ray_non_carry_over_env_vars.json")
try:
    with open(path) as f:
        have = json.load(f)
except (OSError, ValueError):
    have = []
names = sorted(set(have if isinstance(have, list) else []) | set(keep))
with open(path + ".tmp", "w") as f:
    json.dump(names, f)
os.replace(path + ".tmp", path)
PY
}

wait_for_address() {
    # ray-worker: wait until the head's GCS port answers (the head may still be starting).
    python3 - "$@" <<'PY'
import socket, sys, time
addr = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--address=")), None)
if not addr:
    sys.exit(0)
host, port = addr.rsplit(":", 1)
deadline = time.time() + float(__import__("os").environ.get("LLMFLEET_RAY_JOIN_TIMEOUT", "300"))
while time.time() < deadline:
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        sys.exit(0)
    except OSError:
        time.sleep(1)
print("llmfleet-entrypoint: Ray head %s did not answer" % addr, file=sys.stderr)
sys.exit(1)
PY
}

wait_for_gpus() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys, time
import ray
gpus, nodes, timeout = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ray.init(address="auto", logging_level="ERROR")
deadline = time.time() + timeout
last = None
while True:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    have_gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in alive)
    state = (len(alive), have_gpus)
    if state != last:
        print("llmfleet-entrypoint: Ray has %d/%d nodes, %g/%g GPUs" % (len(alive), nodes, have_gpus, gpus),
              file=sys.stderr, flush=True)
        last = state
    if len(alive) >= nodes and have_gpus >= gpus:
        break
    if time.time() > deadline:
        print("llmfleet-entrypoint: timed out after %gs waiting for Ray: %d/%d nodes, %g/%g GPUs"
              % (timeout, len(alive), nodes, have_gpus, gpus), file=sys.stderr)
        sys.exit(1)
    time.sleep(1)
ray.shutdown()
PY
}

mode=${1:-}
[ $# -gt 0 ] && shift
case "$mode" in
serve)
    exec_engine "$@"
    ;;
ray-head)
    gpus=$1 nodes=$2 timeout=$3 n=$4
    shift 4
    log "starting Ray head"
    keep_on_head
    # the first n arguments are `ray start ...`: run them with the positional parameters as they are
    # (a subshell keeps this shell's "$@"), then drop them
    (
        i=0
        for a in "$@"; do
            shift
            [ "$i" -lt "$n" ] && set -- "$@" "$a"
            i=$((i + 1))
        done
        exec "$@"
    )
    shift "$n"
    wait_for_gpus "$gpus" "$nodes" "$timeout"
    exec_engine "$@"
    ;;
ray-worker)
    wait_for_address "$@"
    exec "$@"
    ;;
*)
    log "usage: entrypoint.sh serve|ray-head|ray-worker ..."
    exit 64
    ;;
esac
