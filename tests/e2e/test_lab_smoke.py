"""Issue 2's end-to-end proof: two lab hosts reached over SSH, the engine image started on each
host's own Docker engine, a streamed completion through the host's published address."""
from __future__ import annotations

import json
import os
import urllib.request

from .conftest import REPO


def stream_completion(base_url, model, api_key=None, max_tokens=8):
    body = json.dumps({"model": model, "prompt": "hello fleet", "max_tokens": max_tokens, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base_url + "/v1/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    if api_key:
        req.add_header("Authorization", "Bearer " + api_key)
    chunks, done = [], False
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers.get("Content-Type", "").startswith("text/event-stream")
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            chunks.append(json.loads(data))
    return chunks, done


def test_playbook_reaches_both_hosts_and_each_serves_a_stream(lab_hosts):
    rc, out, recap = lab_hosts.playbook(os.path.join(REPO, "tests", "e2e", "playbooks", "smoke.yml"))
    assert set(recap) == {h.name for h in lab_hosts.hosts}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values())
    for h in lab_hosts.hosts:
        # The engine runs in the lab host's own Docker engine, not the machine's.
        names = lab_hosts.sh(h.name, "docker ps --format '{{.Names}}'").split()
        assert "llmfleet-smoke" in names
        chunks, done = stream_completion("http://%s:8000" % h.mgmt_ip, "smoke")
        text = "".join(c["choices"][0].get("text", "") for c in chunks if c.get("choices"))
        usage = [c["usage"] for c in chunks if c.get("usage") and not c.get("choices")]
        assert done and text
        assert usage and usage[-1]["completion_tokens"] == 8
    lab_hosts.playbook(os.path.join(REPO, "tests", "e2e", "playbooks", "smoke.yml"), extra_vars={"smoke_state": "absent"})
    for h in lab_hosts.hosts:
        assert "llmfleet-smoke" not in lab_hosts.sh(h.name, "docker ps -a --format '{{.Names}}'").split()
