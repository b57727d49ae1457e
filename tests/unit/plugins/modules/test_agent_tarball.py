"""The agent_tarball module's failures name settings that exist: its own options (src, path, cache_dir) and the
agent_tarball role's variables that set them. Run as Ansible runs it, arguments on standard input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures.agent_tarball import build_agent_tarball

REPO = Path(__file__).resolve().parents[4]
MODULE = "ansible_collections.datarobot_mlops.management_agent.plugins.modules.agent_tarball"
ROLE = REPO / "roles" / "agent_tarball"
ROLE_VARIABLES = set(yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
                     ["argument_specs"]["main"]["options"])


def failure(**args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / ".collections")}
    run = subprocess.run([sys.executable, "-m", MODULE], input=json.dumps({"ANSIBLE_MODULE_ARGS": args}),
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    result = json.loads(run.stdout)
    assert run.returncode == 1 and result["failed"] is True and "Traceback" not in run.stdout + run.stderr
    return result["msg"]


def settings_named(message: str) -> set[str]:
    """The agent_tarball names in `message`, but the role's own name ("the agent_tarball role")."""
    return {name for name, role in re.findall(r"\b(\w*agent_tarball\w*)\b( role)?", message) if not role}


def in_the_way(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker


@pytest.mark.parametrize(("case", "option", "variable"), [
    ("missing tarball", "src", "mlops_agent_tarball"),
    ("directory as tarball", "path", "mlops_agent_tarball_dir"),
    ("missing directory", "path", "mlops_agent_tarball_dir"),
    ("cache directory in the way", "cache_dir", "mlops_agent_tarball_cache_dir"),
])
def test_a_failure_names_the_option_to_set_and_the_roles_variable_for_it(tmp_path, case, option, variable):
    args = {
        "missing tarball": {"src": str(tmp_path / "missing.tar.gz")},
        "directory as tarball": {"src": str(tmp_path)},
        "missing directory": {"path": str(tmp_path / "no-such-dir")},
        "cache directory in the way": {"src": str(build_agent_tarball(tmp_path / "in")),
                                       "cache_dir": str(in_the_way(tmp_path) / "cache")},
    }[case]
    message = failure(**args)
    assert re.search(rf"\b{option}\b", message), message
    assert variable in settings_named(message) and settings_named(message) <= ROLE_VARIABLES, message
