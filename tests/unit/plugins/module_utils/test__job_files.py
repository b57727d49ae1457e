"""Removing an ended job's directory: directly on the local connection, with the file module through any other."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._job_files import (
    file_remover,
    job_remover,
    remove_local,
)


def job(tmp_path: Path) -> Path:
    folder = tmp_path / "pps-push-x"
    folder.mkdir(mode=0o700)
    for name in ("worker.json", "progress.json", "result.json"):
        (folder / name).write_text("{}")
    return folder


def test_a_local_job_directory_is_removed_with_what_it_holds(tmp_path):
    folder = job(tmp_path)
    assert remove_local(str(folder)) is None
    assert not folder.exists()
    assert remove_local(str(folder)) is None  # gone already: nothing to say


def test_a_link_is_not_followed_and_the_problem_is_told(tmp_path):
    target = job(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    problem = remove_local(str(link), pause=0)
    assert problem is not None and problem.startswith(f"{link}: ")
    assert link.is_symlink() and (target / "result.json").exists()  # nothing behind the link touched


def test_a_file_written_during_the_removal_is_tried_again(tmp_path, monkeypatch):
    folder = job(tmp_path)
    real_rmtree, calls = shutil.rmtree, []

    def rmtree_racing_a_last_write(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:  # a worker's last progress file lands after the listing: the directory is not empty
            (Path(path) / "progress.json.1.2.tmp").write_text("{}")
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree_racing_a_last_write)
    assert remove_local(str(folder), pause=0) is None
    assert not folder.exists() and len(calls) == 2


def test_elsewhere_the_file_module_removes_it_and_a_failure_is_told():
    asked = []

    def execute(**module):
        asked.append(module)
        if module["module_args"]["path"] == "/tmp/pps-push-ok":
            return {"changed": True, "path": "/tmp/pps-push-ok", "state": "absent"}
        return {"failed": True, "msg": "rmtree failed: [Errno 13] Permission denied"}

    remove = file_remover(execute)
    assert remove("/tmp/pps-push-ok") is None
    assert remove("/tmp/pps-push-no") == "/tmp/pps-push-no: rmtree failed: [Errno 13] Permission denied"
    assert asked[0] == {"module_name": "ansible.legacy.file",
                        "module_args": {"path": "/tmp/pps-push-ok", "state": "absent"}}


def test_only_the_local_connection_as_the_same_user_removes_directly(tmp_path):
    assert job_remover("local", False, lambda **module: {}) is remove_local
    asked = []

    def execute(**module):
        asked.append(module)
        return {"changed": True}

    remote = job_remover("ssh", False, execute)
    folder = job(tmp_path)
    assert remote(str(folder)) is None and asked and folder.exists()  # the module was asked, nothing here touched
    assert job_remover("local", True, lambda **module: {}) is not remove_local  # become: another user's files
