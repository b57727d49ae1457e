# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The helm commands one release needs, as argv lists, with errors a user can act on.

Commands are never built as shell strings (chart paths may hold spaces). The runner is injected:
`run_child` with the environment helm is given (_child_env, _helm_env) in the module, a fake in unit
tests. An upgrade that waits can instead be started in the background (a Spawner) and watched: when
the watch finds the rollout hopeless, helm is sent SIGTERM, which makes it cancel and mark the
revision failed.

The chart values hold the API key and registry credentials, so they never rest in a file or in argv:
helm reads them from its standard input (`--values -`), for a foreground run and a background one alike.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import InvalidReleaseRequest

# argv, and what helm reads on its standard input (only given when there is some)
Runner = Callable[..., "tuple[int, str, str]"]
STDIN = "-"  # `--values -`: helm reads the values document from its standard input

# The helms the collection supports, for every place that runs helm (agent_deployment here, the preflight role
# through the helm_version_problem filter): 3.x from MIN_HELM, and every 4.x.
MIN_HELM = (3, 8, 0)
SUPPORTED_MAJORS = (3, 4)
SUPPORTED = "helm 3.8.0 or later 3.x, or helm 4.x"
SERVER_DRY_RUN = (3, 13, 0)  # `--dry-run=server`: render with the cluster's capabilities and lookups
LABELS = (3, 13, 0)  # release labels: `upgrade --labels`, `list --selector`
# helm 4 writes objects with server-side apply, where a field another client changed (a hand edit, or drift
# repair's patch putting it back) is a conflict that fails the upgrade. The release's values win here, as drift
# repair promises and helm 3's three-way merge did: upgrades and rollbacks apply server-side and force conflicts.
SERVER_SIDE_APPLY = (4, 0, 0)  # also: `helm list` shows releases of every status by default and has no --all


class HelmError(MlopsError):
    """A helm command failed; the message says what failed and what to do about it."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class ReleaseNotFound(HelmError):
    pass


class StoppedWaiting(HelmError):
    """helm was cancelled while it waited, because the rollout could not succeed."""


class Running(Protocol):
    def poll(self) -> int | None:
        ...

    def stop(self) -> None:
        ...

    def result(self) -> tuple[int, str, str]:
        ...


Spawner = Callable[[Sequence[str], "str | None"], Running]


@dataclass(frozen=True)
class Child:
    """How helm is started: its whole environment (not added to ours) and the descriptors it inherits."""
    env: Mapping[str, str]
    pass_fds: tuple[int, ...] = ()


def _start(argv: Sequence[str], child: Child, stdin: str | None, **streams: Any) -> subprocess.Popen:
    try:
        return subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                env=dict(child.env), pass_fds=child.pass_fds, text=True, **streams)
    except OSError as exc:
        raise HelmError(f"helm cannot be run ({argv[0]}): {exc.strerror}. Install {SUPPORTED} or fix binary_path.") \
            from exc


def run_child(argv: Sequence[str], stdin: str | None, child: Child) -> tuple[int, str, str]:
    """Run helm to its end; `stdin` is written to it and closed (helm reads `--values -` from there)."""
    proc = _start(argv, child, stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(stdin)
    return proc.returncode, out, err


def _feed(stream: Any, data: str) -> None:
    """Write `data` and close: helm waits for the end of its input before it reads the chart."""
    try:
        stream.write(data)
        stream.close()
    except (BrokenPipeError, ValueError):  # helm exited before reading it: its own error says why
        pass


class BackgroundCommand:
    """A command started now and collected later; its output goes to unnamed files (a full pipe would block it)."""

    def __init__(self, argv: Sequence[str], child: Child, stdin: str | None = None,
                 directory: str | None = None) -> None:
        self._out = tempfile.TemporaryFile(mode="w+", dir=directory)
        self._err = tempfile.TemporaryFile(mode="w+", dir=directory)
        self._proc = _start(argv, child, stdin, stdout=self._out, stderr=self._err)
        self._feeder = None
        if stdin is not None:  # from a thread: helm may read it only after it reached the cluster
            self._feeder = threading.Thread(target=_feed, args=(self._proc.stdin, stdin), daemon=True)
            self._feeder.start()

    def poll(self) -> int | None:
        return self._proc.poll()

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def result(self) -> tuple[int, str, str]:
        try:
            code = self._proc.wait(timeout=120)  # helm needs a moment to record the cancelled revision
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        if self._feeder:
            self._feeder.join(timeout=5)
        texts = []
        for stream in (self._out, self._err):
            stream.seek(0)
            texts.append(stream.read())
            stream.close()
        return code, texts[0], texts[1]


def background_spawner(child: Child, directory: str | None = None) -> Spawner:
    def spawn(argv: Sequence[str], stdin: str | None) -> Running:
        return BackgroundCommand(argv, child, stdin, directory)

    return spawn


def parse_helm_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) of `helm version --short`; named apart from the (major, minor) cluster parser."""
    found = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    if not found:
        raise HelmError(f"Cannot read helm's version from {text.strip()!r}: is binary_path a helm executable?")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def unsupported(version: tuple[int, int, int], option: str = "binary_path",
                minimum: tuple[int, int, int] | None = None) -> str | None:
    """Why this helm cannot be used (a sentence naming `option`, the setting that picks helm), or None.
    `minimum`: a stricter floor a site asks for; it can only raise MIN_HELM."""
    have = _dotted(version)
    if version[0] not in SUPPORTED_MAJORS or version < MIN_HELM:
        return (f"The collection supports {SUPPORTED}, current version is {have}: install a supported helm or point "
                f"{option} at one.")
    if minimum and version < minimum:
        return f"The collection requires helm >= {_dotted(minimum)}, current version is {have}: upgrade helm."
    return None


