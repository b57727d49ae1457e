"""Reliability suite, secrets and check-mode honesty: no secret shows up anywhere a run leaves text, a --check run
changes nothing and reports what the real run would change, and a second run changes nothing.

Secrets. The rig's fake DataRobot and registry accept only their own token and password, so the canaries are the real
values, looked for as canaries: DATAROBOT_API_TOKEN, RIG_REGISTRY_PASSWORD, the ServiceAccount token the openshift stage
writes into registry-creds (OpenShift flavour), and canaries made here: a rotated API key (mlops_datarobot_api_token,
with the prediction environment's id given so that only the management_agent stage uses it: the fake DataRobot refuses
unknown tokens), a rotated registry password (registry stage only: the registry refuses it) and a secret inside the
chart's values (mlops_management_agent_extra_values). Every run also has a canary under a neutral name in its
environment (SITE_NOTE): only an allow-list keeps it from the programs the run starts.
Every run is at -vvv with --diff, ANSIBLE_LOG_PATH and ANSIBLE_KEEP_REMOTE_FILES=0, with TMPDIR a fresh directory (and
Ansible's remote_tmp and local_tmp under it, so that what a run leaves is known to be its own), and is scanned in:
stdout, stderr, the log, the json callback's document (returned values, diffs), every file left in the fresh TMPDIR,
files written to ~/.ansible, ~/.ansible_async and ~/.cache during the run, files written in /tmp (directly, or in its
entries changed during the run; pytest's own directory apart), the usual credential stores, and the repository's
untracked files plus ignored files written during the run. Each canary is looked for as is, base64 encoded, as a docker
`user:password` auth, and inside any base64 blob (a dockerconfigjson). Excluded: `.rig/` and the xdist workers'
`.rig-gwN/` (their env files and password files hold the rigs' registry passwords by design), `.venv/` and `.git/`, and
`~/.ansible/tmp/molecule.*` (other sessions' Molecule scenarios on the shared rig). A watcher also records every file
that holds a canary while the run is going, with its mode: 0600 (Ansible's own module payloads, AnsiballZ_*: in a 0700
directory), and gone afterwards.
A sampler (child_processes.py) reads /proc/<pid>/cmdline and /proc/<pid>/environ of the programs the modules start
(helm, make, docker ...: those of this collection's modules and of ansible.builtin.command) every 50 ms while the
run goes: no canary may be there. kubernetes.core.helm's helm (the ingress_nginx role's installer) counts too: the
role sets every other variable of the run's environment empty for that task; a run of ingress.yml alone into a
release of its own proves it with the canaries in its environment (under DATAROBOT_API_TOKEN and a neutral name).
Programs other modules start (ansible.builtin.stat's `file`) are named in the ledger's detail, not counted.
A killed run: management_agent.yml killed with SIGKILL (every process, no cleanup) while helm waits for the rollout,
with a secret under a neutral key of the chart values and a kubeconfig whose client key is inline; nothing it leaves
on disk may hold a canary.

Check mode. Snapshots (tests/snapshot.py) before and after `site.yml --check --diff` on a namespace that does not
exist (the module fixture's first step) and on a converged one must be equal. The rig is shared, so a difference that
belongs to no namespace, release, repository tag or prediction environment of ours (another session's Molecule
namespace, other tests' frozen-model tags and environments) is named in the ledger's detail and not counted. On the
converged namespace, after an input changes, the tasks the --check run reports changed must be exactly those the real
run then changes. On a fresh namespace they are not (a strict xfail, with the reason): the roles skip in check mode
what they would write into the namespace the run would create.

Idempotence. Each stage playbook and site.yml run a second time on the converged namespace: changed == 0.

Everything records ledger lines (tests/integration/conftest.py) before asserting. Tests share one converged namespace
(module fixture `site`) that tracks its current inputs, so each test runs with what the namespace was last converged
with. The OpenShift test comes last: the `openshift_rig` fixture keeps the flavour until the module ends.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import re
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ansible_cli import BIN, REPO, PlaybookRun, ansible_env, run_playbook
from child_processes import ChildSampler, Sampled
from conftest import descendants, kubectl
from snapshot import differences, site_could_touch, snapshot
from test_agent_images_role import Scenario
from test_openshift_role import INTERNAL, login, ocp_vars
from test_site import STAGES, cleanup, demo_archives, fresh_namespace  # noqa: F401 pylint: disable=unused-import

SITE = "site.yml"
REGISTRY = "playbooks/registry.yml"
PLAYBOOKS = [SITE] + [f"playbooks/{stage}.yml" for stage in STAGES + ["summary"]]
INGRESS_NAMESPACE = "ingress-mlops"
HOME = Path.home()
ANSIBLE_DIR = HOME / ".ansible"
ANSIBLE_TMP = ANSIBLE_DIR / "tmp"
ASYNC_DIR = HOME / ".ansible_async"
CACHE_DIR = HOME / ".cache"
SYSTEM_TMP = Path("/tmp")
PYTEST_TMP = SYSTEM_TMP / f"pytest-of-{getpass.getuser()}"
# A secret under a name no filter would guess, in the environment of every run: only an allow-list keeps it from
# the programs a run starts.
NEUTRAL_ENV = "SITE_NOTE"
NEUTRAL_ENV_VALUE = f"canary{uuid.uuid4().hex}"
CREDENTIAL_STORES = [HOME / ".docker" / "config.json", HOME / ".config" / "containers" / "auth.json",
                     HOME / ".config" / "helm" / "registry" / "config.json", Path("/run/containers/0/auth.json")]
REPO_EXCLUDED = (".git", ".venv", ".rig")  # .rig/env and .rig/registry/password hold the registry password by design
WORKER_RIG = re.compile(r"\.rig-gw\d+")  # an xdist worker's rig (tests/integration/conftest.py), like .rig
FILE_LIMIT = 64 * 1024 * 1024
B64_RUN = re.compile(rb"[A-Za-z0-9+/]{24,}={0,2}")
RELEASE_TASK = "datarobot_mlops.management_agent.management_agent : The management agent release"


# ---------------------------------------------------------------- canaries and scanning

@dataclass(frozen=True)
class Canary:
    name: str
    value: str = field(repr=False)  # never in a test report
    user: str = ""  # for the docker auth form base64(user:password)

    @property
    def forms(self) -> tuple[bytes, ...]:
        plain = self.value.encode()
        forms = [plain, base64.b64encode(plain)]
        if self.user:
            forms.append(base64.b64encode(f"{self.user}:{self.value}".encode()))
        return tuple(forms)

    def hits(self, data: bytes, depth: int = 2) -> int:
        """Occurrences as is or in a known encoding, plus those inside base64 blobs (two levels deep)."""
        forms = self.forms
        count = sum(data.count(form) for form in forms)
        if depth:
            for match in B64_RUN.finditer(data):
                blob = match.group()
                if any(form in blob for form in forms) or len(blob) > FILE_LIMIT:
                    continue
                try:
                    decoded = base64.b64decode(blob + b"=" * (-len(blob) % 4), validate=False)
                except (binascii.Error, ValueError):
                    continue
                count += self.hits(decoded, depth - 1)
        return count


def real_canaries(rig: dict[str, str]) -> list[Canary]:
    return [Canary("DATAROBOT_API_TOKEN", rig["DATAROBOT_API_TOKEN"]),
            Canary("RIG_REGISTRY_PASSWORD", rig["RIG_REGISTRY_PASSWORD"], rig["RIG_REGISTRY_USER"]),
            Canary(f"{NEUTRAL_ENV} (a neutral-named environment variable)", NEUTRAL_ENV_VALUE)]


def made_canary(name: str, user: str = "") -> Canary:
    return Canary(name, f"canary{uuid.uuid4().hex}", user)


def _read(path: Path) -> bytes | None:
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > FILE_LIMIT:
            return None
        return path.read_bytes()
    except OSError:  # gone meanwhile, or unreadable
        return None


def _walk(root: Path, since: float | None = None) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if not name.startswith("molecule.")]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                if since is None or path.lstat().st_mtime >= since:
                    found.append(path)
            except OSError:
                continue
    return found


def _system_tmp_files(since: float, skip: Path) -> list[Path]:
    """Files written since `since` directly in /tmp or in its entries changed since then (a program that ignores
    TMPDIR), apart from `skip` (pytest's own directory, where the tests keep their inputs)."""
    found = []
    for entry in SYSTEM_TMP.iterdir():
        try:
            if entry == skip or entry.is_symlink() or entry.lstat().st_mtime < since:
                continue
        except OSError:
            continue
        found += _walk(entry, since) if entry.is_dir() else [entry]
    return found


def _excluded(top: str) -> bool:
    """A top-level folder of the checkout the scan leaves out."""
    return top in REPO_EXCLUDED or bool(WORKER_RIG.fullmatch(top))


def _repo_files(since: float) -> list[Path]:
    """Untracked files (not ignored), and any file, ignored ones included, written since `since`."""
    listed = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True, timeout=60).stdout.decode().split("\0")
    files = {REPO / name for name in listed if name and not _excluded(name.split("/", 1)[0])}
    for dirpath, dirnames, filenames in os.walk(REPO):
        if Path(dirpath) == REPO:
            dirnames[:] = [name for name in dirnames if not _excluded(name)]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                if path.lstat().st_mtime >= since:
                    files.add(path)
            except OSError:
                continue
    return sorted(files)


