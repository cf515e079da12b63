#!/usr/bin/env bash
# Raw nvidia-smi outputs of this host, in the fixture layout of tests/fixtures/gpu/ (the files
# tests/lab/fake_nvidia_smi.py answers from), plus the exact CSV query gpu_facts falls back to.
#   bash tests/gpu/capture_smi.sh OUT_DIR
set -u
out=${1:?usage: capture_smi.sh OUT_DIR}
mkdir -p "$out"
smi=${NVIDIA_SMI:-nvidia-smi}
README_FIELDS=index,uuid,name,pci.bus_id,driver_version,memory.total,memory.used,memory.free,utilization.gpu,temperature.gpu,power.draw,power.limit,persistence_mode,compute_mode,ecc.mode.current,clocks.sm,clocks.max.sm,mig.mode.current
# plugins/module_utils/_nvidia_smi.py CSV_QUERY_FIELDS (the fallback when -q -x fails)
MODULE_FIELDS=index,uuid,name,pci.bus_id,driver_version,memory.total,memory.used,memory.free,persistence_mode,ecc.mode.current,mig.mode.current
"$smi" > "$out/nvidia-smi.txt" 2>&1
"$smi" -q -x > "$out/nvidia-smi-q.xml" 2>"$out/nvidia-smi-q.err"
"$smi" --query-gpu=$README_FIELDS --format=csv,noheader,nounits > "$out/query-gpu.csv" 2>&1
"$smi" --query-gpu=$MODULE_FIELDS --format=csv,noheader,nounits > "$out/query-gpu-module.csv" 2>&1
"$smi" -q > "$out/nvidia-smi-q.txt" 2>&1
[ -s "$out/nvidia-smi-q.err" ] || rm -f "$out/nvidia-smi-q.err"
{
  echo "## topo -m"; "$smi" topo -m 2>&1
  echo "## nvlink -s"; "$smi" nvlink -s 2>&1
  echo "## nvlink -c"; "$smi" nvlink -c 2>&1
  echo "## query-compute-apps"; "$smi" --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv 2>&1
  echo "## -L"; "$smi" -L 2>&1
  echo "## version"; "$smi" --version 2>&1
} > "$out/topo.txt"
{
  echo "## uname"; uname -a
  echo "## os-release"; cat /etc/os-release 2>/dev/null
  echo "## which"
  for b in nvidia-smi docker podman nvidia-ctk ip ibv_devinfo lspci dcgmi nv-fabricmanager python3; do
    printf '%s: %s\n' "$b" "$(command -v $b || echo none)"
  done
  echo "## /dev"; ls /dev | grep -E 'nvidia|infiniband' 2>/dev/null
  echo "## /sys/class/infiniband"; ls /sys/class/infiniband 2>&1
  echo "## NCCL / multicast environment"; env | grep -E '^(NCCL|TORCH_SYMM|NVSHMEM)_' | sort
  echo "## nproc"; nproc
  echo "## mem"; free -g
} > "$out/host.txt" 2>&1
echo "captured nvidia-smi outputs in $out: $(ls "$out" | tr '\n' ' ')"
