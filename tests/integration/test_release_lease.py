"""The release's Lease on the rig: a run of ours recovers only a revision that provably came from one of our runs,
never one another client is writing; two holders on one machine with different identities keep apart; the Lease
is renewed while helm waits; a release of another chart under our name is left alone unless `force` is set.

"Another client" is helm run by hand with --wait on a broken image (the rig's kwok stage keeps such a pod in
ImagePullBackOff), so that its revision stays pending while our next run looks at it. Races and kills are made
deterministic with a helm wrapper passed as binary_path: it runs the real helm, except for the one upgrade it
intercepts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_cli import PlaybookRun, ansible_env, module_argv, run_module
from conftest import descendants, kubectl
from test_agent_deployment import (  # noqa: F401 pylint: disable=unused-import
    BROKEN_TAG, CHART, agent_values, helm, history, release)

MODULE = "datarobot_mlops.management_agent.agent_deployment"
TINY_CHART = str(Path(__file__).resolve().parents[1] / "fixtures" / "charts" / "tiny")
OTHER_WAIT = 45  # seconds the other client's helm --wait keeps its revision pending


def revisions(name: str, namespace: str) -> list[tuple[int, str]]:
    return [(entry["revision"], entry["status"]) for entry in history(name, namespace)]


def wait_for(what: str, ready, timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pending(name: str, namespace: str) -> bool:
    found = revisions(name, namespace)
    return bool(found) and found[-1][1].startswith("pending")


def lease(name: str, namespace: str) -> dict[str, Any]:
    return json.loads(kubectl("-n", namespace, "get", "lease", f"{name}-agent-deployment", "-o", "json").stdout)


def other_client_argv(name: str, namespace: str) -> list[str]:
    """helm by hand: an upgrade to an image that never becomes ready, waiting OTHER_WAIT seconds."""
    return [os.environ["HELM"], "upgrade", name, CHART, "-n", namespace, "--reuse-values", "--set",
            f"managementAgent.tag={BROKEN_TAG}", "--wait", "--timeout", f"{OTHER_WAIT}s"]


def kill_tree(proc: subprocess.Popen) -> None:
    """What a lost runner does to a run: every process gone at once, no cleanup."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def wait_gone(pid: int, timeout: float) -> None:
    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except OSError:
            return True
    wait_for(f"process {pid} to end", gone, timeout)


