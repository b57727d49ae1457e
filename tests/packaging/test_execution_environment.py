"""execution-environment.yml turns into a complete ansible-builder context offline, and the image gets the run-time
requirements only.

Building the image itself needs a container runtime, Galaxy, PyPI, get.helm.sh and the base image's registry, none
of which these machines have; `ansible-builder create` needs none of them, and what it writes is checked here:
the Containerfile's helm, Python and Galaxy steps, and the collection's own files in the context. The image's Python
libraries are what `ansible-builder introspect` finds in the installed collections; that step is run here on the
built artifact installed with its dependencies, as the image's builder stage runs it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements
from packaging.requirements import Requirement

from ansible_cli import BIN, REPO
from test_artifact import ANSIBLE_PACKAGE, build_artifact, install_offline

TEST_TOOLS = {"pytest", "molecule", "ansible-lint", "antsibull-changelog", "antsibull-docs", "ansible-builder", "moto",
              "datarobot"}
RUNTIME_DIRS = ("meta", "plugins", "roles", "playbooks")


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    """`ansible-builder create` with every proxy pointing at a closed port: it must not need the network."""
    target = tmp_path_factory.mktemp("ee") / "context"
    offline = dict(os.environ, HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
                   http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
    proc = _run([str(BIN / "ansible-builder"), "create", "--file", "execution-environment.yml",
                 "--context", str(target)], cwd=REPO, env=offline)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def stages(context: Path) -> dict[str, list[str]]:
    """The Containerfile's lines, by build stage (base, galaxy, builder, final)."""
    found: dict[str, list[str]] = {"": []}
    current = ""
    for line in (context / "Containerfile").read_text().splitlines():
        match = re.match(r"FROM \S+ AS (\w+)$", line)
        if match:
            current = match.group(1)
            found[current] = []
        found[current].append(line)
    return found


def build_args(lines: list[str]) -> dict[str, str]:
    return {match.group(1): match.group(2) for line in lines
            if (match := re.match(r'ARG (\w+)="?([^"]*)"?$', line))}


def requirements(path: Path) -> dict[str, Requirement]:
    """The requirements a pip file names ({name: Requirement}), without `-r` includes."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            found[requirement.name.lower()] = requirement
    return found


def pins(path: Path) -> dict[str, str]:
    found = {}
    for name, requirement in requirements(path).items():
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if exact:
            found[name] = exact[0]
    return found


def definition() -> dict:
    return yaml.safe_load((REPO / "execution-environment.yml").read_text())


def test_the_stages_are_all_there(context):
    assert list(stages(context)) == ["", "base", "galaxy", "builder", "final"]
    assert build_args(stages(context)[""])["EE_BASE_IMAGE"] == definition()["images"]["base_image"]["name"]


def test_helm_is_pinned_like_the_rig_and_checksummed_before_it_is_installed(context):
    builder = stages(context)["builder"]
    args = build_args(builder)
    rig = dict(line.split("=", 1) for line in (REPO / "tests/rig/versions.env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    assert args["HELM_VERSION"] == rig["HELM_VERSION"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", args[name]) for name in ("HELM_SHA256_AMD64", "HELM_SHA256_ARM64"))
    step = next(line for line in builder if "get.helm.sh" in line)
    assert step.index("sha256sum --check") < step.index("tar -xzf") < step.index("/usr/local/bin/helm")
    assert "COPY --from=builder /usr/local/bin/helm /usr/local/bin/helm" in stages(context)["final"]


def _helm_tarball(path: Path, arch: str) -> str:
    payload = b"#!/bin/sh\necho helm\n"
    with tarfile.open(path, "w:gz") as archive:
        member = tarfile.TarInfo(f"linux-{arch}/helm")
        member.size, member.mode = len(payload), 0o755
        archive.addfile(member, io.BytesIO(payload))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_helm_step(context: Path, tmp_path: Path, **overrides: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """The builder's helm RUN line under bash, with curl/uname stubbed and /usr/local/bin moved into tmp_path."""
    builder = stages(context)["builder"]
    step = next(line for line in builder if "get.helm.sh" in line).removeprefix("RUN ")
    target = tmp_path / "bin" / "helm"
    target.parent.mkdir()
    step = re.sub(r"/tmp\b", f"{tmp_path}/work", step).replace("/usr/local/bin/helm", str(target))
    (tmp_path / "work").mkdir()
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    served = tmp_path / "served.tar.gz"
    asked = tmp_path / "asked-url"
    scripts = {
        "curl": f'#!/bin/bash\nwhile [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift 2;; -*) shift;; '
                f'*) echo "$1" > {asked}; shift;; esac; done\ncp {served} "$out"\n',
        "uname": "#!/bin/sh\necho x86_64\n",
    }
    for name, body in scripts.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod(stat.S_IRWXU)
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", PKGMGR="true",
               **dict(build_args(builder), **overrides))
    return _run(["bash", "-c", step], env=env), target, asked


