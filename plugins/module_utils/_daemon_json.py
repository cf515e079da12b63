# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to this collection (no API promise): merge wanted settings into Docker's daemon.json.

Pure functions, no I/O, so the merge rules are unit-tested without a host:

* dicts merge key by key, recursively (``runtimes``, ``log-opts``, ``default-ulimits``...);
  a key the user set and the caller does not mention is never dropped;
* lists (``registry-mirrors``, ``insecure-registries``, ``dns``, ``exec-opts``...) are
  merged as an ordered union by default: what is there stays first, wanted items that are
  missing are appended; ``list_merge='replace'`` makes the wanted list win;
* scalars: the wanted value wins;
* ``log-opts`` values must be strings for dockerd (``"max-file": 3`` makes dockerd refuse
  to start), so numbers and booleans given there are turned into strings.
"""

from __future__ import annotations

import copy
import json

# Options that dockerd applies on SIGHUP without a restart (Docker docs, "Configuration reload
# behavior"). Any other changed top-level key needs a restart of the daemon.
RELOADABLE_KEYS = frozenset([
    "debug",
    "labels",
    "live-restore",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "max-download-attempts",
    "default-runtime",
    "runtimes",
    "authorization-plugins",
    "insecure-registries",
    "registry-mirrors",
    "shutdown-timeout",
    "features",
])

LIST_MERGE_MODES = ("append_unique", "replace")

# Keys whose values dockerd reads as map[string]string.
_STRING_MAPS = ("log-opts", "storage-opts-map")


class DaemonJsonError(Exception):
    """The current file or the wanted settings cannot be merged."""


def parse(text, path="daemon.json"):
    """Parse the current file content; empty or whitespace-only means ``{}``."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DaemonJsonError(
            "%s is not valid JSON (%s); fix or move it away, it is left untouched" % (path, exc))
    if not isinstance(data, dict):
        raise DaemonJsonError("%s must hold a JSON object, found %s" % (path, type(data).__name__))
    return data


def render(data):
    """The file content written: sorted keys, 2-space indent, trailing newline (stable)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _stringify(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def normalize_wanted(wanted):
    """Return a copy of ``wanted`` with dockerd's string-only maps stringified."""
    if not isinstance(wanted, dict):
        raise DaemonJsonError("settings must be a dict, got %s" % type(wanted).__name__)
    out = copy.deepcopy(wanted)
    for key in _STRING_MAPS:
        if key in out and out[key] is not None:
            if not isinstance(out[key], dict):
                raise DaemonJsonError("%s must be a dict of strings" % key)
            out[key] = dict((k, _stringify(v)) for k, v in out[key].items())
    return out


def _merge_list(current, wanted, mode):
    if mode == "replace":
        return copy.deepcopy(wanted)
    merged = copy.deepcopy(current)
    for item in wanted:
        if item not in merged:
            merged.append(copy.deepcopy(item))
    return merged


def deep_merge(current, wanted, list_merge="append_unique"):
    """Merge ``wanted`` into ``current`` and return a new object (inputs are not modified).

    A ``None`` value in ``wanted`` means "no opinion" and keeps the current value.
    """
    if list_merge not in LIST_MERGE_MODES:
        raise DaemonJsonError("list_merge must be one of %s" % ", ".join(LIST_MERGE_MODES))
    result = copy.deepcopy(current)
    for key, value in wanted.items():
        if value is None:
            continue
        have = result.get(key)
        if isinstance(value, dict) and isinstance(have, dict):
            result[key] = deep_merge(have, value, list_merge)
        elif isinstance(value, list) and isinstance(have, list):
            result[key] = _merge_list(have, value, list_merge)
        else:
            result[key] = copy.deepcopy(value)
    return result


def changed_keys(before, after):
    """Top-level keys whose value differs (added, changed or removed), sorted."""
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k, _MISSING) != after.get(k, _MISSING))


_MISSING = object()


def restart_needed(keys):
    """True when one of the changed top-level keys is not reloadable by SIGHUP."""
    return any(k not in RELOADABLE_KEYS for k in keys)


def plan(current_text, wanted, list_merge="append_unique", path="daemon.json"):
    """Compute everything the module needs from the current file text and wanted settings.

    Returns a dict: ``before`` / ``after`` (objects), ``before_text`` / ``after_text``
    (rendered), ``changed`` (file content would change), ``changed_keys`` and
    ``restart_needed``. The file is considered changed when its text differs from the
    rendered result only if the data differs: a user's own formatting is kept when nothing
    is to be merged.
    """
    before = parse(current_text, path)
    after = deep_merge(before, normalize_wanted(wanted), list_merge)
    keys = changed_keys(before, after)
    changed = bool(keys) or current_text is None
    return {
        "before": before,
        "after": after,
        "before_text": render(before) if current_text is not None else "",
        "after_text": render(after),
        "changed": changed,
        "changed_keys": keys,
        "restart_needed": restart_needed(keys),
    }


def validate_unsupported(output):
    """True when dockerd's output says it does not know ``--validate`` (dockerd < 23)."""
    text = (output or "").lower()
    return "unknown flag: --validate" in text or "flag provided but not defined: -validate" in text