def _hint(stderr: str) -> str:
    """What to do about the most common helm errors."""
    text = stderr.lower()
    if "not a valid chart repository" in text or "index.yaml" in text:
        return "helm cannot read the chart repository: check chart_repo_url and that this host can reach it."
    if "kubernetes cluster unreachable" in text or "connection refused" in text or "no such host" in text:
        return ("helm cannot reach the cluster: is it up, and do kubeconfig/context (or K8S_AUTH_KUBECONFIG) point "
                "at it?")
    if "x509" in text or "certificate" in text:
        return "helm does not trust the API server's certificate: pass ca_cert, or fix the kubeconfig's CA."
    if "unauthorized" in text or "forbidden" in text:
        return "the API server refused helm's credentials or their permissions: check the kubeconfig's user and RBAC."
    if "context deadline exceeded" in text or "timed out waiting" in text:
        return "the release's resources did not become ready within wait_timeout."
    if "has no deployed releases" in text:
        return "the release never deployed successfully: remove it with `helm uninstall` and run again."
    if "another operation" in text:
        return "another helm operation is in progress on this release: wait for it and run again."
    if "repo " in text and "not found" in text:
        return "helm does not know that chart repository: add it with `helm repo add`, or pass chart_repo_url."
    if "not found" in text and "chart" in text:
        return "the chart was not found: check chart_ref and chart_version."
    if "namespaces" in text and "not found" in text:
        return "the namespace does not exist: create it first, or set create_namespace: true."
    return ""


@dataclass
class Revision:
    revision: int
    status: str
    chart: str
    app_version: str
    updated: str
    description: str

    @classmethod
    def from_history(cls, entry: Mapping[str, Any]) -> "Revision":
        return cls(int(entry["revision"]), str(entry.get("status", "")), str(entry.get("chart", "")),
                   str(entry.get("app_version", "")), str(entry.get("updated", "")),
                   str(entry.get("description", "")))


@dataclass
class Rendered:
    """What `helm upgrade --install --dry-run` says the next revision would be."""
    chart_name: str
    chart_version: str
    app_version: str
    manifest: str
    values: dict[str, Any]

    @property
    def chart(self) -> str:
        return f"{self.chart_name}-{self.chart_version}"


@dataclass
class ChartSource:
    """Where the chart comes from: the argv pieces that name it for upgrade and dry-run."""
    ref: str
    version: str | None = None
    repo_url: str | None = None

    def argv(self) -> list[str]:
        argv = [self.ref]
        if self.repo_url:
            argv += ["--repo", self.repo_url]
        if self.version:
            argv += ["--version", self.version]
        return argv