@dataclass
class Exposure:
    """A file that held a canary while the run was going."""
    path: str
    mode: int
    dir_mode: int
    canaries: list[str]

    @property
    def private(self) -> bool:
        """0600 (no access for group or others); Ansible's own module payloads (AnsiballZ_*, the task's arguments)
        are written 0644/0744 into a 0700 directory of their own, and that is accepted for them only."""
        if Path(self.path).name.startswith("AnsiballZ_"):
            return not self.dir_mode & 0o077
        return not self.mode & 0o077


class Watcher(threading.Thread):
    """Looks at every new or rewritten file under the roots while a run is going, for the canaries it knows."""

    def __init__(self, roots: list[Path], canaries: list[Canary]) -> None:
        super().__init__(daemon=True)
        self.roots, self.canaries = roots, canaries
        self.halt = threading.Event()
        self.exposures: dict[str, Exposure] = {}
        self._seen: set[tuple[str, int, int]] = set()

    def run(self) -> None:
        while not self.halt.is_set():
            self.sweep()
            self.halt.wait(0.05)
        self.sweep()

    def sweep(self) -> None:
        for root in self.roots:
            for path in _walk(root):
                try:
                    info = path.lstat()
                except OSError:
                    continue
                key = (str(path), info.st_mtime_ns, info.st_size)
                if key in self._seen or not stat.S_ISREG(info.st_mode):
                    continue
                self._seen.add(key)
                data = _read(path)
                names = [canary.name for canary in self.canaries if data and canary.hits(data)]
                if names:
                    try:
                        dir_mode = path.parent.stat().st_mode & 0o777
                    except OSError:
                        dir_mode = 0
                    self.exposures[str(path)] = Exposure(str(path), info.st_mode & 0o777, dir_mode, names)


