#!/usr/bin/env bash
# The main job on the lab, from a fresh machine (README, first command):
#   set-up -> 3 lab hosts -> deploy QwQ-32B (single host) and DeepSeek-R1 (Ray head + worker,
#   TP 8 x PP 2, weights fetched from S3 on the head and copied to the worker) on the engine
#   simulator -> ready -> a short benchmark -> where the report is.
#
#   bash tests/lab/demo.sh            (LLMFLEET_DEMO_KEEP=0 to remove the lab at the end)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/run.sh setup
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
start=$(date +%s)

if ! python -m tests.lab status >/dev/null 2>&1; then
    python -m tests.lab up --hosts 3
fi
python -m tests.lab status

# Weights: the lab's engines are simulated, so the models are shaped like the real ones
# (config.json, index, every shard it lists) but tiny. DeepSeek-R1 goes through deploy.yml's
# weights step for real: a real S3 server (moto) on the lab network holds it, the Ray head
# fetches and verifies it, the worker copies it from the head over the private network.
# QwQ is pre-staged (a deployment without `weights`).
ansible-playbook -i inventories/lab tests/e2e/playbooks/fake-model.yml \
    -e fake_model_hosts=lab_single -e fake_model_dir=/srv/models/QwQ-32B -e fake_model_shards=14
mkdir -p build/lab/default
weights_vars=build/lab/default/weights-vars.json
python -m tests.lab.s3_weights --lab default --vars "$weights_vars" --prefix deepseek-ai/DeepSeek-R1/ \
    > build/lab/default/s3-weights.log 2>&1 &
s3_pid=$!
trap 'kill "$s3_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$weights_vars" ] && break; kill -0 "$s3_pid" || break; sleep 0.2; done
[ -s "$weights_vars" ] || { cat build/lab/default/s3-weights.log; exit 1; }
cat build/lab/default/s3-weights.log
peer_key=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["weights_peer_key"])' "$weights_vars")
ansible-playbook -i inventories/lab tests/e2e/playbooks/weights-peer-ssh.yml -e weights_peer_key="$peer_key"

# facts -> plan -> preflight -> weights (S3 -> head -> worker) -> serve -> ready
ansible-playbook -i inventories/lab playbooks/deploy.yml -e @"$weights_vars"

key_file=$(python - <<'PY'
import yaml
print(yaml.safe_load(open("inventories/lab/hosts.yml"))["all"]["vars"]["llmfleet_lab_key_file"])
PY
)
r1_url=$(python - <<'PY'
from tests.lab import lab
st = lab.load_state("default")
print("http://%s:8000" % st.hosts[0].private_ip)
PY
)
ansible-playbook -i inventories/lab playbooks/benchmark.yml \
    -e llmfleet_benchmark_base_url="$r1_url" -e llmfleet_benchmark_model=deepseek-ai/DeepSeek-R1 \
    -e llmfleet_benchmark_deployment=lab-r1 -e llmfleet_benchmark_api_key_file="$key_file" \
    -e llmfleet_benchmark_num_prompts=200 -e llmfleet_benchmark_request_rate=20 \
    -e llmfleet_benchmark_max_tokens=64 | tee build/lab/demo-benchmark.log | tail -n 25

report=$(ls -t results/*/*/*.md 2>/dev/null | head -n 1 || true)
echo
echo "lab demo done in $(( $(date +%s) - start )) s"
echo "endpoints: lab-r1 $r1_url (Ray head lab-h1 + worker lab-h2), lab-qwq http://$(python -c 'from tests.lab import lab; print(lab.load_state("default").hosts[2].private_ip)'):8000"
echo "API key file: $key_file"
echo "benchmark report: ${report:-not found (see build/lab/demo-benchmark.log)}"
if [ "${LLMFLEET_DEMO_KEEP:-1}" = "0" ]; then
    python -m tests.lab down
fi
