# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A push that goes on after the module has returned: the collection's own background job, with no module file.

Why not Ansible's `async`: an async job cannot be pipelined, so its module file, which holds the module's arguments
(the registry password among them), is written into the remote temporary directory and stays there while the job
runs. Here the module runs as any other, pipelined (its arguments arrive on standard input and are never written),
and, asked to, forks a detached worker that keeps the arguments it already parsed in memory and does the push.

The job lives in a private directory (`job_dir`, mode 0700): the caller's, or, when it gives none, one that
`start_job` makes in the temporary directory (`pps-push-*`), returns, and removes again if the worker does not start;
the watcher (`push_progress` with `remove`) removes it once the job has ended:

- `worker.json`: the worker's pid and its start time (`/proc/<pid>/stat`), so a watcher can tell a worker that died
  without a result (or a pid taken by another process since) from one still pushing;
- `progress.json`: what the push has done so far (`_push_progress.PushProgress`);
- `result.json`: the module's result, written once at the end (0600, a temporary file renamed into place), through
  the caller's `clean` (which masks the values Ansible would mask).

The worker stops itself after `seconds` and then writes a failed result that says so. It also stops, and removes
the job directory, once the Ansible run that started it has ended (`_ansible_run`: interrupted, cancelled, or failed
before it collected the push): nobody would collect it any more. `job_status()` is the
watcher's half: it reads those files through a `read` callable and answers as `async_status` would (`finished`, or
the result). The `push_progress` action reads them (`_job_files`) directly on the local connection (every inventory of the
collection), ending its waits as soon as the result is there (`sleep_until_result`), and with `slurp` through any
other connection, once per progress line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._ansible_run import (
    ENDED_STATES,
    RunProcess,
    ansible_run,
    is_running,
    read_stat,
    stat_fields,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._json_file import write_json

RESULT, PROGRESS, WORKER = "result.json", "progress.json", "worker.json"
# What a message names for the user to change: the module's option, and the roles' variables that set it.
FOREGROUND = "background: false; mlops_pps_image_background or mlops_agent_images_background: false"
TIME_LIMIT_VARIABLES = "mlops_pps_image_background_seconds, or mlops_agent_images_background_seconds"
JOB_DIR_PREFIX = "pps-push-"
Work = Callable[[], "dict[str, Any]"]
JobWork = Callable[[str], "dict[str, Any]"]  # given the job directory
Clean = Callable[["dict[str, Any]"], "dict[str, Any]"]
Read = Callable[[str], "str | None"]


class PushJobError(MlopsError):
    """The background push could not be started, or its job directory is not one it may use."""


def check_job_dir(path: str) -> None:
    """`path` must be an existing directory of this user that nobody else can enter, and hold no earlier job."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise PushJobError(f"job_dir {path} cannot be used: {exc.strerror or exc}. Give a directory made for this "
                           "push (ansible.builtin.tempfile with state: directory makes one with mode 0700).") from exc
    if not os.path.isdir(path) or os.path.islink(path):
        raise PushJobError(f"job_dir {path} is not a directory (a link is not taken either).")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PushJobError(f"job_dir {path} must belong to this user and be closed to others (mode 0700), as the "
                           f"push's result is kept there; it has mode {info.st_mode & 0o777:o}. Give a private "
                           "directory (ansible.builtin.tempfile with state: directory makes one).")
    if os.path.exists(os.path.join(path, WORKER)):
        raise PushJobError(f"job_dir {path} already holds a push job; give each push a new directory.")


def parse_proc_stat(text: str) -> tuple[str, str] | None:
    """(state, start time in clock ticks) from the text of /proc/<pid>/stat; None when it is not one."""
    fields = stat_fields(text)
    return (fields[0], fields[19]) if fields else None


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (/proc), or None where there is no /proc or no such process."""
    fields = read_stat(pid)
    return fields[19] if fields else None


def outcome(work: Work) -> dict[str, Any]:
    """What `work()` returned, or a failed result with the message of what it raised."""
    try:
        return work()
    except MlopsError as exc:
        return {"failed": True, "msg": str(exc), **getattr(exc, "result", {})}
    except SystemExit:
        return {"failed": True, "msg": "The background push stopped without a result of its own (it exited)."}
    # A detached worker has nobody to tell but its result file: an unexpected error is reported there, by its class
    # and message (no traceback), rather than leaving the watcher with a dead worker and no reason.
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return {"failed": True, "msg": f"The background push failed unexpectedly: {type(exc).__name__}: {exc}"}


class Worker:
    """The detached process's part: run the push once, or stop it at the deadline; write the result either way."""

    def __init__(self, job_dir: str, seconds: int, clean: Clean, owner: RunProcess | None = None) -> None:
        self.job_dir, self.seconds, self.clean, self.owner = job_dir, seconds, clean, owner
        self._once = threading.Lock()

    def finish(self, result: dict[str, Any]) -> bool:
        """Write the result unless one was written already; True when this call wrote it."""
        if not self._once.acquire(blocking=False):  # pylint: disable=consider-using-with
            return False
        try:
            write_json(os.path.join(self.job_dir, RESULT), self.clean(result))
        except OSError:
            pass  # the job directory is gone: nobody is waiting any more
        return True

    def expire(self) -> None:
        """The deadline passed: record it and end the process, whatever its threads are doing."""
        message = (f"The background push did not end within {self.seconds}s, its time limit, and was stopped. Give it "
                   f"longer (the module's background_timeout: {TIME_LIMIT_VARIABLES}), or look at the registry and "
                   "the network between it and this host.")
        if self.finish({"failed": True, "timed_out": True, "msg": message}):
            try:
                os.unlink(os.path.join(self.job_dir, PROGRESS))
            except OSError:
                pass
            os._exit(3)

    def watch_owner(self, every: float = 1.0) -> None:
        """Once the Ansible run that started the push has ended, end the push and remove its job directory: nobody
        will collect it (Ctrl-C, a cancelled job, a run that failed before collecting it). Without an owner there
        is nothing to watch."""
        if self.owner is None:
            return
        while is_running(self.owner):
            time.sleep(every)
        if self._once.acquire(blocking=False):  # pylint: disable=consider-using-with  # no result, ever
            for name in (PROGRESS, WORKER, RESULT):
                try:
                    os.unlink(os.path.join(self.job_dir, name))
                except OSError:
                    pass
            try:
                os.rmdir(self.job_dir)  # only when empty: what else a caller's job_dir holds is the caller's
            except OSError:
                pass
            os._exit(4)

    def run(self, work: Work) -> int:
        """Run `work` under the deadline, and while the run that started it goes on; the exit status."""
        timer = threading.Timer(self.seconds, self.expire)
        timer.daemon = True
        timer.start()
        if self.owner is not None:
            threading.Thread(target=self.watch_owner, name="owner", daemon=True).start()
        result = outcome(work)
        timer.cancel()
        self.finish(result)
        return 1 if result.get("failed") else 0


def _detach() -> None:
    """Standard input, output and error to /dev/null and every other descriptor closed, as a daemon does."""
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.closerange(3, max(os.sysconf("SC_OPEN_MAX"), 256) if hasattr(os, "sysconf") else 1024)


def _worker_process(job_dir: str, seconds: int, work: Work, clean: Clean, ready: int,
                    owner: RunProcess | None) -> None:
    """In the grandchild: record who it is, tell the module, detach, push, exit without returning to the caller."""
    status = 1
    try:
        os.umask(0o077)
        pid = os.getpid()
        write_json(os.path.join(job_dir, WORKER), {"pid": pid, "start": process_start(pid)})
        os.write(ready, str(pid).encode())
        os.close(ready)
        _detach()
        status = Worker(job_dir, seconds, clean, owner).run(work)
    finally:
        os._exit(status)  # never back into the module's code (it would print a second result)


def start(job_dir: str, seconds: int, work: Work, clean: Clean, owner: RunProcess | None = None) -> dict[str, Any]:
    """Start `work` in a detached worker (double fork, new session) and return at once with its pid; the worker
    stops once `owner` (the Ansible run, `ansible_run()`) has ended.

    Everything `work` needs must be imported already: the module's own files may be gone once it has returned.
    """
    check_job_dir(job_dir)
    if seconds < 1:
        raise PushJobError(f"background_timeout must be at least one second, not {seconds}.")
    read_end, write_end = os.pipe()
    try:
        first = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        raise PushJobError(f"The background push could not be started: no new process ({exc.strerror or exc}). "
                           f"Free processes or memory on this host, or push in the foreground ({FOREGROUND}).") from exc
    if first == 0:  # the first child: a session of its own, then the worker, then gone (the worker is init's)
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                _worker_process(job_dir, seconds, work, clean, write_end, owner)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)
    with os.fdopen(read_end, "rb") as pipe:
        told = pipe.read().decode() or "0"
    if not told.isdigit() or int(told) <= 0:
        raise PushJobError(f"The background push did not start (nothing came back from its worker in {job_dir}); "
                           f"push in the foreground ({FOREGROUND}) to see why.")
    return {"changed": False, "started": True, "finished": False, "job_dir": job_dir, "pid": int(told),
            "background_timeout": seconds}