@dataclass
class Probe:
    """One playbook run with everything it left that could hold a secret."""
    label: str
    run: PlaybookRun
    tmpdir: Path
    log: Path
    started: float
    exposures: list[Exposure] = field(default_factory=list)
    found: dict[str, dict[str, int]] | None = None  # the scan, when it was made right after the run (see `scan`)
    children: dict[str, dict[str, int]] = field(default_factory=dict)  # canary -> "<program> environ" -> hits
    programs: set[str] = field(default_factory=set)  # the child processes the sampler looked at
    others: set[str] = field(default_factory=set)  # started by another collection's module: not scanned

    @property
    def changed(self) -> int:
        if self.run.document:
            return self.run.changed
        return sum(int(count) for count in re.findall(r"\bchanged=(\d+)", self.run.stdout))

    @property
    def ok(self) -> bool:
        return self.run.returncode == 0

    def why(self) -> str:
        return f"{self.label}: rc={self.run.returncode} {self.run.failure()} {self.run.stderr[-2000:]}"

    def texts(self) -> dict[str, bytes]:
        """Where to look: name -> content (names only ever go to the ledger, never the content)."""
        texts = {"stdout": self.run.stdout.encode(), "stderr": self.run.stderr.encode(),
                 "log": self.log.read_bytes() if self.log.exists() else b"",
                 "document": json.dumps(self.run.document, ensure_ascii=False).encode()}
        for path in _walk(self.tmpdir):
            texts[f"TMPDIR/{path.relative_to(self.tmpdir)}"] = _read(path) or b""
        for root, label in ((ANSIBLE_DIR, "~/.ansible"), (ASYNC_DIR, "~/.ansible_async"), (CACHE_DIR, "~/.cache")):
            for path in _walk(root, since=self.started):
                texts[f"{label}/{path.relative_to(root)}"] = _read(path) or b""
        for path in _system_tmp_files(self.started, skip=PYTEST_TMP):
            texts[str(path)] = _read(path) or b""
        for path in CREDENTIAL_STORES:
            if path.exists():
                texts[str(path)] = _read(path) or b""
        for path in _repo_files(self.started):
            texts[f"repo/{path.relative_to(REPO)}"] = _read(path) or b""
        return texts

    def scan(self, canaries: list[Canary]) -> dict[str, dict[str, int]]:
        """canary name -> {where: hits}. A hit in ~/.ansible/tmp must still be there 2 s later: a concurrent run's
        module payload in flight is not a file left behind."""
        texts = self.texts()
        found = {canary.name: {where: hits for where, data in texts.items() if (hits := canary.hits(data))}
                 for canary in canaries}
        if any(where.startswith("~/.ansible/tmp/") for hits in found.values() for where in hits):
            time.sleep(2)
            for canary in canaries:
                for where in [w for w in found[canary.name] if w.startswith("~/.ansible/tmp/")]:
                    data = _read(ANSIBLE_TMP / where[len("~/.ansible/tmp/"):])
                    if not data or not canary.hits(data):
                        del found[canary.name][where]
        return found


def probe_env(tmpdir: Path, log: Path, callback: str = "json", **more: str) -> dict[str, str]:
    """A run's environment: -vvv traces to `log`, no kept remote files, every temporary directory under `tmpdir`, and
    the neutral-named canary (and `more`)."""
    return ansible_env(ANSIBLE_LOG_PATH=str(log), ANSIBLE_KEEP_REMOTE_FILES="0", TMPDIR=str(tmpdir),
                       ANSIBLE_REMOTE_TMP=str(tmpdir / "ansible-remote"),
                       ANSIBLE_LOCAL_TEMP=str(tmpdir / "ansible-local"), **{NEUTRAL_ENV: NEUTRAL_ENV_VALUE},
                       **({"ANSIBLE_STDOUT_CALLBACK": "default"} if callback == "default" else {}), **more)


def probe(label: str, playbook: str, base: Path, canaries: list[Canary], *, extra_vars: dict[str, Any],
          check: bool = False, callback: str = "json", inventory: str = "inventories/local",
          env: dict[str, str] | None = None) -> Probe:
    """`playbook` at -vvv with --diff, a fresh TMPDIR, a log file and no kept remote files, watched for canaries in
    files and in the command lines and environments of the programs it starts.

    Ansible's own temporary directories (remote_tmp, where module payloads go unless pipelined, and local_tmp) are put
    under the fresh TMPDIR too: ~/.ansible/tmp is shared with other sessions on this machine, so only there can a file
    be told to be this run's."""
    work = Path(tempfile.mkdtemp(prefix=re.sub(r"[^a-z0-9]+", "-", label.lower())[:40] + "-", dir=base))
    tmpdir, log = work / "tmp", work / "ansible.log"
    tmpdir.mkdir()
    watcher = Watcher([tmpdir, ANSIBLE_TMP], canaries)
    sampler = ChildSampler(canaries, log)
    started = time.time() - 1  # file times have a coarse clock on some file systems
    watcher.start()
    sampler.start()
    try:
        run = run_playbook(playbook, inventory=inventory, extra_vars=extra_vars, check=check, diff=True, verbosity=3,
                           env=probe_env(tmpdir, log, callback, **(env or {})))
    finally:
        watcher.halt.set()
        sampler.halt.set()
        watcher.join(timeout=60)
        sampler.join(timeout=60)
    return Probe(label, run, tmpdir, log, started, list(watcher.exposures.values()), children=sampler.hits,
                 programs=sampler.seen, others=sampler.others)