def test_a_helm_download_that_does_not_match_the_pinned_sum_is_not_installed(context, tmp_path):
    _helm_tarball(tmp_path / "served.tar.gz", "amd64")
    proc, target, asked = _run_helm_step(context, tmp_path)
    assert proc.returncode != 0
    assert "FAILED" in proc.stdout + proc.stderr
    assert not target.exists()
    assert asked.read_text().strip() == f"https://get.helm.sh/helm-{build_args(stages(context)['builder'])['HELM_VERSION']}-linux-amd64.tar.gz"


def test_a_helm_download_that_matches_its_sum_is_installed(context, tmp_path):
    checksum = _helm_tarball(tmp_path / "served.tar.gz", "amd64")
    proc, target, _asked = _run_helm_step(context, tmp_path, HELM_SHA256_AMD64=checksum)
    assert proc.returncode == 0, proc.stderr
    assert target.stat().st_mode & stat.S_IXUSR


def test_python_libraries_come_from_the_collections_own_requirements(context):
    """No user pip file: the builder stage introspects the installed collections, ours included (its
    meta/execution-environment.yml names requirements.txt), and installs what they declare."""
    builder = stages(context)["builder"]
    assert not (context / "_build/requirements.txt").exists()
    assert any("introspect" in line for line in builder)
    assert not any("--user-pip" in line for line in builder)
    assert "RUN /output/scripts/assemble" in builder
    assert (context / "_build/collection/requirements.txt").read_text() == (REPO / "requirements.txt").read_text()
    meta = yaml.safe_load((context / "_build/collection/meta/execution-environment.yml").read_text())
    assert meta["dependencies"] == {"python": "requirements.txt"}
    assert "python" not in definition()["dependencies"]
    refs = build_args(stages(context)[""])["ANSIBLE_INSTALL_REFS"].split()
    assert f"ansible-core=={pins(REPO / 'requirements-test.txt')['ansible-core']}" in refs
    assert any(ref.startswith("ansible-runner==") for ref in refs)


def test_runtime_requirements_have_lower_bounds_and_no_pins_or_test_tools():
    runtime = requirements(REPO / "requirements.txt")
    assert runtime and not TEST_TOOLS & set(runtime)
    assert "openshift" not in runtime  # nothing imports it; kubernetes.dynamic does its work (README, Dependencies)
    for name, requirement in runtime.items():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators == {">="}, f"{name}: {requirement.specifier} (lower bounds only)"


def test_the_test_tool_chain_pins_every_runtime_library_within_its_bounds():
    text = (REPO / "requirements-test.txt").read_text()
    assert re.search(r"^-r requirements\.txt$", text, re.MULTILINE)
    pinned = pins(REPO / "requirements-test.txt")
    tested = requirements(REPO / "requirements-test.txt")
    assert set(tested) == set(pinned), "every line of requirements-test.txt is an exact pin"
    assert TEST_TOOLS <= set(pinned) and {"ansible-core", "ansible"} <= set(pinned)
    for name, requirement in requirements(REPO / "requirements.txt").items():
        assert name in pinned, f"{name} is a runtime library without a tested version"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"


def test_the_venv_runs_the_pinned_versions():
    """`make setup` installed what requirements-test.txt pins (the tests run with exactly these)."""
    from importlib.metadata import version  # pylint: disable=import-outside-toplevel

    drift = {name: (pin, version(name)) for name, pin in pins(REPO / "requirements-test.txt").items()
             if version(name) != pin}
    assert drift == {}, "run `make setup`"


