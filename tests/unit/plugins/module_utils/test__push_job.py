"""The background push's job: a private directory, a detached worker that writes its pid, progress and result, stops
itself at its deadline, and the watcher's reading of those files (result, or alive, or gone without a result)."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._ansible_run import RunProcess
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._job_files import (
    is_local,
    job_reader,
    read_local,
    slurp_reader,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._json_file import write_json
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._push_job import (
    PROGRESS,
    RESULT,
    WORKER,
    PushJobError,
    check_job_dir,
    job_status,
    outcome,
    parse_proc_stat,
    process_start,
    sleep_until_result,
    start,
    start_job,
    worker_alive,
)


def private(tmp_path: Path) -> Path:
    job = tmp_path / "job"
    job.mkdir(mode=0o700)
    return job


def read_file(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def wait_for(path: Path, seconds: float = 20) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {seconds}s")


def gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        parsed = parse_proc_stat(read_file(f"/proc/{pid}/stat") or "")
        if parsed is None or parsed[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_the_job_directory_must_be_private_new_and_a_real_directory(tmp_path):
    job = private(tmp_path)
    check_job_dir(str(job))
    with pytest.raises(PushJobError, match="cannot be used"):
        check_job_dir(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    with pytest.raises(PushJobError, match="not a directory"):
        check_job_dir(str(tmp_path / "file"))
    (tmp_path / "link").symlink_to(job)
    with pytest.raises(PushJobError, match="not a directory"):
        check_job_dir(str(tmp_path / "link"))
    job.chmod(0o755)
    with pytest.raises(PushJobError, match="mode 0700.*mode 755"):
        check_job_dir(str(job))
    job.chmod(0o700)
    (job / WORKER).write_text("{}")
    with pytest.raises(PushJobError, match="already holds a push job"):
        check_job_dir(str(job))


def test_files_are_written_whole_and_private(tmp_path):
    target = tmp_path / "result.json"
    write_json(str(target), {"changed": True})
    write_json(str(target), {"changed": False, "digest": "sha256:1"})
    assert json.loads(target.read_text()) == {"changed": False, "digest": "sha256:1"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left


def test_proc_stat_fields_survive_odd_command_names():
    fields = " ".join(["S"] + [str(n) for n in range(2, 25)])
    assert parse_proc_stat(f"42 (a) b (c)) {fields}") == ("S", "20")
    assert parse_proc_stat("") is None and parse_proc_stat("42 (x) S 1") is None
    assert process_start(os.getpid()) == parse_proc_stat(read_file("/proc/self/stat"))[1]
    assert process_start(2**22 + 12345) is None


def test_outcome_turns_every_ending_into_a_result():
    class Refused(MlopsError):
        result = {"image": "reg/x:1"}

    def refuse():
        raise Refused("the registry refused it")

    def leave():
        raise SystemExit(1)

    def explode():
        raise KeyError("layers")

    assert outcome(lambda: {"changed": True}) == {"changed": True}
    assert outcome(refuse) == {"failed": True, "msg": "the registry refused it", "image": "reg/x:1"}
    assert "without a result of its own" in outcome(leave)["msg"]
    assert outcome(explode)["msg"] == "The background push failed unexpectedly: KeyError: 'layers'"


def test_a_worker_runs_detached_and_writes_a_clean_private_result(tmp_path):
    job = private(tmp_path)
    progress = job / "progress.json"

    def work():
        write_json(str(progress), {"bytes_done": 1})
        return {"changed": True, "msg": "pushed with s3cret", "parent": os.getppid(), "session": os.getsid(0)}

    started = start(str(job), 60, work, lambda result: {**result, "msg": result["msg"].replace("s3cret", "********")})
    assert started["started"] is True and started["changed"] is False and started["job_dir"] == str(job)
    result = wait_for(job / RESULT)
    assert result["changed"] is True and result["msg"] == "pushed with ********"
    # a session of its own (its first parent's), which it does not lead: it can never take a terminal again
    assert result["session"] not in (os.getsid(0), started["pid"])
    assert result["parent"] != os.getpid()  # not our child: reparented once its first parent exited
    assert stat.S_IMODE((job / RESULT).stat().st_mode) == 0o600
    worker = json.loads((job / WORKER).read_text())
    assert worker["pid"] == started["pid"] and worker["start"]
    assert gone(started["pid"])
    assert job_status(read_file, str(job)) == {**result, "finished": True}


def test_the_worker_stops_itself_at_its_deadline_and_says_so(tmp_path):
    job = private(tmp_path)
    started = start(str(job), 1, lambda: time.sleep(60) or {"changed": True}, dict)
    result = wait_for(job / RESULT, 15)  # (a guard against hanging; the stop reason below is what is checked)
    assert result["failed"] is True and result["timed_out"] is True
    assert "did not end within 1s" in result["msg"] and "mlops_pps_image_background_seconds" in result["msg"]
    assert gone(started["pid"]), "the worker went on after its deadline"


def test_the_worker_stops_and_clears_its_job_once_the_run_that_started_it_has_ended(tmp_path):
    """Ctrl-C, a cancelled job, a run that failed before collecting the push: nobody will read its result."""
    job = private(tmp_path)
    run = subprocess.Popen(["sleep", "60"])  # stands for the ansible-playbook process
    owner = RunProcess(run.pid, process_start(run.pid))
    started = start(str(job), 60, lambda: time.sleep(60) or {"changed": True}, dict, owner)
    wait_for(job / WORKER)
    time.sleep(1.5)
    assert not gone(started["pid"], 0.1), "the worker stopped while the run went on"
    run.kill()
    run.wait()
    assert gone(started["pid"]), "the worker went on after the run that started it had ended"
    assert not job.exists()


def test_a_callers_job_dir_keeps_what_is_not_the_jobs_when_the_run_ends(tmp_path):
    job = private(tmp_path)
    (job / "notes.txt").write_text("the caller's")
    run = subprocess.Popen(["sleep", "60"])
    started = start(str(job), 60, lambda: time.sleep(60) or {"changed": True}, dict,
                    RunProcess(run.pid, process_start(run.pid)))
    wait_for(job / WORKER)
    run.kill()
    run.wait()
    assert gone(started["pid"])
    assert sorted(path.name for path in job.iterdir()) == ["notes.txt"]


def test_a_killed_worker_is_told_from_a_running_one(tmp_path):
    job = private(tmp_path)
    started = start(str(job), 60, lambda: time.sleep(60) or {"changed": True}, dict)
    wait_for(job / WORKER)
    assert job_status(read_file, str(job)) == {"finished": False}
    os.kill(started["pid"], signal.SIGKILL)
    assert gone(started["pid"])
    status = job_status(read_file, str(job))
    assert status["failed"] is True and status["finished"] is True
    assert f"its worker (pid {started['pid']}) is gone" in status["msg"]
    assert job_status(read_file, str(job), check_alive=False) == {"finished": False}  # only looked at when stalled


def test_liveness_needs_the_same_process_not_only_the_same_pid(tmp_path):
    me = {"pid": os.getpid(), "start": process_start(os.getpid())}
    assert worker_alive(read_file, me)
    assert not worker_alive(read_file, {**me, "start": str(int(me["start"]) + 1)})  # the pid was reused
    assert worker_alive(read_file, {"pid": 1, "start": None})  # no /proc where it ran: only the timeout ends the wait
    job = private(tmp_path)
    status = job_status(read_file, str(job))
    assert status["failed"] and f"no worker in {job}" in status["msg"]


def test_a_job_that_cannot_start_says_so(tmp_path):
    with pytest.raises(PushJobError, match="at least one second"):
        start(str(private(tmp_path)), 0, dict, dict)


@pytest.fixture
def temp_dir(tmp_path, monkeypatch) -> Path:
    """This test's own temporary directory, as TMPDIR would name it (where the module makes a job directory)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_without_a_job_dir_the_job_makes_a_private_one_and_names_it(temp_dir):
    def work(job_dir: str) -> dict:
        write_json(os.path.join(job_dir, PROGRESS), {"bytes_done": 1})
        return {"changed": True, "job_dir_seen": job_dir}

    started = start_job(None, 60, work, dict)
    made = Path(started["job_dir"])
    assert made.parent == temp_dir and made.name.startswith("pps-push-")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700 and made.stat().st_uid == os.getuid()
    result = wait_for(made / RESULT)
    assert result["changed"] is True and result["job_dir_seen"] == str(made)  # the work was told where it runs
    assert gone(started["pid"])
    assert [p.name for p in temp_dir.iterdir()] == [made.name]


