# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Wait for an async push job, printing a progress line every few seconds (see plugins/modules/push_progress.py)."""

from __future__ import annotations

import base64
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_progress import (
    parse_status,
    watch,
)

display = Display()

ARGUMENT_SPEC = dict(
    jid=dict(type="str", required=True),
    progress_file=dict(type="str"),
    async_dir=dict(type="str"),
    interval=dict(type="int", default=5),
    timeout=dict(type="int", default=7200),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _valid, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        default_dir = self.get_shell_option("async_dir", default="~/.ansible_async")
        async_dir = args["async_dir"] or self._remote_expand_user(default_dir)

        def poll_job() -> dict[str, Any]:
            return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                        module_args={"jid": args["jid"], "mode": "status", "_async_dir": async_dir})

        def read_status() -> dict[str, Any] | None:
            if not args["progress_file"]:
                return None
            # Read through the connection, so a push running on a remote host is watched the same way.
            read = self._execute_module(module_name="ansible.legacy.slurp", task_vars=task_vars,
                                        module_args={"src": args["progress_file"]})
            if read.get("failed") or "content" not in read:
                return None  # not written yet, or already removed
            return parse_status(base64.b64decode(read["content"]).decode("utf-8", "replace"))

        try:
            job = watch(poll_job, read_status, display.display, interval=max(1, args["interval"]),
                        timeout=max(1, args["timeout"]))
        except MlopsError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        job.pop("invocation", None)
        result.update(job)
        for key in ("started", "finished"):  # ints before ansible-core 2.19
            result[key] = bool(result.get(key))
        return result
