"""What a user sees while the PPS push runs: progress lines every few seconds, then a summary; the progress file
holds no secret and is gone afterwards."""

from __future__ import annotations

import os
import threading
import uuid

from ansible_cli import ansible_env, run_playbook
from fixtures.image_archives import write_docker_archive
from progress_fixtures import (  # noqa: F401 pylint: disable=unused-import
    MB, PROGRESS, SUMMARY, large_archive, rising, slow_link)
from test_pps_image import archive
from test_pps_image_role import registry_facts

PLAYBOOK = "playbooks/pps_image.yml"


def test_stage_alone_shows_rising_progress_through_a_slow_link(large_archive, slow_link, tmp_path):  # noqa: F811
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proxy = slow_link
    repo = f"datarobot/progress-{uuid.uuid4().hex[:6]}"
    facts = {"host": f"127.0.0.1:{proxy.port}", "insecure": True, "repositories": {"pps": repo}}
    extra = {"mlops_pps_image_archive": str(large_archive), "mlops_pps_image_version": "9.2.0",
             "mlops_pps_image_poll": 2, "mlops_pps_image_async": 7200, "_mlops": {"registry": facts}}
    run = run_playbook(PLAYBOOK, extra_vars=extra,
                       env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default", TMPDIR=str(scratch)))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    lines = [line.strip() for line in run.stdout.splitlines()]
    summaries = [index for index, line in enumerate(lines) if SUMMARY.match(line)]
    assert summaries, f"no summary line in:\n{run.stdout[-3000:]}"
    percents = [int(match["percent"]) for line in lines[:summaries[0]] if (match := PROGRESS.match(line))]
    assert len(rising(percents)) >= 3, f"progress lines before the end: {percents}\n{run.stdout[-3000:]}"
    assert percents == sorted(percents), percents
    assert SUMMARY.match(lines[summaries[0]])["image"] == f"127.0.0.1:{proxy.port}/{repo}:9.2.0"
    assert proxy.faults.body_bytes.get("PATCH", 0) > 250 * MB  # the bytes did go through the slow link
    assert "FAILED - RETRYING" not in run.stdout
    assert not list(scratch.glob("pps-progress-*")), "the progress directory was left behind"


def test_progress_file_holds_no_secret_and_is_removed(rig, tmp_path, ledger):
    """A push with a password, its progress file read as often as it changes: counts only, then gone."""
    facts = write_docker_archive(tmp_path / "a.tar", [f"datarobot/pps:{uuid.uuid4().hex[:6]}"],
                                 [{"opt/pps/model.bin": os.urandom(40 * MB)}, {"etc/pps.conf": b"threads=4\n"}])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    seen: list[str] = []
    done = threading.Event()

    def snoop() -> None:
        while not done.is_set():
            for found in scratch.glob("pps-progress-*/progress.json"):
                try:
                    seen.append(found.read_text())
                except OSError:
                    pass
            done.wait(0.05)

    watcher = threading.Thread(target=snoop, daemon=True)
    watcher.start()
    repo = f"datarobot/progress-secret-{uuid.uuid4().hex[:6]}"
    try:
        run = run_playbook(PLAYBOOK, extra_vars={
            "mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "9.2.0", "mlops_pps_image_poll": 1,
            "mlops_pps_image_async": 7200, "_mlops": {"registry": registry_facts(rig, repo)}},
            env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default", TMPDIR=str(scratch)))
    finally:
        done.set()
        watcher.join()
    assert run.returncode == 0, run.stdout[-3000:]
    secrets = [rig["RIG_REGISTRY_PASSWORD"], rig["RIG_REGISTRY_USER"] + ":", "Authorization", "Basic ", "Bearer "]
    hits = [secret for secret in secrets for text in seen if secret in text]
    left = list(scratch.glob("pps-progress-*"))
    ledger.record("secret", "the PPS push's progress file (read while it changes) and what is left of it afterwards",
                  bool(seen) and not hits and not left, f"{len(seen)} snapshots", count=len(hits))
    assert seen, "no progress file was seen while the push ran"
    assert not hits, hits
    assert not left, "the progress directory was left behind"
    assert rig["RIG_REGISTRY_PASSWORD"] not in run.stdout


def test_check_mode_and_second_run_stay_quiet_and_unchanged(rig, tmp_path):
    """Check mode runs in the foreground (async jobs do not run in check mode); a second run changes nothing."""
    facts = archive(tmp_path, compress=True)
    repo = f"datarobot/progress-again-{uuid.uuid4().hex[:6]}"
    extra = {"mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "9.2.0",
             "mlops_pps_image_async": 7200, "_mlops": {"registry": registry_facts(rig, repo)}}
    check = run_playbook(PLAYBOOK, extra_vars=extra, check=True)
    assert check.returncode == 0, check.failure()
    first = run_playbook(PLAYBOOK, extra_vars=extra)
    assert first.returncode == 0 and first.changed >= 1, first.failure()
    assert first.task("Wait for the PPS push, a progress line every few seconds")["summary"].startswith(
        f"{rig['RIG_REGISTRY']}/{repo}:9.2.0: pushed, ")
    again = run_playbook(PLAYBOOK, extra_vars=extra)
    assert again.returncode == 0 and again.changed == 0, again.failure()
    assert "already in the registry" in again.task("Wait for the PPS push, a progress line every few seconds")["summary"]