def test_a_job_dir_made_for_a_start_that_fails_is_removed(temp_dir, monkeypatch):
    with pytest.raises(PushJobError, match="at least one second"):
        start_job(None, 0, lambda job_dir: {}, dict)
    assert not list(temp_dir.iterdir()), "the job directory of a failed start was left behind"

    def no_fork() -> int:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(PushJobError, match="could not be started: no new process .*foreground"):
        start_job(None, 60, lambda job_dir: {}, dict)
    assert not list(temp_dir.iterdir()), "the job directory of a failed start was left behind"


def test_a_given_job_dir_is_the_callers_and_kept_when_the_start_fails(tmp_path, temp_dir):
    job = private(tmp_path)
    with pytest.raises(PushJobError, match="at least one second"):
        start_job(str(job), 0, lambda job_dir: {}, dict)
    assert job.is_dir()
    started = start_job(str(job), 60, lambda job_dir: {"changed": False, "job_dir_seen": job_dir}, dict)
    assert started["job_dir"] == str(job)
    assert wait_for(job / RESULT)["job_dir_seen"] == str(job)
    assert not list(temp_dir.iterdir())  # nothing made beside it


def test_a_temporary_directory_that_cannot_be_used_is_a_clear_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(PushJobError, match="Cannot make a private directory .* in .*missing.*TMPDIR"):
        start_job(None, 60, lambda job_dir: {}, dict)


