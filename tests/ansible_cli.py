"""Run modules and playbooks through the real Ansible CLI and read their results as JSON.

Going through `ansible`/`ansible-playbook` (not importing the module) tests
what users run: FQCN resolution, argument specs, no_log, check and diff mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Outcome:
    result: dict[str, Any]
    stdout: str
    stderr: str
    returncode: int

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed")) or self.returncode != 0


def ansible_env(*, without: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in without}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra)
    return env


def _mode_flags(check: bool, diff: bool, verbosity: int) -> list[str]:
    return (["--check"] if check else []) + (["--diff"] if diff else []) + (["-" + "v" * verbosity] if verbosity else [])


def module_argv(fqcn: str, args: dict[str, Any], *, check: bool = False, diff: bool = False,
                verbosity: int = 0) -> list[str]:
    """The `ansible localhost -m` command line that runs one module (for tests that start it themselves)."""
    argv = [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
            "-e", f"ansible_python_interpreter={sys.executable}", "-m", fqcn]
    if args:  # `-a '{}'` would be read as raw parameters
        argv += ["-a", json.dumps(args)]
    return argv + _mode_flags(check, diff, verbosity)


def run_module(fqcn: str, args: dict[str, Any], *, check: bool = False, diff: bool = False,
               verbosity: int = 0, env: dict[str, str] | None = None, cwd: Path = REPO) -> Outcome:
    argv = module_argv(fqcn, args, check=check, diff=diff, verbosity=verbosity)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or ansible_env(), cwd=cwd,
                          timeout=900, check=False)
    return Outcome(PlaybookRun.of(proc).first_result(), proc.stdout, proc.stderr, proc.returncode)


@dataclass
class PlaybookRun:
    document: dict[str, Any]
    stdout: str
    stderr: str
    returncode: int

    @classmethod
    def of(cls, proc: subprocess.CompletedProcess) -> "PlaybookRun":
        """An ansible-playbook run's outcome, its json callback's document read from stdout (empty where there is
        none: the run stopped before it, or printed something else)."""
        try:
            document = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            document = {}
        return cls(document, proc.stdout, proc.stderr, proc.returncode)

    def first_result(self, host: str = "localhost") -> dict[str, Any]:
        """The first task's result on `host` (an ad-hoc run's module, a one-task play's), empty where none ran."""
        try:
            return self.document["plays"][0]["tasks"][0]["hosts"][host]
        except (KeyError, IndexError):
            return {}

    @property
    def stats(self) -> dict[str, int]:
        return next(iter(self.document.get("stats", {}).values()), {})

    @property
    def changed(self) -> int:
        return self.stats.get("changed", 0)

    def task(self, name: str, host: str | None = None) -> dict[str, Any]:
        """The result of the last task whose name ends with `name` (roles prefix their name) that ran on `host` (the
        free strategy records a task once per host)."""
        found = None
        for play in self.document.get("plays", []):
            for task in play["tasks"]:
                hosts = task["hosts"]
                if task["task"]["name"].endswith(name) and (host is None or host in hosts):
                    found = hosts[host] if host else next(iter(hosts.values()))
        if found is None:
            raise AssertionError(f"no task named {name!r} ran; stderr: {self.stderr[-2000:]}")
        return found

    def failure(self) -> str:
        """The message of the last failed task (the one that stopped the run, after any rescue)."""
        message = ""
        for play in self.document.get("plays", []):
            for task in play["tasks"]:
                for result in task["hosts"].values():
                    if result.get("failed") and not result.get("ignore_errors"):
                        message = result.get("msg", "")
        return message


def run_playbook(playbook: str, *, inventory: str = "inventories/local", extra_vars: dict[str, Any] | None = None,
                 check: bool = False, diff: bool = False, tags: str | None = None, skip_tags: str | None = None,
                 verbosity: int = 0, env: dict[str, str] | None = None) -> PlaybookRun:
    """`_mlops` in `extra_vars` (what earlier stages would have published) goes in as an inventory variable of every
    host, not with -e: extra vars outrank set_fact, so a stage could not add its own keys to it."""
    extra_vars = dict(extra_vars or {})
    published = extra_vars.pop("_mlops", None)
    with tempfile.TemporaryDirectory(prefix="published-") as scratch:
        argv = [str(BIN / "ansible-playbook"), "-i", str(REPO / inventory), str(REPO / playbook)]
        if published is not None:
            source = Path(scratch) / "published.yml"
            source.write_text(json.dumps({"all": {"vars": {"_mlops": published}}}))
            argv += ["-i", str(source)]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        if tags:
            argv += ["--tags", tags]
        if skip_tags:
            argv += ["--skip-tags", skip_tags]
        argv += _mode_flags(check, diff, verbosity)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env or ansible_env(), cwd=REPO,
                              timeout=1800, check=False)
    return PlaybookRun.of(proc)