def resolve_chart(ref: str, version: str | None = None, repo_url: str | None = None) -> ChartSource:
    """A local chart (directory or .tgz), a chart in a repository (repo/name, or name with repo_url), or oci://."""
    if repo_url or ref.startswith("oci://"):
        return ChartSource(ref, version, repo_url)
    expanded = os.path.expanduser(ref)
    if ref.startswith(("/", "./", "../", "~")) or ref.endswith((".tgz", ".tar.gz")) or os.path.exists(expanded):
        if not os.path.exists(expanded):
            raise InvalidReleaseRequest(f"Chart path {ref} does not exist: pass the chart directory or .tgz (e.g. the agent "
                                        "tarball's tools/charts/datarobot-management-agent), or repo/name with chart_version.")
        if os.path.isdir(expanded) and not os.path.isfile(os.path.join(expanded, "Chart.yaml")):
            raise InvalidReleaseRequest(f"Chart path {ref} is a directory without Chart.yaml: point chart_ref at the chart "
                                        "itself.")
        return ChartSource(os.path.abspath(expanded), version)
    if "/" not in ref:
        raise InvalidReleaseRequest(f"chart_ref {ref!r} is neither an existing path nor repo/name: pass a path, "
                                    "repo/name (after `helm repo add`), oci://..., or the chart name with chart_repo_url.")
    return ChartSource(ref, version)


