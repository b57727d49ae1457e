"""The collection works in place from the checkout and as a built, offline-installed artifact.

The artifact is what users get: `ansible-galaxy collection build`, then `ansible-galaxy collection install --offline`
into an empty collections path. Its dependencies (galaxy.yml) are resolved for real, offline, against the
collections of the `ansible` package (an extra collections path): a dependency that package cannot satisfy fails
the install. The helpers here are shared with test_execution_environment.py and test_installed_site.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
import tarfile
from pathlib import Path

import pytest
import yaml

from ansible_cli import BIN, REPO, ansible_env, run_module

FQCN = "datarobot_mlops.management_agent"
# The Python site directory whose ansible_collections/ holds the `ansible` package's collections.
ANSIBLE_PACKAGE = Path(sysconfig.get_paths()["purelib"])
REPORT = REPO / "tests" / "output" / "artifact.txt"

# Must be in the artifact: what users run.
SHIPPED = ["MANIFEST.json", "FILES.json", "README.md", "LICENSE", "requirements.txt", "requirements.yml",
           "meta/runtime.yml", "meta/execution-environment.yml", "playbooks/site.yml", "tools/pps_push.py",
           "execution-environment.yml", "inventories/local/hosts.yml", "awx/requirements.yml"]
# Must not be: the checkout's tooling, the test suites and rig, and anything generated (build_ignore in galaxy.yml).
# The tests and Molecule scenarios need a checkout (Makefile, ansible.cfg, .venv) to run; ansible-test sanity runs on
# the source tree (tests/sanity/run.sh), so tests/ stays out of the artifact.
KEPT_OUT = [".venv", ".rig", ".cache", ".ci", ".collections", ".git", ".ansible", ".pytest_cache", "tests",
            "extensions", "docs/build", "Makefile", "ansible.cfg", "requirements-test.txt", ".ansible-lint",
            ".gitignore", "site.yml"]


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300, **kwargs)


def galaxy() -> dict:
    return yaml.safe_load((REPO / "galaxy.yml").read_text())


def build_artifact(source: Path, out: Path) -> Path:
    """`ansible-galaxy collection build` of `source` into `out`; the tarball's path."""
    build = _run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(source)])
    assert build.returncode == 0, build.stdout + build.stderr
    return next(out.glob("datarobot_mlops-management_agent-*.tar.gz"))


def galaxy_env(collections: Path) -> dict[str, str]:
    """ansible-galaxy/ansible-playbook with no ansible.cfg and no link to the checkout: the install dir first, then
    the `ansible` package's collections, and nothing from Python's path."""
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=f"{collections}:{ANSIBLE_PACKAGE}",
                      ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    del env["ANSIBLE_CONFIG"]
    return env


def install_offline(tarball: Path, target: Path) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """`ansible-galaxy collection install --offline` into `target`, dependencies resolved against the `ansible`
    package. Returns the process and the collections the resolver settled on ({fqcn: version}, ours included)."""
    proc = _run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(target), str(tarball)],
                env=galaxy_env(target), cwd=target)
    resolved = dict(re.findall(r"'([\w.]+):([\w.+-]+)' is already installed, skipping", proc.stdout))
    resolved.update(re.findall(r"^([\w]+\.[\w]+):([\w.+-]+) was installed successfully", proc.stdout, re.MULTILINE))
    return proc, resolved


