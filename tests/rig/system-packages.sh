#!/usr/bin/env bash
# The Debian packages the rig, the tests and `make demo` need (`make system-packages`, run before any build):
# the registry (docker-registry), the Docker API (podman), skopeo, htpasswd (apache2-utils), openssl, a docker
# CLI for the agent tarball's Makefiles (Debian's docker.io only when no `docker` command exists), strace (a unit
# test reads the argv of every process a command starts) and, when the Python that makes .venv has no ensurepip,
# python3-venv.
# Everything installed: silent and quick (dpkg-query only, no apt-get update). As root: installs what is missing.
# Otherwise: prints the one apt-get command to run and fails, before anything is built.
set -euo pipefail

python=${PYTHON:-python3}
packages=(docker-registry podman skopeo apache2-utils openssl strace)

if ! command -v dpkg-query >/dev/null; then
  # Not Debian: say which commands are missing instead of package names.
  missing=()
  for cmd in docker-registry podman skopeo htpasswd openssl strace docker; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "missing commands (the Debian packages ${packages[*]} docker.io provide them): ${missing[*]}" >&2
  exit 1
fi

need=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
command -v docker >/dev/null || need+=(docker.io)
if [ ! -x "${VENV:-.venv}/bin/python" ]; then  # `make setup` will run `$python -m venv`
  if ! command -v "$python" >/dev/null; then
    need+=(python3 python3-venv)
  elif "$python" -c 'import sys' 2>/dev/null && ! "$python" -c 'import ensurepip' 2>/dev/null; then
    need+=(python3-venv)
  fi
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages; run: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "[system-packages] installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