@dataclass
class Helm:
    binary: str
    run: Runner
    version: tuple[int, int, int] = field(default=(0, 0, 0))
    spawn: Spawner | None = None

    def _helm(self, args: Sequence[str], what: str, stdin: str | None = None) -> str:
        argv = [self.binary, *args]
        return self._checked(*(self.run(argv) if stdin is None else self.run(argv, stdin)), what)

    @staticmethod
    def _checked(rc: int, out: str, err: str, what: str) -> str:
        if rc != 0:
            detail = (err or out).strip()
            if re.search(r"release: not found|release .* not found", detail):
                raise ReleaseNotFound(f"{what}: release not found", detail)
            hint = _hint(detail)
            raise HelmError(f"{what} failed: {detail}" + (f"\n{hint}" if hint else ""), detail)
        return out

    @property
    def labels_supported(self) -> bool:
        return self.version >= LABELS

    def check_version(self) -> tuple[int, int, int]:
        out = self._helm(["version", "--template", "{{.Version}}"], "helm version")
        self.version = parse_helm_version(out)
        problem = unsupported(self.version)
        if problem:
            raise HelmError(f"agent_deployment cannot use this helm. {problem}")
        return self.version

    def history(self, release: str, namespace: str) -> list[Revision]:
        try:
            out = self._helm(["history", release, "-n", namespace, "--max", "1000", "-o", "json"],
                             f"helm history {release}")
        except ReleaseNotFound:
            return []
        return sorted((Revision.from_history(entry) for entry in json.loads(out or "[]")),
                      key=lambda revision: revision.revision)

    def release(self, release: str, namespace: str, revision: int) -> tuple[dict[str, Any], str]:
        """Values (user-supplied) and manifest of one revision."""
        document = self._status(release, namespace, revision)
        return document.get("config") or {}, document.get("manifest") or ""

    def _status(self, release: str, namespace: str, revision: int) -> dict[str, Any]:
        out = self._helm(["status", release, "-n", namespace, "--revision", str(revision), "-o", "json"],
                         f"helm status {release} --revision {revision}")
        return json.loads(out)

    def deleted_at(self, release: str, namespace: str, revision: int) -> str:
        """When helm started uninstalling the release (RFC 3339), or "" when it did not."""
        return str((self._status(release, namespace, revision).get("info") or {}).get("deleted") or "")

    def labelled_revision(self, release: str, namespace: str, key: str, value: str) -> int | None:
        """The latest revision of the release when it carries release label key=value (helm >= 3.13), else None."""
        every_status = [] if self.version >= SERVER_SIDE_APPLY else ["--all"]  # helm 4 lists all, has no --all
        out = self._helm(["list", "-n", namespace, "--filter", f"^{re.escape(release)}$", *every_status, "--selector",
                          f"{key}={value}", "-o", "json"], f"helm list {release}")
        found = [entry for entry in json.loads(out or "[]") if entry.get("name") == release]
        return int(found[0]["revision"]) if found else None

    def _apply_argv(self) -> list[str]:
        return ["--server-side=true", "--force-conflicts"] if self.version >= SERVER_SIDE_APPLY else []

    def _upgrade_argv(self, release: str, namespace: str, chart: ChartSource) -> list[str]:
        return ["upgrade", release, *chart.argv(), "--install", "-n", namespace, "--reset-values", "--values", STDIN,
                *self._apply_argv()]

    def render(self, release: str, namespace: str, chart: ChartSource, values: str) -> Rendered:
        """`values`: the values document (JSON), which helm reads from its standard input."""
        dry_run = "--dry-run=server" if self.version >= SERVER_DRY_RUN else "--dry-run"
        out = self._helm([*self._upgrade_argv(release, namespace, chart), dry_run, "-o", "json"],
                         f"Rendering chart {chart.ref} (helm upgrade --dry-run)", values)
        document = json.loads(out)
        metadata = (document.get("chart") or {}).get("metadata") or {}
        return Rendered(str(metadata.get("name", "")), str(metadata.get("version", "")),
                        str(metadata.get("appVersion", "") or ""), document.get("manifest") or "",
                        document.get("config") or {})

    def chart_name(self, chart: ChartSource) -> str:
        """The name in the chart's Chart.yaml (`helm show chart`)."""
        out = self._helm(["show", "chart", *chart.argv()], f"helm show chart {chart.ref}")
        found = re.search(r"^name:\s*['\"]?([^'\"\s]+)", out, re.M)
        if not found:
            raise HelmError(f"helm show chart {chart.ref} gave no chart name: is chart_ref a chart?", out)
        return found.group(1)

    def upgrade(self, release: str, namespace: str, chart: ChartSource, values: str, *, wait: bool,
                timeout: int, create_namespace: bool, description: str,
                watch: Callable[[], str | None] | None = None, poll: float = 2.0,
                sleep: Callable[[float], None] = time.sleep, labels: Mapping[str, str] | None = None) -> None:
        """`values` as for render. `watch`, called every `poll` seconds while helm waits, returns why waiting is
        pointless, or None. `labels` become release labels of the new revision (helm >= 3.13)."""
        argv = self._upgrade_argv(release, namespace, chart)
        if wait:
            argv += ["--wait", "--timeout", f"{timeout}s"]
        if create_namespace:
            argv.append("--create-namespace")
        argv += ["--description", description]
        if labels:
            argv += ["--labels", ",".join(f"{key}={value}" for key, value in sorted(labels.items()))]
        what = f"helm upgrade --install {release}"
        if not (wait and watch and self.spawn):
            self._helm(argv, what, values)
            return
        running = self.spawn([self.binary, *argv], values)
        reason = None
        try:
            while running.poll() is None:
                reason = watch()
                if reason:
                    break
                sleep(poll)
        except BaseException:
            if running.poll() is None:  # never leave helm writing the release behind this run's back
                running.stop()
                running.result()
            raise
        if reason:
            running.stop()
            rc, out, err = running.result()
            if rc == 0:
                return  # it finished just as we gave up on it
            raise StoppedWaiting(f"{what} was stopped before its timeout: {reason}", (err or out).strip())
        self._checked(*running.result(), what)

    def rollback(self, release: str, namespace: str, revision: int, *, wait: bool, timeout: int) -> None:
        argv = ["rollback", release, str(revision), "-n", namespace, *self._apply_argv()]
        if wait:
            argv += ["--wait", "--timeout", f"{timeout}s"]
        self._helm(argv, f"helm rollback {release} {revision}")

    def uninstall(self, release: str, namespace: str, *, wait: bool, timeout: int) -> None:
        argv = ["uninstall", release, "-n", namespace]
        if wait:
            argv += ["--wait", "--timeout", f"{timeout}s"]
        self._helm(argv, f"helm uninstall {release}")
