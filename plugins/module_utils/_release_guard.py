# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One run's hold on one release: who may write it, and what to do with a revision left pending.

helm refuses to touch a release whose latest revision is pending-*, and cannot tell one a dead run left
behind from one another client is writing. The guard answers that with the release's Lease
(_release_lock): a run that changes the release holds it and records each revision before helm writes
it, so that the next run rolls back (or uninstalls) only a revision its dead predecessor left, and
leaves anyone else's alone with a message that says how to recover by hand.

"Left by a dead run of ours" needs evidence, not just a matching revision number: the pending revision must have
the status the recorded operation leaves, be stamped by helm within WRITE_WINDOW after the intent was recorded,
and carry the write's own mark - the release label (helm >= 3.13) an upgrade puts on it, or the "Rollback to N"
helm writes on a rollback. helm writes the pending revision with fixed descriptions ("Preparing upgrade"), so a
--description cannot serve as that mark. An intent is dropped when helm reports another client got there first.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import uuid
from typing import Any, Iterator, Sequence

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    Helm,
    HelmError,
    Revision,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import (
    KubernetesAccessError,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import (
    InvalidReleaseRequest,
    ReleaseBusy,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_lock import (
    Claim,
    Intent,
    LeaseConflict,
    LeaseStore,
    NamespaceMissing,
    ReleaseHeld,
    ReleaseLock,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_values import ReleaseSpec

PENDING = ("pending-install", "pending-upgrade", "pending-rollback", "uninstalling")
# The status each recorded operation leaves its revision in while helm writes it.
LEAVES = {"upgrade": ("pending-install", "pending-upgrade"), "rollback": ("pending-rollback",),
          "uninstall": ("uninstalling",)}
RUN_LABEL = "mlops.datarobot.com/write"  # release label on an upgrade's revision: the intent's own random value
EARLY = datetime.timedelta(seconds=5)  # helm stamps on the same host, just after the intent: rounding only
WRITE_WINDOW = datetime.timedelta(minutes=10)  # from the intent to helm writing the revision (chart pulls included)
AGENT_CHART = "datarobot-management-agent"  # the chart state=absent expects when no chart_ref is given
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


def renew_interval(duration: int) -> float:
    """Seconds between renewals of a Lease held for `duration`: often enough that a claim never nears expiry."""
    return max(5, min(60, duration // 10))


def chart_is(chart: str, name: str) -> bool:
    """Whether helm's `name-version` chart column is a version of chart `name`."""
    return re.fullmatch(re.escape(name) + r"-v?\d+(\.\d+)*([-+].*)?", chart) is not None


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
        """The latest revision, when it is pending because a run of ours died while writing it (provably)."""
        if not history or history[-1].status not in PENDING:
            return None
        lock = self._lock()
        if lock is None:
            return None
        claim = lock.peek()
        if claim.live(lock.now()):
            return None
        return history[-1] if self.written_by(claim.intent, history[-1]) else None

    def written_by(self, intent: Intent | None, latest: Revision) -> bool:
        """Whether pending revision `latest` is the one `intent` announced: same number, the status that operation
        leaves, stamped by helm within WRITE_WINDOW after the intent, and carrying that write's mark."""
        if intent is None or intent.revision != latest.revision or latest.status not in LEAVES[intent.operation]:
            return False
        try:
            # helm stamps `updated` when it writes a revision; an uninstall keeps it and stamps `deleted` instead.
            stamp = (self.helm.deleted_at(self.spec.name, self.spec.namespace, latest.revision)
                     if intent.operation == "uninstall" else latest.updated)
            stamped = revision_time(stamp)
            if stamped is None or not intent.since - EARLY <= stamped <= intent.since + WRITE_WINDOW:
                return False
            if intent.operation == "rollback":
                return latest.description == f"Rollback to {intent.rollback_to}"
            if intent.label:
                return self.helm.labelled_revision(self.spec.name, self.spec.namespace, RUN_LABEL,
                                                   intent.label) == latest.revision
        except HelmError:
            return False
        return True  # an upgrade by helm < 3.13 (no labels) or an uninstall: number, status and time tell

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
            lock.start_renewing(renew_interval(lock.duration))
        now = self.history()
        if [(r.revision, r.status) for r in now[-1:]] != [(r.revision, r.status) for r in planned[-1:]]:
            seen = f"revision {now[-1].revision} ({now[-1].status})" if now else "no release"
            raise ReleaseBusy(f"Another operation is in progress on release {self.spec.name} in namespace "
                              f"{self.spec.namespace}: it changed while this run was deciding what to do (now "
                              f"{seen}). Nothing was done; run again.")

    def intend(self, revision: int, operation: str, rollback_to: int | None = None) -> dict[str, str]:
        """Record the helm write about to happen, before helm makes it; the release labels an upgrade must pass."""
        if self.lock is None:
            return {}
        label = uuid.uuid4().hex[:16] if operation == "upgrade" and self.helm.labels_supported else None
        try:
            self.lock.intend(Intent(revision, operation, self.lock.now(), label, rollback_to))
        except ReleaseHeld as exc:
            raise ReleaseBusy(str(exc)) from exc
        return {RUN_LABEL: label} if label else {}

    @contextlib.contextmanager
    def releasing(self) -> Iterator[None]:
        """Let go of the Lease when the block ends; a Lease taken over meanwhile fails a block that succeeded."""
        try:
            yield
        except BaseException:
            self.let_go(quiet=True)
            raise
        self.let_go()

    def let_go(self, quiet: bool = False) -> None:
        """Let go, keeping the intent only for a pending revision provably its own. When the API server is gone the
        Lease names a dead run and the next run takes over. Raises ReleaseBusy (unless `quiet`) when another run
        took the Lease over while this one held it."""
        lock, self.lock = self.lock, None
        if lock is None:
            return
        lock.stop_renewing()
        try:
            history = self.history()
            latest = history[-1] if history else None
            lock.finish(keep_intent=latest is not None and latest.status in PENDING
                        and self.written_by(lock.held_intent(), latest))
        except LeaseConflict:
            lock.lost = lock.lost or lock.taken_over_message(_claim_or_nobody(lock))
        except (HelmError, KubernetesAccessError):
            pass
        if lock.lost and not quiet:
            raise ReleaseBusy(lock.lost)

    def forget(self) -> None:
        """The release is gone: so is its bookkeeping (best effort). A Lease another run took over meanwhile is that
        run's and stays; raises ReleaseBusy then, as let_go() does."""
        lock, self.lock = self.lock, None
        if lock is None:
            return
        try:
            lock.remove()
        except LeaseConflict:
            lock.lost = lock.lost or lock.taken_over_message(_claim_or_nobody(lock))
        except KubernetesAccessError:
            pass
        if lock.lost:
            raise ReleaseBusy(lock.lost)

    def roll_back_or_uninstall(self, failed: int, good: Revision | None) -> None:
        """Undo revision `failed`: roll back to `good`, or uninstall when the release never worked. Raises HelmError."""
        spec = self.spec
        if good is None:
            self.intend(failed, "uninstall")
            self.helm.uninstall(spec.name, spec.namespace, wait=spec.wait, timeout=spec.wait_timeout)
        else:
            self.intend(failed + 1, "rollback", rollback_to=good.revision)
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
        """Refuse a pending release: naming the live run of ours that holds it, or with the way to recover."""
        message = self.pending(history)
        if message:
            lock = self._lock()
            claim = lock.peek() if lock is not None else None
            if lock is not None and claim is not None and claim.live(lock.now()):
                raise ReleaseBusy(lock.held_message(claim))
            raise ReleaseBusy(message)

    def refuse_foreign(self, latest: Revision | None, wanted: str) -> None:
        """A release of another chart under this name is not the agent's to upgrade or remove, unless forced."""
        if latest is None or self.spec.force or chart_is(latest.chart, wanted):
            return
        raise InvalidReleaseRequest(
            f"Release {self.spec.name} in namespace {self.spec.namespace} holds chart {latest.chart}, not chart "
            f"{wanted}: it is not the management agent's release, so this run neither upgrades nor uninstalls it. "
            "Set force: true to replace (or remove) it anyway, or choose another release_name.")

    def busy_now(self, error: HelmError) -> ReleaseBusy:
        """helm found the release busy: name the run of ours that holds it, if one does."""
        lock = self._lock()
        if lock is not None:
            claim = lock.peek()
            if claim.live(lock.now()):
                return ReleaseBusy(lock.held_message(claim))
        return self.overtaken(error)

    def overtaken(self, error: HelmError) -> ReleaseBusy:
        """Another client wrote the release between our check and our helm command: its revision is left alone, and
        the intent this run recorded goes (helm wrote nothing for it), so no later run takes that revision for ours."""
        if self.lock is not None:
            try:
                self.lock.clear_intent()
            except (ReleaseHeld, KubernetesAccessError):
                pass  # let_go() drops it too: that revision carries no mark of this run
        history = self.history()
        message = self.pending(history)
        if message is None:
            now = f" It is now at revision {history[-1].revision} ({history[-1].status})." if history else ""
            message = (f"Another operation is in progress on release {self.spec.name} in namespace "
                       f"{self.spec.namespace}: it changed the release while this run was about to "
                       f"({error.stderr or error}).{now} Nothing was rolled back; run again to apply this run's "
                       "values.")
        return ReleaseBusy(message)


def _claim_or_nobody(lock: ReleaseLock) -> Claim:
    try:
        return lock.peek()
    except MlopsError:
        return Claim(None, None, 0, None)
