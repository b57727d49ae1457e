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
from types import SimpleNamespace
from typing import Any

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import HelmError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_guard import (
    RUN_LABEL,
    ReleaseGuard,
    renew_interval,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_lock import (
    WRITING_REVISION,
    Claim,
    Intent,
    LeaseConflict,
    NamespaceMissing,
    ReleaseHeld,
    ReleaseLock,
    _process_start,
    holder_is_running,
    kernel_instance,
    this_process,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_reconciler import (
    ReleaseBusy,
    lease_seconds,
    revision_time,
)

sys.path.insert(0, os.path.dirname(__file__))
from test__release_reconciler import helm_now, rig, spec  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

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
            raise LeaseConflict(namespace, key[1])
        self.version += 1
        return self._stored(key, {**body, "metadata": {**body["metadata"], "uid": f"uid-{self.version}"}})

    def replace_lease(self, namespace, body):
        key = (namespace, body["metadata"]["name"])
        if self.leases[key]["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            raise LeaseConflict(namespace, key[1])
        return self._stored(key, body)

    def delete_lease(self, namespace, name, *, uid, resource_version):
        """Deleted only as it was last seen (DeleteOptions preconditions): else 409, as the API server answers."""
        found = self.leases.get((namespace, name))
        if found is None:
            return
        if (found["metadata"].get("uid"), found["metadata"]["resourceVersion"]) != (uid, resource_version):
            raise LeaseConflict(namespace, name)
        del self.leases[(namespace, name)]


def dead_identity() -> str:
    """The identity of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE, text=True)
    pid = int(proc.communicate()[0])
    return f"{socket.gethostname()}/{pid}/12345/deadbeef/{kernel_instance()}"


def lock(store: MemoryLeases, identity: str | None = None, now: datetime.datetime = T0) -> ReleaseLock:
    return ReleaseLock(store, "ns", "bosun", 60, now=lambda: now, identity=identity)


# ---------------------------------------------------------------- the Lease alone


def test_this_process_is_running_and_an_exited_one_is_not():
    assert holder_is_running(this_process()) is True
    assert holder_is_running(dead_identity()) is False
    assert holder_is_running(f"elsewhere/1/2/abc/{kernel_instance()}") is None  # another host: only expiry can tell


def test_a_holder_of_this_host_name_in_another_kernel_instance_is_not_judged_by_its_pid():
    """Same host name, but another machine (a clone), another boot or another PID namespace (a container): its pid
    names another process here, so only its claim's expiry can tell whether it still works."""
    host, pid, start, rand, instance = this_process().split("/")
    assert holder_is_running(f"{host}/{pid}/{start}/{rand}/{'0' * 16}") is None
    assert holder_is_running(f"{host}/{pid}/{start}/{rand}") is None  # the older form names no instance
    dead = dead_identity()
    assert holder_is_running(dead.rsplit("/", 1)[0] + "/" + "f" * 16) is None  # dead here means nothing there
    # A new PID namespace must give another instance. unshare (util-linux) needs CAP_SYS_ADMIN, which the test
    # machines have (make test runs as root): probed with `true` first, so that a refusal says so, not the child.
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    probe = subprocess.run([*unshare, "true"], capture_output=True, text=True, check=False)
    assert probe.returncode == 0, f"unshare --pid is refused here (it needs CAP_SYS_ADMIN): {probe.stderr.strip()}"
    inside = subprocess.run([*unshare, sys.executable, "-c",
                             "from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils."
                             "_release_lock import kernel_instance; print(kernel_instance())"],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() != kernel_instance()


def test_a_holder_that_exited_but_is_not_reaped_yet_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    identity = f"{socket.gethostname()}/{child.pid}/{_process_start(child.pid)}/zombie/{kernel_instance()}"
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
    first.finish(keep_intent=False)
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


def test_intent_is_kept_when_asked_and_cleared_otherwise():
    """An upgrade intent survives a kept finish for the next holder, and is cleared by a plain finish."""
    store = MemoryLeases()
    holder = lock(store)
    holder.acquire()
    holder.intend(Intent(4, "upgrade", T0, label="abc"))
    holder.finish(keep_intent=True)
    claim = Claim.of(store.get_lease("ns", "bosun-agent-deployment"))
    assert claim.intent == Intent(4, "upgrade", T0, label="abc") and claim.writing_revision == 4
    again = lock(store)
    again.acquire()
    assert again.held_intent() == claim.intent  # a predecessor's intent is seen by the next holder
    again.finish(keep_intent=False)
    lease = store.get_lease("ns", "bosun-agent-deployment")
    assert WRITING_REVISION not in lease["metadata"]["annotations"] and lease["spec"]["holderIdentity"] is None


def test_a_rollback_intent_keeps_the_revision_gone_back_to():
    """A rollback is proven ours by its target ("Rollback to N"): that must survive the Lease round trip too."""
    store = MemoryLeases()
    holder = lock(store)
    holder.acquire()
    holder.intend(Intent(5, "rollback", T0, rollback_to=3))
    holder.finish(keep_intent=True)
    claim = Claim.of(store.get_lease("ns", "bosun-agent-deployment"))
    assert claim.intent == Intent(5, "rollback", T0, rollback_to=3) and claim.intent.rollback_to == 3
    again = lock(store)
    again.acquire()
    assert again.held_intent() == Intent(5, "rollback", T0, rollback_to=3)


def test_an_incomplete_intent_proves_nothing():
    assert Intent.of({WRITING_REVISION: "2", "mlops.datarobot.com/writing-since": "2026-11-25T12:00:00.000000Z"}) \
        is None  # what an older version recorded: no operation, so no evidence to weigh
    assert Intent.of({}) is None


class HelmStamps:
    """A helm whose one pending revision carries what the test says."""

    labels_supported = True

    def __init__(self, labelled: int | None = None, deleted: str = "") -> None:
        self.labelled, self.deleted = labelled, deleted

    def labelled_revision(self, name, namespace, key, value):
        return self.labelled if value == "mine" else None

    def deleted_at(self, name, namespace, revision):
        return self.deleted


def stamped(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


@pytest.mark.parametrize("intent, status, updated, description, labelled, ours", [
    (Intent(2, "upgrade", T0, label="mine"), "pending-upgrade", T0 + datetime.timedelta(seconds=3), "", 2, True),
    (Intent(2, "upgrade", T0, label="mine"), "pending-upgrade", T0 + datetime.timedelta(seconds=3), "", None, False),
    (Intent(2, "upgrade", T0, label="mine"), "pending-upgrade", T0 - datetime.timedelta(minutes=10), "", 2, False),
    (Intent(2, "upgrade", T0, label="mine"), "pending-upgrade", T0 + datetime.timedelta(days=2), "", 2, False),
    (Intent(2, "upgrade", T0, label="mine"), "pending-rollback", T0 + datetime.timedelta(seconds=3), "", 2, False),
    (Intent(3, "upgrade", T0, label="mine"), "pending-upgrade", T0 + datetime.timedelta(seconds=3), "", 2, False),
    (Intent(2, "upgrade", T0), "pending-install", T0 + datetime.timedelta(seconds=3), "", None, True),  # helm < 3.13
    (Intent(2, "rollback", T0, rollback_to=1), "pending-rollback", T0, "Rollback to 1", None, True),
    (Intent(2, "rollback", T0, rollback_to=1), "pending-rollback", T0, "Preparing upgrade", None, False),
    (None, "pending-upgrade", T0, "", 2, False),
])
def test_a_pending_revision_is_ours_only_with_all_the_evidence(intent, status, updated, description, labelled, ours):
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
        ChartSource,
        Revision,
    )
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_values import ReleaseSpec
    guard = ReleaseGuard(HelmStamps(labelled), ReleaseSpec("bosun", "ns", ChartSource("/c"), {}))
    assert guard.written_by(intent, Revision(2, status, "agent-1.0.0", "1", stamped(updated), description)) is ours


def test_an_uninstall_is_timed_by_when_helm_started_deleting():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
        ChartSource,
        Revision,
    )
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_values import ReleaseSpec
    revision = Revision(2, "uninstalling", "agent-1.0.0", "1", stamped(T0 - datetime.timedelta(hours=1)), "")
    for deleted, ours in ((stamped(T0 + datetime.timedelta(seconds=2)), True), ("", False),
                          (stamped(T0 + datetime.timedelta(days=1)), False)):
        guard = ReleaseGuard(HelmStamps(deleted=deleted), ReleaseSpec("bosun", "ns", ChartSource("/c"), {}))
        assert guard.written_by(Intent(2, "uninstall", T0), revision) is ours


def test_renewals_come_often_enough():
    assert renew_interval(1020) == 60 and renew_interval(240) == 24 and renew_interval(10) == 5


def test_a_renewing_holder_keeps_its_claim_fresh_and_stops_when_it_lets_go():
    store = MemoryLeases()
    clock = [T0]
    holder = ReleaseLock(store, "ns", "bosun", 60, now=lambda: clock[0])
    holder.acquire()
    clock[0] = T0 + datetime.timedelta(seconds=50)
    holder.start_renewing(0.02)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Claim.of(store.get_lease("ns", "bosun-agent-deployment")).renewed == T0:
        time.sleep(0.01)
    assert Claim.of(store.get_lease("ns", "bosun-agent-deployment")).renewed == clock[0]
    holder.intend(Intent(2, "upgrade", clock[0], label="x"))  # the run's own writes and the renewals never clash
    holder.finish(keep_intent=False)
    writes = store.writes
    time.sleep(0.1)
    assert store.writes == writes  # no renewal after letting go


def test_a_renewal_that_finds_the_lease_taken_over_says_so():
    store = MemoryLeases()
    holder = lock(store)
    holder.acquire()
    lease = store.get_lease("ns", "bosun-agent-deployment")
    lease["spec"]["holderIdentity"] = "ci-runner-9/7/1/beef"
    store.replace_lease("ns", lease)
    holder.start_renewing(0.01)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and holder.lost is None:
        time.sleep(0.01)
    holder.stop_renewing()
    assert "was taken over by ci-runner-9/7/1/beef while this run held release bosun" in (holder.lost or "")


def taken_over(store: MemoryLeases, by: str = "ci-runner-9/7/1/beef") -> None:
    """Another run takes the Lease over (it judged ours dead): its claim, its resourceVersion."""
    lease = store.get_lease("ns", "bosun-agent-deployment")
    lease["spec"]["holderIdentity"] = by
    store.replace_lease("ns", lease)


def test_removing_a_lease_another_run_took_over_leaves_it_to_that_run():
    """Our renewals found it taken over (lost): its holder's record of its work stays, and we are told."""
    store = MemoryLeases()
    holder = lock(store)
    holder.acquire()
    taken_over(store)
    holder.lost = holder.taken_over_message(holder.peek())  # what a renewal that met the 409 records
    with pytest.raises(LeaseConflict):
        holder.remove()
    assert Claim.of(store.get_lease("ns", "bosun-agent-deployment")).holder == "ci-runner-9/7/1/beef"


def test_a_lease_is_removed_only_as_this_run_last_wrote_it():
    """Taken over with no renewal to notice it (none due yet): the delete's preconditions keep the other's Lease."""
    store = MemoryLeases()
    holder = lock(store)
    holder.acquire()
    taken_over(store)
    with pytest.raises(LeaseConflict):
        holder.remove()
    assert Claim.of(store.get_lease("ns", "bosun-agent-deployment")).holder == "ci-runner-9/7/1/beef"
    untouched = MemoryLeases()
    own = lock(untouched)
    own.acquire()
    own.intend(Intent(2, "uninstall", T0))  # written since acquired: the last resourceVersion is what counts
    own.remove()
    assert untouched.leases == {}


class LeaseEndpoint:
    """The Lease endpoint of kubernetes.core's client: records each delete, answers 409 when told to."""

    def __init__(self, status: int | None = None) -> None:
        self.status, self.deletes = status, []

    def delete(self, **request):
        from kubernetes.client.rest import ApiException
        from kubernetes.dynamic.exceptions import api_exception

        self.deletes.append(request)
        if self.status:
            raise api_exception(ApiException(status=self.status, reason="Conflict"))


def test_the_api_server_is_asked_to_delete_the_lease_only_as_last_seen():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_cluster import (
        ReleaseCluster,
    )

    def cluster(endpoint: LeaseEndpoint) -> ReleaseCluster:
        return ReleaseCluster(SimpleNamespace(configuration=SimpleNamespace(host="https://k:6443"),
                                              resource=lambda kind, api_version: endpoint))

    preconditions = {"apiVersion": "v1", "kind": "DeleteOptions",
                     "preconditions": {"uid": "uid-1", "resourceVersion": "7"}}
    endpoint = LeaseEndpoint()
    cluster(endpoint).delete_lease("ns", "bosun-agent-deployment", uid="uid-1", resource_version="7")
    assert endpoint.deletes == [{"name": "bosun-agent-deployment", "namespace": "ns", "body": preconditions}]
    with pytest.raises(LeaseConflict, match="changed by someone else since this run read it"):
        cluster(LeaseEndpoint(status=409)).delete_lease("ns", "bosun-agent-deployment", uid="uid-1",
                                                        resource_version="7")


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
                           "values": {"image": "repo/agent:broken"}, "manifest": "", "updated": helm_now(),
                           "description": "Preparing upgrade", "labels": {RUN_LABEL: "dead-run"}})
    if ours:
        now = datetime.datetime.now(datetime.timezone.utc)
        killed = lock(store, identity=dead_identity(), now=now)
        killed.acquire()
        killed.intend(Intent(revision, "upgrade", now - datetime.timedelta(seconds=1), label="dead-run"))


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


def test_absent_keeps_a_lease_another_run_took_over_during_the_uninstall(rig):
    """helm uninstall --wait outlasted our claim and another run took the Lease over: the uninstall is done, but the
    Lease is that run's record (its crash recovery), so it stays and the run fails saying what happened."""
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    uninstall = helm.uninstall

    def slow_uninstall(*args, **kwargs):
        uninstall(*args, **kwargs)
        taken_over(store)

    helm.uninstall = slow_uninstall
    with pytest.raises(ReleaseBusy, match="was taken over by ci-runner-9/7/1/beef while this run held release bosun"):
        with_leases(reconciler, store).absent(spec(), True, 10)
    assert helm.revisions == []
    assert Claim.of(store.get_lease("ns", "bosun-agent-deployment")).holder == "ci-runner-9/7/1/beef"


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
    other.finish(keep_intent=False)
    with pytest.raises(ReleaseBusy, match="Another operation is in progress on release bosun"):
        with_leases(reconciler, store).present(spec(replicas=2))  # nobody of ours: what helm's history says


# ---------------------------------------------------------------- only a revision provably ours is recovered


BUSY = "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress"


def another_client_writes(helm, status: str = "pending-upgrade", when: datetime.datetime | None = None) -> None:
    """helm run by someone else creates the next revision and is still working on it (labels carried over, as helm
    does from the previous revision)."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    previous = helm.revisions[-1] if helm.revisions else {}
    helm.revisions.append({"revision": len(helm.revisions) + 1, "status": status, "chart": "agent-1.0.0",
                           "values": {"image": "repo/agent:theirs"}, "manifest": "",
                           "updated": when.strftime("%Y-%m-%dT%H:%M:%S.%f000Z"),
                           "description": "Preparing upgrade", "labels": dict(previous.get("labels") or {})})


def age_the_claim(store: MemoryLeases, seconds: float, intent_seconds: float | None = None) -> None:
    """Time passes: the Lease was last renewed (and the intent recorded) that long ago."""
    lease = store.leases[("ns", "bosun-agent-deployment")]
    then = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds))
    lease["spec"]["renewTime"] = lease["spec"]["acquireTime"] = then.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    annotations = lease["metadata"].get("annotations") or {}
    if "mlops.datarobot.com/writing-since" in annotations:
        since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
            seconds=seconds if intent_seconds is None else intent_seconds)
        annotations["mlops.datarobot.com/writing-since"] = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Killed(BaseException):
    """What SIGKILL does to a run: it stops where it is, and nothing of it runs afterwards."""


def killed_before_helm_writes(helm, store: MemoryLeases, reconciler, monkeypatch) -> None:
    """A run of ours on another host records its intent, then dies before its helm upgrade writes anything."""
    def die():
        raise Killed()

    helm.on_upgrade = die
    run = with_leases(reconciler, store)
    run.lock_identity = "ci-runner-7/42/99/cafe"  # another host: only the claim's expiry tells that it died
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _release_guard
    monkeypatch.setattr(_release_guard.ReleaseGuard, "let_go", lambda self, *args, **kwargs: None)  # no cleanup
    with pytest.raises(Killed):
        run.present(spec(replicas=2))
    monkeypatch.undo()
    helm.on_upgrade = None


def test_an_upgrade_that_loses_the_race_never_leads_to_rolling_back_the_winner(rig):
    """Our helm upgrade finds another client's revision already written (helm says busy): that revision must never
    be taken for one of ours, neither by this run nor by the next one."""
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())

    def overtaken():
        another_client_writes(helm)
        raise HelmError(f"helm upgrade --install bosun failed: {BUSY}", BUSY)

    helm.on_upgrade = overtaken
    with pytest.raises(ReleaseBusy, match="Nothing was rolled back|Another operation is in progress"):
        with_leases(reconciler, store).present(spec(replicas=2))
    helm.on_upgrade = None
    with pytest.raises(ReleaseBusy, match="helm rollback bosun 1 -n ns"):
        with_leases(reconciler, store).present(spec(replicas=2))  # the other client is still writing revision 2
    assert helm.calls == ["upgrade"] and [r["status"] for r in helm.revisions] == ["deployed", "pending-upgrade"]


def test_a_run_killed_before_helm_wrote_does_not_claim_the_revision_someone_else_writes_next(rig, monkeypatch):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    killed_before_helm_writes(helm, store, reconciler, monkeypatch)
    age_the_claim(store, 180)  # the dead run's claim (120 s for wait_timeout 0) has expired
    another_client_writes(helm, when=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=150))
    with pytest.raises(ReleaseBusy, match="helm rollback bosun 1 -n ns"):
        with_leases(reconciler, store).present(spec(replicas=2))
    assert helm.calls == ["upgrade"] and helm.revisions[-1]["status"] == "pending-upgrade"


def test_a_stale_intent_does_not_claim_a_revision_written_days_later(rig, monkeypatch):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())
    killed_before_helm_writes(helm, store, reconciler, monkeypatch)
    age_the_claim(store, 2 * 86400)
    another_client_writes(helm)  # two days later, by hand, still working
    with pytest.raises(ReleaseBusy, match="helm rollback bosun 1 -n ns"):
        with_leases(reconciler, store).present(spec(replicas=2))
    assert helm.calls == ["upgrade"] and helm.revisions[-1]["status"] == "pending-upgrade"


def test_a_lease_taken_over_during_the_run_is_reported_with_its_message(rig):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    with_leases(reconciler, store).present(spec())

    def taken_over():  # another run judged this one dead and took the Lease while helm worked
        lease = store.get_lease("ns", "bosun-agent-deployment")
        lease["spec"]["holderIdentity"] = "ci-runner-9/7/1/beef"
        store.replace_lease("ns", lease)

    helm.on_upgrade = taken_over
    with pytest.raises(ReleaseBusy) as raised:
        with_leases(reconciler, store).present(spec(replicas=2))
    message = str(raised.value)
    assert "Lease bosun-agent-deployment in namespace ns was taken over by ci-runner-9/7/1/beef" in message, message
    assert "helm history bosun -n ns" in message


def test_the_lease_is_renewed_while_helm_runs(rig, monkeypatch):
    helm, cluster, reconciler = rig
    store = MemoryLeases()
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _release_guard
    monkeypatch.setattr(_release_guard, "renew_interval", lambda duration: 0.05, raising=False)
    seen: list[str] = []

    def long_wait():
        lease = store.get_lease("ns", "bosun-agent-deployment")
        seen.append(lease["spec"]["renewTime"])
        time.sleep(0.4)
        seen.append(store.get_lease("ns", "bosun-agent-deployment")["spec"]["renewTime"])

    helm.on_upgrade = long_wait
    with_leases(reconciler, store).present(spec())
    assert len(seen) == 2 and seen[1] > seen[0], seen
    assert store.get_lease("ns", "bosun-agent-deployment")["spec"]["holderIdentity"] is None
