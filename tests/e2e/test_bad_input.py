"""Issue 9, bad input, in its own lab ("bad": lab-h1 = 8 x H200, lab-h2 = 2 x H200, no engine image).

Every case of tests/e2e/bad_inputs.yml runs the real playbook (playbooks/deploy.yml, or
tests/e2e/playbooks/bad-weights.yml for the weights cases) against both lab hosts and must:
- fail (rc != 0) with every expected fragment in the output (the variable path and the fix);
- show changed=0 for every host in the recap;
- leave both hosts as they were: after each case, the containers (docker ps -a: id, name,
  image, labels), the images, every path under the collection's trees that is newer than a
  marker written before the corpus, a checksum of those trees, and the weights case's published
  path are compared with the snapshot taken before the corpus;
- never print the case's secret.
Cases run three at a time (each one a separate ansible-playbook), each followed by its own
snapshot; a change made by any case fails that case and the ones running beside it.
"""
from __future__ import annotations

import concurrent.futures
import copy
import os
import re
import time

import pytest
import yaml


from .conftest import REPO, running_lab

# The longer lab suite: `bash tests/run.sh nightly` (docs/testing.md), not CI.
pytestmark = pytest.mark.nightly

LAB = "bad"
CORPUS = os.path.join(REPO, "tests", "e2e", "bad_inputs.yml")
DEPLOY = "playbooks/deploy.yml"
WORKERS = int(os.environ.get("LLMFLEET_BAD_INPUT_WORKERS", "3"))
MARKER = "/var/tmp/.llmfleet-bad-input-marker"
# What the collection writes on a host (roles' files, model paths, Docker's config, HAProxy,
# the model_weights venv) plus the weights cases' published path.
TREES = ["/etc/llmfleet", "/srv/models", "/data/models", "/etc/docker", "/etc/haproxy", "/var/lib/llmfleet",
         "/opt/llmfleet", "/etc/prometheus", "/opt/bad-input-weights", "/opt/bad-input-weights.llmfleet-staging"]
SNAPSHOT = r"""
set -u
echo '## containers'; docker ps -a --no-trunc --format '{{.ID}} {{.Names}} {{.Image}} {{.Labels}}' | sort
echo '## images'; docker images -q --no-trunc | sort
echo '## newer than the marker'
for t in %(trees)s; do [ -e "$t" ] && find "$t" -xdev -newer %(marker)s -print; done | sort
echo '## trees'
for t in %(trees)s; do
  if [ -e "$t" ]; then
    echo "$t: $(find "$t" -xdev \( -type f -o -type l -o -type d \) -printf '%%p %%y %%m %%s %%T@\n' | sort | sha256sum)"
    echo "$t content: $(find "$t" -xdev -type f -exec sha256sum {} + 2>/dev/null | sort | sha256sum)"
  else
    echo "$t: absent"
  fi
done
""" % {"trees": " ".join(TREES), "marker": MARKER}


def load_corpus():
    with open(CORPUS) as f:
        data = yaml.safe_load(f)
    return data["base"], data["cases"]


BASE, CASES = load_corpus()
if os.environ.get("LLMFLEET_BAD_INPUT_CASES"):  # a comma-separated subset, for debugging
    CASES = [c for c in CASES if c["id"] in os.environ["LLMFLEET_BAD_INPUT_CASES"].split(",")]


def extra_vars(case, base=None):
    """The extra vars of one case: its deployments laid over the base deployment, then its vars."""
    base = BASE if base is None else base
    ev = {}
    if "deployments" in case:
        deps = []
        for item in case["deployments"]:
            if isinstance(item, dict) and case.get("merge", True):
                d = copy.deepcopy(base)
                d.update(item)
                deps.append(d)
            else:
                deps.append(item)
        ev["llmfleet_deployments"] = deps
    ev.update(copy.deepcopy(case.get("vars") or {}))
    return ev


def normalise(text):
    """Output with JSON escapes undone and whitespace folded, so fragments match across wrapping."""
    text = text.replace("\\n", "\n").replace('\\"', '"').replace("\\'", "'")
    return " ".join(text.split())