def test_a_slurp_read_decodes_the_content_and_a_failure_is_none():
    asked = []

    def execute(**module):
        asked.append(module)
        if module["module_args"]["src"] == "/job/progress.json":
            return {"content": "eyJkb25lIjogMX0=", "encoding": "base64"}
        return {"failed": True, "msg": "file not found"}

    read = slurp_reader(execute)
    assert read("/job/progress.json") == '{"done": 1}'
    assert read("/job/result.json") is None
    assert [module["module_name"] for module in asked] == ["ansible.legacy.slurp"] * 2


def test_only_the_local_connection_as_the_same_user_reads_directly():
    assert is_local("local", False)
    assert not is_local("local", True)  # become: the files are another user's
    assert not is_local("ssh", False)
    assert job_reader("local", False, lambda **module: {}) is read_local
    remote = job_reader("local", True, lambda **module: {"content": "eA=="})
    assert remote is not read_local and remote("/job/progress.json") == "x"


def test_a_local_read_is_the_text_or_none(tmp_path):
    (tmp_path / "progress.json").write_text('{"done": 1}')
    assert read_local(str(tmp_path / "progress.json")) == '{"done": 1}'
    assert read_local(str(tmp_path / "missing.json")) is None
    assert read_local(str(tmp_path)) is None  # a directory cannot be read as a file


class FakeClock:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_wait_ends_once_the_result_is_written(tmp_path):
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= 1.0:
            write_json(str(tmp_path / RESULT), {"changed": True})

    sleep_until_result(str(tmp_path), step=0.25, sleep=sleep, clock=lambda: clock.now)(5.0)
    assert clock.now == pytest.approx(1.0)  # not the whole 5 s: the end is seen within one step
    assert all(step <= 0.25 for step in clock.slept)


def test_without_a_result_the_wait_takes_its_whole_time(tmp_path):
    clock = FakeClock()
    sleep_until_result(str(tmp_path), step=0.3, sleep=clock.sleep, clock=lambda: clock.now)(2.0)
    assert clock.now == pytest.approx(2.0)
    write_json(str(tmp_path / RESULT), {"changed": True})
    clock.slept.clear()
    sleep_until_result(str(tmp_path), step=0.3, sleep=clock.sleep, clock=lambda: clock.now)(2.0)
    assert clock.slept == []  # a result already there: no wait at all
