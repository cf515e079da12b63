# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One path for every engine flag (PRIVATE to this collection).

This file is private to the collection (leading underscore): its API may change without notice.
Pure Python. The catalog's ``engine_flags``, a ``model: {...}`` dict's, ``llmfleet_models``' and a
deployment's ``extra_args`` go through the same checks, source by source:

- the names against the engine version's flag table (argparse prefixes and aliases included);
- the values: choices and types where the table knows them (_engine_flags.value_problem), and
  parser names spelled for the other engine (``deepseek_r1`` vs ``deepseek-r1``);
- flags the planner sets itself (a deployment key is the place to change them);
- flags that carry a secret (vLLM ``--hf-token``, SGLang ``--admin-api-key``,
  ``--ssl-keyfile-password``, ...): argv is visible in ``ps`` and ``docker inspect``;
- ``--trust-remote-code``: only through the model's ``trust_remote_code: true`` (with a pinned
  ``revision``).

Then ``merge`` puts them after the planner's own flags, option by option: the same option with
the same value twice is kept once, the same option with two values is refused (argparse would
silently keep the last one).
"""

from __future__ import annotations

import re

from ansible_collections.llmfleet.serving.plugins.plugin_utils import _engine_flags
from ansible_collections.llmfleet.serving.plugins.plugin_utils._schema import did_you_mean

# option -> the deployment key that sets it (the planner writes these options itself)
OWNED_FLAGS = {
    "vllm": {"--served-model-name": "served_model_name", "--tensor-parallel-size": "tensor_parallel",
             "--pipeline-parallel-size": "pipeline_parallel", "--data-parallel-size": "data_parallel",
             "--data-parallel-size-local": "data_parallel", "--max-model-len": "max_model_len",
             "--gpu-memory-utilization": "gpu_memory_utilization", "--host": "exposure", "--port": "port",
             "--distributed-executor-backend": "hosts", "--nnodes": "hosts", "--node-rank": "hosts",
             "--model": "model_path", "model_tag": "model_path", "--trust-remote-code": "model.trust_remote_code",
             "--revision": "model.revision"},
    "sglang": {"--model-path": "model_path", "--model": "model_path", "--served-model-name": "served_model_name",
               "--tp-size": "tensor_parallel", "--tensor-parallel-size": "tensor_parallel",
               "--pp-size": "pipeline_parallel", "--pipeline-parallel-size": "pipeline_parallel",
               "--dp-size": "data_parallel", "--data-parallel-size": "data_parallel", "--nnodes": "hosts",
               "--node-rank": "hosts", "--dist-init-addr": "dist_init_port", "--host": "exposure", "--port": "port",
               "--mem-fraction-static": "gpu_memory_utilization", "--context-length": "max_model_len",
               "--config": "api_key_file", "--trust-remote-code": "model.trust_remote_code",
               "--revision": "model.revision"},
}
# a flag whose name ends in one of these words (or holds password / secret) carries a secret
_SECRET_FLAG_RE = re.compile(r"(^|-)(password|passwd|passphrase|secret|credentials?)(-|$)"
                             r"|(^|-)(key|token|secret)$")
# parser names per engine (vLLM vllm/reasoning/__init__.py, tool_parsers; SGLang
# sglang/srt/parser/reasoning_parser_names.py): used for "spelled for the other engine"
PARSER_FLAGS = ("--reasoning-parser", "--tool-call-parser")


def is_secret_flag(option):
    """True for an option whose value would be a secret (its name says key / token / password...)."""
    name = option.lstrip("-").split(".", 1)[0].lower()
    return bool(_SECRET_FLAG_RE.search(name))


def _fix_for_secret(engine, option):
    if option == "--api-key":
        return "use api_key or api_key_file (the planner passes the key through a 0600 file)"
    if option == "--hf-token":
        return ("the engines run with HF_HUB_OFFLINE=1 from weights already on the hosts: the model_weights role "
                "downloads them with its own token file; drop the flag")
    return ("pass the secret through a file (e.g. a flag that takes a file path, or SGLang's --config YAML via "
            "the planner), never on the command line")


class Source(object):
    """One list of engine arguments and the variable that holds it."""

    def __init__(self, variable, argv, user=True):
        self.variable = variable
        self.argv = argv
        self.user = user      # False for the planner's own flags
        self.segments = []    # (option, [argument strings])
        self.values = {}


def check_source(engine, version, src, label, owned=None, trust_remote_code=False):
    """Validate one Source in place (fills .segments / .values). Returns [(variable, message)]."""
    errors = []
    if not isinstance(src.argv, list) or not all(isinstance(a, str) for a in src.argv):
        got = type(src.argv).__name__
        items = " with non-string items" if isinstance(src.argv, list) else ""
        errors.append((src.variable, "must be a list of strings (one argument each, e.g. [\"--enable-prefix-caching\", "
                       "\"--max-num-seqs\", \"64\"]), got %s%s" % (got, items)))
        return errors
    blank = [a for a in src.argv if not a.strip()]
    if blank:
        errors.append((src.variable, "holds an empty argument: remove it (the engine would take it as a stray "
                       "positional argument)"))
        return errors
    values, unknown, segments = _engine_flags.split_args(engine, version, src.argv)
    if unknown:
        known = _engine_flags.known_flags(engine, version)
        errors.append((src.variable, "%s %s does not accept %s%s" % (
            engine, version, ", ".join(repr(u) for u in unknown),
            "".join(did_you_mean(u.split("=")[0], known) for u in unknown[:1])
            + (" (vLLM >= 0.10 enables reasoning with --reasoning-parser alone)" if "--enable-reasoning" in unknown
               else ""))))
    owned = OWNED_FLAGS[engine] if owned is None else owned
    for option, args in segments:
        base = option.split(".", 1)[0]
        if src.user and is_secret_flag(base):
            errors.append((src.variable, "%s carries a secret, and arguments are visible in ps, docker inspect, the "
                           "plan and its hash: %s" % (base, _fix_for_secret(engine, base))))
            continue
        if src.user and base == "--trust-remote-code":
            if not trust_remote_code or values.get("--trust-remote-code") is False:
                errors.append((src.variable, "--trust-remote-code runs Python code from the model repository: set "
                               "trust_remote_code: true and a pinned revision in the model entry instead (an "
                               "explicit opt-in), or drop the flag"))
            continue
        if src.user and base in owned:
            errors.append((src.variable, "%s is set by the planner: set %s.%s instead" % (base, label, owned[base])))
            continue
        problem = value_problem(engine, version, base, args[1:] if len(args) > 1 else
                                ([args[0].split("=", 1)[1]] if "=" in args[0] and args[0].startswith("--") else []))
        if problem:
            errors.append((src.variable, "%s: %s" % (base, problem)))
    src.values = values
    src.segments = segments
    return errors


def value_problem(engine, version, option, args):
    """Why the value(s) ``args`` of ``option`` would be refused by the engine (None when fine)."""
    if option in PARSER_FLAGS and len(args) == 1:
        other = "sglang" if engine == "vllm" else "vllm"
        value = args[0]
        mine = _engine_flags.choices(engine, version, option)
        if mine is not None and value not in mine:
            return "%r is not one of %s's %s names%s" % (value, engine, option, did_you_mean(value, mine))
        spelled = value.replace("-", "_") if engine == "vllm" else value.replace("_", "-")
        if spelled != value and value in _engine_flags.PARSER_NAMES.get(other, {}).get(option, ()) and \
                spelled in _engine_flags.PARSER_NAMES.get(engine, {}).get(option, ()):
            return "%r is the %s spelling: %s names it %r" % (value, other, engine, spelled)
    return _engine_flags.value_problem(engine, version, option, args)


def merge(sources, label):
    """The arguments of every Source, option by option in source order. Returns (argv, errors):
    an option given twice with the same arguments is kept once; with other arguments it is
    refused, naming both sources (argparse would keep the last one silently)."""
    errors = []
    seen = {}   # option -> (variable, args)
    argv = []
    for src in sources:
        for option, args in src.segments:
            key = option if option != "model_tag" else option
            norm = tuple(_normal(option, args))
            if key in seen:
                variable, before = seen[key]
                if before != norm:
                    errors.append((src.variable, "%s is also given by %s with another value (%s here, %s there): keep "
                                   "it in one place (llmfleet_models[<model>].engine_flags.<engine> replaces the "
                                   "catalog's list)" % (option, variable, " ".join(args), " ".join(before) or "on")))
                continue
            seen[key] = (src.variable, norm)
            argv.extend(args)
    return argv, errors


def _normal(option, args):
    """The arguments of an option without the option's spelling (--x=1 and --x 1 are the same)."""
    if args and args[0].startswith("--") and "=" in args[0]:
        return [args[0].split("=", 1)[1]] + list(args[1:])
    return list(args[1:]) if args and args[0].startswith("-") else list(args)
