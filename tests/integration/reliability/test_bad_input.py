"""The reliability suite's bad-input corpus: wrong input must fail clearly and change nothing.

One table. Each case runs what a user runs (a module through `ansible`, a stage playbook through
`ansible-playbook`, or, for what the rig cannot simulate, the decision logic directly) with one thing wrong, and must:
fail; say what is wrong and how to fix it (the expected fragments); show no Python traceback; leave nothing
changed where it would have acted:

- registry cases: the tag list of the repository it was pointed at (a repository seeded once with tag `seed`;
  every case uses its own tag, so a push that slipped through would add one), and in the registry's own storage
  the blobs it holds, the layers linked into that repository and the upload sessions open there (a layer
  committed or a session left open before the input was found bad would show);
- hostile registry cases: a fake registry on a loopback port (what a real registry will not do); the real
  registries must not be touched at all;
- cluster and role cases: the namespace the registry stage would have created does not exist;
- DataRobot cases: every prediction environment the fake had is still there unchanged, and none carrying this
  run's names appeared (other suites share the fake, so their new environments are ignored);
- unit cases: pure functions, nothing to change.

Each case records one `bad_input` line in the reliability ledger before its asserts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import socket
import sys
import tarfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
import requests

from ansible_cli import REPO, ansible_env, run_module, run_playbook
from conftest import kubectl
from fixtures.image_archives import write_docker_archive
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._cluster_requirements import (
    NodeCapacity,
    assess,
    server_version,
)

sys.path.insert(0, str(REPO / "tests" / "rig"))
from processes import free_port  # noqa: E402  the rig's helpers: a free port outside the ephemeral range

PPS = "datarobot_mlops.management_agent.pps_image"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ENVIRONMENTS = "datarobot_mlops.management_agent.prediction_environment"
GAR = "datarobot_mlops.management_agent.gar_push_credentials"
BIG = 5 * 1024 * 1024  # above the archive reader's 4 MiB "small member" bound: streamed, not kept in memory


@dataclass
class Result:
    failed: bool
    msg: str
    output: str  # stdout and stderr, searched for tracebacks


@dataclass
class Bench:
    """What the cases share in this module: the rig, archives (built once each), a seeded repository."""

    rig: dict[str, str]
    tmp: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    archives: dict[str, Path] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    hostiles: dict[str, "HostileRegistry"] = field(default_factory=dict)
    _kubeconfig: Path | None = None

    @property
    def repo(self) -> str:
        return f"reliability/bad-input-{self.suffix}"

    @property
    def registry_auth(self) -> tuple[str, str]:
        return self.rig["RIG_REGISTRY_USER"], self.rig["RIG_REGISTRY_PASSWORD"]

    def archive(self, kind: str) -> Path:
        if kind not in self.archives:
            path = self.tmp / f"{kind}.tar"
            path.write_bytes(ARCHIVES[kind](self))
            self.archives[kind] = path
        return self.archives[kind]

    def namespace(self, case_id: str) -> str:
        """The namespace a case's registry stage would create: unique per run, never created by the test."""
        name = f"t-bad-{self.suffix}-{case_id}"[:63].rstrip("-")
        if name not in self.namespaces:
            self.namespaces.append(name)
        return name

    def hostile(self, behaviour: str) -> int:
        """The port of a fake registry behaving as `behaviour` (started once, stopped with the bench)."""
        if behaviour not in self.hostiles:
            self.hostiles[behaviour] = HostileRegistry(behaviour)
        return self.hostiles[behaviour].port

    def tag(self, case_id: str) -> str:
        return f"bad-{case_id}"[:128]

    def unprivileged_kubeconfig(self) -> Path:
        """A kubeconfig for a ServiceAccount bound to nothing, with the rig's server and CA."""
        if self._kubeconfig is None:
            home = f"t-bad-input-{self.suffix}"
            kubectl("create", "namespace", home)
            self.namespaces.append(home)
            kubectl("-n", home, "create", "serviceaccount", "nobody")
            token = kubectl("-n", home, "create", "token", "nobody").stdout.strip()
            admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
            server = admin["clusters"][0]["cluster"]["server"]
            config = {
                "apiVersion": "v1", "kind": "Config", "current-context": "nobody",
                "clusters": [{"name": "rig", "cluster": {"server": server,
                                                         "certificate-authority": self.rig["RIG_CA"]}}],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [{"name": "nobody", "context": {"cluster": "rig", "user": "nobody"}}],
            }
            self._kubeconfig = self.tmp / "nobody.kubeconfig"
            self._kubeconfig.write_text(json.dumps(config))
        return self._kubeconfig


# --- archives: a good docker-save archive, and what can go wrong with one ----------------------------------------

Entry = tuple[tarfile.TarInfo, bytes]


def _member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, link: str = "",
            size: int | None = None) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, link, 0o644, 0
    info.size = len(data) if size is None else size
    return info, data


def _tar(entries: list[Entry], *, end: bool = True) -> bytes:
    """Tar bytes written by hand, so headers may say what a tar library would refuse to write."""
    out = bytearray()
    for info, data in entries:
        out += info.tobuf(format=tarfile.GNU_FORMAT)  # GNU: sizes beyond 8 GiB, names as given
        out += data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)
    if end:
        out += b"\0" * (2 * tarfile.BLOCKSIZE)
    return bytes(out)


