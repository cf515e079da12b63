#!/usr/bin/env bash
# GPU host proofs (issues 17 and 18, one-GPU part), in one go on any host with an NVIDIA GPU,
# PyTorch and transformers and no containers:
#   bash tests/gpu/run_all.sh [OUT_DIR]          (default build/gpu-proof; $OUT when set)
# Missing Python packages (ansible-core, transformers' serving extras) are installed from wheels in
# .whl/ (or the folder $WHEELS) when it exists (see tests/gpu/README.md). Steps:
#   1. capture_smi.sh: raw nvidia-smi outputs (fixture layout)     -> OUT/smi/
#   2. torch_facts.py: torch.cuda + NVML facts                      -> OUT/results/torch_facts.json
#   3. proof.yml --tags facts,fabric: gpu_facts (XML, CSV fallback), fabric_check x5 (1 GPU,
#      thresholds, NCCL_P2P_DISABLE, +NCCL_SHM_DISABLE, gpus: 2 on a 1-GPU host)
#   4. compare_facts.py                                              -> OUT/results/facts_compare.md
#   5. make_tiny_model.py + tf_serve_timed.py (transformers serve --continuous-batching on the GPU),
#      proof.yml --tags serve: llm_ready, llm_benchmark sweep      -> OUT/results/bench/
#   6. compare_timing.py                                             -> OUT/results/timing_compare.md
#   7. sizing_probe.py (1B and 8B Llama shapes, bf16)               -> OUT/results/sizing.json
# STEPS="facts fabric sizing serve" (the default) picks steps. Everything is packed into
# OUT/gpu-proof.tar.gz as well. Steps go on after a failure; the exit
# status is the number of failed steps.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUTDIR=${1:-${OUT:-$REPO/build/gpu-proof}}
RES=$OUTDIR/results
WORK=${GPU_PROOF_WORK:-/tmp/llmfleet-gpu-proof}
PY=${PYTHON:-python3}
SHAPES=${SIZING_SHAPES:-1b 8b}
mkdir -p "$RES/bench" "$OUTDIR/smi" "$WORK"
LOG=$OUTDIR/run_all.log
exec > >(tee -a "$LOG") 2>&1
fails=0
STEPS=" ${STEPS:-facts fabric sizing serve} "
want() { case "$STEPS" in *" $1 "*) return 0 ;; esac; return 1; }
step() { echo "=== $(date +%T) $*"; }
fail() { echo "!!! step failed: $*"; fails=$((fails + 1)); }
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export LC_ALL=${LC_ALL:-C.UTF-8} LANG=${LANG:-C.UTF-8}  # ansible-core wants a UTF-8 locale

