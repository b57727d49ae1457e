"""pps_image against the rig's TLS+htpasswd registry, its HTTP registry and podman's Docker API."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import requests

from ansible_cli import ansible_env, run_module
from fixtures.image_archives import ArchiveFacts, write_docker_archive

MODULE = "datarobot_mlops.management_agent.pps_image"


def unique_repo(prefix: str = "datarobot/pps") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tls_args(rig, repo: str, tag: str = "1.0", **extra) -> dict:
    return {"name": f"{rig['RIG_REGISTRY']}/{repo}", "tag": tag, "username": rig["RIG_REGISTRY_USER"],
            "password": rig["RIG_REGISTRY_PASSWORD"], "ca_path": rig["RIG_REGISTRY_CA"], "cache": "", **extra}


def pulled_back(rig, image: str, tmp_path: Path, insecure: bool = False) -> dict:
    """Copy the image out of the registry with skopeo (which checks every blob digest), then read it."""
    target = tmp_path / ("pulled-" + uuid.uuid4().hex[:6])
    argv = ["skopeo", "copy", f"docker://{image}", f"dir:{target}"]
    if insecure:
        argv.insert(2, "--src-tls-verify=false")
    else:
        certs = tmp_path / "certs"
        certs.mkdir(exist_ok=True)
        shutil.copy(rig["RIG_REGISTRY_CA"], certs / "ca.crt")
        argv[2:2] = [f"--src-cert-dir={certs}", f"--src-creds={rig['RIG_REGISTRY_USER']}:{rig['RIG_REGISTRY_PASSWORD']}"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((target / "manifest.json").read_text())
    config = json.loads((target / manifest["config"]["digest"][7:]).read_text())
    diff_ids = []
    for layer in manifest["layers"]:
        blob = (target / layer["digest"][7:]).read_bytes()
        raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    return {"manifest": manifest, "config_digest": manifest["config"]["digest"], "config": config,
            "diff_ids": diff_ids}


def assert_same_image(pulled: dict, facts: ArchiveFacts) -> None:
    assert pulled["config_digest"] == facts.config_digest
    assert pulled["diff_ids"] == facts.layer_digests == pulled["config"]["rootfs"]["diff_ids"]


def archive(tmp_path: Path, name: str = "a.tar", layers=None, **kwargs) -> ArchiveFacts:
    layers = layers if layers is not None else [
        {"opt/pps/model.bin": os.urandom(2 * 1024 * 1024)}, {"etc/pps.conf": b"threads=4\n"}]
    return write_docker_archive(tmp_path / name, [f"datarobot/datarobot-portable-prediction-api:{uuid.uuid4().hex[:6]}"],
                                layers, **kwargs)


# --- pushing what image tools write ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["legacy", "oci"])
@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_generated_archives_push_and_pull_back_identical(rig, tmp_path, layout, compress):
    facts = archive(tmp_path, "a.tar.gz" if compress else "a.tar", layout=layout, compress=compress)
    repo = unique_repo()
    outcome = run_module(MODULE, tls_args(rig, repo, src=str(facts.path)))
    assert not outcome.failed, outcome.result.get("msg")
    result = outcome.result
    assert result["changed"] is True and result["config_digest"] == facts.config_digest
    assert result["blobs_uploaded"] == 3 and result["blobs_skipped"] == 0
    assert_same_image(pulled_back(rig, f"{rig['RIG_REGISTRY']}/{repo}:1.0", tmp_path), facts)


def test_many_duplicate_and_empty_layers(rig, tmp_path):
    layers = [{}, {"a": b"same"}, {"b": os.urandom(100_000)}, {"a": b"same"}, {}] + \
             [{f"f{i}": os.urandom(1000)} for i in range(12)]
    facts = archive(tmp_path, layers=layers, compress=True)
    repo = unique_repo()
    outcome = run_module(MODULE, tls_args(rig, repo, src=str(facts.path)))
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["blobs_uploaded"] == 16  # 15 distinct layers (two pairs repeat) + config
    assert_same_image(pulled_back(rig, f"{rig['RIG_REGISTRY']}/{repo}:1.0", tmp_path), facts)


def podman(rig, *args: str) -> subprocess.CompletedProcess:
    state = Path(rig["RIG_DIR"]) / "podman"
    argv = ["podman", f"--root={state / 'storage'}", f"--runroot={state / 'run'}", "--storage-driver=vfs",
            "--cgroup-manager=cgroupfs", "--events-backend=file", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("tool, fmt", [("podman", "docker-archive"), ("podman", "oci-archive"),
                                       ("skopeo", "docker-archive"), ("skopeo", "oci-archive")])
def test_archives_written_by_podman_and_skopeo(rig, tmp_path, tool, fmt):
    source = archive(tmp_path, "source.tar")
    name = f"localhost/pps-{tool}-{fmt}:1.0"
    written = tmp_path / f"{tool}-{fmt}.tar"
    if tool == "podman":
        podman(rig, "load", "-i", str(source.path))
        podman(rig, "tag", source.config_digest[7:], name)
        podman(rig, "save", "--format", fmt, "-o", str(written), name)
    else:
        dest = f"{fmt}:{written}:{name}"
        proc = subprocess.run(["skopeo", "copy", f"docker-archive:{source.path}", dest], capture_output=True,
                              text=True, check=False, timeout=300)
        assert proc.returncode == 0, proc.stderr
    repo = unique_repo()
    outcome = run_module(MODULE, tls_args(rig, repo, src=str(written)))
    assert not outcome.failed, outcome.result.get("msg")
    pulled = pulled_back(rig, f"{rig['RIG_REGISTRY']}/{repo}:1.0", tmp_path)
    assert pulled["diff_ids"] == source.layer_digests
    assert pulled["config"]["rootfs"]["diff_ids"] == source.layer_digests


def test_http_registry_only_when_declared_insecure(rig, tmp_path):
    facts = archive(tmp_path, compress=True)
    repo = unique_repo()
    args = {"src": str(facts.path), "name": f"{rig['RIG_INSECURE_REGISTRY']}/{repo}", "tag": "1.0", "cache": ""}
    refused = run_module(MODULE, args)
    assert refused.failed and "TLS with registry" in refused.result["msg"]
    outcome = run_module(MODULE, {**args, "insecure": True})
    assert not outcome.failed, outcome.result.get("msg")
    assert_same_image(pulled_back(rig, f"{rig['RIG_INSECURE_REGISTRY']}/{repo}:1.0", tmp_path, insecure=True), facts)


# --- idempotence, check mode, diff ----------------------------------------------------------------------------

def test_second_run_changes_nothing_with_and_without_the_cache(rig, tmp_path):
    facts = archive(tmp_path, compress=True)
    repo = unique_repo()
    cache = str(tmp_path / "cache.json")
    first = run_module(MODULE, tls_args(rig, repo, src=str(facts.path), cache=cache))
    assert first.result["changed"] is True
    for cache_setting in (cache, ""):
        again = run_module(MODULE, tls_args(rig, repo, src=str(facts.path), cache=cache_setting))
        assert again.result["changed"] is False and again.result["blobs_uploaded"] == 0
        assert again.result["digest"] == first.result["digest"]


def test_check_mode_pushes_and_compresses_nothing_and_diff_shows_the_digests(rig, tmp_path):
    facts = archive(tmp_path, compress=True)
    repo = unique_repo()
    checked = run_module(MODULE, tls_args(rig, repo, src=str(facts.path)), check=True, diff=True)
    assert checked.result["changed"] is True
    assert len(checked.result["would_upload"]) == 3
    layers = len(checked.result["would_upload"]) - 1  # and the config
    assert re.fullmatch(rf"would push {layers} layers?, about [0-9.]+ [kMG]B before compression",
                        checked.result["msg"]), checked.result["msg"]
    assert checked.result["bytes_compressed"] == 0 and checked.result["would_upload_bytes"] > 0
    assert checked.result["digest"] == ""  # needs the layers compressed: not done in check mode
    assert checked.result["diff"]["before"]["digest"] == ""
    base = f"https://{rig['RIG_REGISTRY']}/v2/{repo}"
    auth, ca = (rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"]), rig["RIG_REGISTRY_CA"]
    assert requests.get(f"{base}/tags/list", auth=auth, verify=ca, timeout=10).status_code == 404
    assert requests.head(f"{base}/blobs/{facts.config_digest}", auth=auth, verify=ca, timeout=10).status_code == 404
    cache = str(tmp_path / "cache.json")
    pushed = run_module(MODULE, tls_args(rig, repo, src=str(facts.path), cache=cache), diff=True)
    assert pushed.result["bytes_compressed"] > 0  # the same counter, on a real push
    unchanged = run_module(MODULE, tls_args(rig, repo, src=str(facts.path), cache=cache), check=True).result
    assert unchanged["changed"] is False and unchanged["digest"] == pushed.result["digest"]
    assert unchanged["bytes_compressed"] == 0 and "msg" not in unchanged
    # A new tag of the same layers: the cache knows their blobs, so check mode predicts the digest uncompressed.
    again = run_module(MODULE, tls_args(rig, repo, tag="1.1", src=str(facts.path), cache=cache), check=True).result
    assert again["bytes_compressed"] == 0 and again["would_upload"] == []
    assert again["digest"] == pushed.result["digest"]
    newer = archive(tmp_path, "b.tar.gz", compress=True)
    diff = run_module(MODULE, tls_args(rig, repo, src=str(newer.path)), check=True, diff=True).result["diff"]
    assert diff["before"]["digest"] == pushed.result["digest"]
    assert diff["after"]["digest"] == "(unknown until pushed)"


def test_additional_tags_and_uncompressed_layers(rig, tmp_path):
    facts = archive(tmp_path)
    repo = unique_repo()
    args = tls_args(rig, repo, src=str(facts.path), additional_tags=["1.0-rc1"], compression="none")
    outcome = run_module(MODULE, args)
    assert not outcome.failed, outcome.result.get("msg")
    for tag in ("1.0", "1.0-rc1"):
        pulled = pulled_back(rig, f"{rig['RIG_REGISTRY']}/{repo}:{tag}", tmp_path)
        assert pulled["manifest"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert_same_image(pulled, facts)
    assert run_module(MODULE, args).result["changed"] is False


def test_blobs_are_mounted_from_a_sibling_repository(rig, tmp_path):
    facts = archive(tmp_path, compress=True)
    first, second = unique_repo(), unique_repo()
    cache = str(tmp_path / "cache.json")
    run_module(MODULE, tls_args(rig, first, src=str(facts.path), cache=cache))
    outcome = run_module(MODULE, tls_args(rig, second, src=str(facts.path), cache=cache))
    assert outcome.result["blobs_mounted"] == 2 and outcome.result["blobs_uploaded"] == 1  # config is re-sent
    assert_same_image(pulled_back(rig, f"{rig['RIG_REGISTRY']}/{second}:1.0", tmp_path), facts)


def test_a_stale_cache_entry_falls_back_to_an_upload(rig, tmp_path):
    """The cache names a repository that never held the blobs: the mount is answered 202, and they are uploaded."""
    facts = archive(tmp_path, compress=True)
    first, second, gone = unique_repo(), unique_repo(), unique_repo("datarobot/gone")
    cache = tmp_path / "cache.json"
    assert not run_module(MODULE, tls_args(rig, first, src=str(facts.path), cache=str(cache))).failed
    known = json.loads(cache.read_text())
    known["blobs"] = {blob: [gone] for blob in known["blobs"]}
    cache.write_text(json.dumps(known))
    outcome = run_module(MODULE, tls_args(rig, second, src=str(facts.path), cache=str(cache)))
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["blobs_mounted"] == 0 and outcome.result["blobs_uploaded"] == 3
    assert_same_image(pulled_back(rig, f"{rig['RIG_REGISTRY']}/{second}:1.0", tmp_path), facts)


def test_credentials_from_docker_config(rig, tmp_path):
    facts = archive(tmp_path, compress=True)
    auth = base64.b64encode(f"{rig['RIG_REGISTRY_USER']}:{rig['RIG_REGISTRY_PASSWORD']}".encode()).decode()
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {rig["RIG_REGISTRY"]: {"auth": auth}}}))
    args = tls_args(rig, unique_repo(), src=str(facts.path))
    del args["username"], args["password"]
    outcome = run_module(MODULE, args, env=ansible_env(DOCKER_CONFIG=str(config.parent)))
    assert not outcome.failed, outcome.result.get("msg")


# --- the daemon path ------------------------------------------------------------------------------------------

def test_daemon_method_through_podmans_docker_api(rig, tmp_path):
    facts = archive(tmp_path, compress=True)
    repo = unique_repo()
    args = tls_args(rig, repo, src=str(facts.path), method="daemon", docker_host=rig["DOCKER_HOST"])
    outcome = run_module(MODULE, args)
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["method"] == "daemon" and outcome.result["changed"] is True
    assert_same_image(pulled_back(rig, f"{rig['RIG_REGISTRY']}/{repo}:1.0", tmp_path), facts)
    assert run_module(MODULE, args).result["changed"] is False


# --- bad input: a clear message, no traceback, nothing pushed -------------------------------------------------

def _corrupt_layer(facts: ArchiveFacts, target: Path) -> Path:
    with tarfile.open(facts.path) as src, tarfile.open(target, "w") as out:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else None
            if data is not None and info.name.endswith("layer.tar") and len(data) > 100_000:
                data = data[:-2048] + b"\x01" * 2048
            out.addfile(info, io.BytesIO(data) if data is not None else None)
    return target


def _truncated(facts: ArchiveFacts, target: Path) -> Path:
    target.write_bytes(facts.path.read_bytes()[:-5000])
    return target


def _corrupt_layer_gzipped(facts: ArchiveFacts, target: Path) -> Path:
    plain = _corrupt_layer(facts, target.with_suffix(".plain"))
    target.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    return target


BAD_INPUTS = {
    "not a tar": (lambda f, t: (t.write_bytes(b"\x89PNG\r\n" * 200), t)[1], "neither a tar archive nor gzip"),
    "truncated gzip": (_truncated, "truncated or corrupt gzip data"),
    "layer digest mismatch": (_corrupt_layer, "does not match its digest"),
    "layer digest mismatch, gzip": (_corrupt_layer_gzipped, "does not match its digest"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_archives_push_nothing(rig, tmp_path, case):
    make, message = BAD_INPUTS[case]
    facts = archive(tmp_path, compress=case == "truncated gzip",
                    layers=[{"big.bin": os.urandom(6 * 1024 * 1024)}, {"small": b"s"}])  # big: streamed at once
    bad = make(facts, tmp_path / ("bad.tar.gz" if "gzip" in case else "bad.tar"))
    repo = unique_repo()
    outcome = run_module(MODULE, tls_args(rig, repo, src=str(bad)))
    assert outcome.failed
    assert message in outcome.result["msg"]
    assert "Traceback" not in outcome.stdout + outcome.stderr
    tags = requests.get(f"https://{rig['RIG_REGISTRY']}/v2/{repo}/tags/list", verify=rig["RIG_REGISTRY_CA"],
                        auth=(rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"]), timeout=10)
    assert tags.status_code == 404 or not tags.json().get("tags")
    catalog = requests.get(f"https://{rig['RIG_REGISTRY']}/v2/_catalog", verify=rig["RIG_REGISTRY_CA"],
                           auth=(rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"]), timeout=10).json()
    assert repo not in catalog.get("repositories", [])  # not even a blob was committed


@pytest.mark.parametrize("override, message", [
    ({"tag": "latest"}, "Refusing tag 'latest'"),
    ({"name": "127.0.0.1:1/Datarobot/PPS"}, "must be lowercase"),
    ({"password": "not-the-password"}, "rejected the credentials for user 'rig'"),
    ({"name": "127.0.0.1:9/datarobot/pps"}, "Cannot reach registry 127.0.0.1:9"),
    ({"src": "/nonexistent/pps.tar.gz"}, "/nonexistent/pps.tar.gz does not exist"),
    ({"ca_path": None}, "Is its CA trusted? Pass ca_path"),
])
def test_bad_parameters_give_clear_messages(rig, tmp_path, override, message):
    facts = archive(tmp_path)
    args = {**tls_args(rig, unique_repo(), src=str(facts.path), retries=1), **override}
    args = {k: v for k, v in args.items() if v is not None}
    outcome = run_module(MODULE, args, verbosity=3)
    assert outcome.failed
    assert message in outcome.result["msg"], outcome.result["msg"]
    assert "Traceback" not in outcome.stdout + outcome.stderr
    assert rig["RIG_REGISTRY_PASSWORD"] not in outcome.stdout + outcome.stderr
    assert "not-the-password" not in outcome.stdout + outcome.stderr


def test_a_corrupt_later_layer_commits_no_earlier_one(rig, tmp_path):
    """Single-pass push of a .tar.gz: every layer is checked before any blob is committed."""
    facts = archive(tmp_path, layers=[{"first.bin": os.urandom(5 * 1024 * 1024)},
                                      {"second.bin": os.urandom(5 * 1024 * 1024)}])
    plain = tmp_path / "bad.tar"
    with tarfile.open(facts.path) as src, tarfile.open(plain, "w") as out:
        last_layer = json.loads(src.extractfile("manifest.json").read())[0]["Layers"][-1]
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else None
            if info.name == last_layer:
                data = data[:-2048] + b"\x01" * 2048
            out.addfile(info, io.BytesIO(data) if data is not None else None)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    repo = unique_repo()
    outcome = run_module(MODULE, tls_args(rig, repo, src=str(bad)))
    assert outcome.failed and "does not match its digest" in outcome.result["msg"]
    registry = f"https://{rig['RIG_REGISTRY']}/v2/{repo}/blobs/"
    auth, ca = (rig["RIG_REGISTRY_USER"], rig["RIG_REGISTRY_PASSWORD"]), rig["RIG_REGISTRY_CA"]
    for diff_id in facts.layer_digests:  # blobs are stored compressed: look the repository up instead
        assert requests.head(registry + diff_id, auth=auth, verify=ca, timeout=10).status_code == 404
    catalog = requests.get(f"https://{rig['RIG_REGISTRY']}/v2/_catalog", auth=auth, verify=ca, timeout=10).json()
    assert repo not in catalog.get("repositories", [])