def record_secrets(ledger, probe_: Probe, canaries: list[Canary]) -> list[str]:
    """One ledger line per canary (hits anywhere) and one for the files that held a secret while running.

    Returns what leaked, for the assert: only where, never the value."""
    leaks = []
    found = probe_.found if probe_.found is not None else probe_.scan(canaries)
    for name, where in found.items():
        hits = sum(where.values())
        detail = ", ".join(f"{place} x{count}" for place, count in sorted(where.items())) or "no hit"
        ledger.record("secret", f"{probe_.label}: {name}", held=hits == 0, detail=detail, count=hits)
        if hits:
            leaks.append(f"{name} in {detail}")
    exposed = [e for e in probe_.exposures if not e.private]
    detail = "; ".join(f"{Path(e.path).name} {e.mode:o} (dir {e.dir_mode:o}): {','.join(e.canaries)}"
                       for e in probe_.exposures) or "no file held a secret"
    ledger.record("secret", f"{probe_.label}: files holding a secret while running are 0600 or in a 0700 directory",
                  held=not exposed, detail=detail, count=len(exposed))
    if exposed:
        leaks.append(f"files readable by others while running: {[(e.path, oct(e.mode)) for e in exposed]}")
    in_children = {name: where for name, where in probe_.children.items() if where}
    detail = "; ".join(f"{name}: {', '.join(f'{place} x{count}' for place, count in sorted(where.items()))}"
                       for name, where in sorted(in_children.items()))
    ledger.record("secret", f"{probe_.label}: argv and environment of the programs it started",
                  held=not in_children, detail=f"{detail or 'no hit'}; sampled: {', '.join(sorted(probe_.programs))}; "
                                               f"not ours: {', '.join(sorted(probe_.others)) or 'none'}"[:600],
                  count=sum(sum(where.values()) for where in in_children.values()))
    if in_children:
        leaks.append(f"child processes' argv/environment: {detail}")
    return leaks


# ---------------------------------------------------------------- snapshots and changed tasks

def snapshot_difference(before: dict[str, Any], after: dict[str, Any],
                        namespaces: list[str]) -> tuple[list[str], list[str]]:
    """(entries of ours that differ, entries of others that differ: concurrent activity on the shared rig)."""
    ours, others = [], []
    for key, entry in differences(before, after):
        (ours if site_could_touch(key, entry, namespaces) else others).append(f"{key}: {entry[:160]}")
    return ours, others


# A push in the background reports its change when it is collected (the watcher); --check pushes nothing and reports
# the same change on the task that would start it, in the foreground (for built agent images, on the check of the
# pushes to come: check mode builds nothing). Those are one change, under one name.
PPS, AGENT = "datarobot_mlops.management_agent.pps_image", "datarobot_mlops.management_agent.agent_images"
AGENT_PLAY = "Management agent and tracking agent images into the registry"
ONE_CHANGE = {
    f"PPS image, collected | {PPS} : Wait for the PPS push, a progress line every few seconds":
        f"PPS image, started in the background | {PPS} : Push the PPS image",
    # both methods' pushes share one watcher: its change, the archives' check-mode push and the built images' check
    # of the pushes to come are one change, named by the watcher
    f"{AGENT_PLAY} | {AGENT} : Push the image archives":
        f"{AGENT_PLAY} | {AGENT} : Wait for the image pushes, a progress line every few seconds",
    f"{AGENT_PLAY} | {AGENT} : Check that the built images can be pushed":
        f"{AGENT_PLAY} | {AGENT} : Wait for the image pushes, a progress line every few seconds",
}


def changed_tasks(run: PlaybookRun) -> set[str]:
    names = {f"{play['play']['name']} | {task['task']['name']}" for play in run.document.get("plays", [])
             for task in play["tasks"] if any(host.get("changed") for host in task["hosts"].values())}
    return {ONE_CHANGE.get(name, name) for name in names}


def record_check_snapshot(ledger, case: str, before: dict, after: dict, namespaces: list[str]) -> list[str]:
    ours, others = snapshot_difference(before, after, namespaces)
    detail = "; ".join(ours[:5]) or "identical"
    if others:
        detail += f" (not ours, ignored: {len(others)}: {'; '.join(others[:2])})"
    ledger.record("check_mode", case, held=not ours, detail=detail, count=len(ours))
    return ours


def record_task_match(ledger, case: str, checked: PlaybookRun, real: PlaybookRun) -> tuple[set[str], set[str]]:
    would, did = changed_tasks(checked), changed_tasks(real)
    missed, extra = did - would, would - did
    detail = (f"check and real run: {sorted(t.split(' : ')[-1] for t in did)}" if not (missed or extra) else
              f"changed in the real run, not reported by --check: {sorted(missed)}; reported by --check, not changed: "
              f"{sorted(extra)}")
    # count stays 0: the table's check-mode column counts mutated snapshot entries, not tasks
    ledger.record("check_mode", case, held=not (missed or extra), detail=detail)
    return missed, extra


