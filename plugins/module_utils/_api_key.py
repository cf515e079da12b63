# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""API keys: the content rules and the one way every part reads a key file (PRIVATE).

This file is private to the collection (leading underscore): its API may change without notice.
Used on hosts (llm_ready, llm_benchmark) and on the control node (serving_plan checks the
key files and inline keys before any host changes). An empty or whitespace-only key never
means "no auth": it is refused everywhere, as the engine entrypoint refuses to start with one.
"""

from __future__ import annotations

import os
import re
import stat

MIN_LENGTH = 16
# one line of printable ASCII without spaces (what an HTTP Bearer token carries safely)
_KEY_RE = re.compile(r"^[!-~]+$")


class KeyFileError(Exception):
    """A key file that cannot be used; str() says why, never the key."""


def key_problem(text):
    """None when ``text`` is a usable key, else the reason (never quoting the key)."""
    if text is None or not str(text).strip():
        return "is empty or whitespace only (an empty key never means no authentication)"
    text = str(text)
    if "\n" in text or "\r" in text:
        return "holds more than one line: write the key on one line"
    if not _KEY_RE.match(text):
        return "holds characters other than printable ASCII (no spaces): use letters, digits and punctuation"
    if len(text) < MIN_LENGTH:
        return "is %d characters long: use at least %d (e.g. openssl rand -hex 24)" % (len(text), MIN_LENGTH)
    return None


def strip_line_end(data):
    """The content of a key file without one trailing newline (``\\n`` or ``\\r\\n``)."""
    if data.endswith("\r\n"):
        return data[:-2]
    if data.endswith("\n"):
        return data[:-1]
    return data


def mode_problem(path, st=None):
    """None when ``path`` is a regular file only its owner can read (0600 / 0400), else why not."""
    st = st if st is not None else os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_mode & 0o077:
        return "has mode %04o: make it owner-only (chmod 600 %s)" % (stat.S_IMODE(st.st_mode), path)
    return None


def read_key_file(path, check_mode=False):
    """The key held by ``path``; raises KeyFileError with the reason when it cannot be read or
    breaks the content rules (and, with ``check_mode``, when others may read it)."""
    try:
        if check_mode:
            why = mode_problem(path)
            if why:
                raise KeyFileError("API key file %s %s" % (path, why))
        with open(path, "r") as f:
            data = f.read(4097)
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError("cannot read the API key file %s: %s" % (path, getattr(e, "strerror", None) or e))
    key = strip_line_end(data)
    why = key_problem(key)
    if why:
        raise KeyFileError("API key file %s %s" % (path, why))
    return key
