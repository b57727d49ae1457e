"""The build_progress action: once every build ended it removes the jobs' status files (async_status cleanup), and
in check mode it is skipped, changing nothing. Real Ansible objects (task, play context, local connection); the
async_status runs are recorded instead of made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleActionSkip
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task
from ansible.plugins.loader import connection_loader
from ansible.template import Templar

from ansible_collections.datarobot_mlops.management_agent.plugins.action.build_progress import ActionModule

FQCN = "datarobot_mlops.management_agent.build_progress"


def action(tmp_path: Path, check_mode: bool) -> tuple[ActionModule, list[dict[str, Any]]]:
    log = tmp_path / "agent.log"
    log.write_text("Successfully built 0123456789ab\n")
    jobs = [{"jid": "j1.1", "image": "reg/agent:1", "log": str(log), "async_dir": str(tmp_path)}]
    task = Task.load({"action": FQCN, "args": {"jobs": jobs, "interval": 1, "timeout": 30}, "check_mode": check_mode})
    context = PlayContext()
    loader = DataLoader()
    plugin = ActionModule(task=task, connection=connection_loader.get("local", context, None), play_context=context,
                          loader=loader, templar=Templar(loader=loader), shared_loader_obj=None)
    calls: list[dict[str, Any]] = []

    def execute_module(module_name: str, module_args: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        calls.append({"module": module_name, **module_args})
        return {"finished": 1, "rc": 0} if module_args.get("mode") == "status" else {}
    plugin._execute_module = execute_module  # type: ignore[method-assign]
    return plugin, calls


def test_the_ended_jobs_status_files_are_removed(tmp_path):
    plugin, calls = action(tmp_path, check_mode=False)
    result = plugin.run(task_vars={})
    assert result["changed"] is True and not result.get("failed")
    assert [call["mode"] for call in calls] == ["status", "cleanup"]


def test_check_mode_skips_the_wait_and_removes_nothing(tmp_path):
    plugin, calls = action(tmp_path, check_mode=True)
    # ansible-core 2.19 words it "does not support check mode", 2.16 "check mode is not supported for this task"
    with pytest.raises(AnsibleActionSkip, match="(does not support check mode|check mode is not supported)"):
        plugin.run(task_vars={})
    assert calls == []