@pytest.fixture(scope="module")
def bad_lab():
    with running_lab(LAB, 2, ssh_port_base=3020, mgmt_subnet="172.31.160.0/24",
                     private_subnet="172.31.161.0/24", fixtures=["h200x8", "h200x2"], engine=()) as lab:
        yield lab


def snapshot(lab):
    return {h.name: lab.sh(h.name, SNAPSHOT) for h in lab.hosts}


@pytest.fixture(scope="module")
def corpus_results(bad_lab):
    for h in bad_lab.hosts:
        bad_lab.sh(h.name, "touch %s && sleep 0.01" % MARKER)
    before = snapshot(bad_lab)
    env = {"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}

    def one(case):
        t0 = time.time()
        rc, out, recap = bad_lab.playbook(os.path.join(REPO, case.get("playbook", DEPLOY)), check=False,
                                          extra_vars=extra_vars(case), env=env)
        return {"rc": rc, "output": out, "recap": recap, "seconds": time.time() - t0, "after": snapshot(bad_lab)}

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as ex:
        futures = {c["id"]: ex.submit(one, c) for c in CASES}
        results = {cid: f.result() for cid, f in futures.items()}
    wall = time.time() - t0
    secs = sorted(r["seconds"] for r in results.values())
    print("\nbad input corpus: %d cases in %.1f s with %d workers (per case: median %.1f s, max %.1f s)"
          % (len(CASES), wall, WORKERS, secs[len(secs) // 2], secs[-1]))
    after = snapshot(bad_lab)
    return {"before": before, "after": after, "cases": results}


def test_corpus_is_large_and_well_formed():
    ids = [c["id"] for c in CASES]
    assert len(set(ids)) == len(ids)
    assert len(load_corpus()[1]) >= 32
    for c in CASES:
        assert c["stage"] in ("preflight", "plan", "role-arguments", "weights"), c["id"]
        assert c.get("description") and c.get("expect"), c["id"]
        assert "deployments" in c or "vars" in c, c["id"]
        # every case names a variable: a llmfleet_deployments path or a role variable
        assert c.get("known_gap") or any(
            re.search(r"llmfleet_deployments|llmfleet_models\[|^[a-z]+(_[a-z0-9]+)+$", f) for f in c["expect"]), c["id"]


def test_weights_published_path_never_created(corpus_results):
    for host, snap in corpus_results["after"].items():
        assert "/opt/bad-input-weights: absent" in snap, (host, snap)
        assert "/opt/bad-input-weights.llmfleet-staging: absent" in snap, (host, snap)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_refused_before_any_change(corpus_results, case):
    r = corpus_results["cases"][case["id"]]
    out = r["output"]
    text = normalise(out)
    assert r["rc"] != 0, "%s was not refused:\n%s" % (case["id"], out[-4000:])
    missing = [f for f in case["expect"] if " ".join(f.split()) not in text]
    assert not missing, "%s: %s missing from:\n%s" % (case["id"], missing, out[-4000:])
    if case.get("secret"):
        assert case["secret"] not in out
    # the recap: every host that ran shows changed=0, and something failed
    assert r["recap"], out[-3000:]
    assert all(v.get("changed") == 0 for v in r["recap"].values()), (r["recap"], out[-6000:])
    assert any(v.get("failed") for v in r["recap"].values()), r["recap"]
    # where it stopped
    if case["stage"] == "plan":
        assert "fatal: [localhost]" in out and "Run the engines" not in out, out[-3000:]
    elif case["stage"] == "preflight":
        # the plan runs first (preflight checks the plan), the engines never start
        assert "preflight failed for" in out and "Run the engines" not in out, out[-3000:]
    elif case["stage"] == "role-arguments":
        assert "Validating arguments against arg spec" in out, out[-3000:]
    # the hosts are as they were before the corpus
    before = corpus_results["before"]
    for host, snap in r["after"].items():
        assert snap == before[host], "%s changed %s:\n--- before\n%s\n--- after\n%s" % (
            case["id"], host, before[host], snap)