def _entries(path: Path) -> list[Entry]:
    with tarfile.open(path) as tar:
        return [(info, tar.extractfile(info).read() if info.isfile() else b"") for info in tar.getmembers()]


def _good_archive(bench: Bench, name: str = "good.tar", big: bool = True, repo_tag: str = "",
                  layout: str = "legacy") -> Path:
    layers = [{"opt/pps/model.bin": random.Random(name).randbytes(BIG if big else 4096)}, {"etc/pps.conf": b"x=1\n"}]
    path = bench.tmp / f"source-{name}"
    if not path.exists():
        write_docker_archive(path, [repo_tag or "datarobot/datarobot-portable-prediction-api:9.2.0"], layers,
                             layout=layout)
    return path


def _manifest(entries: list[Entry]) -> list[dict[str, Any]]:
    return json.loads(next(data for info, data in entries if info.name == "manifest.json"))


def _without(entries: list[Entry], names: set[str]) -> list[Entry]:
    return [(info, data) for info, data in entries if info.name not in names]


def _corrupt_big_layer(entries: list[Entry]) -> list[Entry]:
    """The big layer's last bytes changed, size kept: only its digest tells."""
    corrupted = []
    for info, data in entries:
        if info.name.endswith("layer.tar") and len(data) > BIG // 2:
            data = data[:-4096] + b"\x01" * 4096
        corrupted.append((info, data))
    return corrupted


def _two_images(bench: Bench) -> bytes:
    first = _entries(_good_archive(bench, "small.tar", big=False))
    second = _entries(_good_archive(bench, "other.tar", big=False, repo_tag="datarobot/other-image:1.0"))
    manifest = _manifest(first) + _manifest(second)
    members = {info.name: (info, data) for info, data in first + second if info.name != "manifest.json"}
    return _tar(list(members.values()) + [_member("manifest.json", json.dumps(manifest).encode())])


def _huge_declared_size(bench: Bench) -> bytes:
    """After the image, a member whose header claims 1 TiB; 64 KiB follow, then the file ends."""
    entries = _entries(_good_archive(bench))
    return _tar(entries, end=False) + _tar([_member("extra/huge.bin", size=1 << 40)], end=False) + b"\0" * 65536