# ---------------------------------------------------------------- the converged namespace

@dataclass
class Site:
    namespace: str
    base: Path
    canaries: list[Canary] = field(repr=False)
    inputs: dict[str, Any] = field(repr=False)
    checked: Probe | None = field(default=None, repr=False)  # site.yml --check while the namespace did not exist
    snapshots: tuple[dict, dict] = field(default=({}, {}), repr=False)  # around that check
    created_by_check: bool = False
    first: Probe | None = field(default=None, repr=False)  # the real run that followed
    facts: dict[str, Any] = field(default_factory=dict, repr=False)

    def vars_for(self, playbook: str, **changes: Any) -> dict[str, Any]:
        extra = {**self.inputs, **changes}
        if playbook == "playbooks/management_agent.yml":  # alone, it is given what the earlier stages published
            extra = {"_mlops": dict(self.facts), **extra}
        return extra

    def probe(self, label: str, playbook: str, *, check: bool = False, callback: str = "json",
              **changes: Any) -> Probe:
        return probe(label, playbook, self.base, self.canaries, extra_vars=self.vars_for(playbook, **changes),
                     check=check, callback=callback)

    def snapshot(self, *more: str) -> dict[str, Any]:
        return snapshot([self.namespace, INGRESS_NAMESPACE, *more])


def published(run: PlaybookRun, task: str) -> dict[str, Any]:
    """What a stage's publishing task adds to _mlops (its __<role>_published fact)."""
    facts = run.task(task).get("ansible_facts", {})
    return next((value for name, value in facts.items() if name.endswith("_published")), {})


@pytest.fixture(scope="module")
def site(rig, demo_archives, tmp_path_factory):  # noqa: F811 (demo_archives: the fixture imported above)
    """A namespace that does not exist: site.yml --check between two snapshots (`checked`, `snapshots`), then the real
    run (`first`), both at -vvv --diff and kept for the tests; the namespace stays converged for the module."""
    converged = Site(fresh_namespace("secrets"), tmp_path_factory.mktemp("secrets"), real_canaries(rig), {})
    converged.inputs["mlops_namespace"] = converged.namespace
    try:
        before = converged.snapshot()
        converged.checked = converged.probe("site.yml --check, fresh namespace", SITE, check=True)
        converged.snapshots = (before, converged.snapshot())
        converged.created_by_check = kubectl("get", "namespace", converged.namespace, check=False).returncode == 0
        # scanned now: "files written since the run started" must not take in the runs of later tests
        converged.checked.found = converged.checked.scan(converged.canaries)
        converged.first = converged.probe("site.yml, first run", SITE)
        converged.first.found = converged.first.scan(converged.canaries)
        assert converged.first.ok, converged.first.why()
        run = converged.first.run
        converged.facts = {
            **published(run, "Publish the id for the chart's datarobot.predictionEnvId"),
            **published(run, "Publish the agent image references for the chart"),
            **published(run, "Publish the image reference for the chart's imageBuilder.ppsImage")}
        assert {"prediction_environment_id", "agent_images", "pps_image"} <= set(converged.facts), sorted(converged.facts)
        yield converged
    finally:
        cleanup(converged.namespace)


# ---------------------------------------------------------------- secrets

def test_site_run_at_vvv_leaks_no_secret(site, ledger):
    leaks = record_secrets(ledger, site.first, site.canaries)
    assert not leaks, leaks
    # the run did write both secrets, so the scan looked at a run that handled them
    written = kubectl("-n", site.namespace, "get", "secrets", "-o", "name").stdout.split()
    assert {"secret/registry-creds", "secret/mlops-api-key"} <= set(written), written


def test_default_callback_diffs_as_text_leak_no_secret(site, ledger):
    """The default callback prints diffs as text: a rotated API key and a secret in the chart's values change both
    the API key Secret and the release, so there are diffs to print."""
    api_key, values_secret = made_canary("rotated API key"), made_canary("secret in mlops_management_agent_extra_values")
    site.canaries += [api_key, values_secret]
    # The prediction environment's id given, so only the management_agent stage uses the key (DataRobot refuses it).
    changes = {"mlops_datarobot_api_token": api_key.value,
               "mlops_prediction_environment_id": site.facts["prediction_environment_id"],
               "mlops_management_agent_extra_values": {"datarobot": {"apiToken": values_secret.value}}}
    run = site.probe("site.yml, default callback, rotated API key", SITE, callback="default", **changes)
    assert run.ok, run.why()
    site.inputs.update(changes)
    leaks = record_secrets(ledger, run, site.canaries)
    assert not leaks, leaks
    assert run.changed >= 2 and "+++ after" in run.run.stdout, run.run.stdout[-3000:]  # the diffs were printed
    secret = json.loads(kubectl("-n", site.namespace, "get", "secret", "mlops-api-key", "-o", "json").stdout)
    went_through = base64.b64decode(secret["data"]["secret"]).decode() == api_key.value
    assert went_through, "the rotated API key is not in the mlops-api-key Secret"


