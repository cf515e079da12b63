"""roles/gateway/files/llmfleet-haproxy-admin: no map entry or name can inject a runtime API
command (HAProxy splits a command line at ';' and words at spaces)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import socket
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HELPER = os.path.join(REPO, "roles", "gateway", "files", "llmfleet-haproxy-admin")


def load():
    loader = importlib.machinery.SourceFileLoader("llmfleet_haproxy_admin", HELPER)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


class FakeHAProxy(object):
    """A unix socket that records each command line and answers like HAProxy's runtime API."""

    def __init__(self, path):
        self.path, self.lines = path, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, dummy = self.sock.accept()
            except OSError:
                return
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            line = data.decode().rstrip("\n")
            self.lines.append(line)
            conn.sendall(b"New version created: 7\n" if line.startswith("prepare map") else b"")
            conn.close()


@pytest.fixture
def haproxy(tmp_path):
    path = os.path.join(str(tmp_path), "admin.sock")
    fake = FakeHAProxy(path)
    yield fake
    fake.sock.close()


def run(mod, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        mod.main(argv)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("entry", [
    "key abc;shutdown sessions server be/s1",     # a second command after ';'
    "key abc def",                               # three words: the value would be split
    "key a\\;b",                                  # an escaped ';'
    "key 'quoted'",
    "key \x01ctl",
    "key caf\xe9",
    "lonely",
])
def test_a_map_entry_that_could_inject_a_command_is_refused_before_anything_is_sent(
        tmp_path, haproxy, capsys, entry):
    mod = load()
    map_file = os.path.join(str(tmp_path), "backend_key.map")
    with open(map_file, "w", encoding="latin-1") as f:
        f.write("# comment\n%s\n" % entry)
    code, err = run(mod, ["x", haproxy.path, "replace-map", map_file], capsys)
    assert code == 1
    assert "line 2" in err and "';'" in err
    assert entry.split(None, 1)[-1] not in err  # the key is never echoed
    assert haproxy.lines == []


def test_a_clean_map_is_sent_as_one_add_per_entry(tmp_path, haproxy, capsys):
    mod = load()
    map_file = os.path.join(str(tmp_path), "client_keys.map")
    with open(map_file, "w") as f:
        f.write("# keys\nABC123 team-a\nDEF456 team.b@x\n")
    mod.replace_map(haproxy.path, map_file)
    assert haproxy.lines == ["prepare map %s" % map_file,
                             "add map @7 %s ABC123 team-a" % map_file,
                             "add map @7 %s DEF456 team.b@x" % map_file,
                             "commit map @7 %s" % map_file]
    assert capsys.readouterr().out.startswith(map_file + ": 2 entries")


@pytest.mark.parametrize("argv", [
    ["set-state", "be;shutdown", "s1", "drain"],
    ["set-state", "be", "s1 x", "drain"],
    ["set-state", "be", "s1", "ready;disable server be/s2"],
    ["state", "be", "s1;show sess"],
    ["wait-idle", "be\n", "s1", "5"],
])
def test_backend_server_and_state_are_single_safe_words(haproxy, capsys, argv):
    mod = load()
    code, dummy = run(mod, ["x", haproxy.path] + argv, capsys)
    assert code == 1
    assert haproxy.lines == []


def test_safe_word():
    mod = load()
    assert mod.safe_word("sk-AbC_123.x@y:z/+=~!")
    for bad in ("", "a b", "a;b", "a\\b", "a'b", 'a"b', "a\tb", "a\nb", "\x7f", "é"):
        assert not mod.safe_word(bad), bad
