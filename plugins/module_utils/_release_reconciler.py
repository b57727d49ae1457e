# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Reconcile one Helm release (the management agent's) with what the playbook asks for.

Decides from observed facts, never "always changed":

- install / upgrade / nothing: the chart (name-version), the values helm would store and the manifest
  helm would apply (rendered with `helm upgrade --dry-run`) against the deployed revision;
- drift: the live objects against the deployed manifest, repaired with a JSON patch, or by helm when
  an object is gone (_release_manifest);
- failure: the agent Deployments are watched (_rollout_watch); when they do not become available, what
  explains it is collected *before* the release is rolled back (or a failed first install removed),
  because the rollback replaces those pods; collecting it is best effort, as a read that fails (events
  forbidden, the API server away) must not keep the rollback from running;
- interruption: a run that changes the release holds it (_release_guard), so a revision left pending by
  a run that died is recovered by the next run, and one written by anyone else is never touched.

This file keeps the decisions (present, upgrade, recover, absent, diff); values (_release_values) and
masking (_masking) live beside it. Everything is testable without Ansible.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    Helm,
    HelmError,
    Rendered,
    Revision,
    StoppedWaiting,
    resolve_chart,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import KubernetesAccessError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import (
    MASK,
    Masker,
    is_sensitive_key,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_cluster import UnknownKind
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import (
    InvalidReleaseRequest,
    ReleaseBusy,
    ReleaseFailed,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_guard import (
    AGENT_CHART,
    BUSY_ERRORS,
    ReleaseGuard,
    describe,
    last_deployed,
    lease_seconds,
    revision_time,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_lock import LeaseStore
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_manifest import (
    Drift,
    ObjectRef,
    drift_of,
    dump_documents,
    manifests_equal,
    object_ref,
    parse_manifest,
    repair_operations,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_values import (
    ReleaseSpec,
    canonical,
    compose_values,
    load_values_file,
    merge_values,
    to_yaml,
    values_equal,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._rollout_watch import (
    RolloutWatcher,
    format_diagnostics,
    pod_problems,
    related_events,
    rollout_state,
)

# Still importable from here, where they lived before the split.
__all__ = [
    "MASK", "InvalidReleaseRequest", "Masker", "Outcome", "Reconciler", "ReleaseBusy", "ReleaseFailed", "ReleaseSpec",
    "compose_values", "drift_of", "format_diagnostics", "is_sensitive_key", "lease_seconds", "load_values_file",
    "manifests_equal", "merge_values", "parse_manifest", "pod_problems", "related_events", "repair_operations",
    "resolve_chart", "revision_time", "rollout_state", "values_equal",
]


class Cluster(Protocol):
    """The Kubernetes API calls the reconciler makes (ReleaseCluster in the module, a fake in tests)."""

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        ...

    def patch(self, api_version: str, kind: str, namespace: str, name: str,
              operations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        ...

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        ...

    def warning_events(self, namespace: str) -> list[dict[str, Any]]:
        ...


@dataclass
class Outcome:
    """What a run found and did, in the shape the module returns it."""

    changed: bool
    action: str                                  # none | install | upgrade | repair | recover | uninstall
    reasons: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)
    diff: list[dict[str, str]] = field(default_factory=list)


class Deployed(NamedTuple):
    """What the release holds now: its latest revision, with that revision's values and objects."""

    latest: Revision | None
    values: dict[str, Any]
    documents: list[dict[str, Any]]


class Reconciler:
    """Brings one release to the state a ReleaseSpec asks for, changing only what differs."""

    def __init__(self, helm: Helm, cluster: Cluster, masker: Masker, write_values: Callable[[dict[str, Any]], str],
                 *, check_mode: bool = False, poll: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, leases: LeaseStore | None = None,
                 lock_identity: str | None = None) -> None:
        self.helm, self.cluster, self.masker = helm, cluster, masker
        self.write_values, self.check_mode = write_values, check_mode
        self.poll, self.clock, self.sleep = poll, clock, sleep
        self.leases, self.lock_identity = leases, lock_identity
        self.watcher = RolloutWatcher(cluster, poll=poll, clock=clock, sleep=sleep)
        self.guard: ReleaseGuard | None = None  # the current run's, made by present() and absent()

    def _new_guard(self, spec: ReleaseSpec) -> ReleaseGuard:
        """A fresh guard for this run on `spec` (the Lease store is read now: tests swap it in after __init__)."""
        self.guard = ReleaseGuard(self.helm, spec, self.leases, self.lock_identity)
        return self.guard

    def _guard(self) -> ReleaseGuard:
        """The current run's guard (present() and absent() make it)."""
        if self.guard is None:
            raise RuntimeError("the release is guarded from present() and absent() only")
        return self.guard

    # -- watching, with what is shown masked

    def stuck_watch(self, documents: Sequence[Mapping[str, Any]], namespace: str,
                    patience: float) -> Callable[[], str | None]:
        return self.watcher.stuck_watch(documents, namespace, patience)

    def wait_available(self, documents: Sequence[Mapping[str, Any]], namespace: str, deadline: float) -> list[str]:
        return self.watcher.wait_available(documents, namespace, deadline)

    def collect_diagnostics(self, documents: Sequence[Mapping[str, Any]], namespace: str) -> dict[str, Any]:
        return canonical(self.masker.values(self.watcher.diagnostics(documents, namespace)))

    def _diagnose(self, documents: Sequence[Mapping[str, Any]],
                  namespace: str) -> tuple[dict[str, Any] | None, str | None]:
        """(diagnostics, None), or (None, why they could not be read): they only explain a failure, so a failed
        read (events forbidden, the API server away) must neither stop the rollback nor replace the failure."""
        try:
            return self.collect_diagnostics(documents, namespace), None
        except MlopsError as exc:
            return None, f"The diagnostics (Deployments, pods, Warning events) could not be read: {exc}"

    def _status_now(self, spec: ReleaseSpec, known: Revision | None) -> dict[str, Any]:
        """The release's status for a failure report; the last revision seen when helm cannot read it again."""
        try:
            return describe(spec.name, spec.namespace, self._guard().latest())
        except MlopsError:
            return describe(spec.name, spec.namespace, known)

    # -- state: present

    def present(self, spec: ReleaseSpec) -> Outcome:
        with self._new_guard(spec).releasing():
            return self._present(spec)

    def _present(self, spec: ReleaseSpec) -> Outcome:
        guard = self._guard()
        history = guard.history()
        interrupted = guard.interrupted(history)
        recovered = None
        if interrupted is None:
            guard.refuse_pending(history)
        elif self.check_mode:
            return self._would_recover(spec, history, interrupted)
        else:
            # helm renders nothing for a release it thinks is busy: the dead run's revision goes first.
            history, recovered = self._recover_interrupted(spec, history, interrupted)
        deployed = self._deployed(spec, history)
        values_file = self.write_values(spec.values)
        rendered = self._render(spec, values_file)
        guard.refuse_foreign(deployed.latest, rendered.chart_name)
        desired_docs = parse_manifest(rendered.manifest)
        self.masker.collect_values(deployed.values)
        self.masker.collect_values(rendered.values)
        self.masker.collect_manifest(deployed.documents)
        self.masker.collect_manifest(desired_docs)

        reasons = self._reasons(spec, deployed, rendered, desired_docs)
        drift: list[Drift] = []
        if deployed.latest is not None and deployed.latest.status == "deployed":
            drift = self._live_drift(deployed.documents, spec.namespace)[0]
        if any(item.path is None for item in drift):
            reasons.append("objects of the release were deleted")
        outcome = self._outcome(spec, deployed, rendered, desired_docs, reasons, drift, recovered)
        if self.check_mode or not (reasons or drift):
            return outcome

        guard.hold(history)
        if reasons:
            self._upgrade(spec, history, rendered, desired_docs, values_file, reasons, outcome.drift)
        # Helm's three-way merge puts back what the manifest sets; what it leaves (an env var or a ConfigMap key
        # added by hand), and all drift when no upgrade was needed, is patched back here.
        residual, live_objects = self._live_drift(desired_docs, spec.namespace)
        if residual:
            self._repair(residual, live_objects, outcome.drift)
            if spec.wait:
                self._wait_or_fail(spec, desired_docs, deadline=self.clock() + spec.wait_timeout,
                                   drift=outcome.drift, what=f"Repairing drift of release {spec.name}")
        outcome.status = describe(spec.name, spec.namespace, guard.latest())
        return outcome

    def _recover_interrupted(self, spec: ReleaseSpec, history: Sequence[Revision],
                             interrupted: Revision) -> tuple[list[Revision], str]:
        """Undo the revision a dead run left pending; the history afterwards, and the reason to report."""
        guard = self._guard()
        guard.hold(history)
        good = last_deployed(history)
        try:
            guard.roll_back_or_uninstall(interrupted.revision, good)
        except HelmError as exc:
            raise ReleaseFailed(f"Release {spec.name} in namespace {spec.namespace} was left {interrupted.status} "
                                f"(revision {interrupted.revision}) by an interrupted run, and recovering it failed: "
                                f"{exc}", changed=False, status=describe(spec.name, spec.namespace, interrupted)
                                ) from exc
        return guard.history(), (f"revision {interrupted.revision} was left {interrupted.status} by an interrupted "
                                 "run: " + (f"rolled back to revision {good.revision} first" if good
                                            else "uninstalled first"))

    def _deployed(self, spec: ReleaseSpec, history: Sequence[Revision]) -> Deployed:
        latest = history[-1] if history else None
        if latest is None:
            return Deployed(None, {}, [])
        values, manifest = self.helm.release(spec.name, spec.namespace, latest.revision)
        return Deployed(latest, values, parse_manifest(manifest))

    def _render(self, spec: ReleaseSpec, values_file: str) -> Rendered:
        """What helm would apply; a chart_version that names one version must be the version rendered."""
        try:
            rendered = self.helm.render(spec.name, spec.namespace, spec.chart, values_file)
        except HelmError as exc:
            if BUSY_ERRORS.search(exc.stderr or str(exc)):  # another run started writing since we read the history
                raise self._guard().busy_now(exc) from exc
            raise
        exact = re.fullmatch(r"v?(\d+\.\d+\.\d+(?:[-+].*)?)", spec.chart.version or "")  # not a range
        if exact and rendered.chart_version.lstrip("v") != exact.group(1):
            raise InvalidReleaseRequest(f"The chart at {spec.chart.ref} is {rendered.chart}, not version {spec.chart.version} "
                                        "(chart_version): fix chart_version or point chart_ref at that version.")
        return rendered

    @staticmethod
    def _reasons(spec: ReleaseSpec, deployed: Deployed, rendered: Rendered,
                 desired_docs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Why helm has to write a new revision; none when the release already holds what is asked."""
        latest = deployed.latest
        if latest is None:
            return [f"release {spec.name} is not installed"]
        reasons = []
        if latest.status != "deployed":
            reasons.append(f"revision {latest.revision} is {latest.status}")
        if latest.chart != rendered.chart:
            reasons.append(f"chart {latest.chart} -> {rendered.chart}")
        if not values_equal(deployed.values, rendered.values):
            reasons.append("values differ")
        if not manifests_equal(deployed.documents, desired_docs, spec.namespace):
            reasons.append("rendered manifest differs")
        return reasons

    def _outcome(self, spec: ReleaseSpec, deployed: Deployed, rendered: Rendered,
                 desired_docs: Sequence[Mapping[str, Any]], reasons: list[str], drift: Sequence[Drift],
                 recovered: str | None) -> Outcome:
        public_drift = [item.public(self.masker) for item in drift]
        action = "none"
        if reasons:
            action = "install" if deployed.latest is None else "upgrade"
        elif drift:
            action = "repair"
        elif recovered:
            action = "recover"
        return Outcome(changed=bool(reasons or drift or recovered), action=action,
                       reasons=[recovered] * bool(recovered) + reasons,
                       status=describe(spec.name, spec.namespace, deployed.latest),
                       values=self.masker.values(rendered.values), drift=public_drift,
                       diff=self._diff(spec, deployed, rendered, desired_docs, public_drift))

    def _would_recover(self, spec: ReleaseSpec, history: Sequence[Revision], interrupted: Revision) -> Outcome:
        """Check mode on a revision a dead run left pending: helm renders nothing for it, so the values tell."""
        good = last_deployed(history)
        label = f"{spec.namespace}/{spec.name}"
        values: dict[str, Any] = {}
        if good is not None:
            values = self.helm.release(spec.name, spec.namespace, good.revision)[0]
            self.masker.collect_values(values)
        recovery = f"would roll back to revision {good.revision}" if good else "would uninstall it"
        diff = [{"before_header": f"{label} values ({f'revision {good.revision}' if good else 'not installed'})",
                 "after_header": f"{label} values (desired)", "before": to_yaml(self.masker.values(values)),
                 "after": to_yaml(self.masker.values(spec.values))}]
        return Outcome(changed=True, action="recover", reasons=[
            f"revision {interrupted.revision} was left {interrupted.status} by an interrupted run: {recovery}, then "
            "apply the desired chart and values"], status=describe(spec.name, spec.namespace, interrupted),
            values=self.masker.values(spec.values), diff=diff)

    def _diff(self, spec: ReleaseSpec, deployed: Deployed, rendered: Rendered,
              desired_docs: Sequence[Mapping[str, Any]], drift: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """--diff output: values, manifest and drifted live fields, each only when it differs."""
        label = f"{spec.namespace}/{spec.name}"
        revision = f"revision {deployed.latest.revision}" if deployed.latest else "not installed"
        entries = []
        before = to_yaml(self.masker.values(deployed.values)) if deployed.latest else ""
        after = to_yaml(self.masker.values(rendered.values))
        if deployed.latest is None or before != after:
            entries.append({"before_header": f"{label} values ({revision})", "after_header": f"{label} values (desired)",
                            "before": before, "after": after})
        before = dump_documents([self.masker.manifest_object(d) for d in deployed.documents])
        after = dump_documents([self.masker.manifest_object(d) for d in desired_docs])
        if before != after:
            entries.append({"before_header": f"{label} manifest ({revision})",
                            "after_header": f"{label} manifest (desired, {rendered.chart})",
                            "before": before, "after": after})
        if drift:
            live = {f"{item['object']} {item['field']}": item["live"] for item in drift}
            desired = {f"{item['object']} {item['field']}": item["desired"] for item in drift}
            entries.append({"before_header": f"{label} live objects (drifted)",
                            "after_header": f"{label} live objects (as the release defines them)",
                            "before": to_yaml(live), "after": to_yaml(desired)})
        return entries

    # -- drift

    def _live_drift(self, documents: Sequence[Mapping[str, Any]],
                    namespace: str) -> tuple[list[Drift], dict[ObjectRef, Any]]:
        drift: list[Drift] = []
        live_objects: dict[ObjectRef, Any] = {}
        for document in documents:
            ref = object_ref(document, namespace)
            try:
                live = self.cluster.get(ref.api_version, ref.kind, ref.namespace, ref.name)
            except UnknownKind:
                continue  # a kind the server does not serve: helm reports that itself
            live_objects[ref] = live
            drift.extend(drift_of(ref, document, live))
        return drift, live_objects

    def _repair(self, drift: Sequence[Drift], live_objects: Mapping[ObjectRef, Any],
                reported: list[dict[str, Any]]) -> None:
        """One JSON patch per drifted object; what it repaired joins `reported`."""
        by_object: dict[ObjectRef, list[Drift]] = {}
        for item in drift:
            by_object.setdefault(item.ref, []).append(item)
        for ref, items in by_object.items():
            live = live_objects.get(ref)
            if live is None:
                continue  # gone again: the next run recreates it through helm
            version = (live.get("metadata") or {}).get("resourceVersion")
            self.cluster.patch(ref.api_version, ref.kind, ref.namespace, ref.name, repair_operations(items, version))
            for item in items:
                public = item.public(self.masker)
                if public not in reported:
                    reported.append(public)

    def _wait_or_fail(self, spec: ReleaseSpec, documents: Sequence[Mapping[str, Any]], deadline: float,
                      drift: list[dict[str, Any]], what: str) -> None:
        """After a repair (the objects were patched: changed), fail when the Deployments do not become available."""
        try:
            waiting = self.wait_available(documents, spec.namespace, deadline)
        except KubernetesAccessError as exc:
            waiting = [f"whether the Deployments became available could not be read: {exc}"]
        if not waiting:
            return
        diagnostics, unreadable = self._diagnose(documents, spec.namespace)
        explained = format_diagnostics(diagnostics) if diagnostics else unreadable or ""
        raise ReleaseFailed(
            self.masker.text(f"{what} failed: " + "; ".join(waiting) + f" (waited up to {spec.wait_timeout}s).\n"
                             + explained),
            changed=True, diagnostics=diagnostics, drift=drift, status=self._status_now(spec, None))

    # -- upgrade, and recovering from a failed one

    def _upgrade(self, spec: ReleaseSpec, history: Sequence[Revision], rendered: Rendered,
                 documents: Sequence[Mapping[str, Any]], values_file: str, reasons: Sequence[str],
                 drift: list[dict[str, Any]]) -> None:
        verb = "Upgrading" if history else "Installing"
        previous = history[-1].revision if history else 0
        problem = self._run_upgrade(spec, verb, previous, documents, values_file, reasons)
        if problem is not None:
            what = f"{verb} release {spec.name} in namespace {spec.namespace} to chart {rendered.chart}"
            self._upgrade_failed(spec, history, f"{what} failed: {problem}", documents, drift)

    def _run_upgrade(self, spec: ReleaseSpec, verb: str, previous: int, documents: Sequence[Mapping[str, Any]],
                     values_file: str, reasons: Sequence[str]) -> str | None:
        """helm upgrade, then the wait for the agent; what went wrong, or None."""
        started = self.clock()
        description = self.masker.text(f"agent_deployment {verb.lower()}: " + "; ".join(reasons))[:200]
        labels = self._guard().intend(previous + 1, "upgrade")
        watch = self.stuck_watch(documents, spec.namespace, spec.stuck_timeout) if spec.stuck_timeout else None
        try:
            self.helm.upgrade(spec.name, spec.namespace, spec.chart, values_file, wait=spec.wait,
                              timeout=spec.wait_timeout, create_namespace=spec.create_namespace,
                              description=description, watch=watch, poll=self.poll, sleep=self.sleep, labels=labels)
            if spec.wait:
                deadline = max(started + spec.wait_timeout, self.clock() + 10)
                waiting = self.wait_available(documents, spec.namespace, deadline)
                if waiting:
                    return "; ".join(waiting) + f" (waited up to {spec.wait_timeout}s)"
        except StoppedWaiting as exc:
            return str(exc)
        except KubernetesAccessError as exc:
            # The API server stayed away past the deadline, or refused a read: helm wrote a revision that cannot
            # be shown to work, and it is handled as a failed one (rolled back when atomic).
            return f"whether the Deployments became available could not be read: {exc}"
        except HelmError as exc:
            if BUSY_ERRORS.search(exc.stderr or str(exc)):
                raise self._guard().overtaken(exc) from exc  # the new revision is not ours: never roll it back
            return str(exc)
        return None

    def _upgrade_failed(self, spec: ReleaseSpec, history: Sequence[Revision], headline: str,
                        documents: Sequence[Mapping[str, Any]], drift: list[dict[str, Any]]) -> None:
        """Explain a failed upgrade, after rolling it back when atomic; always raises ReleaseFailed."""
        guard = self._guard()
        try:
            after = guard.history()
        except MlopsError as exc:
            # What helm left is unknown: a blind rollback could undo nothing, or someone else's revision.
            raise ReleaseFailed(self.masker.text(
                f"{headline}\nReading the release's history afterwards failed as well ({exc}), so nothing was rolled "
                f"back and helm may have left a failed revision. Check with: helm history {spec.name} -n "
                f"{spec.namespace}; if its latest revision is not deployed, recover with: "
                f"{guard.fix_command(last_deployed(history))}"), changed=True, drift=drift) from exc
        created = bool(after) and after[-1].revision > (history[-1].revision if history else 0)
        diagnostics, unreadable = self._diagnose(documents, spec.namespace) if created else (None, None)
        lines = [headline]
        if not created:
            lines.append("helm created no new revision; nothing on the cluster was changed.")
        elif not spec.atomic:
            lines.append(f"The release was left at revision {after[-1].revision} ({after[-1].status}) because atomic "
                         f"is false. To go back: {guard.fix_command(last_deployed(after[:-1]))}")
        else:
            lines.append(self._recover(spec, history, after))
        if diagnostics:
            text = format_diagnostics(diagnostics)
            if text:
                lines.append(text)
        elif unreadable:
            lines.append(unreadable)
        raise ReleaseFailed(self.masker.text("\n".join(lines)), changed=created, diagnostics=diagnostics,
                            drift=drift, status=self._status_now(spec, after[-1] if after else None))

    def _recover(self, spec: ReleaseSpec, history: Sequence[Revision], after: Sequence[Revision]) -> str:
        guard = self._guard()
        good = last_deployed(history)
        try:
            guard.roll_back_or_uninstall(after[-1].revision, good)
        except MlopsError as exc:  # helm, or recording the rollback in the Lease: the failed upgrade is still news
            return f"Recovering failed as well ({exc}). Fix it with: {guard.fix_command(good)}"
        if good is None:
            return f"The release had no working revision before, so it was uninstalled (release {spec.name} is gone)."
        try:
            now = guard.latest()
        except MlopsError:
            now = None  # the rollback itself succeeded: only the revision number it made is not known
        return (f"Rolled back to revision {good.revision} (chart {good.chart}), the last deployed one"
                + (f"; the release is now at revision {now.revision}." if now else "."))

    # -- state: absent

    def absent(self, spec: ReleaseSpec, wait: bool, timeout: int) -> Outcome:
        guard = self._new_guard(spec)
        history = guard.history()
        if not history:
            return Outcome(changed=False, action="none")
        if guard.interrupted(history) is None:  # a dead run's pending revision is uninstalled with the rest
            guard.refuse_pending(history)
        latest = history[-1]
        guard.refuse_foreign(latest, self.helm.chart_name(spec.chart) if spec.chart else AGENT_CHART)
        outcome = Outcome(changed=True, action="uninstall", reasons=[f"release {spec.name} is installed"],
                          status=describe(spec.name, spec.namespace, latest), diff=self._absent_diff(spec, latest))
        if not self.check_mode:
            with guard.releasing():
                guard.hold(history)
                guard.intend(latest.revision, "uninstall")
                self.helm.uninstall(spec.name, spec.namespace, wait=wait, timeout=timeout)
                guard.forget()
            outcome.status = {}
        return outcome

    def _absent_diff(self, spec: ReleaseSpec, latest: Revision) -> list[dict[str, str]]:
        values, manifest = self.helm.release(spec.name, spec.namespace, latest.revision)
        self.masker.collect_values(values)
        documents = parse_manifest(manifest)
        self.masker.collect_manifest(documents)
        label = f"{spec.namespace}/{spec.name}"
        return [{"before_header": f"{label} values (revision {latest.revision})", "after_header": f"{label} (absent)",
                 "before": to_yaml(self.masker.values(values)), "after": ""},
                {"before_header": f"{label} manifest (revision {latest.revision})", "after_header": f"{label} (absent)",
                 "before": dump_documents([self.masker.manifest_object(d) for d in documents]), "after": ""}]
