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
# vLLM gets it as VLLM_API_KEY; SGLang through a private --config file. A key file that is
# named but missing, unreadable, empty or whitespace only stops the start: an empty key never
# means "no authentication".
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

# exec the engine; SGLang reads the key from a YAML --config file in a private directory.
exec_engine() {
    export_key
    case " $* " in
    *" sglang.launch_server "*)
        if [ -n "${VLLM_API_KEY:-}" ]; then
            umask 077
            dir=$(mktemp -d /tmp/llmfleet.XXXXXX)
            printf "api-key: '%s'\n" "$(printf '%s' "$VLLM_API_KEY" | sed "s/'/''/g")" > "$dir/sglang.yaml"
            unset VLLM_API_KEY
            exec "$@" --config "$dir/sglang.yaml"
        fi
        ;;
    esac
    exec "$@"
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
