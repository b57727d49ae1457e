# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One run's hold on one release: who may write it, and what to do with a revision left pending.

helm refuses to touch a release whose latest revision is pending-*, and cannot tell one a dead run left
behind from one another client is writing. The guard answers that with the release's Lease
(_release_lock): a run that changes the release holds it and records each revision before helm writes
it, so that the next run rolls back (or uninstalls) only a revision its dead predecessor left, and
leaves anyone else's alone with a message that says how to recover by hand.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Sequence

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    Helm,
    HelmError,
    Revision,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import (
    KubernetesAccessError,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import ReleaseBusy
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_lock import (
    LeaseStore,
    NamespaceMissing,
    ReleaseHeld,
    ReleaseLock,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_values import ReleaseSpec

PENDING = ("pending-install", "pending-upgrade", "pending-rollback", "uninstalling")
# What helm says when another client got to the release first (its status check and revision write race).
BUSY_ERRORS = re.compile(r"another operation \(install/upgrade/rollback\) is in progress|release: already exists|"
                         r"cannot re-use a name that is still in use", re.I)


def revision_time(updated: str) -> datetime.datetime | None:
    """helm's `updated` (RFC 3339 with up to nanoseconds) as a UTC datetime."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", updated or "")
    if not match:
        return None
    moment = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        microsecond=int((match.group(2) or "0")[:6].ljust(6, "0")))
    zone = match.group(3) or "Z"
    offset = datetime.timedelta(0) if zone == "Z" else (
        (1 if zone[0] == "+" else -1) * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return moment.replace(tzinfo=datetime.timezone(offset)).astimezone(datetime.timezone.utc)


def lease_seconds(wait_timeout: int) -> int:
    """How long a run may hold the release: an upgrade, the wait for the agent and a rollback, with margin."""
    return 3 * wait_timeout + 120


def last_deployed(history: Sequence[Revision]) -> Revision | None:
    """The revision a failed or interrupted one goes back to."""
    return next((revision for revision in reversed(history) if revision.status == "deployed"), None)


def describe(name: str, namespace: str, revision: Revision | None) -> dict[str, Any]:
    """A revision as the module returns it in `status`."""
    if revision is None:
        return {}
    return {"name": name, "namespace": namespace, "revision": revision.revision, "chart": revision.chart,
            "app_version": revision.app_version, "status": revision.status, "updated": revision.updated,
            "description": revision.description}


class ReleaseGuard:
    """Holds one release for one run; reads its history as helm keeps it."""

    def __init__(self, helm: Helm, spec: ReleaseSpec, leases: LeaseStore | None = None,
                 identity: str | None = None) -> None:
        self.helm, self.spec, self.leases, self.identity = helm, spec, leases, identity
        self.lock: ReleaseLock | None = None  # held while this run changes the release

    # -- reading

    def history(self) -> list[Revision]:
        """The release's revisions, oldest first; none when it was uninstalled (installing starts afresh)."""
        history = self.helm.history(self.spec.name, self.spec.namespace)
        if history and history[-1].status == "uninstalled":
            return []
        return history

    def latest(self) -> Revision | None:
        history = self.history()
        return history[-1] if history else None

    def fix_command(self, good: Revision | None) -> str:
        """The helm command that recovers the release by hand: back to `good`, or away when there is none."""
        if good is not None:
            return f"helm rollback {self.spec.name} {good.revision} -n {self.spec.namespace}"
        return f"helm uninstall {self.spec.name} -n {self.spec.namespace}"

    # -- holding

    def _lock(self) -> ReleaseLock | None:
        if self.leases is None:
            return None
        return ReleaseLock(self.leases, self.spec.namespace, self.spec.name, lease_seconds(self.spec.wait_timeout),
                           identity=self.identity)

    def interrupted(self, history: Sequence[Revision]) -> Revision | None:
        """The latest revision, when it is pending because a run of ours died while writing it."""
        if not history or history[-1].status not in PENDING:
            return None
        lock = self._lock()
        if lock is None:
            return None
        latest = history[-1]
        return latest if lock.left_pending_by_a_dead_run(latest.revision, revision_time(latest.updated)) else None

    def hold(self, planned: Sequence[Revision]) -> None:
        """Take the release's Lease (once), then make sure nobody wrote the release since this run read it."""
        if self.lock is None:
            lock = self._lock()
            if lock is None:
                return
            try:
                lock.acquire()
            except ReleaseHeld as exc:
                raise ReleaseBusy(str(exc)) from exc
            except NamespaceMissing:
                return  # a first install that creates its namespace: helm's own name check keeps two apart
            self.lock = lock
        now = self.history()
        if [(r.revision, r.status) for r in now[-1:]] != [(r.revision, r.status) for r in planned[-1:]]:
            seen = f"revision {now[-1].revision} ({now[-1].status})" if now else "no release"
            raise ReleaseBusy(f"Another operation is in progress on release {self.spec.name} in namespace "
                              f"{self.spec.namespace}: it changed while this run was deciding what to do (now "
                              f"{seen}). Nothing was done; run again.")

    def intend(self, revision: int) -> None:
        """Record the revision the next helm write creates, before helm creates it."""
        if self.lock is not None:
            try:
                self.lock.intend(revision)
            except ReleaseHeld as exc:
                raise ReleaseBusy(str(exc)) from exc

    def let_go(self) -> None:
        """Best effort: when the API server is gone, the Lease names a dead run and the next run takes over."""
        lock, self.lock = self.lock, None
        if lock is None:
            return
        try:
            history = self.history()
            lock.finish(settled=not history or history[-1].status not in PENDING)
        except (HelmError, KubernetesAccessError):
            pass

    def forget(self) -> None:
        """The release is gone: so is its bookkeeping (best effort)."""
        lock, self.lock = self.lock, None
        if lock is not None:
            try:
                lock.remove()
            except KubernetesAccessError:
                pass

    def roll_back_or_uninstall(self, failed: int, good: Revision | None) -> None:
        """Undo revision `failed`: roll back to `good`, or uninstall when the release never worked. Raises HelmError."""
        spec = self.spec
        if good is None:
            self.intend(failed)
            self.helm.uninstall(spec.name, spec.namespace, wait=spec.wait, timeout=spec.wait_timeout)
        else:
            self.intend(failed + 1)
            self.helm.rollback(spec.name, spec.namespace, good.revision, wait=spec.wait, timeout=spec.wait_timeout)

    # -- refusing

    def pending(self, history: Sequence[Revision]) -> str | None:
        """Why the release cannot be written now, when another client left it pending."""
        if not history or history[-1].status not in PENDING:
            return None
        latest = history[-1]
        return (f"Another operation is in progress on release {self.spec.name} in namespace {self.spec.namespace} "
                f"(status {latest.status}, revision {latest.revision}, since {latest.updated}). Wait for it to finish "
                f"and run again. If nothing else is working on it (an interrupted run leaves this status behind), "
                f"recover with: {self.fix_command(last_deployed(history))}")

    def refuse_pending(self, history: Sequence[Revision]) -> None:
        message = self.pending(history)
        if message:
            raise ReleaseBusy(message)

    def busy_now(self, error: HelmError) -> ReleaseBusy:
        """helm found the release busy: name the run of ours that holds it, if one does."""
        lock = self._lock()
        if lock is not None:
            claim = lock.peek()
            if claim.live(lock.now()):
                return ReleaseBusy(lock.held_message(claim))
        return self.overtaken(error)

    def overtaken(self, error: HelmError) -> ReleaseBusy:
        """Another client wrote the release between our check and our helm command: its revision is left alone."""
        history = self.history()
        message = self.pending(history)
        if message is None:
            now = f" It is now at revision {history[-1].revision} ({history[-1].status})." if history else ""
            message = (f"Another operation is in progress on release {self.spec.name} in namespace "
                       f"{self.spec.namespace}: it changed the release while this run was about to "
                       f"({error.stderr or error}).{now} Nothing was rolled back; run again to apply this run's "
                       "values.")
        return ReleaseBusy(message)
