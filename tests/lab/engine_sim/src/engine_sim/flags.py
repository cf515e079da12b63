"""Command-line parsing with the real engines' flag tables.

The tables live in the collection (``plugins/plugin_utils/_engine_flags.py``, extracted from
the real vLLM and SGLang parsers); the lab's engine image copies that file next to this one
as ``engine_sim/_engine_flags.py``. Its API: ``parse_args(engine, version, argv)`` returns
``(values, unknown)`` with values keyed by canonical option strings (``--tp-size``), and
``default_version`` / ``resolve_version`` / ``known_flags``.
"""

from __future__ import annotations

import sys

try:
    from . import _engine_flags as _ef  # the copy made by the engine image build
except ImportError:  # running from the checkout: the collection is importable
    from ansible_collections.llmfleet.serving.plugins.plugin_utils import _engine_flags as _ef


class UsageError(Exception):
    """Bad command line: print ``prog: error: message`` and exit 2, like argparse."""


def parse(engine, version, argv):
    """dest -> value for ``argv`` (``--max-model-len`` -> ``max_model_len``; vLLM's positional
    model is ``model_tag``). Raises :class:`UsageError` for what the engine would reject."""
    try:
        values, unknown = _ef.parse_args(engine, version, list(argv))
    except ValueError as exc:  # UnknownEngineError: no table for this version
        raise UsageError(str(exc))
    if unknown:
        raise UsageError("unrecognized arguments: %s" % " ".join(unknown))
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in values.items()}


def default_version(engine):
    return str(_ef.default_version(engine))


def check_version(engine, version):
    """The flag table version used for ``version`` (raises UsageError when there is none)."""
    try:
        return _ef.resolve_version(engine, version)
    except ValueError as exc:
        raise UsageError(str(exc))


def known_flags(engine, version=None):
    return _ef.known_flags(engine, version)


def usage_exit(prog, message, stream=None):
    stream = stream or sys.stderr
    usage = "usage: %s [model_tag] [options]" % prog if prog == "vllm serve" else "usage: %s [options]" % prog
    stream.write("%s\n%s: error: %s\n" % (usage, prog, message))
    stream.flush()
    raise SystemExit(2)
