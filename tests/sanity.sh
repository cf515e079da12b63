#!/usr/bin/env bash
# ansible-test sanity, offline-friendly: run on a copy of the tracked files under
# build/sanity/ansible_collections/llmfleet/serving (ansible-test needs that layout).
#
# ansible-test bootstraps pip in its venvs with a get-pip script downloaded from a host our
# machines cannot reach. The stand-in below installs the same pip version from a wheel
# fetched from PyPI (see docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${1:-.venv}" && pwd)
OLDPWD_VENV=$VENV
PY="$VENV/bin/python"
pip_version=$("$PY" - <<'PY'
import re, inspect
from ansible_test._internal import python_requirements as pr
print(re.search(r"pip='([0-9.]+)'", inspect.getsource(pr.get_venv_packages)).group(1))
PY
)
cache="$HOME/.ansible/test/cache"
wheels="$cache/wheels"
script="$cache/get_pip_${pip_version//./_}.py"
mkdir -p "$wheels"
if ! ls "$wheels"/pip-"$pip_version"-*.whl >/dev/null 2>&1; then
    "$VENV/bin/pip" download -q --no-deps -d "$wheels" "pip==$pip_version"
fi
if [ ! -f "$script" ]; then
    cat > "$script" <<PYEOF
# Stand-in for get-pip-${pip_version}.py (written by llmfleet tests/sanity.sh).
import glob, sys
wheel = glob.glob("$wheels/pip-${pip_version}-*.whl")[0]
sys.path.insert(0, wheel)
from pip._internal.cli.main import main
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", wheel] + [a for a in args if not a.startswith("pip==")]))
PYEOF
fi
dest=build/sanity/ansible_collections/llmfleet/serving
rm -rf build/sanity
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$dest"/ 2>/dev/null || true
cd "$dest"
git init -q . && git add -A >/dev/null 2>&1 && git -c user.email=ci@llmfleet -c user.name=ci commit -qm sanity >/dev/null
python_version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
log="$OLDPWD/build/sanity.log"
set +e
"$OLDPWD_VENV/bin/ansible-test" sanity --venv --python "$python_version" --color no "${@:2}" > "$log" 2>&1
rc=$?
set -e
# The pip noise of ansible-test's venvs is left in the log; the findings are printed.
grep -E '^(Running sanity test|ERROR|FATAL|WARNING: Required)|^[a-z-]+$' "$log" || true
echo "ansible-test sanity exit status $rc (full log: build/sanity.log)"
exit "$rc"
