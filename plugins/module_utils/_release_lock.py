# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which run of agent_deployment is changing a release, kept in a Lease next to the release.

Helm marks a release pending-install/-upgrade/-rollback while it writes it, and refuses every other
operation until the status moves on. A run that is interrupted (job cancelled, process killed, API
server gone at the wrong moment) leaves that status behind for good, and helm cannot tell a stale
pending revision from one another client is still writing. The Lease records who holds the release
and which revision it is about to write, so that the next run can recognise a revision its dead
predecessor left pending and recover it, while a revision written by anyone else is left alone.

Only runs that change the release take the Lease; a run that finds nothing to do writes nothing.
"""

from __future__ import annotations

import datetime
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

LEASE_API_VERSION = "coordination.k8s.io/v1"
WRITING_REVISION = "mlops.datarobot.com/writing-revision"  # the revision the holder is about to write
WRITING_SINCE = "mlops.datarobot.com/writing-since"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # the Lease's MicroTime


class LeaseConflict(MlopsError):
    """Someone else wrote the Lease since we read it (HTTP 409)."""


class NamespaceMissing(MlopsError):
    """The release's namespace does not exist yet (helm is about to create it)."""


class LeaseStore(Protocol):
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        ...

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ...

    def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ...

    def delete_lease(self, namespace: str, name: str) -> None:
        ...


def lease_name(release: str) -> str:
    return f"{release}-agent-deployment"[:253]


