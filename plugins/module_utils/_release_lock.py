# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which run of agent_deployment is changing a release, kept in a Lease next to the release.

Helm marks a release pending-install/-upgrade/-rollback while it writes it, and refuses every other
operation until the status moves on. A run that is interrupted (job cancelled, process killed, API
server gone at the wrong moment) leaves that status behind for good, and helm cannot tell a stale
pending revision from one another client is still writing. The Lease records who holds the release
and which revision it is about to write, so that the next run can recognise a revision its dead
predecessor left pending and recover it, while a revision written by anyone else is left alone.

Only runs that change the release take the Lease; a run that finds nothing to do writes nothing. A holder
renews the Lease while it holds it (helm may wait for a long time), and names itself by host, process and the
kernel instance the process runs in (machine id, boot id, PID namespace), so that a process is only ever judged
dead by a host that can see it. What each intended write looks like (an Intent) is recorded so that the next run
can tell that write from anyone else's (_release_guard weighs the evidence).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

LEASE_API_VERSION = "coordination.k8s.io/v1"
WRITING_REVISION = "mlops.datarobot.com/writing-revision"  # the revision the holder is about to write
WRITING_SINCE = "mlops.datarobot.com/writing-since"
WRITING_OPERATION = "mlops.datarobot.com/writing-operation"  # upgrade | rollback | uninstall
WRITING_LABEL = "mlops.datarobot.com/writing-label"  # the release label the upgrade puts on its revision
WRITING_ROLLBACK_TO = "mlops.datarobot.com/writing-rollback-to"  # the revision a rollback goes back to
INTENT_KEYS = (WRITING_REVISION, WRITING_SINCE, WRITING_OPERATION, WRITING_LABEL, WRITING_ROLLBACK_TO)
OPERATIONS = ("upgrade", "rollback", "uninstall")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # the Lease's MicroTime


class LeaseConflict(MlopsError):
    """Someone else wrote the Lease since we read it (HTTP 409)."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"Lease {name} in namespace {namespace} was changed by someone else since this run read it "
                         "(the API server answered 409 Conflict).")
        self.namespace, self.name = namespace, name


class NamespaceMissing(MlopsError):
    """The release's namespace does not exist yet (helm is about to create it)."""


class LeaseStore(Protocol):
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        ...

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ...

    def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ...

    # only while it is the one with this uid and resourceVersion (else LeaseConflict)
    def delete_lease(self, namespace: str, name: str, *, uid: str | None, resource_version: str | None) -> None:
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


def _read_first(*paths: str) -> str:
    for path in paths:
        try:
            with open(path, encoding="ascii") as stream:
                found = stream.read().strip()
        except (OSError, ValueError):
            continue
        if found:
            return found
    return "-"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "-"


def kernel_instance() -> str:
    """Where a pid means something: this machine (machine id), this boot (boot id) and this PID namespace.

    Host names repeat (cloned hosts, containers with the host's name), pids repeat across PID namespaces: only a
    holder with the same host name *and* the same instance can be checked by its pid.
    """
    parts = (_read_first("/etc/machine-id", "/var/lib/dbus/machine-id"), _read_first("/proc/sys/kernel/random/boot_id"),
             _pid_namespace())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def this_process() -> str:
    """host/pid/start/random/instance: unique per run, and checkable for liveness from the same kernel instance."""
    pid = os.getpid()
    return f"{socket.gethostname()}/{pid}/{_process_start(pid) or '-'}/{uuid.uuid4().hex[:8]}/{kernel_instance()}"


def holder_is_running(identity: str, host: str | None = None, instance: str | None = None) -> bool | None:
    """True/False for a holder that ran where this process runs (its process still runs or not); None when it ran
    elsewhere - another host, machine, boot or PID namespace - or names itself in an older form without them."""
    parts = identity.split("/")
    if len(parts) != 5 or parts[0] != (host or socket.gethostname()) or parts[4] != (instance or kernel_instance()):
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


@dataclass(frozen=True)
class Intent:
    """A helm write a holder is about to make, and what will show that the revision it finds came from it."""

    revision: int
    operation: str  # upgrade (also a first install), rollback or uninstall
    since: datetime.datetime
    label: str | None = None  # upgrade: the release label value put on the revision (helm >= 3.13)
    rollback_to: int | None = None  # rollback: the revision gone back to (helm describes it "Rollback to N")

    def annotations(self) -> dict[str, str]:
        found = {WRITING_REVISION: str(self.revision), WRITING_SINCE: _format(self.since),
                 WRITING_OPERATION: self.operation}
        if self.label:
            found[WRITING_LABEL] = self.label
        if self.rollback_to is not None:
            found[WRITING_ROLLBACK_TO] = str(self.rollback_to)
        return found

    @classmethod
    def of(cls, annotations: Mapping[str, str]) -> "Intent | None":
        """The recorded intent; None when there is none, or it is incomplete (then nothing can be proven ours)."""
        revision, since = annotations.get(WRITING_REVISION) or "", _parse(annotations.get(WRITING_SINCE))
        operation, target = annotations.get(WRITING_OPERATION), annotations.get(WRITING_ROLLBACK_TO) or ""
        if not revision.isdigit() or since is None or operation not in OPERATIONS:
            return None
        return cls(int(revision), operation, since, annotations.get(WRITING_LABEL) or None,
                   int(target) if target.isdigit() else None)


