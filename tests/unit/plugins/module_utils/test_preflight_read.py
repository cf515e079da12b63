"""Unit tests of module_utils/_preflight_read.py: preflight's host reads in one call, in the shapes
plugin_utils/_preflight.host_data_from_raw reads."""
import base64
import json

from ansible_collections.llmfleet.serving.plugins.module_utils import _preflight_read as pr
from ansible_collections.llmfleet.serving.plugins.plugin_utils import _preflight

DF = "Filesystem 1-blocks Used Available Capacity Mounted on\n/dev/vda 100000000000 40000000000 60000000000 40% /\n"
IMG = {"Id": "sha256:abc", "RepoTags": ["llmfleet-lab/engine-sim:latest"], "RepoDigests": []}


def fake_run(calls, ss_rc=0):
    def run(argv):
        calls.append(argv)
        if argv[:3] == ["docker", "image", "inspect"]:
            return (0, json.dumps([IMG]), "") if argv[3] == "llmfleet-lab/engine-sim:latest" else (
                1, "[]", "Error: No such image: %s" % argv[3])
        if argv[0] == "df":
            return 0, DF, ""
        if argv[0] == "ss":
            return (ss_rc, "LISTEN 0 4096 10.0.0.1:8000 0.0.0.0:*\n" if ss_rc == 0 else "", "ss: not found")
        if argv[:2] == ["docker", "ps"]:
            return 0, "lab-qwq\n", ""
        raise AssertionError(argv)
    return run


def test_read_all_feeds_host_data_from_raw(tmp_path):
    model = tmp_path / "models" / "QwQ"
    model.mkdir(parents=True)
    (model / ".llmfleet-state.json").write_text(json.dumps({"complete": True}))
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1234}}))
    missing = str(tmp_path / "models" / "absent" / "deeper")
    calls = []
    raw = pr.read_all(fake_run(calls), ["llmfleet-lab/engine-sim:latest", "vllm/vllm-openai:v0.32.0"],
                      [str(model), missing], control_epoch="100.5", clock=lambda: 101.25)
    assert raw["images"]["results"][0] == {"item": "llmfleet-lab/engine-sim:latest", "images": [IMG]}
    assert raw["images"]["results"][1] == {"item": "vllm/vllm-openai:v0.32.0", "images": []}
    assert raw["df"]["results"][1]["stdout"].startswith("checked=%s\n" % (tmp_path / "models"))
    assert ["df", "-PB1", str(tmp_path / "models")] in calls
    assert json.loads(base64.b64decode(raw["state"]["results"][0]["content"])) == {"complete": True}
    assert raw["state"]["results"][1]["failed"] is True
    assert raw["clock"] == {"rc": 0, "stdout": "100.5 101.250000000"}
    data = _preflight.host_data_from_raw(dict(raw, clock_after="100.75"))
    assert data["images"]["vllm/vllm-openai:v0.32.0"] is None
    assert data["images"]["llmfleet-lab/engine-sim:latest"] is not None
    assert data["disks"][str(model)]["checked"] == str(model) and data["disks"][str(model)]["df"]
    assert data["containers"] == ["lab-qwq"]
    assert data["clock"]["before"] == 100.5 and data["clock"]["after"] == 100.75
    assert data["listening"] is not None and data["errors"] == {}


def test_docker_failure_is_reported_per_image_and_ss_falls_back_to_proc():
    def run(argv):
        if argv[:3] == ["docker", "image", "inspect"]:
            return 1, "", "Cannot connect to the Docker daemon"
        if argv[0] == "ss":
            return 127, "", "not found"
        return 0, "", ""
    raw = pr.read_all(run, ["x:1"], [])
    assert raw["images"]["results"] == [{"item": "x:1", "failed": True, "msg": "Cannot connect to the Docker daemon"}]
    assert raw["listening"]["rc"] == 0 and "local_address" in raw["listening"]["stdout"]  # /proc/net/tcp header
    assert "clock" not in raw


def test_nearest_existing(tmp_path):
    assert pr.nearest_existing(str(tmp_path / "a" / "b")) == str(tmp_path)
    assert pr.nearest_existing(str(tmp_path)) == str(tmp_path)
