#!/usr/bin/env bash
# Role-level idempotence: the second real run of the provision playbook must report changed=0.
# Usage: runme.sh INVENTORY (lab inventory with the group gpu_hosts, lab host built --no-docker);
# the lab settings come from inventories/lab-provision/group_vars/gpu_hosts.yml.
# The same passes run in tests/e2e/test_provision.py.
set -euo pipefail
inv="${1:?inventory}"
cd "$(dirname "$0")/../../../.."
ansible-playbook -i "$inv" -i inventories/lab-provision playbooks/provision.yml
ANSIBLE_STDOUT_CALLBACK=ansible.builtin.json ansible-playbook -i "$inv" -i inventories/lab-provision playbooks/provision.yml \
  | python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"]; bad={h:v["changed"] for h,v in s.items() if v["changed"] or v["failures"]}; print(s); sys.exit(1 if bad else 0)'
