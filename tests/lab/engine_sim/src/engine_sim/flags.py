"""Command-line parsing with the real engines' flag tables.

The tables live in the collection (``plugins/module_utils/_engine_flags.py``); the lab's
engine image copies that file next to this one as ``engine_sim/_engine_flags.py``.
"""

from __future__ import annotations

import argparse
import sys

try:
    from . import _engine_flags as _ef  # the copy made by the engine image build
except ImportError:  # running from the checkout: the collection is importable
    from ansible_collections.llmfleet.serving.plugins.module_utils import _engine_flags as _ef


class UsageError(Exception):
    """Bad command line: print ``prog: error: message`` and exit 2, like argparse."""


def _normalize(result):
    """Accept what ``_engine_flags.parse_args`` returns and give a dict dest -> value."""
    if isinstance(result, argparse.Namespace):
        return dict(vars(result))
    if isinstance(result, tuple) and len(result) == 2:
        values, unknown = result
        if unknown:
            raise UsageError("unrecognized arguments: %s" % " ".join(unknown))
        return _normalize(values)
    if isinstance(result, dict):
        return dict(result)
    for attr in ("values", "args", "options"):
        val = getattr(result, attr, None)
        if isinstance(val, dict):
            return dict(val)
    raise TypeError("unexpected result from _engine_flags.parse_args: %r" % type(result))


def parse(engine, version, argv):
    """dest -> value for ``argv`` (flags only; the positional model of ``vllm serve`` is
    handled by the caller). Raises :class:`UsageError`."""
    try:
        result = _ef.parse_args(engine, version, list(argv))
    except SystemExit as exc:  # an argparse-based table printed its own error
        raise UsageError("__printed__:%s" % exc.code)
    except (ValueError, KeyError, TypeError) as exc:
        msg = str(exc.args[0]) if exc.args else str(exc)
        raise UsageError(msg)
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in _normalize(result).items()}


def versions(engine):
    for name in ("versions", "supported_versions", "known_versions"):
        fn = getattr(_ef, name, None)
        if callable(fn):
            try:
                return list(fn(engine))
            except TypeError:
                continue
    return []


def default_version(engine):
    for name in ("DEFAULT_VERSIONS", "DEFAULT_VERSION", "LATEST"):
        val = getattr(_ef, name, None)
        if isinstance(val, dict) and engine in val:
            return str(val[engine])
    vs = versions(engine)
    if vs:
        from .metrics import version_tuple
        return str(sorted(vs, key=version_tuple)[-1])
    return "0.32.0" if engine == "vllm" else "0.5.5"


def usage_exit(prog, message, stream=None):
    stream = stream or sys.stderr
    if not message.startswith("__printed__:"):
        stream.write("usage: %s [options]\n%s: error: %s\n" % (prog, prog, message))
        stream.flush()
    raise SystemExit(2)
