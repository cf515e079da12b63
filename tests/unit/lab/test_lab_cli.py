"""The lab's refusals: one line on stderr, exit status 2, nothing created."""
from __future__ import annotations

import socket

import pytest

from tests.lab import __main__ as cli
from tests.lab import lab


@pytest.fixture(autouse=True)
def no_docker(monkeypatch):
    # Refusals must happen before the Docker engine is even looked at.
    def boom(*a, **k):
        raise AssertionError("Docker touched before the input was validated")
    monkeypatch.setattr(lab, "ensure_docker", boom)
    monkeypatch.setattr(lab, "load_state", lambda name: None)


def run_cli(capsys, *argv):
    rc = cli.main(["--name", "unit-test"] + list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("hosts", ["0", "-1"])
def test_too_few_hosts(capsys, hosts):
    rc, err = run_cli(capsys, "up", "--hosts", hosts)
    assert rc == 2
    assert err.count("\n") == 0
    assert "--hosts must be at least 1" in err


def test_too_many_hosts(capsys, monkeypatch):
    monkeypatch.setattr(lab, "max_hosts", lambda: 3)
    rc, err = run_cli(capsys, "up", "--hosts", "4")
    assert rc == 2
    assert "does not fit" in err and "room for 3" in err


def test_port_in_use(capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        rc, err = run_cli(capsys, "up", "--hosts", "1", "--ssh-port-base", str(port - 1))
    finally:
        s.close()
    assert rc == 2
    assert "port %d on 127.0.0.1 is already in use" % port in err


def test_unknown_fixture(capsys):
    rc, err = run_cli(capsys, "up", "--hosts", "1", "--gpus", "b300x72")
    assert rc == 2
    assert "GPU fixture 'b300x72' not found" in err


def test_missing_docker_that_cannot_be_installed(capsys, monkeypatch):
    monkeypatch.undo()  # the real ensure_docker this time, with no docker and no apt-get
    monkeypatch.setattr(lab, "load_state", lambda name: None)
    monkeypatch.setattr(lab, "docker_ok", lambda: False)
    monkeypatch.setattr(lab.shutil, "which", lambda name: None)
    rc, err = run_cli(capsys, "up", "--hosts", "1", "--ssh-port-base", "40000")
    assert rc == 2
    assert "no Docker engine and cannot install one" in err


def test_max_hosts_from_memory():
    assert 1 <= lab.max_hosts() <= lab.MAX_HOSTS


def test_fanout_streams_one_source_into_every_destination(tmp_path):
    # lab.load_image: one `docker save` streamed into `docker load` on each host, no file between
    src = tmp_path / "image.tar"
    src.write_bytes(bytes(range(256)) * 20000)  # 5 MB, several chunks
    outs = [tmp_path / ("host%d" % i) for i in range(3)]
    failed = lab.fanout(["cat", str(src)], [["sh", "-c", 'cat > "$0"', str(o)] for o in outs], chunk=1 << 16)
    assert failed == []
    assert all(o.read_bytes() == src.read_bytes() for o in outs)


def test_fanout_reports_a_failed_destination_and_source(tmp_path):
    src = tmp_path / "image.tar"
    src.write_bytes(b"x" * 300000)
    good = tmp_path / "good"
    failed = lab.fanout(["cat", str(src)], [["sh", "-c", "echo 'no space left' >&2; exit 1"],
                                            ["sh", "-c", 'cat > "$0"', str(good)]], chunk=4096)
    assert failed == [(0, "no space left")]
    assert good.read_bytes() == src.read_bytes()
    failed = lab.fanout(["sh", "-c", "echo 'No such image' >&2; exit 1"], [["sh", "-c", "cat >/dev/null"]])
    assert failed == [(None, "No such image")]


def _docker(monkeypatch, stopped, running, networks):
    """``docker ps`` / ``network ls`` answers for _clear_leftovers; returns the labs taken down."""
    def out(cmd):
        if cmd[:2] == ["docker", "network"]:
            return "\n".join(networks)
        return "\n".join(running if "-a" not in cmd[2] else stopped + running)
    downs = []
    monkeypatch.setattr(lab, "out", out)
    monkeypatch.setattr(lab, "down", downs.append)
    return downs


def test_leftovers_of_a_stopped_lab_of_that_name_are_removed_before_up(monkeypatch):
    downs = _docker(monkeypatch, stopped=["c1", "c2"], running=[], networks=["n1"])
    lab._clear_leftovers("default")
    assert downs == ["default"]


def test_nothing_left_nothing_removed(monkeypatch):
    downs = _docker(monkeypatch, stopped=[], running=[], networks=[])
    lab._clear_leftovers("default")
    assert downs == []


def test_a_running_lab_of_that_name_elsewhere_is_refused_naming_the_fix(monkeypatch):
    downs = _docker(monkeypatch, stopped=["c1"], running=["c2"], networks=["n1"])
    with pytest.raises(lab.LabError) as err:
        lab._clear_leftovers("default")
    assert "running from another checkout" in str(err.value)
    assert "python -m tests.lab --name default down" in str(err.value)
    assert downs == []
