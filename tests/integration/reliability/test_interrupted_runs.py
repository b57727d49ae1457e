"""Runs interrupted half-way: the API server restarted during site.yml, and agent_deployment killed in the middle of
a helm upgrade (an AWX job cancelled, a CI runner lost).

The promise: the interrupted run fails clearly or completes; the next run converges with no duplicates and the run
after it changes nothing. A revision a killed run of ours left pending is recovered by the next run; a pending
revision written by someone else (helm by hand) is never touched: the run says how to recover it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_cli import REPO, ansible_env, module_argv, run_module, run_playbook
from conftest import HELMS, descendants, kubectl
from snapshot import datarobot
from test_faults import (  # noqa: F401 pylint: disable=unused-import
    AGENT,
    AGENT_IMAGE,
    BROKEN_TAG,
    CHART,
    Background,
    agent_container,
    agent_values,
    helm,
    history,
    namespace,
    no_traceback,
    release,
    wait_for,
)
from test_site import cleanup, demo_archives, fresh_namespace  # noqa: F401 pylint: disable=unused-import

ENVIRONMENT_NAME = "management-agent-local-rig"  # the prediction environment site.yml keeps for the local inventory


def environments_named(name: str) -> int:
    return sum(1 for entry in datarobot() if json.loads(entry).get("name") == name)


def revisions(name: str, namespace: str) -> list[tuple[int, str]]:
    return [(entry["revision"], entry["status"]) for entry in history(name, namespace)]


def test_api_server_restarted_during_a_site_run(rig, demo_archives, ledger):  # noqa: F811 (imported fixture)
    namespace = fresh_namespace("restart")  # pylint: disable=redefined-outer-name
    base = {"mlops_namespace": namespace}
    try:
        run = Background(lambda: run_playbook("site.yml", extra_vars=base))
        run.start()
        # The moment with the most at stake: helm has just written the release's first revision.
        wait_for("the release's first revision", lambda: not run.is_alive() or kubectl(
            "-n", namespace, "get", "secret", "sh.helm.release.v1.bosun.v1", check=False).returncode == 0, 600,
            every=0.1)
        during = run.is_alive()
        restart = subprocess.run([sys.executable, str(REPO / "tests/rig/rig.py"), "restart-apiserver", "--down-for",
                                  "2"], capture_output=True, text=True, timeout=300, check=False)
        first = run.result(900)
        rerun = run_playbook("site.yml", extra_vars=base)
        again = run_playbook("site.yml", extra_vars=base)
        left = revisions("bosun", namespace)
        environments = environments_named(ENVIRONMENT_NAME)
    finally:
        cleanup(namespace)
    message = first.failure() if first.returncode else ""
    clear = first.returncode == 0 or (bool(message) and no_traceback(message) and "MODULE FAILURE" not in message)
    converged = rerun.returncode == 0 and again.returncode == 0 and again.changed == 0
    settled = bool(left) and left[-1][1] == "deployed"
    held = during and restart.returncode == 0 and clear and converged and settled and environments == 1
    ledger.record("fault", "API server process restarted (down ~2 s + start) during site.yml, at the helm install",
                  held=held, detail=f"{restart.stderr.strip()[-60:]}; interrupted run rc={first.returncode} "
                                    f"{message[:160]!r}; rerun rc={rerun.returncode}; third run changed="
                                    f"{again.changed}; history {left}; environments named {environments}")
    assert during and restart.returncode == 0, restart.stderr
    assert clear, message or first.stdout[-3000:]
    assert rerun.returncode == 0, rerun.failure()
    assert again.returncode == 0 and again.changed == 0, again.stdout[-3000:]
    assert settled, left
    assert environments == 1


def start_killable(argv: list[str], tmpdir: Path) -> subprocess.Popen:
    """A command in a session of its own, so that it and everything it started can be killed at once; its TMPDIR is
    the test's, where a killed module's unpacked payload (which only a module that ends removes) is left."""
    return subprocess.Popen(argv, env=ansible_env(TMPDIR=str(tmpdir)), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def processes(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def kill_when_pending(proc: subprocess.Popen, name: str, namespace: str) -> list[tuple[int, str]]:  # noqa: F811
    wait_for("a pending revision", lambda: proc.poll() is not None or (
        revisions(name, namespace)[-1:] and revisions(name, namespace)[-1][1].startswith("pending")), 120, every=0.1)
    # What a lost runner (or an AWX job whose container is removed) does: every process gone, no cleanup at all.
    # Ansible starts the module in a session of its own, so the whole tree under the command is killed at once.
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    wait_for("the killed processes to be gone", lambda: not any(alive(pid) for pid in pids), 30, every=0.1)
    return revisions(name, namespace)


def alive(pid: int) -> bool:
    """Running, as opposed to gone or exited-and-not-reaped (a zombie: its parent was killed first)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X", "x")
    except OSError:
        return False


