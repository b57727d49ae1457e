"""The ansible-core 2.16 virtualenv that `make compat` creates (.cache/venv-core216, or $COMPAT_VENV).

The compat tests run under .venv's pytest and call this virtualenv's commands and Python, never .venv's.
No conftest.py here: the tests import their fixtures (`core_version` below, the integration suites' `rig`),
so tests/compat can be collected together with tests/integration, whose modules import `conftest` by name.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ansible_cli import REPO, PlaybookRun, ansible_env

COMPAT_VENV = Path(os.environ.get("COMPAT_VENV") or REPO / ".cache" / "venv-core216").absolute()
COMPAT_BIN = COMPAT_VENV / "bin"
COMPAT_PYTHON = COMPAT_BIN / "python"


def compat_collections() -> Path:
    """A collections path with only the link to the checkout: the checkout's .collections also holds the newer
    kubernetes.core that `make setup` puts there for helm 4 (tests/rig/kubernetes-core.env), which would shadow
    the virtualenv's own collections (collections-core216.txt)."""
    root = COMPAT_VENV / "collections"
    link = root / "ansible_collections" / "datarobot_mlops" / "management_agent"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)
    return root


def compat_env(**extra: str) -> dict[str, str]:
    """ansible_env() for the 2.16 virtualenv: its commands first on PATH, no Python path from .venv."""
    env = ansible_env(without=("PYTHONPATH", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS", "VIRTUAL_ENV"),
                      ANSIBLE_COLLECTIONS_PATH=str(compat_collections()))
    env["PATH"] = f"{COMPAT_BIN}:{env['PATH']}"
    env.update(extra)
    return env


def compat_playbook(playbook: str, inventory: str, extra_vars: dict, timeout: int = 1800,
                    **env: str) -> PlaybookRun:
    """The virtualenv's ansible-playbook from the checkout, `env` added to its environment; its JSON output (the
    checkout's ansible.cfg) as a PlaybookRun, empty where there is none."""
    return PlaybookRun.of(subprocess.run(
        [str(COMPAT_BIN / "ansible-playbook"), "-i", inventory, str(REPO / playbook), "-e", json.dumps(extra_vars)],
        capture_output=True, text=True, env=compat_env(**env), cwd=REPO, timeout=timeout, check=False))


def compat_run(*argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """One of the virtualenv's commands (argv[0] is its name in the virtualenv's bin/), from the checkout."""
    return subprocess.run([str(COMPAT_BIN / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=REPO,
                          env=compat_env(), timeout=timeout, check=False)


@pytest.fixture(scope="session")
def core_version() -> str:
    """The virtualenv's ansible-core version; fails (does not skip) when `make compat` has not created it."""
    if not COMPAT_PYTHON.exists():
        pytest.fail(f"no ansible-core 2.16 virtualenv at {COMPAT_VENV}: run `make compat`", pytrace=False)
    proc = compat_run("python", "-c", "import ansible.release; print(ansible.release.__version__)")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()
