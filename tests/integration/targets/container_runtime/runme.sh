#!/usr/bin/env bash
# Role-level idempotence: the second real run of the provision playbook must report changed=0.
# Usage: runme.sh INVENTORY (lab inventory with the group gpu_hosts)
set -euo pipefail
inv="${1:?inventory}"
cd "$(dirname "$0")/../../../.."
extra=(-e container_runtime_engine=distro -e container_runtime_service_manager=none
       -e container_runtime_nvidia_toolkit=false -e gpu_host_fabric_manager=false
       -e gpu_host_persistence_mode=false -e gpu_host_sysctl_apply=false)
ansible-playbook -i "$inv" playbooks/provision.yml "${extra[@]}"
ANSIBLE_STDOUT_CALLBACK=ansible.builtin.json ansible-playbook -i "$inv" playbooks/provision.yml "${extra[@]}" \
  | python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"]; bad={h:v["changed"] for h,v in s.items() if v["changed"] or v["failures"]}; print(s); sys.exit(1 if bad else 0)'
