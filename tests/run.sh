#!/usr/bin/env bash
# The test command of llmfleet.serving (README): set-up included, on a fresh Debian/Ubuntu machine.
#
#   bash tests/run.sh [STAGE...]      STAGE: setup unit lint sanity demo e2e nightly all (default: all = CI)
#
# setup:   Debian packages (docker.io, debootstrap, rsync, openssh-client, iproute2, systemd-container
#          for the watchdog's systemd test), the Docker engine started if not running, .venv with
#          requirements-test.txt (PyPI only; a clone without .venv links to the machine's venv of
#          the same requirements under ~/.cache/llmfleet, LLMFLEET_VENV_CACHE=0: its own), the
#          collection link build/collections/... (ansible.cfg).
#          Runs once, before any other stage; if it fails nothing else can run.
# unit:    pytest tests/unit                 lint: ansible-lint --profile production
# sanity:  ansible-test sanity --venv on a copy under ansible_collections/llmfleet/serving
# demo:    README's first command, short: tests/lab/demo.sh on its own lab "ci-demo" (3 hosts,
#          deploy, ready, a 40-prompt benchmark), the lab removed at the end
# e2e:     pytest tests/e2e (the lab: hosts over SSH, engines in their own Docker engines),
#          without the tests marked nightly
# nightly: only the tests marked nightly (longer fault, secret-scan and watchdog suites)
# all:     setup unit lint sanity demo e2e
#
# Every stage runs even when an earlier one failed; the end is a table of each stage's result
# and time, then one closing line "run.sh: N passed, N failed" (pytest's test counts plus one per
# non-pytest stage); the exit status is 1 when any stage failed. Each stage's output is also in
# build/run/<stage>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${LLMFLEET_VENV:-$ROOT/.venv}
# Where a clone without .venv finds (or makes) the venv of its requirements; 0: no cache.
VENV_CACHE=${LLMFLEET_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmfleet}
PY=${LLMFLEET_PYTHON:-python3}
LOGS=$ROOT/build/run
# Python output unbuffered, so that progress shows as it happens through `tee`.
export PYTHONUNBUFFERED=1

log() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }
now() { date +%s; }

# apt-get with its progress visible (what is fetched and set up) but without its chatter.
apt_visible() {
    apt-get "$@" 2>&1 | { grep --line-buffered -E '^(Get:|Setting up|E:|W:|Err:)' || true; }
}

setup() {
    log "setup"
    local need=() t
    for pair in docker:docker.io dockerd:docker.io debootstrap:debootstrap rsync:rsync ssh:openssh-client ip:iproute2 systemd-nspawn:systemd-container; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
    done
    $PY -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
        local pkgs
        pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
        echo "apt-get install $pkgs(with their dependencies)"
        export DEBIAN_FRONTEND=noninteractive
        t=$(now)
        apt_visible update
        apt_visible install -y --no-install-recommends $pkgs
        echo "apt-get: done in $(( $(now) - t )) s"
    else
        echo "Debian packages: all present"
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "starting dockerd"
        mkdir -p build
        (setsid dockerd >build/dockerd.log 2>&1 &)
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || { echo "dockerd did not start: see build/dockerd.log" >&2; exit 1; }
    fi
    local req_hash
    req_hash=$(cat requirements.txt requirements-test.txt | sha256sum | cut -c1-12)
    # A clone without its own .venv (CI's fresh clone) gets a link to the machine's venv of the
    # same requirements, $VENV_CACHE/venv-<hash>, made once (about 1 min 40 s of pip with a warm
    # pip cache) and reused by every later clone; a clone whose requirements change is linked to
    # the venv of the new ones. LLMFLEET_VENV (a venv of yours) or a real .venv folder is used as it is.
    local target=$VENV
    if [ -z "${LLMFLEET_VENV:-}" ] && [ "$VENV_CACHE" != 0 ] && { [ -L "$VENV" ] || [ ! -e "$VENV" ]; }; then
        target="$VENV_CACHE/venv-$req_hash"
        mkdir -p "$VENV_CACHE"
        exec 9>"$target.lock"
        flock 9  # another run making the same venv: wait for it
    fi
    local stamp="$target/.llmfleet-req-$req_hash"
    if [ ! -f "$stamp" ]; then
        t=$(now)
        [ -x "$target/bin/python" ] || { echo "creating $target"; $PY -m venv "$target"; }
        echo "pip install -r requirements-test.txt into $target (a few minutes on a cold pip cache)"
        "$target/bin/pip" install -q --upgrade pip 2>&1 | { grep -E '^ERROR' || true; }
        # Not -q: one line per package collected, then what was installed (pip's warnings about
        # this machine's index configuration are left out; its errors are not).
        "$target/bin/pip" install --progress-bar off -r requirements-test.txt 2>&1 \
            | grep --line-buffered -E '^(Collecting|Successfully installed|ERROR)' || [ "${PIPESTATUS[0]}" = 0 ]
        rm -f "$target"/.llmfleet-req-* && touch "$stamp"
        echo "pip: done in $(( $(now) - t )) s"
    else
        echo "Python packages: $target is current (requirements unchanged)"
    fi
    if [ "$target" != "$VENV" ]; then
        ln -sfn "$target" "$VENV"
        exec 9>&-
        echo "$VENV -> $target (LLMFLEET_VENV_CACHE=0: a venv of the clone's own)"
    fi
    export PATH="$VENV/bin:$PATH"
    "$VENV/bin/python" -m tests.collection_link
    ansible --version | sed -n 1p
}