def _huge_declared_layer_gzip(bench: Bench) -> bytes:
    """gzip, read in one pass that streams layers to the registry: the big layer, last, claims 1 TiB."""
    entries = _entries(_good_archive(bench))
    big = [(info, data) for info, data in entries if len(data) > BIG // 2]
    rest = [(info, data) for info, data in entries if len(data) <= BIG // 2]
    claimed = [_member(info.name, data, size=1 << 40) for info, data in big]
    return gzip.compress(_tar(rest, end=False) + _tar(claimed, end=False), 1)


def _layer_name(bench: Bench, index: int = 0) -> str:
    return _manifest(_entries(_good_archive(bench)))[0]["Layers"][index]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _oci(bench: Bench, manifest: Callable[[dict[str, Any]], Any] | None = None,
         index: Callable[[dict[str, Any]], bytes] | None = None, compress: bool = False) -> bytes:
    """The good image as an OCI layout alone (what skopeo's oci-archive holds), its manifest or index spoilt.

    Members keep the writer's order: the big layer comes first, so a gzip archive streams it before the
    manifest is read."""
    entries = _without(_entries(_good_archive(bench, "oci.tar", layout="oci")), {"manifest.json"})
    by_name = {info.name: data for info, data in entries}
    index_doc = json.loads(by_name["index.json"])
    old = index_doc["manifests"][0]["digest"][7:]
    if manifest is not None:
        body = json.dumps(manifest(json.loads(by_name[f"blobs/sha256/{old}"]))).encode()
        index_doc["manifests"][0].update(digest=f"sha256:{_sha(body)}", size=len(body))
        entries = _without(entries, {f"blobs/sha256/{old}", "index.json"}) + [_member(f"blobs/sha256/{_sha(body)}", body)]
    entries = _without(entries, {"index.json"}) + [
        _member("index.json", index(index_doc) if index else json.dumps(index_doc).encode())]
    data = _tar(entries)
    return gzip.compress(data, 1) if compress else data


def _first_layer(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def spoil(manifest: dict[str, Any]) -> dict[str, Any]:
        change(manifest["layers"][0])
        return manifest

    return spoil


def _gzip_bomb(bench: Bench) -> bytes:
    """A real decompression bomb: a 2 GiB member of zeros (32 gzip members of 64 MiB each, joined: one gzip
    stream), then the good image; the file is a few MiB."""
    zeros = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)
    header = _tar([_member("bomb/layer.tar", size=2 * 1024 ** 3)], end=False)
    return gzip.compress(header, 1) + zeros * 32 + gzip.compress(_good_archive(bench).read_bytes(), 1)


def _member_count_bomb(bench: Bench) -> bytes:
    return gzip.compress(_tar([_member(f"x/{i}") for i in range(20_000)] + _entries(_good_archive(bench))), 1)


def _json_bomb(bench: Bench) -> bytes:
    """20 members of 4 MiB of JSON each, named like configs: 80 MiB a scan would hold, in a small gzip file."""
    document = b"{" + b" " * (4 * 1024 * 1024 - 2) + b"}"
    return gzip.compress(_tar([_member(f"{i:064x}.json", document) for i in range(20)]
                              + _entries(_good_archive(bench))), 1)


def _docker_spoiled(bench: Bench, manifest: Callable[[list[Any]], Any] | None = None,
                    config: bytes | None = None, compress: bool = False) -> bytes:
    entries = _entries(_good_archive(bench))
    spoiled = []
    for info, data in entries:
        if info.name == "manifest.json" and manifest is not None:
            info, data = _member(info.name, json.dumps(manifest(json.loads(data))).encode())
        elif info.name == _manifest(entries)[0]["Config"] and config is not None:
            info, data = _member(info.name, config)
        spoiled.append((info, data))
    data = _tar(spoiled)
    return gzip.compress(data, 1) if compress else data


ARCHIVES: dict[str, Callable[[Bench], bytes]] = {
    "good": lambda b: _good_archive(b).read_bytes(),
    "empty": lambda b: b"",
    "random": lambda b: random.Random(7).randbytes(256 * 1024),
    "truncated-gzip": lambda b: gzip.compress(_good_archive(b).read_bytes(), 1)[:BIG // 2],
    "truncated-tar": lambda b: _good_archive(b).read_bytes()[:BIG // 2],
    "no-manifest": lambda b: _tar(_without(_entries(_good_archive(b)), {"manifest.json"})),
    "absent-layer": lambda b: _tar(_without(_entries(_good_archive(b)), {_layer_name(b, 1)})),
    "digest-mismatch": lambda b: _tar(_corrupt_big_layer(_entries(_good_archive(b)))),
    "digest-mismatch-gzip": lambda b: gzip.compress(_tar(_corrupt_big_layer(_entries(_good_archive(b)))), 1),
    "dotdot-member": lambda b: _tar([_member("../../etc/cron.d/pps", b"* * * * * root true\n")]
                                    + _entries(_good_archive(b))),
    "absolute-member": lambda b: _tar([_member("/etc/cron.d/pps", b"* * * * * root true\n")]
                                      + _entries(_good_archive(b))),
    "symlink-out": lambda b: _tar([_member("etc", kind=tarfile.SYMTYPE, link="../../../../etc")]
                                  + _entries(_good_archive(b))),
    "huge-declared-size": _huge_declared_size,
    "huge-declared-layer-gzip": _huge_declared_layer_gzip,
    "two-images": _two_images,
    "gzip-bomb": _gzip_bomb,
    "member-count-bomb": _member_count_bomb,
    "json-bomb": _json_bomb,
    "manifest-deep-json-gzip": lambda b: gzip.compress(_tar(_without(_entries(_good_archive(b)), {"manifest.json"})
                                                            + [_member("manifest.json", b"[" * 200_000 + b"]" * 200_000)]), 1),
    "manifest-entry-not-object": lambda b: _docker_spoiled(b, manifest=lambda m: ["datarobot/pps:9.2.0"]),
    "config-without-diff-ids": lambda b: _docker_spoiled(b, config=b'{"rootfs": {"type": "layers"}}'),
    "oci-no-config": lambda b: _oci(b, manifest=lambda m: {k: v for k, v in m.items() if k != "config"}),
    "oci-no-config-gzip": lambda b: _oci(b, manifest=lambda m: {k: v for k, v in m.items() if k != "config"},
                                         compress=True),
    "oci-index-names-absent-manifest": lambda b: _oci(b, index=lambda i: json.dumps(
        {**i, "manifests": [{**i["manifests"][0], "digest": "sha256:" + "0" * 64}]}).encode()),
    "oci-index-deep-json": lambda b: _oci(b, index=lambda i: b'{"manifests": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "oci-index-deep-json-gzip": lambda b: _oci(b, index=lambda i: b'{"manifests": ' + b"[" * 100_000
                                               + b"]" * 100_000 + b"}", compress=True),
    "oci-index-without-manifests": lambda b: _oci(b, index=lambda i: b'{"schemaVersion": 2}'),
    "oci-manifest-not-an-object": lambda b: _oci(b, manifest=lambda m: [m]),
    "oci-layer-size-mismatch": lambda b: _oci(b, manifest=_first_layer(lambda layer: layer.update(size=layer["size"] + 1))),
    "oci-layer-blob-absent": lambda b: _oci(b, manifest=_first_layer(lambda layer: layer.update(digest="sha256:" + "0" * 64))),
    "oci-layer-without-digest": lambda b: _oci(b, manifest=_first_layer(lambda layer: layer.pop("digest"))),
    "oci-nested-index": lambda b: _oci(b, manifest=lambda m: {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                              "manifests": [m["config"]]}),
    "oci-more-layers-than-diff-ids": lambda b: _oci(b, manifest=lambda m: {**m, "layers": m["layers"] * 2},
                                                    compress=True),
}


# --- hostile registries: what a real registry will not do -------------------------------------------------------

class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    behaviour = ""

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = getattr(self, "_" + self.behaviour.replace("-", "_"))()
        self._send(*answer)

    def _always_500(self) -> tuple:
        return 500, {"Content-Type": "application/json"}, b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}'

    def _not_a_registry(self) -> tuple:
        return 404, {"Content-Type": "text/html"}, b"<html><body>Welcome to nginx!</body></html>"

    def _token_realm_unreachable(self) -> tuple:
        realm = f"http://127.0.0.1:{free_port()}/token"
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'}

    def _token_without_token(self) -> tuple:
        if self.path.startswith("/token"):
            return 200, {"Content-Type": "application/json"}, b'{"expires_in": 300}'
        realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'}

    def _upload_without_location(self) -> tuple:
        if self.command == "POST":
            return (202, {})
        return (200, {}) if self.path == "/v2/" else (404, {})

    def _manifest_digest_lie(self) -> tuple:
        if self.path == "/v2/" or self.command in ("PATCH",):
            return 200 if self.command == "GET" else 202, {"Location": self.path, "Range": "0-0"}
        if self.command == "POST":
            return 202, {"Location": self.path.split("?")[0] + "session"}
        if self.command == "PUT":
            return 201, {"Docker-Content-Digest": "sha256:" + "0" * 64}
        return (404, {})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class HostileRegistry:
    """A fake registry on a loopback port: HTTP answers no registry gives, or a socket that speaks no HTTP."""

    RAW = ("garbage-not-http", "silent")

    def __init__(self, behaviour: str) -> None:
        self.behaviour, self.stop = behaviour, threading.Event()
        if behaviour in self.RAW:
            self.server: Any = socket.create_server(("127.0.0.1", 0))
            self.server.settimeout(0.5)
            target: Callable[[], None] = self._raw
        else:
            handler = type("Handler", (_Hostile,), {"behaviour": behaviour})
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            self.server.daemon_threads = True
            target = self.server.serve_forever
        self.port = self.server.getsockname()[1] if behaviour in self.RAW else self.server.server_address[1]
        threading.Thread(target=target, daemon=True).start()

    def _raw(self) -> None:
        held = []
        while not self.stop.is_set():
            try:
                connection, _address = self.server.accept()
            except OSError:
                continue
            if self.behaviour == "garbage-not-http":
                connection.sendall(b"\x00\x01SSH-2.0-hostile\r\n" * 8)
                connection.close()
            else:
                held.append(connection)  # accepted, never answered

    def close(self) -> None:
        self.stop.set()
        if self.behaviour in self.RAW:
            self.server.close()
        else:
            self.server.shutdown()
            self.server.server_close()


def hostile(behaviour: str, **override: Any) -> "Runner":
    """pps_image pushing the good archive to a fake registry behaving as `behaviour`."""
    return pps(name=lambda b: f"127.0.0.1:{b.hostile(behaviour)}/{b.repo}", insecure=True, ca_path=None, **override)


# --- how a case runs --------------------------------------------------------------------------------------------

Runner = Callable[[Bench, str], Result]


def _module(fqcn: str, args: dict[str, Any], env: dict[str, str] | None = None) -> Result:
    outcome = run_module(fqcn, {k: v for k, v in args.items() if v is not None}, env=env)
    return Result(outcome.failed, str(outcome.result.get("msg", "")), outcome.stdout + outcome.stderr)


def pps(archive: str = "good", env: Callable[[Bench], dict[str, str]] | None = None, **override: Any) -> Runner:
    """The pps_image module pushing `archive` to the seeded repository (overrides may point elsewhere)."""

    def run(bench: Bench, case_id: str) -> Result:
        args = {"src": str(bench.archive(archive)), "name": f"{bench.rig['RIG_REGISTRY']}/{bench.repo}",
                "tag": bench.tag(case_id), "username": bench.rig["RIG_REGISTRY_USER"],
                "password": bench.rig["RIG_REGISTRY_PASSWORD"], "ca_path": bench.rig["RIG_REGISTRY_CA"],
                "cache": "", "retries": 2}
        args.update({key: value(bench) if callable(value) else value for key, value in override.items()})
        return _module(PPS, args, env(bench) if env else None)

    return run


def playbook(path: str, extra_vars: Callable[[Bench, str], dict[str, Any]], tags: str | None = None,
             env: Callable[[Bench], dict[str, str]] | None = None) -> Runner:
    def run(bench: Bench, case_id: str) -> Result:
        done = run_playbook(path, extra_vars=extra_vars(bench, case_id), tags=tags, env=env(bench) if env else None)
        return Result(done.returncode != 0, done.failure(), done.stdout + done.stderr)

    return run


def cluster(env: Callable[[Bench], dict[str, str]]) -> Runner:
    """site.yml's first stages with a broken cluster access: preflight must stop the run before the registry
    stage creates its namespace."""
    return playbook("site.yml", lambda b, case_id: {"mlops_namespace": b.namespace(case_id)},
                    tags="preflight,registry", env=env)


def registry_role(**variables: Any) -> Runner:
    return playbook("playbooks/registry.yml",
                    lambda b, case_id: {"mlops_namespace": b.namespace(case_id), **variables})


def datarobot(**args: Any) -> Runner:
    def run(bench: Bench, case_id: str) -> Result:
        return _module(ENVIRONMENTS, {"name": f"bad-input-{bench.suffix}-{case_id}", **args})

    return run


def gar(env: Callable[[Bench], dict[str, str]] | None = None, **args: Any) -> Runner:
    def run(bench: Bench, _case_id: str) -> Result:
        return _module(GAR, args, env(bench) if env else None)

    return run


def unit(call: Callable[[], list[str]]) -> Runner:
    """Decision logic called directly; a finding list is the failure, an exception a traceback."""

    def run(_bench: Bench, _case_id: str) -> Result:
        try:
            unmet = call()
        except Exception:  # pylint: disable=broad-except  # any exception is what the case must not show
            return Result(False, "", traceback.format_exc())
        return Result(bool(unmet), "\n".join(unmet), "")

    return run


FITTING_NODE = NodeCapacity.from_node({"metadata": {"name": "node-1"}, "status": {
    "capacity": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "100Gi"},
    "conditions": [{"type": "Ready", "status": "True"}]}})


def _no_kubeconfig(bench: Bench) -> dict[str, str]:
    home = bench.tmp / "home-without-kube"
    home.mkdir(exist_ok=True)
    return ansible_env(without=("KUBECONFIG", "K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT"), HOME=str(home))


# --- the corpus -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    watch: str  # registry | insecure-registry | namespace | datarobot | nothing
    run: Runner
    expect: tuple[str, ...]  # fragments of the message: what is wrong, and what to do


GIVE_AN_ARCHIVE = "Copy the archive again and compare its checksum."
TRAVERSAL = "refusing a path-traversal archive"

CASES = [
    # archives
    Case("archive-empty-file", "registry", pps("empty"), ("is empty (0 bytes)", GIVE_AN_ARCHIVE)),
    Case("archive-random-bytes", "registry", pps("random"),
         ("is neither a tar archive nor gzip-compressed (unknown format)", "give the file `docker save`")),
    Case("archive-truncated-gzip", "registry", pps("truncated-gzip"),
         ("truncated or corrupt gzip data", GIVE_AN_ARCHIVE)),
    Case("archive-truncated-tar", "registry", pps("truncated-tar"),
         ("a truncated or corrupt tar archive", GIVE_AN_ARCHIVE)),
    Case("archive-missing-manifest", "registry", pps("no-manifest"),
         ("has neither manifest.json (docker save) nor index.json and oci-layout (OCI archive)",)),
    Case("archive-manifest-names-absent-layer", "registry", pps("absent-layer"), ("is missing from the archive",)),
    Case("archive-layer-digest-mismatch", "registry", pps("digest-mismatch"),
         ("does not match its digest", "the archive is corrupt; nothing was tagged")),
    Case("archive-layer-digest-mismatch-gzip", "registry", pps("digest-mismatch-gzip"),
         ("does not match its digest", "the archive is corrupt; nothing was tagged")),
    Case("archive-dotdot-member", "registry", pps("dotdot-member"), ("contains '..'", TRAVERSAL)),
    Case("archive-absolute-member", "registry", pps("absolute-member"), ("is absolute", TRAVERSAL)),
    Case("archive-symlink-out-of-tree", "registry", pps("symlink-out"), ("link 'etc' points outside the archive",)),
    Case("archive-huge-declared-size", "registry", pps("huge-declared-size"),
         ("a truncated or corrupt tar archive", GIVE_AN_ARCHIVE)),
    Case("archive-huge-declared-layer-size-gzip", "registry", pps("huge-declared-layer-gzip"),
         ("would inflate the gzip stream to more than 100 times the file's size", "refusing a decompression bomb")),
    Case("archive-two-images-no-source-image", "registry", pps("two-images"),
         ("holds several images", "set source_image to one of them")),
    Case("archive-missing-file", "registry", pps(src="/nonexistent/datarobot-portable-prediction-api-9.2.0.tar.gz"),
         ("does not exist or is not a file",)),
    Case("archive-gzip-bomb", "registry", pps("gzip-bomb"),
         ("more than 100 times the file's size", "refusing a decompression bomb", "give the .tar instead")),
    Case("archive-member-count-bomb", "registry", pps("member-count-bomb"),
         ("has more than 10000 members, far more than an image archive has",)),
    Case("archive-json-bomb", "registry", pps("json-bomb"), ("holds more than 64 MiB of JSON documents",)),
    Case("archive-manifest-deep-json-gzip", "registry", pps("manifest-deep-json-gzip"),
         ("nests JSON more than 64 levels deep, which no image tool writes",)),
    Case("archive-manifest-entry-not-an-object", "registry", pps("manifest-entry-not-object"),
         ("manifest.json has an entry without a Config name and a Layers list of names",)),
    Case("archive-config-without-diff-ids", "registry", pps("config-without-diff-ids"),
         ("has no rootfs.diff_ids list",)),
    # OCI layouts
    Case("oci-manifest-without-config", "registry", pps("oci-no-config"),
         ("has no config descriptor with a sha256 digest", "not an image manifest")),
    Case("oci-manifest-without-config-gzip", "registry", pps("oci-no-config-gzip"),
         ("has no config descriptor with a sha256 digest", "not an image manifest")),
    Case("oci-index-names-absent-manifest", "registry", pps("oci-index-names-absent-manifest"),
         ("OCI manifest sha256:" + "0" * 64 + " is missing from the archive",)),
    Case("oci-index-deep-json", "registry", pps("oci-index-deep-json"), ("nests JSON more than 64 levels deep",)),
    Case("oci-index-deep-json-gzip", "registry", pps("oci-index-deep-json-gzip"),
         ("nests JSON more than 64 levels deep",)),
    Case("oci-index-without-manifests", "registry", pps("oci-index-without-manifests"),
         ("index.json has no manifests list",)),
    Case("oci-manifest-not-an-object", "registry", pps("oci-manifest-not-an-object"),
         ("has no config descriptor with a sha256 digest",)),
    Case("oci-layer-size-mismatch", "registry", pps("oci-layer-size-mismatch"), ("bytes, the manifest says",)),
    Case("oci-layer-blob-absent", "registry", pps("oci-layer-blob-absent"),
         ("layer sha256:" + "0" * 64 + " is missing from the archive",)),
    Case("oci-layer-without-digest", "registry", pps("oci-layer-without-digest"),
         ("or a layer without one: not an image manifest",)),
    Case("oci-nested-index", "registry", pps("oci-nested-index"),
         ("multi-platform image indexes are not supported", "save one platform")),
    Case("oci-more-layers-than-diff-ids-gzip", "registry", pps("oci-more-layers-than-diff-ids"),
         ("OCI manifest lists 4 layers but the config has 2 diff_ids",)),
    # hostile registries
    Case("registry-hostile-always-500", "nothing", hostile("always-500"), ("answered 500", "(after 2 attempts)")),
    Case("registry-hostile-not-a-registry", "nothing", hostile("not-a-registry"),
         ("answered 404 to GET /v2/", "Welcome to nginx")),
    Case("registry-hostile-token-realm-unreachable", "nothing", hostile("token-realm-unreachable"),
         ("Cannot reach the token service",)),
    Case("registry-hostile-token-without-token", "nothing", hostile("token-without-token"), ("returned no token",)),
    Case("registry-hostile-upload-without-location", "nothing", hostile("upload-without-location"),
         ("answered 202 to POST", "without a Location")),
    Case("registry-hostile-manifest-digest-lie", "nothing", hostile("manifest-digest-lie"),
         ("a proxy or the registry changed it", "Check what the tag now points at")),
    Case("registry-hostile-garbage-not-http", "nothing", hostile("garbage-not-http"),
         ("Check the host, port and network",)),
    Case("registry-hostile-silent", "nothing", hostile("silent", timeout=3), ("Read timed out", "Check the host")),
    # tags and names
    Case("tag-latest", "registry", pps(tag="latest"), ("Refusing tag 'latest'", "Use the PPS version")),
    Case("tag-invalid-characters", "registry", pps(tag="9.2.0+build!"),
         ("Invalid tag '9.2.0+build!'", "tags are 1-128 characters of letters, digits")),
    Case("tag-too-long", "registry", pps(tag="9" * 129), ("Invalid tag", "tags are 1-128 characters")),
    Case("name-uppercase-repository", "registry",
         pps(name=lambda b: f"{b.rig['RIG_REGISTRY']}/{b.repo.replace('reliability', 'Reliability')}"),
         ("component 'Reliability' must be lowercase letters and digits",)),
    Case("name-invalid-characters", "registry", pps(name=lambda b: f"{b.rig['RIG_REGISTRY']}/{b.repo}$"),
         ("Invalid repository path", "must be lowercase letters and digits")),
    Case("name-too-long", "registry", pps(name=lambda b: f"{b.rig['RIG_REGISTRY']}/{b.repo}/" + "a" * 250),
         ("longer than 255 characters",)),
    Case("name-with-tag", "registry", pps(name=lambda b: f"{b.rig['RIG_REGISTRY']}/{b.repo}:9.2.0"),
         ("put the tag in `tag`, not in the name",)),
    # registry
    Case("registry-unreachable-host", "registry", pps(name=lambda b: f"127.0.0.1:{free_port()}/{b.repo}"),
         ("Connection refused. Check the host, port and network",)),
    Case("registry-wrong-password", "registry", pps(password="not-the-password"),
         ("rejected the credentials for user", "check username/password")),
    Case("preflight-registry-wrong-password", "namespace",
         playbook("site.yml", lambda b, case_id: {"mlops_namespace": b.namespace(case_id), "mlops_preflight_registry": {
             "host": b.rig["RIG_REGISTRY"], "username": b.rig["RIG_REGISTRY_USER"], "password": "not-the-password",
             "ca_path": b.rig["RIG_REGISTRY_CA"]}}, tags="preflight,registry"),
         ("The cluster is not ready", "rejected the credentials for user", "check username/password")),
    Case("registry-tls-unknown-ca", "registry",
         pps(ca_path=None, env=lambda b: ansible_env(without=("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"))),
         ("certificate verify failed", "Pass ca_path")),
    Case("registry-http-without-insecure", "insecure-registry",
         pps(name=lambda b: f"{b.rig['RIG_INSECURE_REGISTRY']}/{b.repo}", username=None, password=None, ca_path=None,
             insecure=False),
         ("it answers in plain HTTP", "set insecure: true")),
    # cluster
    Case("cluster-no-kubeconfig", "namespace", cluster(_no_kubeconfig),
         ("No configuration found", "Check that kubeconfig/context (or K8S_AUTH_KUBECONFIG) point at the cluster")),
    Case("cluster-kubeconfig-file-missing", "namespace",
         cluster(lambda b: ansible_env(KUBECONFIG=str(b.tmp / "no-such-kubeconfig"))),
         ("The kubeconfig file given does not exist",
          "pass an existing file (kubeconfig, K8S_AUTH_KUBECONFIG or KUBECONFIG)")),
    Case("cluster-wrong-context", "namespace", cluster(lambda b: ansible_env(K8S_AUTH_CONTEXT="no-such-context")),
         ("Expected object with name no-such-context",
          "Check that kubeconfig/context (or K8S_AUTH_KUBECONFIG) point at the cluster")),
    Case("cluster-insufficient-rbac", "namespace",
         cluster(lambda b: ansible_env(KUBECONFIG=str(b.unprivileged_kubeconfig()))),
         ("the API server forbids it", "grant the user read access, or run as a cluster administrator")),
    Case("cluster-kubernetes-too-old", "nothing",
         unit(lambda: assess(server_version({"gitVersion": "v1.18.20-eks-1-18-9"}), "kubernetes",
                             [FITTING_NODE]).unmet),
         ("Kubernetes 1.18 is older than the supported 1.19: upgrade the cluster.",)),
    Case("cluster-openshift-too-old", "nothing",
         unit(lambda: assess((1, 19), "openshift", [FITTING_NODE], openshift_version=(4, 5)).unmet),
         ("OpenShift 4.5 is older than the supported 4.6: upgrade the cluster.",)),
    # variables
    Case("vars-unknown-vendor", "namespace", registry_role(mlops_registry_vendor="quay"),
         ("value of mlops_registry_vendor must be one of: generic, ecr, acr, gar, gcr, openshift, got: quay",)),
    Case("vars-gcr-without-project", "namespace", registry_role(mlops_registry_vendor="gcr", mlops_registry_host="gcr.io"),
         ("mlops_registry_vendor gcr needs mlops_registry_gcp_project and mlops_registry_gcp_service_account",)),
    Case("vars-ecr-without-oidc-issuer", "namespace", registry_role(mlops_registry_vendor="ecr"),
         ("mlops_registry_vendor ecr needs mlops_registry_ecr_oidc_issuer", "or mlops_registry_ecr_role_arn")),
    Case("vars-acr-without-name", "namespace",
         registry_role(mlops_registry_vendor="acr", mlops_registry_host="", mlops_registry_acr_name=""),
         ("mlops_registry_host is empty", "for acr set mlops_registry_acr_name")),
    Case("vars-wrong-type-bool", "namespace", registry_role(mlops_registry_insecure="sometimes"),
         ("mlops_registry_insecure", "unable to convert to bool", "Valid booleans include")),
    Case("vars-wrong-type-list-for-name", "namespace",
         playbook("playbooks/registry.yml", lambda b, case_id: {"mlops_namespace": [b.namespace(case_id)]}),
         ("is not a Kubernetes namespace name", "at most 63 lowercase letters, digits and '-'")),
    Case("vars-wrong-type-int", "registry",
         playbook("playbooks/pps_image.yml", lambda b, case_id: {
             "mlops_pps_image_workers": "many", "mlops_pps_image_archive": str(b.archive("good")),
             "mlops_pps_image_version": b.tag(case_id), "mlops_pps_image_repository": b.repo,
             "mlops_pps_image_registry": {"host": b.rig["RIG_REGISTRY"], "username": b.rig["RIG_REGISTRY_USER"],
                                          "password": b.rig["RIG_REGISTRY_PASSWORD"], "ca_path": b.rig["RIG_REGISTRY_CA"]}}),
         ("mlops_pps_image_workers", "unable to convert to int")),
    # Google push credentials (gar): bad keys are refused before any token endpoint is asked
    Case("gar-key-not-json", "nothing", gar(credentials="{not a key"),
         ("credentials is not JSON", "give the service-account key as Google's console")),
    Case("gar-key-of-a-user", "nothing", gar(credentials='{"type": "authorized_user", "client_id": "x"}'),
         ("is of type 'authorized_user', not 'service_account'", "Application Default Credentials are used")),
    Case("gar-key-file-missing", "nothing", gar(credentials_file="/nonexistent/gar-key.json"),
         ("Cannot read the service-account key file /nonexistent/gar-key.json", "check credentials_file")),
    Case("gar-no-application-default-credentials", "nothing",
         gar(env=lambda b: ansible_env(GOOGLE_APPLICATION_CREDENTIALS=str(b.tmp / "absent-adc.json"))),
         ("No Google credentials found", "set GOOGLE_APPLICATION_CREDENTIALS")),
    # DataRobot
    Case("datarobot-bad-token", "datarobot", datarobot(api_token="not-the-token-at-all"),
         ("answered 401", "check api_token (DATAROBOT_API_TOKEN)")),
    Case("datarobot-unknown-prediction-environment", "datarobot", datarobot(id="0123456789abcdef01234567"),
         ("No prediction environment has id 0123456789abcdef01234567", "check the id")),
    Case("datarobot-unsupported-model-format", "datarobot",
         playbook("playbooks/prediction_environment.yml", lambda b, case_id: {
             "mlops_prediction_environment_name": f"bad-input-{b.suffix}-{case_id}",
             "mlops_prediction_environment_formats": ["datarobot", "externalModel"]}),
         # the role's argument spec, before the stage asks DataRobot (or site.yml's first stage changes anything)
         ("mlops_prediction_environment_formats must be one or more of: datarobot, customModel", "externalModel")),
    Case("datarobot-endpoint-without-scheme", "datarobot", datarobot(endpoint="app.datarobot.com"),
         ("must start with https://",)),
]


# --- what must not change ---------------------------------------------------------------------------------------

def _tags(url: str, **kwargs: Any) -> list[str] | None:
    """The repository's tags; [] when it has none (404); None when the registry could not be asked."""
    answer = requests.get(url, timeout=30, **kwargs)
    if answer.status_code == 404:
        return []
    if answer.status_code != 200:
        return None
    return sorted(answer.json().get("tags") or [])


def _page(rig: dict[str, str], url: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """One page of the fake's list; other suites inject short 5xx bursts and slow answers into the shared fake."""
    for attempt in range(1, 7):
        try:
            answer = requests.get(url, params=params, headers={"Authorization": f"Bearer {rig['DATAROBOT_API_TOKEN']}"},
                                  verify=rig["DATAROBOT_CA_PATH"], timeout=30)
            if answer.status_code < 500:
                answer.raise_for_status()
                return answer.json()
        except (requests.ConnectionError, requests.Timeout, ValueError):
            if attempt == 6:
                raise
        time.sleep(0.5 * attempt)
    raise AssertionError(f"the fake DataRobot kept failing on {url}")


def _environments(rig: dict[str, str]) -> dict[str, Any]:
    environments: dict[str, Any] = {}
    url: str | None = f"{rig['DATAROBOT_ENDPOINT'].rstrip('/')}/predictionEnvironments/"
    params: dict[str, Any] | None = {"offset": 0, "limit": 100}
    while url:
        body = _page(rig, url, params)
        for item in body.get("data", []):
            environments[item["id"]] = item
        url, params = body.get("next"), None
    return environments


def _stored(rig: dict[str, str], daemon: str, repo: str) -> dict[str, list[str]]:
    """What the registry's storage holds: every blob, the layers linked into `repo`, `repo`'s open uploads.

    An upload session is open while its `data` file exists: Docker Distribution's cancel removes the session and
    then writes its hash state once more, so a cancelled session leaves a directory holding only `hashstates`."""
    root = Path(rig["RIG_DIR"]) / "registry" / daemon / "docker" / "registry" / "v2"
    repository = root / "repositories" / repo
    return {"blobs": sorted(path.name for path in (root / "blobs" / "sha256").glob("*/*")),
            "layers": sorted(path.name for path in (repository / "_layers" / "sha256").glob("*")),
            "uploads": sorted(path.parent.name for path in (repository / "_uploads").glob("*/data"))}


def state(bench: Bench, case: Case) -> Any:
    rig = bench.rig
    if case.watch == "registry":
        return {"tags": _tags(f"https://{rig['RIG_REGISTRY']}/v2/{bench.repo}/tags/list", auth=bench.registry_auth,
                              verify=rig["RIG_REGISTRY_CA"]), **_stored(rig, "registry-tls", bench.repo)}
    if case.watch == "insecure-registry":
        return {"tags": _tags(f"http://{rig['RIG_INSECURE_REGISTRY']}/v2/{bench.repo}/tags/list"),
                **_stored(rig, "registry-http", bench.repo)}
    if case.watch == "namespace":
        return kubectl("get", "namespace", bench.namespace(case.id), check=False).returncode == 0
    if case.watch == "datarobot":
        return _environments(rig)
    return None


def change(bench: Bench, case: Case, before: Any, after: Any) -> str:
    """What the case changed where it must not, in a few words; empty when nothing changed."""
    if case.watch == "nothing":
        return ""
    if case.watch == "namespace":
        return f"namespace {bench.namespace(case.id)} exists" if before or after else ""
    if case.watch == "datarobot":
        appeared = sorted(e["name"] for key, e in after.items() if key not in before and bench.suffix in e["name"])
        altered = sorted(key for key, environment in before.items() if after.get(key) != environment)
        return f"environments appeared {appeared}, changed or gone {altered}" if appeared or altered else ""
    if before["tags"] is None or after["tags"] is None:
        return "the registry could not be asked for the tag list"
    return "; ".join(f"{what} {sorted(set(before[what]) ^ set(after[what]))} appeared or went"
                     for what in before if before[what] != after[what])


# --- the test ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", name="bench")
def fixture_bench(rig, tmp_path_factory) -> Iterator[Bench]:
    """The shared bench, with the target repository seeded (tag `seed`); namespaces a case made are removed."""
    shared = Bench(rig, tmp_path_factory.mktemp("bad-input"))
    seeded = run_module(PPS, {"src": str(shared.archive("good")), "name": f"{rig['RIG_REGISTRY']}/{shared.repo}",
                              "tag": "seed", "username": rig["RIG_REGISTRY_USER"],
                              "password": rig["RIG_REGISTRY_PASSWORD"], "ca_path": rig["RIG_REGISTRY_CA"],
                              "cache": ""})
    assert not seeded.failed, seeded.result.get("msg")
    yield shared
    for fake in shared.hostiles.values():
        fake.close()
    for name in shared.namespaces:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(bench, ledger, case):
    before = state(bench, case)
    started = time.monotonic()
    result = case.run(bench, case.id)
    elapsed = time.monotonic() - started
    after = state(bench, case)

    missing = [fragment for fragment in case.expect if fragment not in result.msg]
    traceback_shown = "Traceback" in result.output
    changed = change(bench, case, before, after)
    problems = [problem for problem, bad in [
        ("did not fail", not result.failed), (f"message lacks {missing}", bool(missing)),
        ("showed a traceback", traceback_shown), (f"changed: {changed}", bool(changed))] if bad]
    # the time is told, not judged: a timing decides nothing on a slower machine (make bench is where times count)
    ledger.record("bad_input", case.id, held=not problems,
                  detail=("; ".join(problems) + ": " if problems else "") + f"({elapsed:.0f}s) " + result.msg)

    assert result.failed, f"{case.id} did not fail: {result.output[-2000:]}"
    assert not missing, f"{case.id}: message {result.msg!r} lacks {missing}"
    assert not traceback_shown, result.output[-4000:]
    assert not changed, f"{case.id} changed what it must not: {changed}"