def inline_kubeconfig(path: Path) -> tuple[Path, Canary]:
    """The rig's kubeconfig with its client key inline (client-key-data), as many kubeconfigs are; the key is a canary:
    a copy of the kubeconfig written anywhere would hold it."""
    config = json.loads(Path(os.environ["KUBECONFIG"]).read_text())
    user = config["users"][0]["user"]
    key = Path(user.pop("client-key")).read_text()
    user["client-certificate-data"] = base64.b64encode(Path(user.pop("client-certificate")).read_bytes()).decode()
    user["client-key-data"] = base64.b64encode(key.encode()).decode()
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path, Canary("kubeconfig client key (client-key-data)", key)


def kill_tree(proc: subprocess.Popen) -> None:
    """What a lost runner or a cancelled AWX job does: every process of the run gone at once, no cleanup at all.
    Frozen first (SIGSTOP), so that none starts another process between the listing and the kill."""
    pids = [proc.pid, *descendants(proc.pid)]
    for signal_ in (signal.SIGSTOP, signal.SIGKILL):
        pids = list(dict.fromkeys([*pids, *descendants(proc.pid)]))
        for pid in pids:
            try:
                os.kill(pid, signal_)
            except ProcessLookupError:
                pass
    proc.wait(timeout=60)


def helm_waiting(sampled: list[Sampled]) -> bool:
    return any(process.name == "helm upgrade" and "--wait" in process.argv
               and not any(arg.startswith("--dry-run") for arg in process.argv) for process in sampled)


def killed_probe(label: str, playbook: str, base: Path, canaries: list[Canary], *, extra_vars: dict[str, Any],
                 published: dict[str, Any], env: dict[str, str]) -> tuple[Probe, bool]:
    """`playbook` as `probe` runs it, killed (kill_tree) as soon as helm waits for the rollout; (the probe, whether
    it was killed while helm waited)."""
    work = Path(tempfile.mkdtemp(prefix="killed-", dir=base))
    tmpdir, log, out = work / "tmp", work / "ansible.log", work / "stdout"
    tmpdir.mkdir()
    inventory = base / f"published-{work.name}.json"  # pytest's directory: the test's input, not the run's output
    inventory.write_text(json.dumps({"all": {"vars": {"_mlops": published}}}))
    argv = [str(BIN / "ansible-playbook"), "-i", str(REPO / "inventories/local"), "-i", str(inventory),
            str(REPO / playbook), "-e", json.dumps(extra_vars), "--diff", "-vvv"]
    waiting = threading.Event()
    watcher = Watcher([tmpdir, ANSIBLE_TMP], canaries)
    sampler = ChildSampler(canaries, log, every=0.02,
                           on_sample=lambda sampled: helm_waiting(sampled) and waiting.set())
    started = time.time() - 1
    watcher.start()
    with out.open("wb") as stream:
        proc = subprocess.Popen(argv, env={**probe_env(tmpdir, log, "default"), **env}, cwd=REPO, stdout=stream,
                                stderr=subprocess.STDOUT, start_new_session=True)
        sampler.root = proc.pid
        sampler.start()
        try:
            deadline = time.monotonic() + 600
            while not waiting.is_set() and proc.poll() is None and time.monotonic() < deadline:
                waiting.wait(0.05)
            killed = waiting.is_set()
        finally:
            kill_tree(proc)
            for thread in (sampler, watcher):
                thread.halt.set()
                thread.join(timeout=60)
    run = PlaybookRun({}, out.read_text(errors="replace"), "", proc.returncode)
    return Probe(label, run, tmpdir, log, started, list(watcher.exposures.values()), children=sampler.hits,
                 programs=sampler.seen, others=sampler.others), killed


def test_a_run_killed_while_helm_waits_leaves_no_secret_behind(site, ledger, tmp_path):
    """management_agent.yml into a namespace of its own, killed (SIGKILL, every process) while helm waits for the
    rollout: nothing may be left on disk that holds a secret, and helm's argv and environment hold none either.
    Canaries besides the site's: a secret under a neutral key of the chart values (no key name gives it away), and
    the client key of a kubeconfig that holds it inline (K8S_AUTH_KUBECONFIG, KUBECONFIG)."""
    namespace = fresh_namespace("secrets-killed")
    neutral = made_canary("secret under a neutral chart value key (siteNotes.text)")
    kubeconfig, client_key = inline_kubeconfig(tmp_path / "inline-kubeconfig.json")
    canaries = [*site.canaries, neutral, client_key]
    values = {**site.inputs.get("mlops_management_agent_extra_values", {}), "siteNotes": {"text": neutral.value}}
    extra = {**site.inputs, "mlops_namespace": namespace, "mlops_management_agent_extra_values": values}
    try:
        run, killed = killed_probe("management_agent.yml killed while helm waits", "playbooks/management_agent.yml",
                                   tmp_path, canaries, extra_vars=extra, published=dict(site.facts),
                                   env={"K8S_AUTH_KUBECONFIG": str(kubeconfig), "KUBECONFIG": str(kubeconfig)})
        run.found = run.scan(canaries)
        ledger.record("secret", f"{run.label}: the run was killed while helm waited", held=killed,
                      detail=f"rc={run.run.returncode}; sampled: {', '.join(sorted(run.programs))}", count=0)
        leaks = record_secrets(ledger, run, canaries)
    finally:
        cleanup(namespace)
    assert killed, f"helm never waited before the run ended: {run.run.stdout[-3000:]}"
    assert not leaks, leaks