@pytest.mark.parametrize("helm_under_test", HELMS, indirect=True)  # the recovery reads helm's history and list
def test_agent_deployment_killed_mid_upgrade_is_recovered_by_the_next_run(helm_under_test, release, namespace,
                                                                          tmp_path, ledger):  # noqa: F811
    name, args = release
    assert run_module(AGENT, args()).result.get("changed") is True
    killed = start_killable(module_argv(AGENT, args(values=agent_values(tag=BROKEN_TAG), wait_timeout=120)), tmp_path)
    left = kill_when_pending(killed, name, namespace)
    stray = processes(f"helm .*{name}")
    good = agent_values(tag="9.2.3")
    checked = run_module(AGENT, args(values=good), check=True)
    after_check = revisions(name, namespace)
    recovered = run_module(AGENT, args(values=good))
    after = revisions(name, namespace)
    live = agent_container(namespace, name)
    again = run_module(AGENT, args(values=good))
    reasons = " ".join(recovered.result.get("reasons") or [])
    held = (left[-1:] == [(2, "pending-upgrade")] and not stray and checked.result.get("changed") is True
            and after_check == left and not recovered.failed and recovered.result.get("changed") is True and "interrupted run" in reasons
            and after[-1][1] == "deployed" and live == (f"{AGENT_IMAGE}:9.2.3", 1)
            and again.result.get("changed") is False and not again.failed)
    ledger.record("fault", "agent_deployment killed (SIGKILL to its process group) while helm upgrade was pending",
                  held=held, detail=f"left {left}; check run changed={checked.result.get('changed')}; next run "
                                    f"reasons: {reasons[:120]}; history {after}; live {live}; third run changed="
                                    f"{again.result.get('changed')}")
    assert left[-1:] == [(2, "pending-upgrade")], left
    assert not stray, stray
    assert checked.result.get("changed") is True and not checked.failed, checked.result.get("msg")
    assert after_check == left  # the check run touched nothing
    assert not recovered.failed and recovered.result.get("changed") is True, recovered.result.get("msg")
    assert "revision 2 was left pending-upgrade by an interrupted run: rolled back to revision 1 first" in reasons
    assert after[-1][1] == "deployed" and live == (f"{AGENT_IMAGE}:9.2.3", 1), (after, live)
    assert again.result.get("changed") is False and not again.failed, again.result.get("msg")


def test_a_revision_left_pending_by_someone_else_is_not_touched(release, namespace, tmp_path, ledger):  # noqa: F811
    name, args = release
    assert run_module(AGENT, args()).result.get("changed") is True
    by_hand = start_killable([os.environ["HELM"], "upgrade", name, CHART, "-n", namespace, "--reuse-values", "--set",
                              f"managementAgent.tag={BROKEN_TAG}", "--wait", "--timeout", "120s"], tmp_path)
    left = kill_when_pending(by_hand, name, namespace)
    good = agent_values(tag="9.2.3")
    refused = run_module(AGENT, args(values=good))
    message = refused.result.get("msg", "")
    untouched = revisions(name, namespace) == left
    hint = f"helm rollback {name} 1 -n {namespace}"
    helm("rollback", name, "1", "-n", namespace, "--wait")  # what the message says to do
    fixed = run_module(AGENT, args(values=good))
    held = (refused.failed and "Another operation is in progress" in message and hint in message and untouched
            and not fixed.failed and fixed.result.get("changed") is True)
    ledger.record("fault", "a revision left pending by helm run by hand (killed): left alone, with the fix",
                  held=held, detail=f"left {left}; msg: {message[:200]}; after the fix changed="
                                    f"{fixed.result.get('changed')}")
    assert refused.failed and "Another operation is in progress" in message and hint in message, message
    assert untouched
    assert not fixed.failed and fixed.result.get("changed") is True, fixed.result.get("msg")
