#!/usr/bin/env bash
# The main job on the lab, from a fresh machine (README, first command):
#   set-up -> 3 lab hosts -> deploy QwQ-32B (single host) and DeepSeek-R1 (Ray head + worker,
#   TP 8 x PP 2, weights fetched from S3 on the head and copied to the worker) on the engine
#   simulator -> ready -> a short benchmark -> where the report is.
#
#   bash tests/lab/demo.sh
#
# Knobs (CI's demo stage, `bash tests/run.sh demo`, sets all of them):
#   LLMFLEET_DEMO_KEEP=0        remove the lab at the end (also when a step fails)
#   LLMFLEET_DEMO_LAB=NAME      a lab of that name (own subnets 172.31.170-171.0/24, SSH ports 3521+)
#                               instead of the default lab (inventories/lab/hosts.yml)
#   LLMFLEET_DEMO_PROMPTS=N     benchmark prompts (default 200)
#   LLMFLEET_SETUP_DONE=1       skip `bash tests/run.sh setup` (run.sh did it)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LAB=${LLMFLEET_DEMO_LAB:-default}
PROMPTS=${LLMFLEET_DEMO_PROMPTS:-200}
VENV=${LLMFLEET_VENV:-$ROOT/.venv}
start=$(date +%s)
t_stage=$start
times=()
# stage NAME: the time since the previous stage mark goes to NAME (printed at the end).
stage() {
    local t
    t=$(date +%s)
    times+=("$(printf '%-10s %4d s' "$1" $(( t - t_stage )))")
    printf '\n== demo: %s done in %d s (%s)\n' "$1" $(( t - t_stage )) "$(date +%T)"
    t_stage=$t
}

# ---- set-up: packages, Docker, .venv, the collection link (tests/run.sh setup)
if [ "${LLMFLEET_SETUP_DONE:-0}" != 1 ]; then
    bash tests/run.sh setup
fi
export PATH="$VENV/bin:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" PYTHONUNBUFFERED=1
stage setup

# ---- the lab
lab_args=(--name "$LAB")
up_args=(--hosts 3)
if [ "$LAB" != default ]; then
    up_args+=(--subnet 172.31.170.0/24 --private-subnet 172.31.171.0/24 --ssh-port-base 3520)
fi
s3_pid=
cleanup() {
    [ -z "$s3_pid" ] || kill "$s3_pid" 2>/dev/null || true
    if [ "${LLMFLEET_DEMO_KEEP:-1}" = "0" ]; then
        echo "demo: removing lab $LAB"
        python -m tests.lab "${lab_args[@]}" down
    fi
}
trap cleanup EXIT
if ! python -m tests.lab "${lab_args[@]}" status >/dev/null 2>&1; then
    python -m tests.lab "${lab_args[@]}" up "${up_args[@]}"
fi
python -m tests.lab "${lab_args[@]}" status
inventory=$(python -c 'import sys; from tests.lab import lab; print(lab.inventory_path(sys.argv[1]))' "$LAB")
stage lab

# ---- weights: the lab's engines are simulated, so the models are shaped like the real ones
# (config.json, index, every shard it lists) but tiny. DeepSeek-R1 goes through deploy.yml's
# weights step for real: a real S3 server (moto) on the lab network holds it, the Ray head
# fetches and verifies it, the worker copies it from the head over the private network.
# QwQ is pre-staged (a deployment without `weights`).
ansible-playbook -i "$inventory" tests/e2e/playbooks/fake-model.yml \
    -e fake_model_hosts=lab_single -e fake_model_dir=/srv/models/QwQ-32B -e fake_model_shards=14
mkdir -p "build/lab/$LAB"
weights_vars=build/lab/$LAB/weights-vars.json
rm -f "$weights_vars"
python -m tests.lab.s3_weights --lab "$LAB" --vars "$weights_vars" --prefix deepseek-ai/DeepSeek-R1/ \
    > "build/lab/$LAB/s3-weights.log" 2>&1 &
s3_pid=$!
for _ in $(seq 100); do [ -s "$weights_vars" ] && break; kill -0 "$s3_pid" || break; sleep 0.2; done
[ -s "$weights_vars" ] || { cat "build/lab/$LAB/s3-weights.log"; exit 1; }
cat "build/lab/$LAB/s3-weights.log"
peer_key=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["weights_peer_key"])' "$weights_vars")
ansible-playbook -i "$inventory" tests/e2e/playbooks/weights-peer-ssh.yml -e weights_peer_key="$peer_key"
stage staging

# ---- deploy: facts -> plan -> preflight -> weights (S3 -> head -> worker) -> serve -> ready
ansible-playbook -i "$inventory" playbooks/deploy.yml -e @"$weights_vars"
stage deploy

# ---- benchmark
read -r key_file r1_url qwq_url < <(python - "$LAB" "$inventory" <<'PY'
import sys
import yaml
from tests.lab import lab
st = lab.load_state(sys.argv[1])
inv = yaml.safe_load(open(sys.argv[2]))
print(inv["all"]["vars"]["llmfleet_lab_key_file"],
      "http://%s:8000" % st.hosts[0].private_ip, "http://%s:8000" % st.hosts[2].private_ip)
PY
)
mkdir -p build/lab
touch build/lab/demo-benchmark.start
ansible-playbook -i "$inventory" playbooks/benchmark.yml \
    -e llmfleet_benchmark_base_url="$r1_url" -e llmfleet_benchmark_model=deepseek-ai/DeepSeek-R1 \
    -e llmfleet_benchmark_deployment=lab-r1 -e llmfleet_benchmark_api_key_file="$key_file" \
    -e llmfleet_benchmark_num_prompts="$PROMPTS" -e llmfleet_benchmark_request_rate=20 \
    -e llmfleet_benchmark_max_tokens=64 | tee build/lab/demo-benchmark.log | tail -n 25
stage benchmark

report=$(find results -name '*.md' -newer build/lab/demo-benchmark.start 2>/dev/null | head -n 1 || true)
[ -n "$report" ] || { echo "demo: the benchmark wrote no report under results/ (see build/lab/demo-benchmark.log)" >&2; exit 1; }
echo
echo "lab demo done in $(( $(date +%s) - start )) s"
printf '  %s\n' "${times[@]}"
echo "endpoints: lab-r1 $r1_url (Ray head lab-h1 + worker lab-h2), lab-qwq $qwq_url"
echo "API key file: $key_file"
echo "benchmark report: $report"
