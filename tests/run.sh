#!/usr/bin/env bash
# The test command of llmfleet.serving (README): set-up included, on a fresh Debian/Ubuntu machine.
#
#   bash tests/run.sh [setup|unit|lint|sanity|e2e|nightly|all]      (default: all = CI)
#
# setup: Debian packages (docker.io, debootstrap, rsync, openssh-client, systemd-container for
#        the watchdog's systemd test), the Docker engine
#        started if not running, and .venv with requirements-test.txt (PyPI only).
# unit:  pytest tests/unit               lint: ansible-lint --profile production
# sanity: ansible-test sanity --venv on a copy under ansible_collections/llmfleet/serving
# e2e:   pytest tests/e2e (the lab: hosts over SSH, engines in their own Docker engines),
#        without the tests marked nightly
# nightly: only the tests marked nightly (longer fault, secret-scan and watchdog suites)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${LLMFLEET_VENV:-$ROOT/.venv}
PY=${LLMFLEET_PYTHON:-python3}
stage=${1:-all}

log() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

setup() {
    log "setup"
    local need=()
    for pair in docker:docker.io dockerd:docker.io debootstrap:debootstrap rsync:rsync ssh:openssh-client ip:iproute2 systemd-nspawn:systemd-container; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
    done
    $PY -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
        echo "apt-get install ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "starting dockerd"
        mkdir -p build
        (setsid dockerd >build/dockerd.log 2>&1 &)
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || { echo "dockerd did not start: see build/dockerd.log" >&2; exit 1; }
    fi
    local stamp="$VENV/.llmfleet-req-$(cat requirements.txt requirements-test.txt | sha256sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        [ -x "$VENV/bin/python" ] || $PY -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -r requirements-test.txt
        rm -f "$VENV"/.llmfleet-req-* && touch "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
    ansible --version | sed -n 1p
}

unit() {
    log "unit tests"
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider -n 2 tests/unit
}

lint() {
    log "ansible-lint (production profile)"
    (cd "$ROOT" && "$VENV/bin/ansible-lint" --profile production --offline -q)
}

sanity() {
    log "ansible-test sanity"
    bash tests/sanity.sh "$VENV"
}

e2e() {
    log "end-to-end lab tests (the nightly ones: bash tests/run.sh nightly)"
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not nightly" tests/e2e
}

# The longer lab suite (docs/testing.md lists it and its last result): fault injection,
# whole-deploy secret scans, the watchdog, canary rollback.
nightly() {
    log "nightly lab tests"
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m nightly tests/e2e
}

export PATH="$VENV/bin:$PATH"
case "$stage" in
setup) setup ;;
unit) setup; unit ;;
lint) setup; lint ;;
sanity) setup; sanity ;;
e2e) setup; e2e ;;
nightly) setup; nightly ;;
all)
    start=$(date +%s)
    setup; unit; lint; sanity; e2e
    echo "all stages passed in $(( $(date +%s) - start )) s"
    ;;
*) echo "usage: bash tests/run.sh [setup|unit|lint|sanity|e2e|nightly|all]" >&2; exit 64 ;;
esac
