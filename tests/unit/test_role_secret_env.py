"""The secrets the roles take from the environment (AWX credentials) are read as the modules read them
(module_utils/_secret_env.py through the secret_env lookup): the file's content less its final line break, the
variable over the file, the inventory's value over both, and a file that cannot be read fails with what to fix.
The registry role's password (REGISTRY_PASSWORD_FILE), and the DataRobot API token of the prediction_environment and
management_agent roles (DATAROBOT_API_TOKEN_FILE). The roles' vars run for real through ansible-playbook
(include_vars of their defaults and vars; the management_agent's checks through the role itself), no cluster, no
registry and no DataRobot needed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ansible_cli import BIN, REPO, ansible_env

ROLES = {"prediction_environment": "__prediction_environment_datarobot_api_token",
         "management_agent": "__management_agent_datarobot_api_token"}

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {file: "{{ repo }}/roles/%(role)s/defaults/main.yml"}
    - ansible.builtin.include_vars: {file: "{{ repo }}/roles/%(role)s/vars/main.yml"}
    - name: The value the role would use
      ansible.builtin.copy:
        content: "{{ %(var)s }}"
        dest: "{{ out }}"
        mode: "0600"
"""

# Only the secret's sources come from each test: none of the caller's own variables.
_OWN = ("DATAROBOT_API_TOKEN", "DATAROBOT_API_TOKEN_FILE", "REGISTRY_PASSWORD", "REGISTRY_PASSWORD_FILE")


def _playbook(tmp_path: Path, play: str, extra: dict[str, str], env: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(play)
    extra = {"repo": str(REPO), "ansible_python_interpreter": str(BIN / "python"), **extra}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
                           "-e", json.dumps(extra)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                          env=ansible_env(without=_OWN, **env))


def _role_value(tmp_path: Path, role: str, var: str, extra: dict[str, str],
                env: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "value"
    return _playbook(tmp_path, PLAY % {"role": role, "var": var}, {"out": str(out), **extra}, env), out


def _role_token(tmp_path: Path, role: str, inventory_token: str = "",
                **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    return _role_value(tmp_path, role, ROLES[role], {"mlops_datarobot_api_token": inventory_token}, env)


def _role_password(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    return _role_value(tmp_path, "registry", "__registry_password",
                       {"mlops_registry_host": "registry.example.com:5000", "mlops_namespace": "ns"},
                       {"REGISTRY_HOST": "registry.example.com:5000", "REGISTRY_USERNAME": "u", **env})


@pytest.mark.parametrize("role", sorted(ROLES))
def test_the_credential_file_is_read_as_the_modules_read_it(tmp_path, role):
    secret = tmp_path / "credential"
    secret.write_text(" tok en  \n")  # only a final line break is not part of the token
    run, out = _role_token(tmp_path, role, DATAROBOT_API_TOKEN_FILE=str(secret))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert out.read_text() == " tok en  "


@pytest.mark.parametrize("role", sorted(ROLES))
def test_the_value_wins_over_the_file_and_the_inventory_over_both(tmp_path, role):
    secret = tmp_path / "credential"
    secret.write_text("from-file")
    run, out = _role_token(tmp_path, role, DATAROBOT_API_TOKEN="from-env", DATAROBOT_API_TOKEN_FILE=str(secret))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert out.read_text() == "from-env"
    # The inventory's token is used as is, and the environment is not read (an unreadable file does not matter).
    run, out = _role_token(tmp_path, role, "from-inventory", DATAROBOT_API_TOKEN_FILE=str(tmp_path / "missing"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert out.read_text() == "from-inventory"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_file_that_cannot_be_read_fails_with_what_to_fix(tmp_path, role):
    run, _out = _role_token(tmp_path, role, DATAROBOT_API_TOKEN_FILE=str(tmp_path / "missing"))
    assert run.returncode != 0
    assert f"DATAROBOT_API_TOKEN_FILE names {tmp_path / 'missing'}, which cannot be read" in run.stdout
    assert "set DATAROBOT_API_TOKEN instead" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


CHECKS = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: datarobot_mlops.management_agent.management_agent
        tasks_from: checks
"""


def test_the_role_itself_says_which_file_cannot_be_read(tmp_path):
    """The management_agent role's first check, the one a run meets first, stops on a file that cannot be read (here a
    directory: unreadable for root too)."""
    extra = {"mlops_datarobot_endpoint": "https://datarobot.example.com", "mlops_prediction_environment_id": "abc",
             "mlops_outfacing_url_root": "https://mlops.example.com/", "mlops_management_agent_version": "9.2.0"}
    run = _playbook(tmp_path, CHECKS, extra, {"DATAROBOT_API_TOKEN_FILE": str(tmp_path)})
    assert run.returncode != 0
    assert f"DATAROBOT_API_TOKEN_FILE names {tmp_path}, which cannot be read (Is a directory)" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_the_registry_credential_file_is_read_as_the_modules_read_it(tmp_path):
    secret = tmp_path / "credential"
    secret.write_text(" pass word  \n")  # AWX keeps a password's spaces; only a final line break is not part of it
    run, out = _role_password(tmp_path, REGISTRY_PASSWORD_FILE=str(secret))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert out.read_text() == " pass word  "


def test_the_registry_password_wins_over_the_file(tmp_path):
    secret = tmp_path / "credential"
    secret.write_text("from-file")
    run, out = _role_password(tmp_path, REGISTRY_PASSWORD="from-env", REGISTRY_PASSWORD_FILE=str(secret))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert out.read_text() == "from-env"


def test_a_registry_file_that_cannot_be_read_fails_with_what_to_fix(tmp_path):
    run, _out = _role_password(tmp_path, REGISTRY_PASSWORD_FILE=str(tmp_path / "missing"))
    assert run.returncode != 0
    assert f"REGISTRY_PASSWORD_FILE names {tmp_path / 'missing'}, which cannot be read" in run.stdout
    assert "set REGISTRY_PASSWORD instead" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
