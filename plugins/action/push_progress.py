# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Wait for a background push, printing a progress line every few seconds (see plugins/modules/push_progress.py)."""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._job_files import (
    is_local,
    job_reader,
    job_remover,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_job import (
    PROGRESS,
    job_status,
    sleep_until_result,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import (
    parse_status,
    watch,
)

display = Display()

ARGUMENT_SPEC = dict(
    job_dir=dict(type="str", required=True),
    interval=dict(type="int", default=5),
    timeout=dict(type="int", default=7260),
    remove=dict(type="bool", default=False),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    # Skipped in check mode (Ansible says so in the result): a check-mode push runs in the foreground, so there is
    # no job to wait for, and `remove` would delete a directory.
    _supports_check_mode = False

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _valid, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        job_dir = args["job_dir"]

        # On the local connection, without become, the job's files are this process's own to read: no module run per
        # look, and the end is seen within 0.2 s (sleep_until_result).
        local = is_local(self._connection.transport, self._play_context.become)
        read = job_reader(self._connection.transport, self._play_context.become,
                          partial(self._execute_module, task_vars=task_vars))

        def read_status() -> dict[str, Any] | None:
            text = read(os.path.join(job_dir, PROGRESS))
            return parse_status(text) if text is not None else None

        try:
            job = watch(lambda stalled: job_status(read, job_dir, check_alive=stalled), read_status, display.display,
                        interval=max(1, args["interval"]), timeout=max(1, args["timeout"]),
                        sleep=sleep_until_result(job_dir) if local else time.sleep)
            job.pop("invocation", None)
        except MlopsError as exc:
            job = {"failed": True, "msg": str(exc)}
        result.update(job)
        result.update(finished=bool(result.get("finished")), job_dir=job_dir)
        result["job_dir_removed"] = args["remove"] and self._remove(job_dir, result, task_vars)
        return result

    def _remove(self, job_dir: str, result: dict[str, Any], task_vars: dict[str, Any] | None) -> bool:
        """Remove the ended job's directory (directly on the local connection, else with the file module); a
        problem is a warning in `result`, not a failure of the push. Whether it is gone."""
        remove = job_remover(self._connection.transport, self._play_context.become,
                             partial(self._execute_module, task_vars=task_vars))
        problem = remove(job_dir)
        if problem:
            result["warnings"] = list(result.get("warnings") or []) + [
                f"The push's job directory was not removed ({problem}); remove it by hand (it holds no credential). "
                "The push's result is not affected."]
        return problem is None