def test_agent_images_build_writes_no_docker_login(rig, ledger, tmp_path):
    """The builds run the vendor Makefile's build target as async jobs with an empty private DOCKER_CONFIG, and
    daemon_image_push pushes with the login in memory: no docker login file anywhere under the fresh TMPDIR, no canary
    in the jobs' module files, ~/.ansible_async status files or build logs, and the private directories gone after.

    A version and repository prefix of its own (test_agent_images_role's Scenario) make the build really happen
    without touching the repositories site.yml uses; the scenario deletes what it pushed."""
    scenario = Scenario(rig, tmp_path)
    canaries = real_canaries(rig)
    try:
        run = probe("agent_images.yml, build method", "playbooks/agent_images.yml", tmp_path, canaries,
                    extra_vars=scenario.vars())
        assert run.ok, run.why()
        leaks = record_secrets(ledger, run, canaries)
        built = run.run.task("Build with the vendor Makefile")
        logins = [e for e in run.exposures if e.path.startswith(str(run.tmpdir)) and "agent-images-docker-" in e.path]
        ledger.record("secret", "agent_images.yml, build method: no docker login file written",
                      held=not logins,
                      detail="; ".join(f"{Path(e.path).name} {e.mode:o} (dir {e.dir_mode:o})" for e in logins)
                      or "no login file seen", count=0)
        assert not leaks, leaks
        assert built.get("changed"), "the build did not run"
        assert not logins, [(e.path, oct(e.mode), oct(e.dir_mode)) for e in logins]
        assert not list(run.tmpdir.glob("agent-images-docker-*"))
        assert not list(run.tmpdir.glob("agent-images-build-*")), "the build logs were left behind"
    finally:
        scenario.clean()


def test_the_ingress_installers_helm_gets_no_secret_of_the_run(rig, ledger, tmp_path):
    """ingress.yml alone, installing a release of its own (so helm upgrade --install runs and waits): kubernetes.core.helm
    starts helm with the module's whole environment, which holds the rig's DATAROBOT_API_TOKEN and registry password,
    the neutral-named canary, and a run secret (mlops_registry_password) under a name helm's allow-list admits
    (HELM_SITE_NOTE). None of them may be in any helm's environment or argv."""
    pushed = made_canary("mlops_registry_password, also in HELM_SITE_NOTE")
    canaries = real_canaries(rig) + [pushed]
    name = f"t-ingress-secrets-{uuid.uuid4().hex[:6]}"
    names = {"mlops_ingress_nginx_namespace": name, "mlops_ingress_nginx_release": name,
             "mlops_ingress_nginx_class": name, "mlops_registry_password": pushed.value}
    try:
        run = probe("ingress.yml, kubernetes.core.helm's helm", "playbooks/ingress.yml", tmp_path, canaries,
                    extra_vars=names, env={"HELM_SITE_NOTE": f"note:{pushed.value}"})
        leaks = record_secrets(ledger, run, canaries)
        helms = sorted(program for program in run.programs if program.startswith("helm"))
        ledger.record("secret", "ingress.yml: kubernetes.core.helm's helm children were sampled and counted",
                      held="helm upgrade" in helms, detail=", ".join(helms) or "no helm sampled", count=0)
        assert run.ok, run.why()
        assert "helm upgrade" in helms, f"kubernetes.core.helm's helm upgrade was not sampled: {sorted(run.programs)}"
        assert not leaks, leaks
    finally:
        subprocess.run([os.environ["HELM"], "uninstall", name, "-n", name, "--wait"], check=False,
                       capture_output=True, timeout=300)
        kubectl("delete", "namespace", name, "--wait=false", check=False)


# ---------------------------------------------------------------- idempotence (and their secrets)

@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_second_run_changes_nothing_and_leaks_nothing(site, ledger, playbook):
    run = site.probe(f"{playbook}, second run", playbook)
    assert run.ok, run.why()
    tasks = sorted(changed_tasks(run.run))
    ledger.record("idempotence", playbook, held=run.changed == 0, detail="; ".join(tasks)[:300], count=run.changed)
    leaks = record_secrets(ledger, run, site.canaries)
    assert run.changed == 0, tasks
    assert not leaks, leaks


# ---------------------------------------------------------------- check mode

def test_check_mode_on_a_fresh_namespace_changes_nothing(site, ledger):
    checked = site.checked
    mutated = record_check_snapshot(ledger, "site.yml --check on a namespace that does not exist", *site.snapshots,
                                    [site.namespace, INGRESS_NAMESPACE])
    leaks = record_secrets(ledger, checked, site.canaries)
    assert checked.ok, checked.why()
    assert not mutated, mutated
    assert not site.created_by_check
    assert checked.changed > 0
    assert not leaks, leaks


def test_check_mode_on_a_fresh_namespace_reports_every_task_the_real_run_changes(site, ledger):
    """The check run and the real run that followed it in the same fresh namespace. Only tasks the check run missed
    count: one it reports extra (the management_agent role's namespace, which the real run's registry stage had
    already created) is a consequence of check mode keeping no state, and is named in the detail."""
    would, did = changed_tasks(site.checked.run), changed_tasks(site.first.run)
    missed, extra = sorted(did - would), sorted(would - did)
    ledger.record("check_mode", "site.yml --check on a fresh namespace reports every task the real run changes",
                  held=not missed, detail=f"{len(missed)} not reported: {[t.split(' : ')[-1] for t in missed]}; "
                  f"reported extra: {[t.split(' : ')[-1] for t in extra]}")
    assert not missed, missed