def _process_start(pid: int) -> str | None:
    """The start time (clock ticks, field 22 of /proc/PID/stat) of a process that runs: a pid alone may be reused.

    None when there is no such process, or it has exited and waits to be reaped (a zombie, state Z or X).
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None
    return fields[19]


def this_process() -> str:
    """host/pid/start/random: unique per run, and checkable for liveness from the same host."""
    pid = os.getpid()
    return f"{socket.gethostname()}/{pid}/{_process_start(pid) or '-'}/{uuid.uuid4().hex[:8]}"


def holder_is_running(identity: str, host: str | None = None) -> bool | None:
    """True/False for a holder on this host (its process still runs or not); None when it ran elsewhere."""
    parts = identity.split("/")
    if len(parts) != 4 or parts[0] != (host or socket.gethostname()):
        return None
    try:
        pid = int(parts[1])
    except ValueError:
        return None
    start = _process_start(pid)
    return start is not None and (parts[2] == "-" or start == parts[2])


def _format(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime(TIME_FORMAT)


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    for form in (TIME_FORMAT, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.datetime.strptime(text, form).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
    return None


@dataclass
class Claim:
    """What the Lease said when it was read."""

    holder: str | None
    renewed: datetime.datetime | None
    duration: int
    writing_revision: int | None
    writing_since: datetime.datetime | None

    @classmethod
    def of(cls, lease: Mapping[str, Any] | None) -> "Claim":
        spec = (lease or {}).get("spec") or {}
        annotations = ((lease or {}).get("metadata") or {}).get("annotations") or {}
        revision = annotations.get(WRITING_REVISION)
        return cls(holder=spec.get("holderIdentity") or None,
                   renewed=_parse(spec.get("renewTime") or spec.get("acquireTime")),
                   duration=int(spec.get("leaseDurationSeconds") or 0),
                   writing_revision=int(revision) if revision and revision.isdigit() else None,
                   writing_since=_parse(annotations.get(WRITING_SINCE)))

    def live(self, now: datetime.datetime, host: str | None = None) -> bool:
        """Whether the holder may still be working: its process runs, or (elsewhere) its claim has not expired."""
        if not self.holder:
            return False
        running = holder_is_running(self.holder, host)
        if running is not None:
            return running
        return self.renewed is not None and now < self.renewed + datetime.timedelta(seconds=self.duration)

    def expires(self) -> str:
        if self.renewed is None:
            return "unknown"
        return _format(self.renewed + datetime.timedelta(seconds=self.duration))


class ReleaseLock:
    """Our claim on one release. acquire() before changing it, intend() before each helm write, release() after."""

    def __init__(self, store: LeaseStore, namespace: str, release: str, duration: int,
                 now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc),
                 identity: str | None = None) -> None:
        self.store, self.namespace, self.release, self.duration = store, namespace, release, duration
        self.now, self.identity = now, identity or this_process()
        self.name = lease_name(release)
        self._lease: dict[str, Any] | None = None

    def peek(self) -> Claim:
        return Claim.of(self.store.get_lease(self.namespace, self.name))

    def left_pending_by_a_dead_run(self, revision: int, updated: datetime.datetime | None) -> bool:
        """Whether `revision` is the one a run of ours was writing when it stopped without finishing."""
        claim = self.peek()
        if claim.writing_revision != revision or claim.live(self.now()):
            return False
        if updated is None or claim.writing_since is None:
            return True
        # helm stamps the revision when it writes it: after our predecessor said it would (clock skew allowed).
        return updated >= claim.writing_since - datetime.timedelta(seconds=60)

    def acquire(self) -> None:
        """Take the Lease, or raise ReleaseHeld naming the live holder."""
        current = self.store.get_lease(self.namespace, self.name)
        claim = Claim.of(current)
        if claim.live(self.now()) and claim.holder != self.identity:
            raise ReleaseHeld(self.held_message(claim))
        now = _format(self.now())
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration, "acquireTime": now,
                "renewTime": now}
        try:
            if current is None:
                self._lease = self.store.create_lease(self.namespace, {
                    "apiVersion": LEASE_API_VERSION, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "datarobot_mlops.agent_deployment"}},
                    "spec": spec})
            else:
                body = dict(current)
                body["spec"] = {**(current.get("spec") or {}), **spec}
                self._lease = self.store.replace_lease(self.namespace, body)  # carries resourceVersion
        except LeaseConflict as exc:
            raise ReleaseHeld(self.held_message(self.peek())) from exc

    def intend(self, revision: int) -> None:
        """Record the revision a helm write is about to create, before helm creates it."""
        self._annotate({WRITING_REVISION: str(revision), WRITING_SINCE: _format(self.now())})

    def finish(self, settled: bool) -> None:
        """Let go. `settled`: the release is not pending, so the revision record is cleared too."""
        if self._lease is None:
            return
        body = dict(self._lease)
        body["spec"] = {**(self._lease.get("spec") or {}), "holderIdentity": None}
        if settled:
            metadata = dict(body.get("metadata") or {})
            metadata["annotations"] = {key: value for key, value in (metadata.get("annotations") or {}).items()
                                       if key not in (WRITING_REVISION, WRITING_SINCE)}
            body["metadata"] = metadata
        self._lease = None
        self.store.replace_lease(self.namespace, body)

    def remove(self) -> None:
        self._lease = None
        self.store.delete_lease(self.namespace, self.name)

    def _annotate(self, annotations: Mapping[str, str]) -> None:
        if self._lease is None:
            raise RuntimeError("intend() before acquire()")
        body = dict(self._lease)
        metadata = dict(body.get("metadata") or {})
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
        body["metadata"] = metadata
        body["spec"] = {**(body.get("spec") or {}), "renewTime": _format(self.now())}
        try:
            self._lease = self.store.replace_lease(self.namespace, body)
        except LeaseConflict as exc:
            raise ReleaseHeld(self.held_message(self.peek())) from exc

    def held_message(self, claim: Claim) -> str:
        return (f"Another operation is in progress on release {self.release} in namespace {self.namespace}: "
                f"agent_deployment run {claim.holder or '(unknown)'} holds Lease {self.name} (claimed until "
                f"{claim.expires()}). Wait for it to finish and run again.")


class ReleaseHeld(MlopsError):
    """A live run of ours holds the release."""
