"""What a user sees while the PPS push runs in the background (the default, in the stage alone and in site.yml):
progress lines every few seconds, then a summary; the worker's files hold no secret and are gone afterwards; a worker
killed mid-push, or one past its time limit, ends the wait with a clear failure instead of a hang."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

import requests

from ansible_cli import BIN, REPO, ansible_env, run_playbook
from fault_proxy import FaultProxy
from fixtures.image_archives import write_docker_archive
from progress_fixtures import MB, PROGRESS, RATE, SUMMARY, large_archive, rising  # noqa: F401 pylint: disable=unused-import
from test_pps_image import archive
from test_pps_image_role import registry_facts

PLAYBOOK = "playbooks/pps_image.yml"


def slow_push(rig, large_archive: Path, scratch: Path, playbook: str = PLAYBOOK, tags: str | None = None, **more):
    """The large archive pushed through a proxy that lets RATE bytes a second through, with nothing but the inputs
    set (the default: in the background); the run and the proxy's counts."""
    upstream = int(rig["RIG_INSECURE_REGISTRY"].rsplit(":", 1)[1])
    with FaultProxy(upstream) as proxy:
        proxy.faults.rate = RATE
        repo = f"datarobot/progress-{uuid.uuid4().hex[:6]}"
        facts = {"host": f"127.0.0.1:{proxy.port}", "insecure": True, "repositories": {"pps": repo}}
        extra = {"mlops_pps_image_archive": str(large_archive), "mlops_pps_image_version": "9.2.0",
                 "mlops_pps_image_poll": 2, "_mlops": {"registry": facts}, **more}
        run = run_playbook(playbook, extra_vars=extra, tags=tags,
                           env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default", TMPDIR=str(scratch)))
    return run, proxy, f"127.0.0.1:{proxy.port}/{repo}:9.2.0"


def assert_rising_lines_then_summary(run, image: str) -> None:
    lines = [line.strip() for line in run.stdout.splitlines()]
    summaries = [index for index, line in enumerate(lines) if SUMMARY.match(line)]
    assert summaries, f"no summary line in:\n{run.stdout[-3000:]}"
    percents = [int(match["percent"]) for line in lines[:summaries[0]] if (match := PROGRESS.match(line))]
    assert len(rising(percents)) >= 3, f"progress lines before the end: {percents}\n{run.stdout[-3000:]}"
    assert percents == sorted(percents), percents
    assert SUMMARY.match(lines[summaries[0]])["image"] == image


@pytest.mark.parametrize("playbook", [PLAYBOOK, "site.yml"])
def test_default_run_shows_rising_progress_through_a_slow_link(rig, large_archive, tmp_path, playbook):
    """No variable asks for it: the stage alone and site.yml (its pps_image plays: the push started, then collected
    after the agent images) both push in the background and print the same lines."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run, proxy, image = slow_push(rig, large_archive, scratch, playbook, tags="pps_image" if playbook == "site.yml" else None)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert_rising_lines_then_summary(run, image)
    assert proxy.faults.body_bytes.get("PATCH", 0) > 250 * MB  # the bytes did go through the slow link
    assert "FAILED - RETRYING" not in run.stdout
    assert not list(scratch.glob("pps-push-*")), "the job directory was left behind"
    if playbook == "site.yml":  # collected by the later play, after the agent images
        collected = run.stdout.index("PLAY [PPS image, collected]")
        assert collected < run.stdout.index(image + ": pushed, "), run.stdout[-3000:]


def test_a_killed_worker_is_a_clear_failure_not_a_hang(rig, large_archive, tmp_path, ledger):
    """SIGKILL the worker mid-push: the wait ends within a few polls, says the worker is gone, and cleans up."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    outcome: dict = {}
    pusher = threading.Thread(target=lambda: outcome.update(run=slow_push(rig, large_archive, scratch)[0]), daemon=True)
    pusher.start()
    worker = wait_for_worker(scratch, pusher)
    time.sleep(4)  # a few progress lines first
    os.kill(worker["pid"], signal.SIGKILL)
    killed = time.monotonic()
    pusher.join(timeout=120)
    waited = time.monotonic() - killed
    run = outcome.get("run")
    message = failure_line(run.stdout) if run else ""
    held = run is not None and run.returncode != 0 and "ended without a result" in message and waited < 60
    ledger.record("fault", "the PPS push's background worker killed (SIGKILL) mid-push", held,
                  f"failed {waited:.0f}s after the kill: {message[:160]}")
    assert run is not None, "the run did not end within 2 minutes of the kill"
    assert run.returncode != 0 and "ended without a result" in message, run.stdout[-3000:]
    assert f"pid {worker['pid']}" in message and "mlops_pps_image_background or mlops_agent_images_background: false" in message, message
    assert not list(scratch.glob("pps-push-*")), "the job directory was left behind"


def test_the_time_limit_stops_the_worker(rig, large_archive, tmp_path, ledger):
    """mlops_pps_image_background_seconds: 4 for a push that needs ~25 s: the worker stops itself and says why."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    started = time.monotonic()
    run, proxy, _image = slow_push(rig, large_archive, scratch, mlops_pps_image_background_seconds=4)
    took = time.monotonic() - started
    message = failure_line(run.stdout)
    held = run.returncode != 0 and "did not end within 4s" in message and proxy.faults.body_bytes.get("PATCH", 0) < 200 * MB
    ledger.record("fault", "the PPS push's background worker past mlops_pps_image_background_seconds", held,
                  f"failed after {took:.0f}s: {message[:160]}")
    assert run.returncode != 0 and "did not end within 4s" in message, run.stdout[-3000:]
    assert "mlops_pps_image_background_seconds" in message
    assert proxy.faults.body_bytes.get("PATCH", 0) < 200 * MB, "the push went on after its time limit"
    assert not list(scratch.glob("pps-push-*")), "the job directory was left behind"


def test_an_interrupted_run_stops_its_background_push(rig, large_archive, tmp_path, ledger):
    """Ctrl-C (SIGINT to the run's process group) mid-push: the run ends, and the detached worker, which no signal of
    the terminal reaches, sees the run gone, stops sending within seconds and removes its job directory. No tag."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    upstream = int(rig["RIG_INSECURE_REGISTRY"].rsplit(":", 1)[1])
    with FaultProxy(upstream) as proxy, tempfile.TemporaryDirectory(prefix="published-") as published:
        proxy.faults.rate = RATE
        repo = f"datarobot/interrupted-{uuid.uuid4().hex[:6]}"
        source = Path(published) / "published.yml"
        source.write_text(json.dumps({"all": {"vars": {"_mlops": {"registry": {
            "host": f"127.0.0.1:{proxy.port}", "insecure": True, "repositories": {"pps": repo}}}}}}))
        extra = {"mlops_pps_image_archive": str(large_archive), "mlops_pps_image_version": "9.2.0",
                 "mlops_pps_image_poll": 2}
        argv = [str(BIN / "ansible-playbook"), "-i", str(REPO / "inventories/local"), "-i", str(source),
                str(REPO / PLAYBOOK), "-e", json.dumps(extra)]
        run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                               env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default", TMPDIR=str(scratch)),
                               start_new_session=True)  # a process group of its own, as a terminal gives a job
        try:
            watcher = threading.Thread(target=run.wait, daemon=True)
            watcher.start()
            worker = wait_for_worker(scratch, watcher)
            time.sleep(4)  # a few progress lines first
            os.killpg(run.pid, signal.SIGINT)
            output = run.communicate(timeout=60)[0]
            interrupted = time.monotonic()
            stopped = gone(worker["pid"], 15)
            waited = time.monotonic() - interrupted
            sent = settled(lambda: proxy.faults.body_bytes.get("PATCH", 0))  # the proxy drains what it holds
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
        tagged = requests.get(f"http://{rig['RIG_INSECURE_REGISTRY']}/v2/{repo}/manifests/9.2.0", timeout=30,
                              headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).status_code
    held = run.returncode != 0 and stopped and sent < 250 * MB and tagged == 404 and not list(scratch.glob("pps-push-*"))
    ledger.record("fault", "the run interrupted (Ctrl-C) while its PPS push runs in the background", held,
                  f"the worker stopped {waited:.1f}s after the run ended, {sent / MB:.0f} MB sent, tag: HTTP {tagged}")
    assert run.returncode != 0, output[-3000:]
    assert stopped, f"the worker (pid {worker['pid']}) went on after the run that started it had ended"
    assert sent < 250 * MB, f"{sent / MB:.0f} MB of ~300 MB went to the registry: the push did not stop"
    assert tagged == 404, "the interrupted push tagged the image"
    assert not list(scratch.glob("pps-push-*")), "the job directory was left behind"


def settled(count, seconds: float = 20) -> int:
    """`count()` once two looks a second apart agree."""
    deadline, last = time.monotonic() + seconds, count()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = count()
        if now == last:
            return now
        last = now
    raise AssertionError(f"still counting after {seconds}s: {last}")


def gone(pid: int, seconds: float) -> bool:
    """Whether process `pid` has ended within `seconds` (a zombie counts: it runs no more)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
                if handle.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def failure_line(stdout: str) -> str:
    """The message of the last task error the default callback printed."""
    errors = [line for line in stdout.splitlines() if line.startswith("[ERROR]: Task failed: ")]
    return errors[-1] if errors else ""


def wait_for_worker(scratch: Path, pusher: threading.Thread) -> dict:
    """The worker.json of the background push started under `scratch`, once it is there."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and pusher.is_alive():
        for found in scratch.glob("pps-push-*/worker.json"):
            try:
                return json.loads(found.read_text())
            except (OSError, ValueError):
                pass
        time.sleep(0.1)
    raise AssertionError("no background worker started")


def test_worker_files_hold_no_secret_are_private_and_removed(rig, tmp_path, ledger):
    """A background push with a password, its job directory read as often as it changes (progress, result and the
    worker's pid): counts and results only, every file 0600 in a 0700 directory, then all gone."""
    facts = write_docker_archive(tmp_path / "a.tar", [f"datarobot/pps:{uuid.uuid4().hex[:6]}"],
                                 [{"opt/pps/model.bin": os.urandom(40 * MB)}, {"etc/pps.conf": b"threads=4\n"}])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    seen: dict[str, list[str]] = {}
    modes: set[tuple[str, int]] = set()
    done = threading.Event()

    def snoop() -> None:
        while not done.is_set():
            for found in scratch.glob("pps-push-*/*"):
                try:
                    modes.add((found.name, stat.S_IMODE(found.stat().st_mode)))
                    modes.add(("(directory)", stat.S_IMODE(found.parent.stat().st_mode)))
                    seen.setdefault(found.name, []).append(found.read_text())
                except OSError:
                    pass
            done.wait(0.02)

    watcher = threading.Thread(target=snoop, daemon=True)
    watcher.start()
    repo = f"datarobot/progress-secret-{uuid.uuid4().hex[:6]}"
    try:
        run = run_playbook(PLAYBOOK, extra_vars={
            "mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "9.2.0", "mlops_pps_image_poll": 1,
            "_mlops": {"registry": registry_facts(rig, repo)}},
            env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default", TMPDIR=str(scratch)))
    finally:
        done.set()
        watcher.join()
    assert run.returncode == 0, run.stdout[-3000:]
    secrets = [rig["RIG_REGISTRY_PASSWORD"], rig["RIG_REGISTRY_USER"] + ":", "Authorization", "Basic ", "Bearer "]
    hits = [(name, secret) for secret in secrets for name, texts in seen.items() for text in texts if secret in text]
    loose = sorted((name, f"{mode:o}") for name, mode in modes
                   if mode & 0o077 or (name == "(directory)") != bool(mode & 0o100))
    left = list(scratch.glob("pps-push-*"))
    ledger.record("secret", "the PPS push's background job files (progress, result, pid; read while they change) and "
                  "what is left of them afterwards", bool(seen) and not hits and not left and not loose,
                  f"{sum(map(len, seen.values()))} snapshots of {sorted(seen)}; modes {sorted(modes)}", count=len(hits))
    assert {"progress.json", "worker.json"} <= set(seen), sorted(seen)
    assert not hits, hits
    assert not loose, f"files or directory open to others: {loose}"
    assert not left, "the job directory was left behind"
    assert rig["RIG_REGISTRY_PASSWORD"] not in run.stdout


def test_check_mode_and_second_run_stay_quiet_and_unchanged(rig, tmp_path):
    """Check mode runs in the foreground; a second run changes nothing."""
    facts = archive(tmp_path, compress=True)
    repo = f"datarobot/progress-again-{uuid.uuid4().hex[:6]}"
    extra = {"mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "9.2.0",
             "_mlops": {"registry": registry_facts(rig, repo)}}
    check = run_playbook(PLAYBOOK, extra_vars=extra, check=True)
    assert check.returncode == 0, check.failure()
    assert "started" not in check.task("Push the PPS image")
    first = run_playbook(PLAYBOOK, extra_vars=extra)
    assert first.returncode == 0 and first.changed >= 1, first.failure()
    started = first.task("Push the PPS image")
    assert started["started"] is True and Path(started["job_dir"]).name.startswith("pps-push-")  # the module made it
    waited = first.task("Wait for the PPS push, a progress line every few seconds")
    assert waited["summary"].startswith(f"{rig['RIG_REGISTRY']}/{repo}:9.2.0: pushed, ")
    # the watcher removed the job directory: the stage's removal task is skipped, no module run of its own
    assert waited["job_dir_removed"] is True and waited["job_dir"] == started["job_dir"]
    assert not Path(started["job_dir"]).exists()
    assert first.task("Remove the push's job directory").get("skipped") is True
    again = run_playbook(PLAYBOOK, extra_vars=extra)
    assert again.returncode == 0 and again.changed == 0, again.failure()
    assert "already in the registry" in again.task("Wait for the PPS push, a progress line every few seconds")["summary"]


def test_the_removed_async_variable_is_refused_with_its_replacements(rig, tmp_path):
    facts = archive(tmp_path)
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_pps_image_archive": str(facts.path), "mlops_pps_image_version": "9.2.0",
                                             "mlops_pps_image_async": 0,
                                             "_mlops": {"registry": registry_facts(rig, "datarobot/x")}})
    assert run.returncode != 0
    assert "mlops_pps_image_async is gone" in run.failure() and "mlops_pps_image_background: false" in run.failure()