def helm_wrapper(tmp_path: Path, on_upgrade: str) -> str:
    """binary_path for the module: the real helm, except that the first real (not dry-run) upgrade first runs
    `on_upgrade` (Python, with REAL, argv, MARK, time, subprocess and json at hand)."""
    wrapper = tmp_path / "helm"
    wrapper.write_text(f"""#!{sys.executable}
import json, os, subprocess, sys, time
REAL = {os.environ["HELM"]!r}
MARK = {str(tmp_path / "intercepted")!r}
argv = sys.argv[1:]
if argv[:1] == ["upgrade"] and not any(a.startswith("--dry-run") for a in argv) and not os.path.exists(MARK):
    open(MARK, "w").close()
{on_upgrade}
os.execv(REAL, [REAL, *argv])
""")
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture
def other_client():
    """Starts helm by hand in the background; makes sure it is gone after the test."""
    started: list[int] = []

    def start(name: str, namespace: str) -> subprocess.Popen:
        proc = subprocess.Popen(other_client_argv(name, namespace), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(proc.pid)
        wait_for("the other client's pending revision", lambda: pending(name, namespace), 30)
        return proc

    yield start
    for pid in started:
        wait_gone(pid, OTHER_WAIT + 60)


def test_an_upgrade_that_loses_the_race_leaves_the_winner_alone(release, namespace, tmp_path, ledger):  # noqa: F811
    name, args = release
    assert run_module(MODULE, args()).result.get("changed") is True
    pid_file = tmp_path / "other.pid"
    # Between our run's last look at the release and its helm upgrade, another client starts writing revision 2.
    binary = helm_wrapper(tmp_path, f"""    other = subprocess.Popen({other_client_argv(name, namespace)!r}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    open({str(pid_file)!r}, "w").write(str(other.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run([REAL, "history", argv[1], "-n", {namespace!r}, "-o", "json"], capture_output=True,
                             text=True).stdout
        if out.strip() and json.loads(out)[-1]["status"] == "pending-upgrade":
            break
        time.sleep(0.2)""")
    try:
        lost = run_module(MODULE, args(values=agent_values(tag="9.2.3"), binary_path=binary))
        after_race = revisions(name, namespace)
        nxt = run_module(MODULE, args(values=agent_values(tag="9.2.3")))  # the other client is still writing
        after_next = revisions(name, namespace)
    finally:
        wait_gone(int(pid_file.read_text()), OTHER_WAIT + 60)
    final = run_module(MODULE, args(values=agent_values(tag="9.2.3")))
    held = (lost.failed and "Another operation is in progress" in lost.result.get("msg", "")
            and after_race == [(1, "deployed"), (2, "pending-upgrade")] and nxt.failed
            and f"helm rollback {name} 1 -n {namespace}" in nxt.result.get("msg", "") and after_next == after_race
            and not final.failed)
    ledger.record("fault", "our helm upgrade loses the race to helm by hand: the winner's revision is never rolled "
                  "back, by this run or the next", held=held,
                  detail=f"lost: {lost.result.get('msg', '')[:100]}; next: {nxt.result.get('msg', '')[:100]}; "
                         f"history {after_next}")
    assert lost.failed and "Another operation is in progress" in lost.result["msg"], lost.result
    assert "Traceback" not in lost.stdout + lost.stderr
    assert after_race == [(1, "deployed"), (2, "pending-upgrade")], after_race
    assert nxt.failed and f"helm rollback {name} 1 -n {namespace}" in nxt.result["msg"], nxt.result
    assert after_next == after_race  # nobody touched the other client's revision
    assert not final.failed and final.result["changed"] is True, final.result.get("msg")


def test_a_run_killed_before_helm_wrote_claims_nothing_written_after_it(release, namespace, tmp_path, other_client,
                                                                        ledger):  # noqa: F811
    name, args = release
    assert run_module(MODULE, args()).result.get("changed") is True
    binary = helm_wrapper(tmp_path, "    time.sleep(600)")  # our intent is recorded; helm never gets to write
    killed = subprocess.Popen(module_argv(MODULE, args(values=agent_values(tag="9.2.3"), binary_path=binary)),
                              env=ansible_env(TMPDIR=str(tmp_path)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # its unpacked payload stays here
    wait_for("the intercepted upgrade", lambda: (tmp_path / "intercepted").exists() or killed.poll() is not None, 120)
    kill_tree(killed)
    intent = lease(name, namespace)["metadata"].get("annotations") or {}
    other_client(name, namespace)  # helm by hand writes revision 2 and waits on it
    left = revisions(name, namespace)
    nxt = run_module(MODULE, args(values=agent_values(tag="9.2.3")))
    after = revisions(name, namespace)
    held = (nxt.failed and f"helm rollback {name} 1 -n {namespace}" in nxt.result.get("msg", "") and after == left)
    ledger.record("fault", "a run killed between recording its intent and helm's write: the revision another client "
                  "writes next is not taken for ours", held=held,
                  detail=f"intent {intent}; left {left}; next: {nxt.result.get('msg', '')[:120]}; history {after}")
    assert "mlops.datarobot.com/writing-revision" in intent, intent
    assert left == [(1, "deployed"), (2, "pending-upgrade")], left
    assert nxt.failed and f"helm rollback {name} 1 -n {namespace}" in nxt.result["msg"], nxt.result
    assert after == left


def test_two_holders_on_one_machine_in_different_pid_namespaces(release, namespace, ledger):  # noqa: F811
    """Same host name, a PID namespace of its own (a container): its pid means nothing here, so its claim counts
    until it expires, and it renews the Lease while helm waits."""
    name, args = release
    assert run_module(MODULE, args()).result.get("changed") is True
    holder = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc",
         *module_argv(MODULE, args(values=agent_values(tag=BROKEN_TAG), wait_timeout=40, stuck_timeout=0))],
        env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the contained run's pending revision", lambda: pending(name, namespace) or holder.poll() is not None,
                 120)
        claim = lease(name, namespace)["spec"]
        second = run_module(MODULE, args(values=agent_values(tag="9.2.3")))
        left = revisions(name, namespace)
        renewed = None
        deadline = time.monotonic() + 35
        while time.monotonic() < deadline and holder.poll() is None:
            now = lease(name, namespace)["spec"]
            if now.get("holderIdentity") == claim["holderIdentity"] and now["renewTime"] > claim["renewTime"]:
                renewed = now["renewTime"]
                break
            time.sleep(1)
    finally:
        out, err = holder.communicate(timeout=300)
    first = PlaybookRun.of(subprocess.CompletedProcess(holder.args, holder.returncode, out, err)).first_result()
    after = run_module(MODULE, args(values=agent_values(tag="9.2.3")))
    message = second.result.get("msg", "")
    held = (second.failed and "Another operation is in progress" in message and left[-1] == (2, "pending-upgrade")
            and renewed is not None and "Rolled back to revision 1" in first.get("msg", "") and not after.failed)
    ledger.record("fault", "two holders on one machine, one in its own PID namespace: the second keeps out, the "
                  "first renews the Lease while helm waits", held=held,
                  detail=f"holder {claim.get('holderIdentity')}; second: {message[:120]}; history {left}; renewed "
                         f"{claim.get('renewTime')} -> {renewed}; first: {first.get('msg', err[-200:])[:80]}")
    assert second.failed and "Another operation is in progress" in message, second.result
    assert claim["holderIdentity"] in message, message  # the run that holds the release is named
    assert left[-1] == (2, "pending-upgrade"), left
    assert renewed is not None, claim
    assert "Rolled back to revision 1" in first.get("msg", ""), (first, err[-2000:])
    assert not after.failed and after.result["changed"] is True, after.result.get("msg")


def test_a_release_of_another_chart_is_left_alone_unless_forced(release, namespace, ledger):  # noqa: F811
    name, args = release
    helm("install", name, TINY_CHART, "-n", namespace, "--wait", "--timeout", "60s")
    wanted = (f"Release {name} in namespace {namespace} holds chart tiny-0.1.0, not chart datarobot-management-agent")
    checked = run_module(MODULE, args(), check=True)
    refused = run_module(MODULE, args())
    removed = run_module(MODULE, {"release_name": name, "release_namespace": namespace, "state": "absent"})
    untouched = revisions(name, namespace)
    forced = run_module(MODULE, args(force=True))
    after = history(name, namespace)
    held = all(outcome.failed and wanted in outcome.result.get("msg", "") for outcome in (checked, refused, removed)) \
        and untouched == [(1, "deployed")] and not forced.failed
    ledger.record("bad_input", "a release of another chart under our release_name: refused (upgrade, check mode, "
                  "uninstall) unless force", held=held, detail=f"{refused.result.get('msg', '')[:160]}; forced "
                                                               f"changed={forced.result.get('changed')}")
    for outcome in (checked, refused, removed):
        assert outcome.failed and wanted in outcome.result["msg"], outcome.result
        assert "force: true" in outcome.result["msg"] and "release_name" in outcome.result["msg"]
        assert "Traceback" not in outcome.stdout + outcome.stderr
    assert untouched == [(1, "deployed")]
    assert not forced.failed and forced.result["changed"] is True, forced.result.get("msg")
    assert after[-1]["chart"] == "datarobot-management-agent-1.2.0" and after[-1]["status"] == "deployed"
    assert run_module(MODULE, args()).result["changed"] is False
    gone = run_module(MODULE, {"release_name": name, "release_namespace": namespace, "state": "absent"})
    assert not gone.failed and gone.result["changed"] is True, gone.result.get("msg")