unit() {
    log "unit tests"
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider -n 2 --durations=5 tests/unit
}

lint() {
    log "ansible-lint (production profile)"
    (cd "$ROOT" && "$VENV/bin/ansible-lint" --profile production --offline -q)
}

sanity() {
    log "ansible-test sanity"
    bash tests/sanity.sh "$VENV"
}

demo() {
    log "demo (README's first command, short variant on its own lab)"
    LLMFLEET_SETUP_DONE=1 LLMFLEET_DEMO_LAB=ci-demo LLMFLEET_DEMO_KEEP=0 LLMFLEET_DEMO_PROMPTS=40 \
        bash tests/lab/demo.sh
}

e2e() {
    log "end-to-end lab tests (the nightly ones: bash tests/run.sh nightly)"
    # -v: one line per test as it ends; --durations: the slowest tests at the end.
    "$VENV/bin/python" -m pytest -v -p no:cacheprovider --durations=15 -m "not nightly" tests/e2e
}

# The longer lab suite (docs/testing.md lists it and its last result): fault injection,
# whole-deploy secret scans, the watchdog, canary rollback.
nightly() {
    log "nightly lab tests"
    "$VENV/bin/python" -m pytest -v -p no:cacheprovider --durations=15 -m nightly tests/e2e
}

# ---------------------------------------------------------------- stages, results, summary

STAGES=(setup unit lint sanity demo e2e nightly)
requested=()
for arg in "${@:-all}"; do
    case "$arg" in
    all) requested+=(unit lint sanity demo e2e) ;;
    setup|unit|lint|sanity|demo|e2e|nightly) requested+=("$arg") ;;
    *) echo "usage: bash tests/run.sh [setup|unit|lint|sanity|demo|e2e|nightly|all]..." >&2; exit 64 ;;
    esac
done

declare -A RESULT SECS DETAIL
PASSED=0 FAILED=0

# pytest's closing line ("== 3 failed, 500 passed, 2 skipped in 31.2s ==" or -q's bare form).
pytest_counts() {
    local line
    line=$(grep -E '(passed|failed|error|no tests ran).* in [0-9.]+s' "$1" | tail -n 1 || true)
    local p f e
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1 || true)
    f=$(grep -oE '[0-9]+ failed' <<<"$line" | cut -d' ' -f1 || true)
    e=$(grep -oE '[0-9]+ errors?' <<<"$line" | cut -d' ' -f1 || true)
    [ -n "$line" ] && echo "${p:-0} ${f:-0} ${e:-0}"
    return 0
}

run_stage() {
    local s=$1 t0 rc counts
    mkdir -p "$LOGS"
    t0=$(now)
    set +e
    ( set -euo pipefail; "$s" ) 2>&1 | tee "$LOGS/$s.log"
    rc=${PIPESTATUS[0]}
    set -e
    SECS[$s]=$(( $(now) - t0 ))
    if [ "$rc" = 0 ]; then RESULT[$s]=passed; else RESULT[$s]="FAILED (exit $rc)"; fi
    counts=""
    case "$s" in unit|e2e|nightly) counts=$(pytest_counts "$LOGS/$s.log") ;; esac
    if [ -n "$counts" ]; then
        read -r p f e <<<"$counts"
        DETAIL[$s]="$p passed, $f failed$([ "$e" = 0 ] || echo ", $e errors")"
        PASSED=$(( PASSED + p )); FAILED=$(( FAILED + f + e ))
        # A pytest stage that failed without a failed test (collection, a crash) still counts.
        if [ "$rc" != 0 ] && [ $(( f + e )) = 0 ]; then FAILED=$(( FAILED + 1 )); fi
    elif [ "$rc" = 0 ]; then
        PASSED=$(( PASSED + 1 ))
    else
        FAILED=$(( FAILED + 1 ))
    fi
    return 0
}

fmt_secs() { local s=$1; if [ "$s" -ge 60 ]; then printf '%d min %02d s' $(( s / 60 )) $(( s % 60 )); else printf '%d s' "$s"; fi; }

summary() {
    local s
    printf '\n== summary (%s)\n' "$(date +%T)"
    printf '%-8s  %-18s  %-10s  %s\n' stage result time tests
    for s in "${STAGES[@]}"; do
        [ -n "${RESULT[$s]:-}" ] || continue
        printf '%-8s  %-18s  %-10s  %s\n' "$s" "${RESULT[$s]}" "$(fmt_secs "${SECS[$s]}")" "${DETAIL[$s]:-}"
    done
    printf 'total     %-18s  %s\n' "" "$(fmt_secs $(( $(now) - START )))"
    echo "(each stage's output: build/run/<stage>.log)"
    echo "run.sh: $PASSED passed, $FAILED failed"
}

START=$(now)
export PATH="$VENV/bin:$PATH"
run_stage setup
if [ "${RESULT[setup]}" != passed ]; then
    for s in "${requested[@]}"; do RESULT[$s]="skipped (setup)"; SECS[$s]=0; done
    summary
    exit 1
fi
for s in "${STAGES[@]}"; do
    [ "$s" = setup ] && continue
    for r in "${requested[@]}"; do
        if [ "$r" = "$s" ]; then run_stage "$s"; break; fi
    done
done
summary
[ "$FAILED" = 0 ]
