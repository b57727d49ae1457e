#!/usr/bin/env bash
# Put the pinned kubernetes.core (kubernetes-core.env) into the checkout's collection path,
# .collections/ansible_collections/kubernetes/core, from the `ansible` wheel that carries it: downloaded once with
# pip (checked against its sha256, cached), then only that collection is extracted. Prints nothing when the
# pinned version is already in place.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=kubernetes-core.env
. "$here/kubernetes-core.env"
python="${PYTHON_BIN:-$repo/.venv/bin/python}"
target="$repo/.collections/ansible_collections/kubernetes/core"
cache="${RIG_BIN_CACHE:-$HOME/.cache/datarobot-mlops-rig}/ansible-$ANSIBLE_WHEEL_VERSION"
wheel="$cache/ansible-$ANSIBLE_WHEEL_VERSION-py3-none-any.whl"

log() { printf '[kubernetes.core] %s\n' "$*" >&2; }

installed=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["collection_info"]["version"])' \
  "$target/MANIFEST.json" 2>/dev/null || true)
[ "$installed" = "$KUBERNETES_CORE_VERSION" ] && exit 0

sha_ok() { [ -f "$wheel" ] && echo "$ANSIBLE_WHEEL_SHA256  $wheel" | sha256sum --check --status; }
if ! sha_ok; then
  log "downloading the ansible $ANSIBLE_WHEEL_VERSION wheel (~51 MB, once) for kubernetes.core $KUBERNETES_CORE_VERSION"
  mkdir -p "$cache"
  scratch=$(mktemp -d "$cache/download.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --dest "$scratch" "ansible==$ANSIBLE_WHEEL_VERSION"
  mv "$scratch/$(basename "$wheel")" "$wheel"
  if ! sha_ok; then
    log "error: $wheel does not match ANSIBLE_WHEEL_SHA256 in tests/rig/kubernetes-core.env; removed it"
    rm -f "$wheel"
    exit 1
  fi
fi

# Extract beside the target, then swap it in, so an interrupted run never leaves half a collection.
"$python" - "$wheel" "$target" "$KUBERNETES_CORE_VERSION" <<'PY'
import json, shutil, sys, tempfile, zipfile
from pathlib import Path

wheel, target, version = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
prefix = "ansible_collections/kubernetes/core/"
target.parent.mkdir(parents=True, exist_ok=True)
staging = Path(tempfile.mkdtemp(prefix=".core-", dir=target.parent))
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = staging / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(archive.read(name))
found = json.loads((staging / "MANIFEST.json").read_text())["collection_info"]["version"]
if found != version:
    shutil.rmtree(staging)
    sys.exit(f"[kubernetes.core] error: the wheel carries kubernetes.core {found}, not {version}")
shutil.rmtree(target, ignore_errors=True)
staging.rename(target)
PY
log "kubernetes.core $KUBERNETES_CORE_VERSION is in .collections/ (ahead of the ansible package's)"
