"""Session fixtures: the local rig, brought up once (idempotent) for every integration suite.

If the rig cannot start, every test that needs it fails with the reason:
nothing is skipped silently.

Under pytest-xdist (`make integration` runs `-n 2 --dist loadfile`) every worker has a rig of its own: gw0 the
checkout's (RIG_DIR, `.rig` by default), gwN `<that folder>-gwN` (`.rig-gw1`), with its own daemons, ports and state,
so one worker's flavour switch or API server restart never reaches the other's tests. Test files go to the workers
whole (module fixtures share a namespace between a file's tests), the longest first (file_seconds.json).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
RIG = [sys.executable, str(REPO / "tests" / "rig" / "rig.py")]
HERE = Path(__file__).resolve().parent
# Seconds each test file took when last measured: the order files are handed to xdist workers in, longest first. Every
# run merges the seconds of the files it ran into MEASURED, to copy over it.
FILE_SECONDS = HERE / "file_seconds.json"
MEASURED = REPO / "tests" / "output" / "integration-file-seconds.json"


def worker_rig_dir(base: Path, worker: str | None) -> Path:
    """The rig folder of a pytest-xdist worker: the checkout's rig (`base`) for gw0 and for a run without xdist,
    `<base>-gwN` for worker gwN (`.rig-gw1`)."""
    if not worker or worker == "gw0":
        return base
    return base.with_name(f"{base.name}-{worker}")


RIG_FOLDERS: dict[str, Path] = {}  # "base": the checkout's rig, "own": this process's (set by pytest_configure)


def pytest_configure(config):
    """Point this process's rig (tests/rig/rig.py reads RIG_DIR) at its worker's folder, before any rig starts."""
    base = Path(os.environ.get("RIG_DIR") or REPO / ".rig")
    RIG_FOLDERS.update(base=base, own=worker_rig_dir(base, os.environ.get("PYTEST_XDIST_WORKER")))
    os.environ["RIG_DIR"] = str(RIG_FOLDERS["own"])


UNLISTED_SECONDS = 60.0  # a file file_seconds.json does not list yet: about a usual file of the suite


def file_order(paths: list[str], seconds: dict[str, float]) -> list[str]:
    """Test files longest first (a file not listed counts UNLISTED_SECONDS); ties keep the collection's order."""
    return sorted(paths, key=lambda path: -seconds.get(path, UNLISTED_SECONDS))


def _file_key(rootpath: Path, nodeid: str) -> str:
    """A test's file, relative to tests/integration (`reliability/test_faults.py`) whatever pytest's rootdir."""
    path = (rootpath / nodeid.split("::", 1)[0]).resolve()
    return str(path.relative_to(HERE)) if path.is_relative_to(HERE) else str(path)


def pytest_collection_modifyitems(config, items):
    """Under xdist, hand whole files to the workers longest first (`--dist loadfile --no-loadscope-reorder`), so the
    last file a worker gets is a short one. Within a file the order stays; a run without xdist keeps pytest's order."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not FILE_SECONDS.exists():
        return
    seconds = json.loads(FILE_SECONDS.read_text())
    by_file: dict[str, list] = {}
    for item in items:
        by_file.setdefault(_file_key(config.rootpath, item.nodeid), []).append(item)
    items[:] = [item for path in file_order(list(by_file), seconds) for item in by_file[path]]


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and not line.startswith("export PATH="):
            key, value = line[len("export "):].split("=", 1)
            env[key] = shlex.split(value)[0]
    return env


def _up(flavour: str) -> dict[str, str]:
    proc = subprocess.run([*RIG, "up", "--flavour", flavour], capture_output=True, text=True, check=False,
                          timeout=3600)
    if proc.returncode:
        pytest.fail(f"the local rig did not come up (tests/rig/rig.py up):\n{proc.stderr[-4000:]}", pytrace=False)
    # RIG_DIR is set by pytest_configure above; a suite that imports these fixtures (packaging, compat) runs the
    # checkout's rig, as tests/rig/rig.py does without RIG_DIR.
    env = _read_env(Path(os.environ.get("RIG_DIR") or REPO / ".rig") / "env")
    os.environ.update(env)
    os.environ["PATH"] = f"{env['RIG_HELM_BIN']}:{env['RIG_BIN']}:{os.environ['PATH']}"
    return env


@pytest.fixture(scope="session")
def rig() -> dict[str, str]:
    """The plain-Kubernetes rig's environment (KUBECONFIG, registries, DOCKER_HOST, HELM ...)."""
    return _up("kubernetes")


@pytest.fixture(scope="module")
def openshift_rig(rig) -> dict[str, str]:
    """The same rig with OpenShift's API objects added; put back to plain Kubernetes afterwards."""
    yield _up("openshift")
    _up("kubernetes")


