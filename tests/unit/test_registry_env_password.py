"""The registry role's password from the environment (an AWX registry credential: REGISTRY_PASSWORD_FILE) is read as
the modules read it (module_utils/_secret_env.py through the secret_env lookup): the file's content less its final
line break, and a file that cannot be read fails with what to fix. The role's vars run for real through
ansible-playbook (include_vars of its defaults and vars), no cluster needed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ansible_cli import BIN, REPO, ansible_env

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {file: "{{ repo }}/roles/registry/defaults/main.yml"}
    - ansible.builtin.include_vars: {file: "{{ repo }}/roles/registry/vars/main.yml"}
    - name: The password the role would use
      ansible.builtin.copy:
        content: "{{ __registry_password }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def _role_password(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    (tmp_path / "play.yml").write_text(PLAY)
    out = tmp_path / "password"
    extra = {"repo": str(REPO), "out": str(out), "mlops_registry_host": "registry.example.com:5000",
             "mlops_namespace": "ns", "ansible_python_interpreter": str(BIN / "python")}
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
                          "-e", json.dumps(extra)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                         env=ansible_env(REGISTRY_HOST="registry.example.com:5000", REGISTRY_USERNAME="u", **env))
    return run, out


def test_the_credential_file_is_read_as_the_modules_read_it(tmp_path):
    secret = tmp_path / "credential"
    secret.write_text(" pass word  \n")  # AWX keeps a password's spaces; only a final line break is not part of it
    run, out = _role_password(tmp_path, REGISTRY_PASSWORD_FILE=str(secret))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert out.read_text() == " pass word  "


def test_the_value_wins_over_the_file(tmp_path):
    secret = tmp_path / "credential"
    secret.write_text("from-file")
    run, out = _role_password(tmp_path, REGISTRY_PASSWORD="from-env", REGISTRY_PASSWORD_FILE=str(secret))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert out.read_text() == "from-env"


def test_a_file_that_cannot_be_read_fails_with_what_to_fix(tmp_path):
    run, _out = _role_password(tmp_path, REGISTRY_PASSWORD_FILE=str(tmp_path / "missing"))
    assert run.returncode != 0
    assert f"REGISTRY_PASSWORD_FILE names {tmp_path / 'missing'}, which cannot be read" in run.stdout
    assert "set REGISTRY_PASSWORD instead" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
