# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenPGP public key fingerprints without gpg (PRIVATE to this collection).

This file is private to the collection (leading underscore): its API may change without notice.
Reads an ASCII-armored or binary OpenPGP public key (RFC 4880 / RFC 9580 packets) and returns
the fingerprints of its primary keys: v4 = SHA-1 over 0x99, the 2-byte body length and the
public key packet body; v5/v6 = SHA-256 over 0x9a/0x9b, a 4-byte length and the body. Used
to check the signing key of a package repository against a pinned fingerprint before apt or
dnf trusts it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

PUBLIC_KEY_TAG = 6

_ARMOR = re.compile(rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----", re.S)


class PGPError(ValueError):
    """The data is not an OpenPGP public key."""


def dearmor(data):
    """The binary packets of ``data`` (armored blocks are decoded and joined; binary passes)."""
    blocks = _ARMOR.findall(data)
    if not blocks:
        if data.lstrip()[:5] == b"-----":
            raise PGPError("armored data without a PGP PUBLIC KEY BLOCK")
        return data
    out = b""
    for block in blocks:
        lines = block.replace(b"\r", b"").split(b"\n")
        # headers end at the first empty line (when there are headers)
        if b"" in lines and any(b":" in line for line in lines[:lines.index(b"")]):
            lines = lines[lines.index(b"") + 1:]
        body = b"".join(line.strip() for line in lines if line.strip() and not line.startswith(b"="))
        try:
            out += base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as e:
            raise PGPError("bad base64 in the armored key: %s" % e)
    return out


def packets(data):
    """Yield (tag, body) of each OpenPGP packet in binary ``data``."""
    i, n = 0, len(data)
    while i < n:
        head = data[i]
        if not head & 0x80:
            raise PGPError("not an OpenPGP packet at byte %d" % i)
        if head & 0x40:  # new format
            tag = head & 0x3F
            i += 1
            if i >= n:
                raise PGPError("truncated packet header")
            first = data[i]
            if first < 192:
                length, i = first, i + 1
            elif first < 224:
                if i + 1 >= n:
                    raise PGPError("truncated packet length")
                length, i = ((first - 192) << 8) + data[i + 1] + 192, i + 2
            elif first == 255:
                if i + 4 >= n:
                    raise PGPError("truncated packet length")
                length, i = int.from_bytes(data[i + 1:i + 5], "big"), i + 5
            else:
                raise PGPError("partial body lengths are not used by public keys")
        else:  # old format
            tag = (head >> 2) & 0x0F
            ltype = head & 0x03
            i += 1
            if ltype == 3:
                raise PGPError("indeterminate packet length")
            size = (1, 2, 4)[ltype]
            if i + size > n:
                raise PGPError("truncated packet length")
            length, i = int.from_bytes(data[i:i + size], "big"), i + size
        if i + length > n:
            raise PGPError("truncated packet body")
        yield tag, data[i:i + length]
        i += length


def fingerprint(body):
    """Upper-case hex fingerprint of one public key packet body."""
    if not body:
        raise PGPError("empty public key packet")
    version = body[0]
    if version == 4:
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    if version in (5, 6):
        prefix = b"\x9a" if version == 5 else b"\x9b"
        return hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise PGPError("public key version %d is not supported" % version)


def primary_fingerprints(data):
    """Fingerprints of the primary keys in ``data`` (armored or binary), in order."""
    out = [fingerprint(body) for tag, body in packets(dearmor(data)) if tag == PUBLIC_KEY_TAG]
    if not out:
        raise PGPError("no public key in the data")
    return out


def normalize(fpr):
    """'EB69 3B30 ...' / '0xeb69...' -> 'EB693B30...'."""
    text = str(fpr).replace(" ", "").upper()
    return text[2:] if text.startswith("0X") else text


def check(data, allowed):
    """(ok, found): ok when every primary key of ``data`` is one of ``allowed`` fingerprints."""
    found = primary_fingerprints(data)
    want = {normalize(a) for a in allowed}
    return all(f in want for f in found), found