@dataclass
class Claim:
    """What the Lease said when it was read."""

    holder: str | None
    renewed: datetime.datetime | None
    duration: int
    intent: Intent | None

    @classmethod
    def of(cls, lease: Mapping[str, Any] | None) -> "Claim":
        spec = (lease or {}).get("spec") or {}
        annotations = ((lease or {}).get("metadata") or {}).get("annotations") or {}
        return cls(holder=spec.get("holderIdentity") or None,
                   renewed=_parse(spec.get("renewTime") or spec.get("acquireTime")),
                   duration=int(spec.get("leaseDurationSeconds") or 0), intent=Intent.of(annotations))

    @property
    def writing_revision(self) -> int | None:
        return self.intent.revision if self.intent else None

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
    """Our claim on one release: acquire() before changing it, intend() before each helm write, finish() after.

    While held, start_renewing() keeps the claim fresh from a thread; every write goes through one mutex, so the
    renewals and the run's own writes never use a stale resourceVersion against each other.
    """

    def __init__(self, store: LeaseStore, namespace: str, release: str, duration: int,
                 now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc),
                 identity: str | None = None) -> None:
        self.store, self.namespace, self.release, self.duration = store, namespace, release, duration
        self.now, self.identity = now, identity or this_process()
        self.name = lease_name(release)
        self.lost: str | None = None  # set when someone took the Lease over while this run held it
        self._lease: dict[str, Any] | None = None
        self._mutex = threading.Lock()
        self._renewer: tuple[threading.Event, threading.Thread] | None = None

    def peek(self) -> Claim:
        return Claim.of(self.store.get_lease(self.namespace, self.name))

    def held_intent(self) -> Intent | None:
        """The intent recorded in the Lease as this run holds it (its own, or one a dead predecessor left)."""
        annotations = ((self._lease or {}).get("metadata") or {}).get("annotations") or {}
        return Intent.of(annotations)

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

    def intend(self, intent: Intent) -> None:
        """Record the helm write about to happen, before helm makes it (replacing any earlier intent)."""
        self._claimed_write(intent.annotations())

    def clear_intent(self) -> None:
        """The write did not happen, or what helm holds now is not it: nothing pending is ours."""
        self._claimed_write({})

    def finish(self, keep_intent: bool) -> None:
        """Let go; the intent stays only when the release is pending with the revision it describes. Raises
        LeaseConflict when someone took the Lease over meanwhile."""
        self.stop_renewing()
        if self._lease is None:
            return
        try:
            self._write({}, keep_intent=keep_intent, let_go=True)
        finally:
            self._lease = None

    def remove(self) -> None:
        """Delete the Lease as this run last wrote it. Raises LeaseConflict when someone took it over meanwhile: it is
        then their record of their work (what their crash recovery reads), not ours to delete."""
        self.stop_renewing()
        with self._mutex:  # after a renewal still under way (stop_renewing waits only so long): its resourceVersion
            lease, self._lease = self._lease, None
        if lease is None:
            return
        if self.lost:
            raise LeaseConflict(self.namespace, self.name)
        metadata = lease.get("metadata") or {}
        self.store.delete_lease(self.namespace, self.name, uid=metadata.get("uid"),
                                resource_version=metadata.get("resourceVersion"))

    def start_renewing(self, interval: float) -> None:
        """Renew the claim every `interval` seconds until finish(), so that a long helm --wait never looks dead."""
        if self._renewer is None and self._lease is not None:
            stop = threading.Event()
            thread = threading.Thread(target=self._renew_until, args=(stop, interval), name=f"renew {self.name}",
                                      daemon=True)
            self._renewer = (stop, thread)
            thread.start()

    def stop_renewing(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer[0].set()
            renewer[1].join(timeout=60)

    def _renew_until(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self._write({}, keep_intent=True)
            except LeaseConflict:
                try:
                    self.lost = self.taken_over_message(self.peek())
                except MlopsError:
                    self.lost = self.taken_over_message(Claim(None, None, 0, None))
                return
            except MlopsError:
                continue  # the API server did not answer: the next renewal tries again
            except RuntimeError:
                return  # let go meanwhile

    def _claimed_write(self, annotations: Mapping[str, str]) -> None:
        try:
            self._write(annotations, keep_intent=False)
        except LeaseConflict as exc:
            raise ReleaseHeld(self.held_message(self.peek())) from exc

    def _write(self, annotations: Mapping[str, str], keep_intent: bool, let_go: bool = False) -> None:
        """Replace the Lease as held: new annotations, the intent kept or dropped, renewed (or let go)."""
        with self._mutex:
            if self._lease is None:
                raise RuntimeError("the Lease is not held")
            body = dict(self._lease)
            metadata = dict(body.get("metadata") or {})
            kept = {key: value for key, value in (metadata.get("annotations") or {}).items()
                    if keep_intent or key not in INTENT_KEYS}
            metadata["annotations"] = {**kept, **annotations}
            body["metadata"] = metadata
            body["spec"] = {**(body.get("spec") or {}), "renewTime": _format(self.now())}
            if let_go:
                body["spec"]["holderIdentity"] = None
            self._lease = self.store.replace_lease(self.namespace, body)

    def held_message(self, claim: Claim) -> str:
        return (f"Another operation is in progress on release {self.release} in namespace {self.namespace}: "
                f"agent_deployment run {claim.holder or '(unknown)'} holds Lease {self.name} (claimed until "
                f"{claim.expires()}). Wait for it to finish and run again.")

    def taken_over_message(self, claim: Claim) -> str:
        return (f"Lease {self.name} in namespace {self.namespace} was taken over by {claim.holder or '(nobody)'} while "
                f"this run held release {self.release} (that run judged this one dead, or this run's claim had "
                f"expired). What this run did may have been undone by it: check `helm history {self.release} -n "
                f"{self.namespace}` and run again.")


class ReleaseHeld(MlopsError):
    """A live run of ours holds the release."""