@pytest.fixture(scope="module")
def image_collections(tmp_path_factory) -> Path:
    """What the image's collections path holds: the built artifact installed offline, plus the collections its
    dependencies resolved to (from the `ansible` package), as an ansible_collections tree."""
    work = tmp_path_factory.mktemp("introspect")
    (work / "out").mkdir()
    (work / "target").mkdir()
    proc, resolved = install_offline(build_artifact(REPO, work / "out"), work / "target")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    view = work / "image" / "ansible_collections"
    shutil.copytree(work / "target/ansible_collections", view, symlinks=True)
    for fqcn in resolved:
        namespace, name = fqcn.split(".")
        if namespace != "datarobot_mlops":
            (view / namespace).mkdir(exist_ok=True)
            (view / namespace / name).symlink_to(ANSIBLE_PACKAGE / "ansible_collections" / namespace / name)
    return view.parent


def test_introspection_of_the_built_artifact_lists_runtime_libraries_only(image_collections):
    proc = _run([str(BIN / "ansible-builder"), "introspect", "--sanitize", str(image_collections)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = yaml.safe_load(proc.stdout.split("---", 1)[1])
    lines = found["python"]
    ours = {Requirement(line.split("#", 1)[0]).name.lower() for line in lines
            if line.endswith("# from collection datarobot_mlops.management_agent")}
    assert ours == set(requirements(REPO / "requirements.txt")), lines
    for collection in yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]:
        assert any(line.endswith(f"# from collection {collection}") for line in lines) or not (
            ANSIBLE_PACKAGE / "ansible_collections" / collection.replace(".", "/") / "requirements.txt").exists()
    names = {Requirement(line.split("#", 1)[0]).name.lower() for line in lines}
    assert not names & TEST_TOOLS, lines
    assert not [line for line in lines if "==" in line], lines


def test_galaxy_requirements_are_the_collections_the_collection_depends_on(context):
    assert (context / "_build/requirements.yml").read_text() == (REPO / "requirements.yml").read_text()
    assert any("ansible-galaxy collection install" in line and "-r requirements.yml" in line
               for line in stages(context)["galaxy"])
    wanted = {entry["name"]: entry["version"] for entry in yaml.safe_load((REPO / "requirements.yml").read_text())["collections"]}
    assert wanted == yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]
    site = Path(yaml.__file__).parents[1] / "ansible_collections"
    for name, requirement in wanted.items():  # the versions the tests run with satisfy what the image asks for
        manifest = yaml.safe_load((site / name.replace(".", "/") / "MANIFEST.json").read_text())
        assert meets_requirements(manifest["collection_info"]["version"], requirement), name


def test_the_collection_itself_goes_into_the_image(context, tmp_path):
    source = context / "_build/collection"
    built = _run([str(BIN / "ansible-galaxy"), "collection", "build", str(source), "--output-path", str(tmp_path)])
    assert built.returncode == 0, built.stderr
    with tarfile.open(next(tmp_path.glob("datarobot_mlops-management_agent-*.tar.gz"))) as archive:
        packed = {name for name in archive.getnames() if name.split("/")[0] in RUNTIME_DIRS}
    on_disk = set(RUNTIME_DIRS) | {str(path.relative_to(REPO)) for top in RUNTIME_DIRS for path in (REPO / top).rglob("*")
                                   if "__pycache__" not in path.parts and path.suffix != ".pyc"}
    assert packed == on_disk
    galaxy = stages(context)["galaxy"]
    installs = [index for index, line in enumerate(galaxy) if "ansible-galaxy collection install" in line]
    assert len(installs) == 2 and "-r requirements.yml" in galaxy[installs[0]]
    ours = galaxy[installs[1]]
    # offline, with its dependencies: the collections requirements.yml installed must satisfy galaxy.yml
    assert "collection build /build/collection" in ours and "--offline" in ours and "--no-deps" not in ours
    assert '--collections-path /usr/share/ansible/collections' in ours


def test_the_image_finds_its_collections_and_needs_no_docker(context):
    final = stages(context)["final"]
    assert "ENV ANSIBLE_COLLECTIONS_PATH=/usr/share/ansible/collections" in final
    assert "RUN /output/scripts/check_ansible $PYCMD" in final
    text = (context / "Containerfile").read_text()
    assert not re.search(r"install[^\n]*\b(docker-ce|moby-engine|podman)\b", text)


def test_the_image_tag_follows_the_collection_version():
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    assert definition()["options"]["tags"] == [f"datarobot/mlops-management-agent-ee:{version}"]