def test_check_mode_on_the_converged_namespace_changes_nothing(site, ledger):
    before = site.snapshot()
    checked = site.probe("site.yml --check, converged", SITE, check=True)
    after = site.snapshot()
    mutated = record_check_snapshot(ledger, "site.yml --check on a converged namespace", before, after,
                                    [site.namespace, INGRESS_NAMESPACE])
    leaks = record_secrets(ledger, checked, site.canaries)
    assert checked.ok, checked.why()
    assert not mutated, mutated
    assert checked.changed == 0, sorted(changed_tasks(checked.run))
    assert not leaks, leaks


def test_check_mode_reports_the_tasks_the_real_run_changes(site, ledger):
    """On the converged namespace: a changed chart value and another rotated API key (site.yml), then a rotated
    registry password (the registry stage; the registry itself would refuse it in a whole run) and back."""
    api_key, password = made_canary("rotated API key 2"), made_canary("rotated registry password", rig_user())
    site.canaries += [api_key, password]
    namespaces = [site.namespace, INGRESS_NAMESPACE]
    values = json.loads(json.dumps(site.inputs.get("mlops_management_agent_extra_values", {})))
    values.setdefault("managementAgent", {})["resources"] = {"requests": {"cpu": "300m", "memory": "512Mi"}}
    steps = [("site.yml: chart value and API key", SITE,
              {"mlops_management_agent_extra_values": values, "mlops_datarobot_api_token": api_key.value,
               "mlops_prediction_environment_id": site.facts["prediction_environment_id"]}),
             ("registry.yml: rotated registry password", REGISTRY, {"mlops_registry_password": password.value}),
             ("registry.yml: registry password back", REGISTRY, {})]
    problems = []
    for case, playbook, changes in steps:
        before = site.snapshot()
        checked = site.probe(f"{case}, --check", playbook, check=True, **changes)
        after = site.snapshot()
        mutated = record_check_snapshot(ledger, f"{case}: --check", before, after, namespaces)
        assert checked.ok, checked.why()
        real = site.probe(f"{case}, real run", playbook, **changes)
        assert real.ok, real.why()
        if playbook == SITE:
            site.inputs.update(changes)
        missed, extra = record_task_match(ledger, f"{case}: tasks --check reports changed == tasks the real run "
                                          "changes", checked.run, real.run)
        for run in (checked, real):
            problems += record_secrets(ledger, run, site.canaries)
        problems += [f"{case}: --check mutated {mutated}"] if mutated else []
        problems += [f"{case}: missed by --check {sorted(missed)}, extra {sorted(extra)}"] if missed or extra else []
        if case.startswith("site.yml"):
            assert RELEASE_TASK in " ".join(changed_tasks(real.run)), sorted(changed_tasks(real.run))
        else:
            assert changed_tasks(real.run), f"{case}: the real run changed nothing"
    assert not problems, problems


def rig_user() -> str:
    return os.environ["RIG_REGISTRY_USER"]


# ---------------------------------------------------------------- OpenShift: the ServiceAccount token (last: flavour)

def test_openshift_service_account_token_never_shows(openshift_rig, ledger, tmp_path):
    """The openshift stage writes the image builder's ServiceAccount token into registry-creds, and hands it on as the
    push password; no run may show it. The token is read after each run (a run may renew it) and every token seen so
    far is looked for in that run's traces. Runs: the registry and openshift stages chained as site.yml chains them,
    twice (the second reads the token back into the registry facts), then the openshift stage alone, twice."""
    namespace = f"t-secrets-ocp-{uuid.uuid4().hex[:6]}"
    variables = ocp_vars(namespace, mlops_registry_host="registry.apps.example.test")
    chained = "tests/integration/playbooks/registry_and_openshift.yml"
    canaries = real_canaries(openshift_rig)
    runs = [("registry+openshift (OpenShift flavour), first run", chained),
            ("registry+openshift (OpenShift flavour), second run", chained),
            ("openshift.yml alone (OpenShift flavour), after the chained runs", "playbooks/openshift.yml"),
            ("openshift.yml alone (OpenShift flavour), second run", "playbooks/openshift.yml")]
    problems = []
    try:
        for label, playbook in runs:
            run = probe(label, playbook, tmp_path, canaries, extra_vars=variables)
            assert run.ok, run.why()
            token = login(namespace)[INTERNAL]["password"]
            if not any(canary.value == token for canary in canaries):
                canaries.append(Canary(f"ServiceAccount token {sum(c.user == 'serviceaccount' for c in canaries) + 1}",
                                       token, "serviceaccount"))
            problems += record_secrets(ledger, run, canaries)
            if label.endswith("second run"):
                tasks = sorted(changed_tasks(run.run))
                ledger.record("idempotence", label.split(",", maxsplit=1)[0], held=run.changed == 0, detail="; ".join(tasks)[:300],
                              count=run.changed)
                problems += [f"{label}: changed {tasks}"] if run.changed else []
        assert any(canary.user == "serviceaccount" for canary in canaries), "no ServiceAccount token was read"
        assert not problems, problems
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
