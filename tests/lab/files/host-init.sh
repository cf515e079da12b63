#!/bin/sh
# PID 1 of a lab host (run under docker's --init): sshd, and the host's own Docker engine
# when it is installed. Stays in the foreground; a `docker restart` of the lab host runs it again.
set -u
mkdir -p /run/sshd /var/log
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null 2>&1
/usr/sbin/sshd -E /var/log/sshd.log
if [ -x /usr/sbin/dockerd ] && [ ! -f /etc/llmfleet-lab/no-dockerd ]; then
    # The lab host's engine keeps its cgroups under a parent named after the host, so that
    # several lab hosts, labs, and the machine's own engine never share cgroup paths.
    /usr/sbin/dockerd --cgroup-parent "/llmfleet-lab-${LLMFLEET_LAB_NAME:-default}-$(hostname)" \
        >/var/log/dockerd.log 2>&1 &
fi
# Reap and wait forever; SIGTERM (docker stop) ends the container.
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
