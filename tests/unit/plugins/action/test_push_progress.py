"""The push_progress action on the local connection: the ended job's directory removed when asked (`remove`), kept
otherwise, and a directory it cannot remove a warning, not a failure of the push. Real Ansible objects (task, play
context, local connection), real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleActionSkip
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task
from ansible.plugins.loader import connection_loader
from ansible.template import Templar

from ansible_collections.datarobot_mlops.management_agent.plugins.action.push_progress import ActionModule

FQCN = "datarobot_mlops.management_agent.push_progress"


def run_action(**args: Any) -> dict[str, Any]:
    task = Task.load({"action": FQCN, "args": {"interval": 1, "timeout": 30, **args}})
    context = PlayContext()
    loader = DataLoader()
    action = ActionModule(task=task, connection=connection_loader.get("local", context, None), play_context=context,
                          loader=loader, templar=Templar(loader=loader), shared_loader_obj=None)
    return action.run(task_vars={})


def ended_job(tmp_path: Path, result: dict[str, Any] | None) -> Path:
    folder = tmp_path / "pps-push-x"
    folder.mkdir(mode=0o700)
    (folder / "worker.json").write_text(json.dumps({"pid": 1, "start": "0"}))  # pid 1 never started at tick 0
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_remove_takes_the_ended_jobs_directory_away(tmp_path):
    folder = ended_job(tmp_path, {"changed": True, "summary": "reg/pps:1: pushed"})
    result = run_action(job_dir=str(folder), remove=True)
    assert result["changed"] is True and result["finished"] is True and not result.get("failed")
    assert result["job_dir_removed"] is True and result["job_dir"] == str(folder)
    assert not folder.exists()


def test_without_remove_the_directory_stays_the_callers(tmp_path):
    folder = ended_job(tmp_path, {"changed": False, "summary": "reg/pps:1: already in the registry"})
    result = run_action(job_dir=str(folder))
    assert result["job_dir_removed"] is False and (folder / "result.json").exists()


def test_a_failed_push_is_reported_and_its_directory_removed_too(tmp_path):
    folder = ended_job(tmp_path, None)  # its worker gone without a result
    result = run_action(job_dir=str(folder), remove=True)
    assert result["failed"] is True and "ended without a result" in result["msg"]
    assert result["job_dir_removed"] is True and not folder.exists()


def test_a_directory_it_cannot_remove_is_a_warning_not_a_failure(tmp_path):
    folder = ended_job(tmp_path, {"changed": True, "summary": "reg/pps:1: pushed"})
    link = tmp_path / "link"
    link.symlink_to(folder)  # read through, never removed through
    result = run_action(job_dir=str(link), remove=True)
    assert not result.get("failed") and result["changed"] is True
    assert result["job_dir_removed"] is False
    assert any(f"job directory was not removed ({link}: " in warning for warning in result["warnings"])
    assert (folder / "result.json").exists()


def test_check_mode_skips_the_wait_and_removes_nothing(tmp_path):
    folder = ended_job(tmp_path, {"changed": True, "summary": "reg/pps:1: pushed"})
    task = Task.load({"action": FQCN, "args": {"job_dir": str(folder), "remove": True}, "check_mode": True})
    context = PlayContext()
    loader = DataLoader()
    action = ActionModule(task=task, connection=connection_loader.get("local", context, None), play_context=context,
                          loader=loader, templar=Templar(loader=loader), shared_loader_obj=None)
    # ansible-core 2.19 words it "does not support check mode", 2.16 "check mode is not supported for this task"
    with pytest.raises(AnsibleActionSkip, match="(does not support check mode|check mode is not supported)"):
        action.run(task_vars={})
    assert (folder / "result.json").exists()
