"""An AWX job without an AWX server: the private data directory AWX's task system hands to ansible-runner.

What AWX does when a job starts (its RunJob task and CredentialType.inject_credential), re-stated here:

- Each credential's injectors are rendered with a sandboxed Jinja environment over the credential's inputs and a
  `tower` namespace. `file` injectors come first: each becomes a private (0600) temporary file under env/, and its
  path is `tower.filename` (one unnamed file) or `tower.filename.<name>` (`template.<name>`) in the other templates.
  `env` injectors go into the job's environment; `extra_vars` injectors are dumped as YAML to another file under env/
  that is passed as `-e @<file>` on the command line.
- The job template's extra vars and the survey answers go to env/extravars.
- The inventory goes to inventory/, the project is the job's working directory (project/).

AWX drops empty inputs from the namespace and renders with Jinja's default Undefined. This helper is stricter
(StrictUndefined): a template naming an input the test did not give fails instead of rendering as empty, which is
also how AWX validates a credential type when it is saved.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


class _Namespace:
    """AWX's `tower` namespace (and its `filename` one)."""


@dataclass
class Injected:
    """What the credentials of one job put in place: environment variables and extra-vars files."""

    env: dict[str, str] = field(default_factory=dict)
    extra_vars_files: list[Path] = field(default_factory=list)


def inject(credential_type: dict, inputs: dict[str, Any], private_data_dir: Path, injected: Injected) -> None:
    """Render one credential's injectors into `private_data_dir`/env and `injected`, as AWX does."""
    sandbox = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    tower = _Namespace()
    namespace: dict[str, Any] = {"tower": tower, **inputs}
    env_dir = private_data_dir / "env"
    env_dir.mkdir(parents=True, exist_ok=True)
    injectors = credential_type.get("injectors") or {}
    for label, template in injectors.get("file", {}).items():
        handle, path = tempfile.mkstemp(dir=env_dir)
        with os.fdopen(handle, "w") as out:
            out.write(sandbox.from_string(template).render(**namespace))
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        if "." not in label:
            tower.filename = path  # type: ignore[attr-defined]
        else:
            if not hasattr(tower, "filename"):
                tower.filename = _Namespace()  # type: ignore[attr-defined]
            setattr(tower.filename, label.split(".", 1)[1], path)  # type: ignore[attr-defined]
    for name, template in injectors.get("env", {}).items():
        injected.env[name] = sandbox.from_string(template).render(**namespace)
    extra_vars = _render_tree(sandbox, injectors.get("extra_vars", {}), namespace)
    if extra_vars:
        handle, path = tempfile.mkstemp(dir=env_dir)
        with os.fdopen(handle, "w") as out:
            out.write(yaml.safe_dump(extra_vars))
        os.chmod(path, stat.S_IRUSR)
        injected.extra_vars_files.append(Path(path))


def _render_tree(sandbox: ImmutableSandboxedEnvironment, node: Any, namespace: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {_render_tree(sandbox, key, namespace): _render_tree(sandbox, value, namespace)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_render_tree(sandbox, item, namespace) for item in node]
    return sandbox.from_string(node).render(**namespace)


@dataclass
class Job:
    """A finished ansible-runner job: its private data directory and artifacts."""

    private_data_dir: Path
    ident: str
    process: subprocess.CompletedProcess

    @property
    def artifacts(self) -> Path:
        return self.private_data_dir / "artifacts" / self.ident

    @property
    def status(self) -> str:
        return (self.artifacts / "status").read_text().strip()

    def events(self) -> list[dict]:
        """The job's events in the order they happened (their counter: file names sort 10- before 2-)."""
        events = [json.loads(path.read_text()) for path in (self.artifacts / "job_events").glob("*.json")]
        return sorted(events, key=lambda event: event["counter"])

    def task_results(self, task: str) -> dict[str, dict]:
        """Each host's result of `task`, from the runner_on_ok events."""
        return {event["event_data"]["host"]: event["event_data"]["res"] for event in self.events()
                if event.get("event") == "runner_on_ok" and event["event_data"].get("task") == task}


def credential_types() -> dict[str, dict]:
    """awx/credential_types.yml by name, as configure.yml creates them in AWX."""
    types = yaml.safe_load((REPO / "awx" / "credential_types.yml").read_text())["credential_types"]
    return {definition["name"]: definition for definition in types}


def template_extra_vars(playbook: str, answers: dict[str, Any]) -> dict[str, Any]:
    """What AWX puts in env/extravars for the job template of `playbook` (awx/job_templates.yml): the defaults' extra
    vars, the template's own, then the survey's `answers`."""
    data = yaml.safe_load((REPO / "awx" / "job_templates.yml").read_text())
    extra = dict(data["job_template_defaults"].get("extra_vars", {}))
    template = next(template for template in data["job_templates"] if template["playbook"] == playbook)
    extra.update(template.get("extra_vars", {}))
    extra.update(answers)
    return extra


def execution_environment(environ: dict[str, str]) -> dict[str, str]:
    """The runner's own environment: what an execution environment has, nothing of the test's (or the rig's)."""
    return {"PATH": f"{BIN}:{environ['PATH']}", "HOME": environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections")}


def secrets_in(artifacts: Path, canaries: dict[str, str]) -> list[str]:
    """'<file>: <secret name>' for each secret (`canaries`: name -> value) found in any file under `artifacts`."""
    found = []
    for path in sorted(artifacts.rglob("*")):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            found += [f"{path.relative_to(artifacts)}: {name}" for name, value in canaries.items() if value in text]
    return found


def run_job(private_data_dir: Path, project: Path, playbook: str, *, inventory: dict, extravars: dict,
            injected: Injected, base_env: dict[str, str], tags: str = "", ident: str = "1",
            timeout: int = 900) -> Job:
    """Lay out the private data directory and run `playbook` of `project` with the ansible-runner CLI.

    The runner's own process gets only `base_env` (what the execution environment has); everything else reaches the
    job the way AWX sends it: env/envvars, env/extravars, the inventory and the command line.
    """
    (private_data_dir / "env").mkdir(parents=True, exist_ok=True)
    (private_data_dir / "inventory").mkdir(exist_ok=True)
    (private_data_dir / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (private_data_dir / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    (private_data_dir / "env" / "envvars").write_text(yaml.safe_dump(injected.env))
    cmdline = [f"-e @{path}" for path in injected.extra_vars_files] + ([f"-t {tags}"] if tags else [])
    (private_data_dir / "env" / "cmdline").write_text(" ".join(cmdline))
    project_link = private_data_dir / "project"
    if not project_link.exists():
        project_link.symlink_to(project, target_is_directory=True)
    argv = [str(BIN / "ansible-runner"), "run", str(private_data_dir), "-p", playbook, "--ident", ident]
    process = subprocess.run(argv, capture_output=True, text=True, env=base_env, timeout=timeout, check=False)
    return Job(private_data_dir, ident, process)