HELMS = ["HELM3", "HELM4"]  # the rig's helm 3 and helm 4 (tests/rig/versions.env), as named in .rig/env


@pytest.fixture
def helm_under_test(request, rig, monkeypatch, tmp_path_factory) -> str:
    """The helm a test runs under: the rig's helm 3, or the one a test asks for with
    `@pytest.mark.parametrize("helm_under_test", HELMS, indirect=True)`. `helm` on PATH (what a module finds
    without binary_path) and HELM (what the test's own helm calls and cleanups use) both name it."""
    binary = rig[getattr(request, "param", "HELM3")]
    own = tmp_path_factory.mktemp("helm-on-path")
    (own / "helm").symlink_to(binary)
    monkeypatch.setenv("PATH", f"{own}:{os.environ['PATH']}")
    monkeypatch.setenv("HELM", binary)
    return binary


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([os.environ["KUBECTL"], *args], input=stdin, capture_output=True, text=True,
                          check=False, timeout=300)
    if check and proc.returncode:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def demo_archives(rig) -> Path:
    """What `make demo` writes: the PPS stand-in and the fixture agent tarball, made with .venv's Python."""
    demo = Path(rig["RIG_DIR"]) / "demo"
    python = str(REPO / ".venv" / "bin" / "python")
    subprocess.run([python, str(REPO / "tests/rig/demo_archive.py"),
                    str(demo / "datarobot-portable-prediction-api-9.2.0.tar.gz")], check=True, timeout=120)
    subprocess.run([python, str(REPO / "tests/fixtures/agent_tarball.py"), str(demo)], check=True, timeout=120,
                   capture_output=True)
    return demo