def make_job_dir() -> str:
    """A new private directory (mode 0700) for a push job, in this host's temporary directory (TMPDIR)."""
    try:
        return tempfile.mkdtemp(prefix=JOB_DIR_PREFIX)
    except OSError as exc:
        raise PushJobError(f"Cannot make a private directory for the background push in {tempfile.gettempdir()}: "
                           f"{exc.strerror or exc}. Give a writable temporary directory (TMPDIR) or a job_dir of "
                           "your own.") from exc


def start_job(job_dir: str | None, seconds: int, work: JobWork, clean: Clean) -> dict[str, Any]:
    """`start()` of `work(job_dir)` in `job_dir`, the caller's; or, when None, in a directory made here
    (`make_job_dir`), which the result names as `job_dir` and which is removed again when the worker did not start
    (a failed start never leaves one behind). The worker stops when the Ansible run this module runs under ends."""
    owner = ansible_run()
    if job_dir is not None:
        return start(job_dir, seconds, lambda: work(job_dir), clean, owner)
    made = make_job_dir()
    try:
        return start(made, seconds, lambda: work(made), clean, owner)
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        raise


def _load(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def worker_alive(read: Read, worker: dict[str, Any]) -> bool:
    """Whether the worker `worker` (its worker.json) still runs: its pid is there, started when it did, not a zombie.

    Without a recorded start time (no /proc where it runs) this cannot be told, and it counts as running: only the
    watcher's timeout ends the wait then.
    """
    if not worker.get("start"):
        return True
    parsed = parse_proc_stat(read(f"/proc/{int(worker['pid'])}/stat") or "")
    return parsed is not None and parsed[1] == str(worker["start"]) and parsed[0] not in ENDED_STATES


def job_status(read: Read, job_dir: str, *, check_alive: bool = True) -> dict[str, Any]:
    """The job's state as async_status gives it: its result with `finished`, or `{"finished": False}`.

    `check_alive` False skips the liveness check (the watcher does it only when the progress did not move).
    """
    result = _load(read(os.path.join(job_dir, RESULT)))
    if result is not None:
        return {**result, "finished": True}
    if not check_alive:
        return {"finished": False}
    worker = _load(read(os.path.join(job_dir, WORKER)))
    if worker is not None and "pid" in worker and worker_alive(read, worker):
        return {"finished": False}
    result = _load(read(os.path.join(job_dir, RESULT)))  # it may have ended, with its result, just now
    if result is not None:
        return {**result, "finished": True}
    who = f"its worker (pid {worker['pid']})" if worker and "pid" in worker else f"no worker in {job_dir}"
    return {"failed": True, "finished": True,
            "msg": f"The background push ended without a result: {who} is gone (killed, out of memory, or the host "
                   "restarted). Nothing was tagged unless its manifest was put; run the push again (blobs already in "
                   f"the registry are not sent twice), or push in the foreground ({FOREGROUND})."}


def sleep_until_result(job_dir: str, *, step: float = 0.2, sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> Callable[[float], None]:
    """A sleep for the watcher that ends as soon as the job's result is written, looking every `step` seconds: the
    push's end is seen at once, not at the next progress line (a fleet's pushes each waited up to a whole interval)."""
    result = os.path.join(job_dir, RESULT)

    def wait(seconds: float) -> None:
        end = clock() + seconds
        while not os.path.exists(result):
            left = end - clock()
            if left <= 0:
                return
            sleep(min(step, left))
    return wait
