"""A real S3-compatible server (moto) on a lab's management network, holding a tiny model.

Used by the demo (tests/lab/demo.sh) and tests/e2e/test_deploy_weights.py so that deploy.yml's
weights step runs for real: the head of a multi-node deployment fetches from this server,
verifies and publishes, the worker copies from the head over the private network.

    python -m tests.lab.s3_weights --lab default --vars build/lab/default/weights-vars.json

serves until stopped (SIGTERM/SIGINT), after writing a 0600 vars file for ``-e @FILE``:
llmfleet_lab_weights (the deployment's ``weights``), the S3 credentials as the role variables
model_weights_s3_access_key / _secret_key, and the peer SSH key the worker uses
(model_weights_peer_ssh_key, installed by tests/e2e/playbooks/weights-peer-ssh.yml).
The model is shaped like the real one (config.json, safetensors index, every shard it lists) but
tiny, so the engine simulator's loader checks pass.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid

BUCKET = "models"
ACCESS_KEY = "lab-weights-access"
PEER_KEY_ON_HOSTS = "/root/.ssh/llmfleet_weights_peer"


def tiny_model(shards=8, architecture="DeepseekV3ForCausalLM"):
    """{file name: bytes}: config.json, model.safetensors.index.json and its shards (a few KiB)."""
    names = ["model-%05d-of-%05d.safetensors" % (i, shards) for i in range(1, shards + 1)]
    files = {n: (("lab-shard-%d " % i) * 64).encode() for i, n in enumerate(names, 1)}
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": sum(len(v) for v in files.values())},
         "weight_map": {"model.layers.%d.weight" % i: n for i, n in enumerate(names)}}, indent=2).encode()
    files["config.json"] = json.dumps({"architectures": [architecture], "model_type": "deepseek_v3",
                                       "llmfleet_lab_fake": True}).encode()
    files["tokenizer_config.json"] = b'{"bos_token": "<s>"}'
    return files


def gateway_of(subnet):
    """The address of this machine on a lab network (the Docker network's gateway, .1)."""
    return str(ipaddress.ip_network(subnet).network_address + 1)


class Server(object):
    """moto's ThreadedMotoServer bound on ``address`` with ``files`` under ``prefix``."""

    def __init__(self, address, prefix, files, secret=None):
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.prefix, self.files = prefix, files
        self.secret = secret or "lab-weights-secret-" + uuid.uuid4().hex
        self._server = ThreadedMotoServer(ip_address=address, port=0, verbose=False)
        self._server.start()
        self.endpoint = "http://%s:%d" % (address, self._server._server.server_port)  # pylint: disable=protected-access
        import boto3
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id=ACCESS_KEY, aws_secret_access_key=self.secret)
        client.create_bucket(Bucket=BUCKET)
        for name, data in files.items():
            client.put_object(Bucket=BUCKET, Key=prefix + name, Body=data)

    def weights(self):
        """The deployment's ``weights`` value for this server."""
        return {"source": "s3", "endpoint_url": self.endpoint, "region": "us-east-1", "addressing_style": "path",
                "bucket": BUCKET, "prefix": self.prefix}

    def variables(self, peer_key=PEER_KEY_ON_HOSTS):
        return {"llmfleet_lab_weights": self.weights(), "model_weights_s3_access_key": ACCESS_KEY,
                "model_weights_s3_secret_key": self.secret, "model_weights_peer_ssh_key": peer_key,
                "model_weights_free_space_margin": "1M", "model_weights_poll_interval": 1,
                "model_weights_progress_every": 5,
                # the lab's model is tiny, not the catalog's size: preflight's free-disk check
                # would ask for the real model's room before the first fetch
                "llmfleet_preflight_checks": ["gpu", "driver", "image", "interface", "ports", "clock"]}

    def stop(self):
        self._server.stop()


def write_private(path, text):
    """Write ``text`` to a new 0600 file (replacing an old one)."""
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def peer_key(directory):
    """An SSH key pair for the worker -> head copy (made once per lab)."""
    key = os.path.join(directory, "weights_peer_ed25519")
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmfleet-weights-peer", "-f", key],
                       check=True)
    return key


def main(argv=None):
    from tests.lab import lab
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--lab", default="default")
    ap.add_argument("--vars", required=True, help="0600 vars file to write (for ansible-playbook -e @FILE)")
    ap.add_argument("--prefix", default="deepseek-ai/DeepSeek-R1/")
    ap.add_argument("--shards", type=int, default=8)
    args = ap.parse_args(argv)
    st = lab.load_state(args.lab)
    server = Server(gateway_of(st.mgmt_subnet), args.prefix, tiny_model(args.shards))
    variables = server.variables()
    variables["weights_peer_key"] = peer_key(os.path.dirname(os.path.abspath(args.vars)))
    write_private(args.vars, json.dumps(variables))
    print("s3_weights: %d files under s3://%s/%s at %s" % (len(server.files), BUCKET, args.prefix, server.endpoint),
          flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
