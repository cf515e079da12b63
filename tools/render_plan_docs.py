"""Render the deployment / model-entry schema (plugins/plugin_utils/_spec.py) into the
DOCUMENTATION of plugins/modules/serving_plan.py (the suboptions of `deployments` and `models`).

  python3 tools/render_plan_docs.py          # rewrite the generated blocks
  python3 tools/render_plan_docs.py --check  # exit 1 when the module's docs differ from the schema

Run from the repository root with the collection importable (the unit tests' conftest makes
build/collections; or PYTHONPATH=build/collections).
"""
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "plugins", "modules", "serving_plan.py")
BEGIN = "    # BEGIN GENERATED %s suboptions by tools/render_plan_docs.py -- do not edit by hand\n"
END = "    # END GENERATED %s suboptions\n"


def block(name, options):
    text = yaml.safe_dump({"suboptions": options}, sort_keys=True, default_flow_style=False, width=110)
    return BEGIN % name + "".join("    " + line + "\n" for line in text.splitlines()) + END % name


def render(text):
    from ansible_collections.llmfleet.serving.plugins.plugin_utils import _spec
    for name, spec in (("deployments", _spec.deployment_spec()), ("models", _spec.model_spec())):
        start, stop = BEGIN % name, END % name
        head, rest = text.split(start, 1)
        tail = rest.split(stop, 1)[1]
        text = head + block(name, _spec.doc_options(spec)) + tail
    return text


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(MODULE) as f:
        text = f.read()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("plugins/modules/serving_plan.py: DOCUMENTATION differs from the schema: run "
                  "tools/render_plan_docs.py", file=sys.stderr)
            return 1
        return 0
    with open(MODULE, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
