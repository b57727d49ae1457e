# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Wait for image builds running as async jobs, printing a line per build every few seconds
(see plugins/modules/build_progress.py)."""

from __future__ import annotations

from functools import partial
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._build_progress import (
    BuildJob,
    failure_message,
    summary_line,
    watch_builds,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._job_files import job_reader

display = Display()

ARGUMENT_SPEC = dict(
    jobs=dict(type="list", elements="dict", required=True, options=dict(
        jid=dict(type="str", required=True),
        image=dict(type="str", required=True),
        log=dict(type="str", required=True),
        key=dict(type="str", default=""),
        async_dir=dict(type="str"),
    )),
    interval=dict(type="int", default=5),
    timeout=dict(type="int", default=3600),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    # Skipped in check mode (Ansible says so in the result): async jobs do not run in check mode, and the wait ends
    # by removing the jobs' status files (async_status mode=cleanup).
    _supports_check_mode = False

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _valid, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        default_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        async_dirs = {spec["jid"]: spec["async_dir"] or default_dir for spec in args["jobs"]}
        jobs = [BuildJob(jid=spec["jid"], image=spec["image"], log=spec["log"], key=spec["key"])
                for spec in args["jobs"]]

        def job_status(job: BuildJob, mode: str = "status") -> dict[str, Any]:
            return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                        module_args={"jid": job.jid, "mode": mode, "_async_dir": async_dirs[job.jid]})

        # The logs directly on the local connection (no module run per look), else through it with slurp.
        read = job_reader(self._connection.transport, self._play_context.become,
                          partial(self._execute_module, task_vars=task_vars))

        def read_log(job: BuildJob) -> str | None:
            return read(job.log)

        try:
            watch_builds(jobs, job_status, read_log, display.display, interval=max(1, args["interval"]),
                         timeout=max(1, args["timeout"]))
        except MlopsError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        for job in jobs:  # the jobs' status files: nothing to keep once read
            job_status(job, mode="cleanup")
        failed = [job for job in jobs if (job.result or {}).get("failed") or (job.result or {}).get("rc")]
        result["builds"] = [self._report(job) for job in jobs]
        result["changed"] = len(failed) < len(jobs)
        if failed:
            result.update(failed=True, msg=failure_message(failed))
        return result

    @staticmethod
    def _report(job: BuildJob) -> dict[str, Any]:
        outcome = job.result or {}
        ok = not outcome.get("failed") and not outcome.get("rc")
        return {"key": job.key, "image": job.image, "changed": ok, "failed": not ok, "rc": outcome.get("rc"),
                "seconds": round(job.seconds, 1), "steps": job.status.steps, "layers": len(job.status.layers),
                "layers_mounted": job.status.layers_mounted, "layers_existing": job.status.layers_existing,
                "summary": summary_line(job.image, job.status, job.seconds) if ok else ""}
