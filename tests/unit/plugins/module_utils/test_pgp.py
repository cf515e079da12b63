# -*- coding: utf-8 -*-
"""_pgp: fingerprints computed without gpg equal gpg's own, for armored and binary keys."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.llmfleet.serving.plugins.module_utils import _pgp

pytestmark = pytest.mark.skipif(not shutil.which("gpg"), reason="gpg makes the reference keys")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two real keys made by gpg (ed25519 and rsa2048), exported armored and binary, with gpg's fingerprints."""
    home = str(tmp_path_factory.mktemp("gnupg"))
    os.chmod(home, 0o700)
    env = dict(os.environ, GNUPGHOME=home)
    out = {}
    for uid, algo in (("a@example.org", "ed25519"), ("b@example.org", "rsa2048")):
        subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                        uid, algo, "sign", "never"], env=env, check=True, capture_output=True)
        cols = subprocess.run(["gpg", "--with-colons", "--fingerprint", uid], env=env, check=True,
                              capture_output=True, text=True).stdout
        fpr = [line.split(":")[9] for line in cols.splitlines() if line.startswith("fpr:")][0]
        armored = subprocess.run(["gpg", "--armor", "--export", uid], env=env, check=True, capture_output=True).stdout
        binary = subprocess.run(["gpg", "--export", uid], env=env, check=True, capture_output=True).stdout
        out[algo] = (fpr, armored, binary)
    return out


def test_fingerprints_equal_gpgs_for_armored_and_binary_keys(keys):
    for fpr, armored, binary in keys.values():
        assert len(fpr) == 40
        assert _pgp.primary_fingerprints(armored) == [fpr]
        assert _pgp.primary_fingerprints(binary) == [fpr]
        assert _pgp.primary_fingerprints(b"\r\n".join(armored.split(b"\n"))) == [fpr]


def test_check_accepts_only_the_pinned_key(keys):
    ed, rsa = keys["ed25519"], keys["rsa2048"]
    spaced = " ".join(ed[0][i:i + 4] for i in range(0, 40, 4)).lower()
    assert _pgp.check(ed[1], [spaced]) == (True, [ed[0]])
    assert _pgp.check(ed[1], ["0x" + ed[0]]) == (True, [ed[0]])
    assert _pgp.check(rsa[1], [ed[0]]) == (False, [rsa[0]])
    # a bundle with an extra key is refused even though it holds the pinned one
    assert _pgp.check(ed[2] + rsa[2], [ed[0]]) == (False, [ed[0], rsa[0]])


@pytest.mark.parametrize("data", [b"", b"<html>404 Not Found</html>", b"\x99\x00",
                                  b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!notbase64\n-----END PGP PUBLIC KEY BLOCK-----\n",
                                  b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"])
def test_anything_else_is_a_clear_error(data):
    with pytest.raises(_pgp.PGPError):
        _pgp.primary_fingerprints(data)
