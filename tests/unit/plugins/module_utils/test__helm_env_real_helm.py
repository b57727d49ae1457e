"""helm itself, given what helm_connection gives it, against a loopback fake Kubernetes API server (HTTPS: client-go
sends a token over TLS only). No cluster: `helm list` asks /version and lists the release Secrets; the server records
each request's path and Authorization.

Each case runs helm twice: as kubernetes.core (and this collection, before) did it - the same environment with the
token as HELM_KUBETOKEN and the kubeconfig path as KUBECONFIG - and as helm_connection does it now - no token in the
environment, an in-memory kubeconfig. Both must reach the same server, in the same namespace, with the same
Authorization: the same semantics, without the token in helm's environment.
"""

from __future__ import annotations

import glob
import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_env import helm_connection

TOKEN = "api-key-of-the-play-0123456789"
HELMS = sorted(set(glob.glob(os.path.expanduser("~/.cache/datarobot-mlops-rig/helm-v*/helm"))
                   + ([shutil.which("helm")] if shutil.which("helm") else [])))

# `make unit` builds the rig's helm 3 and 4 first (rig-binaries); without them each case fails on this name, never
# skips. openssl (the server's certificate) is one of the system packages.
HELMS = HELMS or ["no-helm-binary: run make rig-binaries (tests/rig/build-binaries.sh)"]


class _FakeApi(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        self.server.seen.append((path, self.headers.get("Authorization") or ""))
        if path == "/version":
            body = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}
        else:
            body = {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(where / "key.pem"),
                    "-out", str(where / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return where


@pytest.fixture
def api(certificate) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads, server.seen = True, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _helm_list(helm: str, env: dict[str, str], fds: tuple[int, ...]) -> None:
    run = subprocess.run([helm, "list"], env=env, pass_fds=fds, capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr


def _both_ways(helm: str, api, params: dict, source: dict[str, str]) -> tuple[list, list]:
    """What the server saw from helm as before (HELM_KUBETOKEN) and as now (in-memory kubeconfig)."""
    child = helm_connection(params, (3, 19, 0), source=source)
    try:
        assert "HELM_KUBETOKEN" not in child.env and not any(TOKEN in value for value in child.env.values())
        before = {key: value for key, value in child.env.items() if key != "KUBECONFIG"}
        before["HELM_KUBETOKEN"] = TOKEN
        if isinstance(params.get("kubeconfig"), str):
            before["KUBECONFIG"] = params["kubeconfig"]
        elif "KUBECONFIG" in source:
            before["KUBECONFIG"] = source["KUBECONFIG"]
        _helm_list(helm, before, ())
        seen_before, api.seen[:] = list(api.seen), []
        _helm_list(helm, dict(child.env), child.pass_fds)
        return seen_before, list(api.seen)
    finally:
        for fd in child.pass_fds:
            os.close(fd)


def _source(tmp_path: Path, **more: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), **more}


@pytest.mark.parametrize("helm", HELMS)
def test_helm_sends_the_api_key_from_the_in_memory_kubeconfig_to_the_host_given(helm, api, certificate, tmp_path):
    server = f"https://127.0.0.1:{api.server_address[1]}"
    before, now = _both_ways(helm, api, {"host": server, "api_key": TOKEN, "ca_cert": str(certificate / "cert.pem")},
                             _source(tmp_path))
    assert now and all(auth == f"Bearer {TOKEN}" for _path, auth in now), now
    assert ("/api/v1/namespaces/default/secrets", f"Bearer {TOKEN}") in now
    assert now == before


@pytest.mark.parametrize("helm", HELMS)
def test_helm_adds_the_api_key_to_the_user_of_the_kubeconfig_context_as_before(helm, api, certificate, tmp_path):
    """The context's cluster (its relative CA path), namespace and user come from the kubeconfig file; the token
    replaces the user's own, as HELM_KUBETOKEN did."""
    kube = tmp_path / "kube"
    kube.mkdir()
    shutil.copy(certificate / "cert.pem", kube / "ca.crt")
    server = f"https://127.0.0.1:{api.server_address[1]}"
    (kube / "config").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "fake", "cluster": {"server": server, "certificate-authority": "ca.crt"}},
                     {"name": "elsewhere", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "fake", "user": "admin", "namespace": "agents"}},
                     {"name": "other", "context": {"cluster": "elsewhere", "user": "admin"}}],
        "users": [{"name": "admin", "user": {"token": "the-kubeconfigs-own-token"}}]}))
    before, now = _both_ways(helm, api, {"kubeconfig": str(kube / "config"), "context": "prod", "api_key": TOKEN},
                             _source(tmp_path))
    assert ("/api/v1/namespaces/agents/secrets", f"Bearer {TOKEN}") in now
    assert "the-kubeconfigs-own-token" not in json.dumps(now)
    assert now == before


@pytest.mark.parametrize("helm", HELMS)
def test_helm_with_validate_certs_false_still_authenticates_with_the_api_key(helm, api, tmp_path):
    server = f"https://127.0.0.1:{api.server_address[1]}"
    before, now = _both_ways(helm, api, {"host": server, "api_key": TOKEN, "validate_certs": False},
                             _source(tmp_path))
    assert ("/api/v1/namespaces/default/secrets", f"Bearer {TOKEN}") in now
    assert now == before