def write_report(tarball: Path, names: list[str]) -> str:
    files = [name for name in names if not name.endswith("/")]
    tops: dict[str, int] = {}
    for name in files:
        top = name.split("/")[0]
        tops[top] = tops.get(top, 0) + 1
    lines = [f"artifact: {tarball.name}", f"size: {tarball.stat().st_size} bytes "
             f"({tarball.stat().st_size / 1024:.0f} KiB compressed)", f"members: {len(names)} ({len(files)} files)",
             *(f"  {top}: {count}" for top, count in sorted(tops.items()))]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return build_artifact(REPO, tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def members(artifact) -> list[str]:
    with tarfile.open(artifact) as archive:
        return [member.name + ("/" if member.isdir() else "") for member in archive.getmembers()]


@pytest.fixture(scope="module")
def install(artifact, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    target = tmp_path_factory.mktemp("collections")
    proc, resolved = install_offline(artifact, target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target, resolved


@pytest.fixture(scope="module")
def installed(install) -> Path:
    return install[0]


def test_the_artifact_size_and_file_count_are_reported(artifact, members):
    report = write_report(artifact, members)
    print(f"\n{report}\n(also in {REPORT.relative_to(REPO)})")
    assert REPORT.read_text().startswith(f"artifact: {artifact.name}")
    assert 0 < artifact.stat().st_size < 5 * 1024 * 1024, report  # the tarball is code; megabytes mean a leak


def test_the_artifact_holds_what_users_run_and_nothing_of_the_checkout(members):
    names = {name.rstrip("/") for name in members}
    missing = [path for path in SHIPPED if path not in names]
    missing += [f"playbooks/{path.name}" for path in (REPO / "playbooks").glob("*.yml")
                if f"playbooks/{path.name}" not in names]
    missing += [f"plugins/modules/{path.name}" for path in (REPO / "plugins/modules").glob("*.py")
                if f"plugins/modules/{path.name}" not in names]
    missing += [f"roles/{path.name}" for path in (REPO / "roles").iterdir() if f"roles/{path.name}" not in names]
    assert missing == []
    leaked = sorted(name for name in names
                    if any(name == private or name.startswith(private + "/") for private in KEPT_OUT))
    assert leaked == []
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_the_rigs_of_integration_workers_stay_out_of_the_artifact(tmp_path):
    """`make integration` leaves `.rig-gw1/` (an xdist worker's rig, its env file with the registry password) in the
    checkout: galaxy.yml's build_ignore keeps it out of the tarball like `.rig/`."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("README.md", "LICENSE", "galaxy.yml", "requirements.txt"):
        shutil.copy(REPO / name, source / name)
    for name in ("meta", "plugins", "roles", "playbooks"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for rig in (".rig", ".rig-gw1", ".rig-gw12"):
        (source / rig / "registry").mkdir(parents=True)
        (source / rig / "env").write_text("export RIG_REGISTRY_PASSWORD=not-for-the-artifact\n")
        (source / rig / "registry" / "password").write_text("not-for-the-artifact\n")
    (tmp_path / "out").mkdir()
    with tarfile.open(build_artifact(source, tmp_path / "out")) as archive:
        names = archive.getnames()
    assert "roles" in {name.split("/")[0] for name in names}
    assert [name for name in names if name.startswith(".rig")] == []


def test_the_manifest_declares_galaxy_yml_dependencies(artifact):
    with tarfile.open(artifact) as archive:
        manifest = json.load(archive.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["dependencies"] == galaxy()["dependencies"]


def _referenced_collections(paths: list[Path]) -> dict[str, set[str]]:
    """Collections named by FQCN (`ns.name.plugin`, `ansible_collections.ns.name`) in these files: only names that
    are collections of the `ansible` package count, so host names and the like are not taken for one."""
    known = {f"{ns.name}.{name.name}" for ns in (ANSIBLE_PACKAGE / "ansible_collections").iterdir() if ns.is_dir()
             for name in ns.iterdir() if (name / "MANIFEST.json").is_file()}
    found: dict[str, set[str]] = {}
    for path in paths:
        for ns, name in re.findall(r"\b([a-z0-9_]+)\.([a-z0-9_]+)\.[a-z0-9_]+", path.read_text()):
            if f"{ns}.{name}" in known and ns != "ansible":
                found.setdefault(f"{ns}.{name}", set()).add(str(path.relative_to(REPO)))
    return found


def test_the_dependencies_are_exactly_the_collections_the_content_calls():
    content = [path for top in ("roles", "plugins", "playbooks") for path in (REPO / top).rglob("*")
               if path.suffix in (".yml", ".yaml", ".py", ".j2") and "__pycache__" not in path.parts]
    used = _referenced_collections(content)
    assert set(used) == set(galaxy()["dependencies"]), used


def test_awx_awx_is_only_the_awx_set_up_s_and_listed_in_its_requirements():
    used = _referenced_collections(sorted((REPO / "awx").glob("*.yml")))
    wanted = {entry["name"] for entry in yaml.safe_load((REPO / "awx/requirements.yml").read_text())["collections"]}
    assert set(used) == wanted == {"awx.awx"}
    assert "awx.awx" not in galaxy()["dependencies"]


def test_the_offline_install_resolves_every_dependency_from_the_ansible_package(install):
    target, resolved = install
    assert (target / "ansible_collections/datarobot_mlops/management_agent/MANIFEST.json").is_file()
    assert sorted(path.name for path in (target / "ansible_collections").iterdir()) == ["datarobot_mlops"]
    assert set(galaxy()["dependencies"]) <= set(resolved), resolved


def test_an_unmet_dependency_fails_the_offline_install(tmp_path):
    """The resolution is real: the same collection asking for a kubernetes.core the `ansible` package lacks."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for name in ("meta", "plugins", "roles", "playbooks"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    spec = galaxy()
    spec["dependencies"]["kubernetes.core"] = ">=99.0.0"
    (source / "galaxy.yml").write_text(yaml.safe_dump(spec))
    (tmp_path / "out").mkdir()
    (tmp_path / "target").mkdir()
    proc, _resolved = install_offline(build_artifact(source, tmp_path / "out"), tmp_path / "target")
    assert proc.returncode != 0
    assert "kubernetes.core" in proc.stderr and ">=99.0.0" in proc.stderr, proc.stderr
    assert not (tmp_path / "target/ansible_collections/datarobot_mlops").exists()


def _doc_list(env: dict[str, str], cwd: Path) -> str:
    proc = _run([str(BIN / "ansible-doc"), "-l", FQCN], env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_plugins_are_listed_from_the_checkout():
    assert f"{FQCN}.cluster_requirements" in _doc_list(ansible_env(), REPO)


def test_the_installed_copy_is_the_one_ansible_finds(installed, tmp_path):
    proc = _run([str(BIN / "ansible-galaxy"), "collection", "list", FQCN, "--format", "json"],
                env=galaxy_env(installed), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)) == [str(installed / "ansible_collections")]


def test_plugins_are_listed_from_the_installed_artifact(installed, tmp_path):
    env = galaxy_env(installed)
    listing = _doc_list(env, tmp_path)
    assert f"{FQCN}.cluster_requirements" in listing
    doc = _run([str(BIN / "ansible-doc"), f"{FQCN}.cluster_requirements"], env=env, cwd=tmp_path)
    assert "min_node_ephemeral_storage" in doc.stdout


def test_the_installed_playbooks_resolve_by_their_collection_name(installed, tmp_path):
    """Every stage and site.yml, by FQCN, from the installed copy: no checkout path, no ansible.cfg."""
    (tmp_path / "hosts.yml").write_text("clusters:\n  hosts:\n    nowhere:\n      ansible_connection: local\n")
    stages = sorted(path.stem for path in (REPO / "playbooks").glob("*.yml"))
    assert "site" in stages
    for stage in stages:
        proc = _run([str(BIN / "ansible-playbook"), f"{FQCN}.{stage}", "-i", str(tmp_path / "hosts.yml"),
                     "--list-tasks"], env=galaxy_env(installed), cwd=tmp_path)
        assert proc.returncode == 0, f"{stage}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        assert str(installed / "ansible_collections/datarobot_mlops/management_agent/playbooks") in proc.stdout
    listing = _run([str(BIN / "ansible-playbook"), f"{FQCN}.site", "-i", str(tmp_path / "hosts.yml"), "--list-tasks"],
                   env=galaxy_env(installed), cwd=tmp_path).stdout
    for play in ("Check every cluster before anything is changed", "The management agent release", "Summary"):
        assert play in listing


def test_the_installed_module_runs_and_fails_cleanly_without_a_cluster(installed, tmp_path):
    outcome = run_module(f"{FQCN}.cluster_requirements", {"kubeconfig": str(tmp_path / "missing")},
                         env=galaxy_env(installed), cwd=tmp_path)
    assert outcome.failed
    assert "Traceback" not in outcome.stdout + outcome.stderr
    assert outcome.result["msg"].startswith("The kubeconfig file given does not exist")