for w in "$REPO/.whl" ${WHEELS:+"$WHEELS"}; do
  if ls "$w"/*.whl >/dev/null 2>&1; then
    step "install wheels from $w"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$w"/*.whl \
      || fail "wheels"
    export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH} PATH=$WORK/site/bin:$PATH
  fi
done
# the collection as Ansible finds it: <path>/ansible_collections/llmfleet/serving -> this checkout
mkdir -p "$REPO/build/gpu-collections/ansible_collections/llmfleet"
ln -sfn "$REPO" "$REPO/build/gpu-collections/ansible_collections/llmfleet/serving"
export ANSIBLE_COLLECTIONS_PATH=$REPO/build/gpu-collections ANSIBLE_CONFIG=$REPO/ansible.cfg
export ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0
ANS=("$PY" -m ansible playbook -i localhost, -c local "$REPO/tests/gpu/proof.yml"
     -e "ansible_python_interpreter=$(command -v $PY)" -e "results=$RES")

step "versions"
{ $PY -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)'
  $PY -m ansible adhoc --version; } || fail "versions"

if want facts; then
step "1. nvidia-smi capture"
bash "$REPO/tests/gpu/capture_smi.sh" "$OUTDIR/smi" || fail "capture_smi"
step "2. torch / NVML facts"
$PY "$REPO/tests/gpu/torch_facts.py" "$RES/torch_facts.json" || fail "torch_facts"
fi

# nvidia-smi whose XML query fails: gpu_facts must fall back to the CSV query
cat > "$WORK/nvidia-smi-noxml" <<'SH'
#!/bin/sh
for a in "$@"; do [ "$a" = "-x" ] && { echo "Unable to determine the device handle (llmfleet test: -q -x disabled)" >&2; exit 4; }; done
exec nvidia-smi "$@"
SH
chmod +x "$WORK/nvidia-smi-noxml"
tags=$(for t in facts fabric; do want $t && printf '%s,' $t; done)
if [ -n "$tags" ]; then
step "3. gpu_facts + fabric_check through ansible-playbook (${tags%,})"
"${ANS[@]}" --tags "${tags%,}" -e "smi_noxml=$WORK/nvidia-smi-noxml" || fail "proof.yml ${tags%,}"
fi
if want facts; then
step "4. compare facts"
$PY "$REPO/tests/gpu/compare_facts.py" "$RES" "$OUTDIR/smi" || fail "compare_facts (mismatch)"
fi


if want serve; then
step "5. transformers serve on the GPU + llm_ready + llm_benchmark"
HF=$WORK/hf
SNAP=$HF/hub/models--llmfleet--tiny/snapshots/0000000000000000000000000000000000000000
if [ ! -f "$SNAP/config.json" ]; then
  $PY "$REPO/tests/lab/make_tiny_model.py" "$SNAP" || fail "make_tiny_model"
  mkdir -p "$HF/hub/models--llmfleet--tiny/refs"; printf 0000000000000000000000000000000000000000 > "$HF/hub/models--llmfleet--tiny/refs/main"
fi
PORT=${SERVE_PORT:-18431}
rm -f "$RES/server-timing.jsonl"
HF_HOME=$HF HF_HUB_OFFLINE=1 LLMFLEET_SERVER_TIMING=$RES/server-timing.jsonl \
  $PY "$REPO/tests/gpu/tf_serve_timed.py" --host 127.0.0.1 --port $PORT --device ${SERVE_DEVICE:-cuda} \
  --continuous-batching --cb-num-blocks 512 --cb-block-size 32 --log-level info llmfleet/tiny \
  > "$RES/server.log" 2>&1 &
SERVER=$!
# server RSS (KiB) and GPU memory used (MiB) every 2 s while it runs
( while kill -0 $SERVER 2>/dev/null; do
    echo "$(date +%s) $(ps -o rss= -p $SERVER | tr -d ' ') $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n 1)"
    sleep 2
  done > "$RES/server-mem.txt" ) &
t0=$(date +%s)
# llm_ready does the waiting; if the server process dies meanwhile, stop the play instead of
# letting llm_ready wait out its timeout.
"${ANS[@]}" --tags serve -e "base_url=http://127.0.0.1:$PORT" -e model=llmfleet/tiny \
  ${BENCH_RATES:+-e "{\"bench_rates\": $BENCH_RATES}"} ${BENCH_PROMPTS:+-e bench_prompts=$BENCH_PROMPTS} &
PLAY=$!
while kill -0 $PLAY 2>/dev/null; do
  if ! kill -0 $SERVER 2>/dev/null; then
    echo "transformers serve exited early:"; tail -30 "$RES/server.log"; kill $PLAY; break
  fi
  sleep 2
done
wait $PLAY || fail "proof.yml serve"
echo "serve steps took $(( $(date +%s) - t0 )) s"
kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null
step "6. client vs server timing"
$PY "$REPO/tests/gpu/compare_timing.py" "$RES/bench" "$RES/server-timing.jsonl" "$RES/timing_compare" \
  || fail "compare_timing"
fi

if want sizing; then
step "7. planner weights vs GPU memory ($SHAPES)"
$PY "$REPO/tests/gpu/sizing_probe.py" "$WORK" "$RES/sizing.json" $SHAPES || fail "sizing_probe"
fi

step "pack ($fails failed steps)"
tar -C "$OUTDIR" -czf "$WORK/gpu-proof.tar.gz" results smi run_all.log && mv "$WORK/gpu-proof.tar.gz" "$OUTDIR/"
exit $fails