def release_status(namespace: str, release: str = "bosun") -> dict:
    """`helm status -o json` of a release the test expects to exist."""
    proc = subprocess.run([os.environ["HELM"], "status", release, "-n", namespace, "-o", "json"],
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(proc.stdout)


def cleanup(namespace: str, release: str = "bosun") -> None:
    """Uninstall a test's release and delete its namespace (not waiting for the namespace to go)."""
    subprocess.run([os.environ["HELM"], "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s"],
                   capture_output=True, check=False, timeout=180)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def new_namespace(rig):
    """Names for namespaces a role is to create: `new_namespace("t-registry")` gives `t-registry-<6 hex>`.

    Each is deleted after the test (`--wait=false`); with `release`, that Helm release is uninstalled first.
    One fixture instead of a copy per role test.
    """
    made: list[tuple[str, str | None]] = []

    def make(prefix: str, release: str | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        made.append((name, release))
        return name

    yield make
    for name, release in made:
        if release:
            cleanup(name, release)
        else:
            kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(rig, request) -> str:
    """A fresh namespace per test, deleted afterwards; a parametrized test's id ends it (kept whole, so that two
    cases of one test never share a namespace that is still being deleted)."""
    words, case = (re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") for text in
                   (request.node.originalname, getattr(getattr(request.node, "callspec", None), "id", "")))
    name = "t-" + (f"{words[:39 - len(case)].strip('-')}-{case}" if case else words[:40].strip("-"))
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


# The reliability suite's ledger (tests/integration/reliability): every fault, bad input, secret scan, check-mode
# snapshot and idempotence check records one line, so `make reliability-report` can print what was tried and what
# held. A test still fails through its asserts; the ledger only counts. Emptied when a session starts.
LEDGER = REPO / "tests" / "output" / "reliability.jsonl"
CATEGORIES = ("fault", "bad_input", "secret", "check_mode", "idempotence")


class Ledger:
    def __init__(self, path: Path, test: str) -> None:
        self.path, self.test = path, test

    def record(self, category: str, case: str, held: bool, detail: str = "", count: int = 0) -> None:
        """One case: `held` is whether the promise held (handled clearly, survived, no hit, no mutation).

        `count` carries a number for the table (secret hits, mutated objects, changed tasks).
        """
        if category not in CATEGORIES:
            raise ValueError(f"unknown ledger category {category!r}")
        line = json.dumps({"category": category, "case": case, "held": bool(held), "detail": detail[:300],
                           "count": count, "test": self.test}) + "\n"
        append_line(self.path, line)


def append_line(path: Path, line: str) -> None:
    """One whole line at the end of `path`, also when xdist workers append at once: under an exclusive lock, in one
    write of an O_APPEND descriptor."""
    data = line.encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        written = 0
        while written < len(data):
            written += os.write(descriptor, data[written:])
    finally:
        os.close(descriptor)  # releases the lock


def pytest_sessionstart(session):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        LEDGER.parent.mkdir(parents=True, exist_ok=True)
        LEDGER.write_text("")
        _timing["root"] = session.config.rootpath


_timing: dict[str, Any] = {"files": {}}  # the main process's seconds per test file


def pytest_runtest_logreport(report):
    """Seconds per test file (setup, call and teardown), summed in the main process (xdist relays the reports)."""
    if "root" in _timing:
        path = _file_key(_timing["root"], report.nodeid)
        _timing["files"][path] = _timing["files"].get(path, 0.0) + report.duration


def pytest_sessionfinish(session):
    """The files this run timed, merged into tests/output/integration-file-seconds.json (copy it over
    file_seconds.json to refresh the order xdist workers get files in)."""
    if _timing["files"]:
        known = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
        known.update({path: round(seconds, 1) for path, seconds in _timing["files"].items()})
        MEASURED.parent.mkdir(parents=True, exist_ok=True)
        MEASURED.write_text(json.dumps(dict(sorted(known.items(), key=lambda kv: -kv[1])), indent=1) + "\n")


@pytest.fixture
def ledger(request) -> Ledger:
    return Ledger(LEDGER, request.node.nodeid)


OUTCOMES = pytest.StashKey[dict]()  # a test item's reports by phase (setup, call, teardown), as they are made


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so that a fixture's teardown can record how the test ended."""
    report = yield
    item.stash.setdefault(OUTCOMES, {})[report.when] = report
    return report


@pytest.fixture
def counted_fault(request, ledger):
    """For a module whose every test injects a fault: the ledger counts each, held when the test passed."""
    yield
    call = request.node.stash.get(OUTCOMES, {}).get("call")
    held = call is not None and call.passed
    case = request.node.name.removeprefix("test_").replace("_", " ")
    ledger.record("fault", f"{request.module.__name__}: {case}", held, "" if held or call is None else call.longreprtext)


# --- what a push under a fault ended as (the reliability suite's registry faults) --------------------------------

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def process_parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def descendants(root: int, parents: dict[int, int] | None = None) -> list[int]:
    """Every process below `root` (children, theirs, ...), from /proc's parent pids (or the `parents` given)."""
    parents = process_parents() if parents is None else parents
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def no_traceback(*outputs: str) -> bool:
    return not any("Traceback (most recent call last)" in text for text in outputs)


def dangling_tags(address: str, repo: str) -> list[str]:
    """Tags whose manifest names a blob the registry does not have (the promise is: never any)."""
    found = []
    answer = requests.get(f"http://{address}/v2/{repo}/tags/list", timeout=10)
    for tag in (answer.json().get("tags") or []) if answer.status_code == 200 else []:
        manifest = requests.get(f"http://{address}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES},
                                timeout=10)
        if manifest.status_code != 200:
            found.append(f"{tag}: manifest {manifest.status_code}")
            continue
        body = manifest.json()
        for blob in [body["config"], *body["layers"]]:
            status = requests.head(f"http://{address}/v2/{repo}/blobs/{blob['digest']}", timeout=10).status_code
            if status != 200:
                found.append(f"{tag}: blob {blob['digest']} {status}")
    return found


@dataclass
class PushOutcome:
    """A push run under a fault, and its rerun when the first run failed: what the ledger records and asserts."""

    first: Any
    final: Any
    rerun_needed: bool
    problems: list[str]
    pulled: dict[str, Any]
    verified: bool
    first_clear: bool

    @property
    def succeeded(self) -> bool:
        return self.first_clear and not self.final.failed and not self.problems and self.verified

    def assert_held(self) -> None:
        """The promise: a clear first failure (or none), a complete final run, no dangling tag, the same image."""
        assert self.first_clear, self.first.stdout[-2000:]
        assert not self.final.failed, self.final.result.get("msg")
        assert self.problems == []
        assert self.verified, "the image pulled back is not the archive's"


def push_outcome(first: Any, rerun: Any, problems: list[str], address: str, repo: str, facts: Any,
                 pull: Callable[[str], dict[str, Any]]) -> PushOutcome:
    """Judge the runs: dangling tags now, the image pulled back (`pull`, {} on failure) against the archive."""
    final = rerun or first
    problems = problems + dangling_tags(address, repo)
    pulled = pull(f"{address}/{repo}:1.0") if not final.failed else {}
    verified = bool(pulled) and pulled["config_digest"] == facts.config_digest and \
        pulled["diff_ids"] == facts.layer_digests
    first_clear = not first.failed or (bool(first.result.get("msg")) and no_traceback(first.stdout, first.stderr))
    return PushOutcome(first, final, bool(rerun), problems, pulled, verified, first_clear)
