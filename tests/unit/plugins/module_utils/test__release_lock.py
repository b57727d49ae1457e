"""The release's Lease: who holds it, when a holder is dead, and what the reconciler does with a revision a dead
run of ours left pending (recover it) or one written by someone else (leave it alone)."""

from __future__ import annotations

import copy
import datetime
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import HelmError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_lock import (
    WRITING_REVISION,
    Claim,
    LeaseConflict,
    NamespaceMissing,
    ReleaseHeld,
    ReleaseLock,
    _process_start,
    holder_is_running,
    this_process,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_reconciler import (
    ReleaseBusy,
    lease_seconds,
    revision_time,
)

sys.path.insert(0, os.path.dirname(__file__))
from test__release_reconciler import rig, spec  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

T0 = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.timezone.utc)


class MemoryLeases:
    """Leases as the API server keeps them: resourceVersion checked on replace, 409 on a stale one."""

    def __init__(self, namespaces: tuple[str, ...] = ("ns",)) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.namespaces, self.version, self.writes = set(namespaces), 0, 0

    def _stored(self, key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[key] = stored
        return copy.deepcopy(stored)

    def get_lease(self, namespace, name):
        found = self.leases.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def create_lease(self, namespace, body):
        if namespace not in self.namespaces:
            raise NamespaceMissing(namespace)
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            raise LeaseConflict(key[1])
        return self._stored(key, body)

    def replace_lease(self, namespace, body):
        key = (namespace, body["metadata"]["name"])
        if self.leases[key]["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            raise LeaseConflict(key[1])
        return self._stored(key, body)

    def delete_lease(self, namespace, name):
        self.leases.pop((namespace, name), None)


def dead_identity() -> str:
    """The identity of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE, text=True)
    pid = int(proc.communicate()[0])
    return f"{socket.gethostname()}/{pid}/12345/deadbeef"


def lock(store: MemoryLeases, identity: str | None = None, now: datetime.datetime = T0) -> ReleaseLock:
    return ReleaseLock(store, "ns", "bosun", 60, now=lambda: now, identity=identity)


# ---------------------------------------------------------------- the Lease alone


def test_this_process_is_running_and_an_exited_one_is_not():
    assert holder_is_running(this_process()) is True
    assert holder_is_running(dead_identity()) is False
    assert holder_is_running("elsewhere/1/2/abc") is None  # another host: only the claim's expiry can tell


def test_a_holder_that_exited_but_is_not_reaped_yet_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    identity = f"{socket.gethostname()}/{child.pid}/{_process_start(child.pid)}/zombie"
    assert holder_is_running(identity) is True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # exited, not waited for: a zombie (what an orphan may stay for a while)
        with open(f"/proc/{child.pid}/stat", encoding="ascii") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    assert holder_is_running(identity) is False
    child.wait()


def test_a_live_holder_keeps_others_out_until_it_finishes():
    store = MemoryLeases()
    first = lock(store)
    first.acquire()
    with pytest.raises(ReleaseHeld, match=r"Another operation is in progress on release bosun in namespace ns: "
                                          r"agent_deployment run .* holds Lease bosun-agent-deployment"):
        lock(store).acquire()
    first.finish(settled=True)
    lock(store).acquire()


def test_a_dead_holder_on_this_host_is_taken_over_at_once():
    store = MemoryLeases()
    lock(store, identity=dead_identity()).acquire()
    lock(store).acquire()  # no wait for the claim to expire


def test_a_holder_elsewhere_counts_until_its_claim_expires():
    store = MemoryLeases()
    lock(store, identity="ci-runner-7/42/99/cafe").acquire()
    with pytest.raises(ReleaseHeld, match="claimed until 2026-11-25T12:01:00"):
        lock(store, now=T0 + datetime.timedelta(seconds=59)).acquire()
    lock(store, now=T0 + datetime.timedelta(seconds=61)).acquire()


def test_two_acquirers_racing_one_wins_by_resource_version():
    store = MemoryLeases()
    lock(store, identity=dead_identity()).acquire()
    slow, fast = lock(store), lock(store)
    stale = store.get_lease("ns", "bosun-agent-deployment")
    fast.acquire()
    store.get_lease = lambda namespace, name: copy.deepcopy(stale)  # what the slow one read before the fast one wrote
    with pytest.raises(ReleaseHeld):
        slow.acquire()


def test_intent_is_kept_when_the_run_stops_unsettled_and_cleared_when_settled():
    store = MemoryLeases()
    holder = lock(store)
    holder.acquire()
    holder.intend(4)
    holder.finish(settled=False)
    assert Claim.of(store.get_lease("ns", "bosun-agent-deployment")).writing_revision == 4
    assert lock(store).left_pending_by_a_dead_run(4, T0)
    assert not lock(store).left_pending_by_a_dead_run(5, T0)  # a revision nobody of ours announced
    again = lock(store)
    again.acquire()
    again.finish(settled=True)
    lease = store.get_lease("ns", "bosun-agent-deployment")
    assert WRITING_REVISION not in lease["metadata"]["annotations"] and lease["spec"]["holderIdentity"] is None


def test_a_pending_revision_older_than_the_intent_is_not_ours():
    store = MemoryLeases()
    holder = lock(store, identity=dead_identity())
    holder.acquire()
    holder.intend(2)
    assert not lock(store).left_pending_by_a_dead_run(2, T0 - datetime.timedelta(minutes=10))
    assert lock(store).left_pending_by_a_dead_run(2, T0 + datetime.timedelta(seconds=1))


def test_a_live_writer_is_never_called_dead():
    store = MemoryLeases()
    holder = lock(store)
    holder.acquire()
    holder.intend(2)
    assert not lock(store).left_pending_by_a_dead_run(2, T0)


def test_helm_times_and_lease_length():
    assert revision_time("2026-11-25T18:31:57.32420571Z") == datetime.datetime(
        2026, 11, 25, 18, 31, 57, 324205, tzinfo=datetime.timezone.utc)
    assert revision_time("2026-11-25T19:31:57+01:00") == datetime.datetime(
        2026, 11, 25, 18, 31, 57, tzinfo=datetime.timezone.utc)
    assert revision_time("t") is None
    assert lease_seconds(300) == 1020


# ---------------------------------------------------------------- the reconciler with the Lease


def with_leases(rig_reconciler, store: MemoryLeases, check_mode: bool = False):
    made = rig_reconciler(check_mode=check_mode)
    made.leases = store
    return made


def leave_pending(helm, store: MemoryLeases, status: str = "pending-upgrade", ours: bool = True) -> None:
    """What a run killed in the middle of `helm upgrade` leaves: the new revision pending, maybe our intent."""
    revision = len(helm.revisions) + 1
    helm.revisions.append({"revision": revision, "status": status, "chart": "agent-1.0.0",
                           "values": {"image": "repo/agent:broken"}, "manifest": "", "updated": "t"})
    if ours:
        killed = lock(store, identity=dead_identity(), now=datetime.datetime.now(datetime.timezone.utc))
        killed.acquire()
        killed.intend(revision)


def test_a_run_that_changes_nothing_writes_no_lease(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    writes = store.writes
    assert writes == 3  # the install: take the Lease, announce revision 1, let go; the no-op run writes nothing
    assert with_leases(reconciler, store).present(spec()).changed is False and store.writes == writes


def test_an_upgrade_left_pending_by_a_dead_run_is_rolled_back_then_applied(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    leave_pending(helm, store)
    checked = with_leases(reconciler, store, check_mode=True).present(spec())
    assert checked.changed and "revision 2 was left pending-upgrade by an interrupted run" in checked.reasons[0]
    assert helm.calls == ["upgrade"]
    outcome = with_leases(reconciler, store).present(spec(image="repo/agent:2.0"))
    assert helm.calls == ["upgrade", "rollback 1", "upgrade"] and outcome.status["status"] == "deployed"
    assert outcome.action == "upgrade" and outcome.reasons[1:] == ["values differ", "rendered manifest differs"]
    assert with_leases(reconciler, store).present(spec(image="repo/agent:2.0")).changed is False
    assert store.get_lease("ns", "bosun-agent-deployment")["spec"]["holderIdentity"] is None


def test_when_the_last_good_revision_is_what_is_wanted_recovering_is_all(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    leave_pending(helm, store)
    outcome = with_leases(reconciler, store).present(spec())
    assert (outcome.changed, outcome.action, helm.calls) == (True, "recover", ["upgrade", "rollback 1"])
    assert with_leases(reconciler, store).present(spec()).changed is False


def test_an_install_left_pending_by_a_dead_run_is_uninstalled_then_installed(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    leave_pending(helm, store, status="pending-install")
    outcome = with_leases(reconciler, store).present(spec())
    assert helm.calls == ["uninstall", "upgrade"] and outcome.status["revision"] == 1


def test_a_pending_revision_of_someone_else_is_left_alone(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    leave_pending(helm, store, ours=False)
    with pytest.raises(ReleaseBusy, match="helm rollback bosun 1 -n ns"):
        with_leases(reconciler, store).present(spec())
    assert helm.calls == ["upgrade"]


def test_a_live_run_holding_the_release_keeps_a_second_run_out(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    lock(store, now=datetime.datetime.now(datetime.timezone.utc)).acquire()  # this process: alive
    with pytest.raises(ReleaseBusy, match="Another operation is in progress"):
        with_leases(reconciler, store).present(spec(replicas=3))
    assert helm.calls == ["upgrade"]


def test_a_first_install_into_a_namespace_helm_creates_runs_without_the_lease(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases(namespaces=())
    assert with_leases(reconciler, store).present(spec()).action == "install" and store.leases == {}


def test_absent_removes_the_lease_with_the_release(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    leave_pending(helm, store)
    assert with_leases(reconciler, store).absent(spec(), True, 10).changed
    assert helm.revisions == [] and store.leases == {}


def test_a_run_that_starts_writing_while_we_render_is_named(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    other = lock(store, now=datetime.datetime.now(datetime.timezone.utc))  # this process: alive
    other.acquire()

    def busy_render(*args, **kwargs):
        raise HelmError("Rendering chart /charts/agent (helm upgrade --dry-run) failed: Error: UPGRADE FAILED: another "
                        "operation (install/upgrade/rollback) is in progress",
                        "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress")

    helm.render = busy_render
    with pytest.raises(ReleaseBusy, match=r"Another operation is in progress on release bosun in namespace ns: "
                                          r"agent_deployment run .* holds Lease bosun-agent-deployment"):
        with_leases(reconciler, store).present(spec(replicas=2))
    other.finish(settled=True)
    with pytest.raises(ReleaseBusy, match="Another operation is in progress on release bosun"):
        with_leases(reconciler, store).present(spec(replicas=2))  # nobody of ours: what helm's history says
