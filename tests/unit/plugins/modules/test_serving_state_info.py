"""Unit tests of the serving_state_info module (thin: module_utils/_state.py is tested beside it)."""
import hashlib
import json
import os
import sys

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

sys.path.insert(0, os.path.dirname(__file__))
from module_harness import ExitJson, FailJson, patch_exits  # noqa: E402

from ansible_collections.llmfleet.serving.plugins.modules import serving_state_info  # noqa: E402


class Docker(object):
    """`docker inspect` knows the containers given as (name, hash); `docker exec` prints 2 Ray nodes."""

    def __init__(self, containers):
        self.containers = dict(containers)
        self.inspect_rc = self.inspect_err = None

    def __call__(self, argv):
        if argv[1] == "exec":
            return 0, "2\n", ""
        names = argv[4:]
        found = [{"Name": "/" + n, "Config": {"Labels": {"llmfleet.config-hash": self.containers[n]}},
                  "State": {"Running": True, "Status": "running"}} for n in names if n in self.containers]
        missing = [n for n in names if n not in self.containers]
        if self.inspect_rc is not None:
            return self.inspect_rc, "", self.inspect_err
        return (1 if missing else 0), json.dumps(found), "".join("Error: No such container: %s\n" % n for n in missing)


@pytest.fixture
def run_module(monkeypatch, tmp_path):
    patch_exits(monkeypatch)
    docker = Docker([("head", "h1")])
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, argv, **kw: docker(argv))

    def run(args, diff=False):
        args = dict(args, _ansible_remote_tmp=str(tmp_path), _ansible_keep_remote_files=False, _ansible_diff=diff)
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
        serving_state_info.main()

    run.docker = docker
    return run


def test_module_reports_in_sync_and_never_changes(run_module, tmp_path):
    f = tmp_path / "entrypoint.sh"
    f.write_text("#!/bin/sh\n")
    with pytest.raises(ExitJson) as e:
        run_module({"containers": [{"name": "head", "config_hash": "h1", "ray_nodes": 2}],
                    "files": [{"path": str(f), "sha256": hashlib.sha256(b"#!/bin/sh\n").hexdigest()}]})
    res = e.value.args[0]
    assert res["changed"] is False and res["in_sync"] is True and "diff" not in res
    assert res["ray"]["head"]["nodes"] == 2


def test_module_diff_and_docker_failure(run_module):
    with pytest.raises(ExitJson) as e:
        run_module({"containers": [{"name": "absent-one", "config_hash": "h"}]}, diff=True)
    res = e.value.args[0]
    assert res["in_sync"] is False and res["diff"]["after"] == "absent-one: running, config hash h\n"
    run_module.docker.inspect_rc, run_module.docker.inspect_err = 1, "permission denied"
    with pytest.raises(FailJson) as e:
        run_module({"containers": [{"name": "x", "config_hash": "h"}]})
    assert "permission denied" in e.value.args[0]["msg"] and "Docker engine" in e.value.args[0]["msg"]
