"""The clean_env lookup as the roles use it: `ansible.builtin.command` argv behind it, run through ansible-playbook
(no rig needed); the child prints the environment it got."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from ansible_cli import BIN, REPO, PlaybookRun, ansible_env

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The environment a command gets behind the wrapper
      ansible.builtin.command:
        argv: >-
          {{ query('datarobot_mlops.management_agent.clean_env', *EXTRA)
             + ['sh', '-c', 'env; echo "$1"', 'sh', ARG] }}
      register: child
      changed_when: false
"""


def _play(tmp_path: Path, extra: list[str], **env: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
            "-e", json.dumps({"EXTRA": extra, "ARG": "an 'argument' with \"quotes\" and spaces",
                              "ansible_python_interpreter": str(BIN / "python")})]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                          env=ansible_env(ANSIBLE_STDOUT_CALLBACK="json", **env))


def test_the_command_gets_the_common_and_the_named_variables_only(tmp_path):
    canary = f"canary{uuid.uuid4().hex}"
    run = _play(tmp_path, ["HELM_*", "DOCKER_HOST"], DATAROBOT_API_TOKEN=canary, REGISTRY_PASSWORD=canary,
                SITE_NOTE=canary, HELM_CACHE_HOME="/helm-cache-value-x", DOCKER_HOST="unix:///d.sock",
                DOCKER_PASSWORD=canary,
                HTTPS_PROXY="http://proxy.invalid:3128")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    result = PlaybookRun.of(run).first_result()
    *lines, arg = result["stdout"].splitlines()
    child = dict(line.split("=", 1) for line in lines if "=" in line)
    assert canary not in result["stdout"]
    assert not {"DATAROBOT_API_TOKEN", "REGISTRY_PASSWORD", "SITE_NOTE", "DOCKER_PASSWORD",
                "ANSIBLE_CONFIG"} & set(child)
    assert child["HELM_CACHE_HOME"] == "/helm-cache-value-x" and child["DOCKER_HOST"] == "unix:///d.sock"
    assert child["HTTPS_PROXY"] == "http://proxy.invalid:3128" and child["PATH"] and child["HOME"]
    assert arg == "an 'argument' with \"quotes\" and spaces"
    # names in the argv, no values
    assert "/helm-cache-value-x" not in result["cmd"] and "unix:///d.sock" not in result["cmd"]


def test_a_bad_name_fails_the_task_with_a_clear_message(tmp_path):
    run = _play(tmp_path, ["DOCKER HOST"])
    assert run.returncode != 0
    assert "'DOCKER HOST' is not a variable name" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
