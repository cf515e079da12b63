# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which pinned set of host pip packages (roles/model_weights, model_weights_pip_sets) fits the
Python of a host: of the sets whose ``python`` minimum the host meets, the one with the newest minimum."""

from __future__ import annotations

import re

_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:\.\d+)?")


# name[extras]==version: the only form a pinned host package or constraint takes. Nothing else
# reaches pip's argv or constraints file (no option such as --index-url, no URL, no range).
_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


class PipSetError(ValueError):
    pass


def _pins(items, what):
    """``items`` as a list of name==version strings, or PipSetError naming ``what``."""
    if not isinstance(items, list):
        raise PipSetError("%s must be a list of name==version strings, got %s" % (what, type(items).__name__))
    for i, item in enumerate(items):
        if not isinstance(item, str) or not _PIN.match(item):   # not echoed: it might be a secret
            raise PipSetError("%s[%d] (%s) is not an exact pin: write name==version (e.g. boto3==1.44.18)"
                              % (what, i, type(item).__name__))
    return list(items)


def _version(text, what):
    m = _VERSION.match(str(text))
    if not m:
        raise PipSetError("%s: %r is not a Python version (like 3.10 or 3.10.12)" % (what, text))
    return int(m.group(1)), int(m.group(2))


def choose(sets, source, python_version, extra=None, packages=None, constraints=None):
    """Return {'python': minimum or None, 'packages': [...], 'constraints': [...]} for ``source``.

    ``packages`` / ``constraints`` (model_weights_pip_packages / model_weights_pip_constraints),
    when given, replace the sets whatever the Python. ``python_version`` '' (not probed: nothing
    to install) takes the newest set."""
    extra = _pins([] if extra is None else extra, "model_weights_pip_extra_packages")
    if packages is not None:
        if not isinstance(packages, dict):
            raise PipSetError("model_weights_pip_packages must be a dict of lists (source: [name==version, ...])")
        if constraints is None:
            raise PipSetError("model_weights_pip_packages is set but model_weights_pip_constraints is not: "
                              "set both together (the constraints pin what the packages pull in)")
        for src, items in packages.items():
            _pins(items, "model_weights_pip_packages.%s" % src)
        return {"python": None, "packages": list(packages.get(source) or []) + extra,
                "constraints": _pins(constraints, "model_weights_pip_constraints")}
    if not isinstance(sets, list) or not sets:
        raise PipSetError("model_weights_pip_sets must be a non-empty list of {python, packages, constraints}")
    for i, s in enumerate(sets):
        if not isinstance(s, dict) or not isinstance(s.get("packages"), dict) \
                or not isinstance(s.get("constraints"), list) or "python" not in s:
            raise PipSetError("model_weights_pip_sets[%d] must have python (the oldest Python it supports, "
                              "like '3.11'), packages (a dict of lists) and constraints (a list)" % i)
        _version(s["python"], "model_weights_pip_sets[%d].python" % i)
        for src, items in s["packages"].items():
            _pins(items, "model_weights_pip_sets[%d].packages.%s" % (i, src))
        _pins(s["constraints"], "model_weights_pip_sets[%d].constraints" % i)
    if str(python_version or "").strip() == "":
        chosen = max(sets, key=lambda s: _version(s["python"], ""))
    else:
        have = _version(python_version, "the Python of the host")
        fitting = [s for s in sets if have >= _version(s["python"], "")]
        if not fitting:
            oldest = str(min(sets, key=lambda s: _version(s["python"], ""))["python"])
            raise PipSetError(
                "model_weights_python is Python %s on this host, older than every pinned set in "
                "model_weights_pip_sets (the oldest needs Python >= %s): set model_weights_python to a newer "
                "Python on the host (e.g. python3.11), or add a set for Python %d.%d to model_weights_pip_sets"
                % (python_version.strip(), oldest, have[0], have[1]))
        chosen = max(fitting, key=lambda s: _version(s["python"], ""))
    return {"python": str(chosen["python"]), "packages": list(chosen["packages"].get(source) or []) + extra,
            "constraints": list(chosen["constraints"])}
