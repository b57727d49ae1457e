"""The withheld_env lookup as a play uses it: a task's `environment:` blanks what the program it starts must not see.

Run through ansible-playbook (no rig needed): `ansible.builtin.command: env` shows the environment a module's child
gets on a local connection, which is what kubernetes.core.helm's helm gets in the ingress_nginx role.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from ansible_cli import BIN, REPO, PlaybookRun, ansible_env

PLAY = """
- hosts: localhost
  gather_facts: false
  environment: {PLAY_SET: "{{ 'from the play' }}"}
  tasks:
    - name: The environment a module's child gets
      ansible.builtin.command: env
      environment: >-
        {{ lookup('datarobot_mlops.management_agent.withheld_env', KIND,
                  withhold=[run_secret, ''], keep=['PLAY_SET']) }}
      register: child
      changed_when: false
"""


def _play(tmp_path: Path, kind: str, **env: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
            "-e", json.dumps({"KIND": kind, "run_secret": env.get("HELM_NOTE", "")[2:-2],
                              "ansible_python_interpreter": str(BIN / "python")})]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                          env=ansible_env(**env))


def test_the_child_of_a_module_gets_no_secret_and_keeps_what_it_needs(tmp_path):
    canary = f"canary{uuid.uuid4().hex}"
    run = _play(tmp_path, "helm_module", DATAROBOT_API_TOKEN=canary, SITE_NOTE=canary, REGISTRY_PASSWORD=canary,
                HELM_NOTE=f"x-{canary}-x", K8S_AUTH_CONTEXT="ctx", KUBECONFIG="/k", AWS_PROFILE="eks",
                HELM_CACHE_HOME="/c", PLAY_SET="overridden by the play")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    result = PlaybookRun.of(run).first_result()
    child = dict(line.split("=", 1) for line in result["stdout"].splitlines() if "=" in line)
    assert canary not in result["stdout"]
    assert child["DATAROBOT_API_TOKEN"] == child["SITE_NOTE"] == child["REGISTRY_PASSWORD"] == ""
    assert child["HELM_NOTE"] == ""  # an allowed name holding a run secret
    assert child["K8S_AUTH_CONTEXT"] == "ctx" and child["KUBECONFIG"] == "/k" and child["AWS_PROFILE"] == "eks"
    assert child["HELM_CACHE_HOME"] == "/c" and child["PATH"] and child["HOME"]
    assert child["PLAY_SET"] == "from the play"  # what the play sets on purpose is kept


def test_an_unknown_kind_fails_the_task_with_the_kinds(tmp_path):
    run = _play(tmp_path, "kubectl")
    assert run.returncode != 0
    assert "Unknown kind of child process 'kubectl': use one of credential_helper, helm, helm_module" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
