#!/usr/bin/env bash
# ansible-test must run from a real ansible_collections/<ns>/<name> directory
# (it resolves symlinks), so sanity runs on a copy of the files git knows,
# beside the collections we depend on from the `ansible` package.
#
# --venv DIR runs that virtualenv's ansible-test (default .venv, the newest
# ansible-core line; `make compat` passes the 2.16 one). ansible-test reads the
# ignore file of its own version, tests/sanity/ignore-<major.minor>.txt.
# Further arguments go to ansible-test sanity (e.g. --test pep8).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$repo/.venv"
if [ "${1:-}" = --venv ]; then
  venv="$(cd "$2" && pwd)"
  shift 2
fi
site=$("$venv/bin/python" -c 'import ansible_collections, os; print(os.path.dirname(ansible_collections.__path__[0]))')
# ansible-test bootstraps pip in its venvs with a script from a host we cannot
# reach; give it our offline stand-in under the name it looks for.
pip_version=$(grep -ho "pip='[0-9.]*'" "$site/ansible_test/_internal/python_requirements.py" | head -1 | tr -dc "0-9.")
mkdir -p "$HOME/.ansible/test/cache"
cp "$repo/tests/sanity/get_pip_offline.py" "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/ansible_collections"
mkdir -p "$root/datarobot_mlops/management_agent"
for ns in "$site"/ansible_collections/*/; do
  ln -s "$ns" "$root/$(basename "$ns")"
done
cd "$repo"
# (files deleted in the working tree but still in git's index are left out)
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' file; do
  if [ -e "$file" ]; then printf '%s\0' "$file"; fi
done | xargs -0 cp --parents -t "$root/datarobot_mlops/management_agent"
cd "$root/datarobot_mlops/management_agent"
git init -q && git add -A   # ansible-test lists the collection's files through git
"$venv/bin/ansible-test" sanity --python 3.11 --requirements "$@"
