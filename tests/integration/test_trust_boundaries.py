"""Credentials go only where they belong: hostile registries and a hostile DataRobot API, served here on loopback.

Each hostile server points the client at another loopback port (an upload Location, a token realm, a `next` link,
a redirect) where a recorder counts what arrives. The promise: no Authorization header, password or API token ever
arrives there; a step down from HTTPS to plain HTTP is refused before anything is sent; what legitimately lives
elsewhere (blob storage behind an upload Location, an https token service) still works, without our credentials.
Every case records one `bad_input` line in the reliability ledger.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_cli import run_module, run_playbook
from conftest import no_traceback
from test_pps_image import archive

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rig"))
from pki import CertificateAuthority  # noqa: E402

PUSH = "datarobot_mlops.management_agent.pps_image"
INFO = "datarobot_mlops.management_agent.registry_image_info"
ENVIRONMENT = "datarobot_mlops.management_agent.prediction_environment"
USER, PASSWORD, TOKEN, API_TOKEN = "pusher", "hunter2-" + uuid.uuid4().hex[:8], "bearer-" + uuid.uuid4().hex, \
    "dr-api-" + uuid.uuid4().hex
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, BASIC.split()[1], TOKEN, API_TOKEN)

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    method: str
    path: str
    authorization: str
    body: bytes


@dataclass
class Server:
    """A loopback HTTP(S) server: `respond(seen)` decides each answer; every request is recorded."""

    respond: Callable[["Server", Seen], Reply]
    tls: tuple[Path, Path] | None = None
    seen: list[Seen] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    url: str = ""

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, self.headers.get("Authorization", ""), self.rfile.read(length))
                owner.seen.append(seen)
                status, headers, body = owner.respond(owner, seen)
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def address(self) -> str:
        return self.url.split("//", 1)[1]

    def credentials_seen(self) -> list[str]:
        """Authorization headers, and any of our secrets anywhere in what arrived."""
        found = [seen.authorization for seen in self.seen if seen.authorization]
        found += [f"{seen.method} {seen.path}" for seen in self.seen
                  if any(secret in seen.path or secret.encode() in seen.body for secret in SECRETS)]
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_reply(status: int, body: Any, **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


@pytest.fixture
def servers(tmp_path) -> Iterator[Callable[..., Server]]:
    ca = CertificateAuthority(tmp_path / "pki").ensure()
    tls = ca.issue("hostile", "hostile", hosts=("127.0.0.1",))
    made: list[Server] = []

    def make(respond: Callable[[Server, Seen], Reply], secure: bool = True) -> Server:
        made.append(Server(respond, tls if secure else None))
        return made[-1]

    make.ca_path = str(ca.cert_path)  # type: ignore[attr-defined]
    yield make
    for server in made:
        server.close()


# --- the registry side ---------------------------------------------------------------------------------------------

def storage(server: Server, seen: Seen) -> Reply:
    """Blob storage behind an upload Location: takes bytes without any login, as a presigned URL does."""
    if seen.method == "PATCH":
        return 202, {}, b""
    if seen.method == "PUT":
        return 201, {}, b""
    return 204, {"Range": "0-0"}, b""


def registry(upload_to: Callable[[], str], challenge: Callable[[], str] = lambda: 'Basic realm="hostile"',
             redirect_manifests: Callable[[], str] | None = None) -> Callable[[Server, Seen], Reply]:
    """A minimal registry that wants our login, then sends uploads (or manifest reads) to another origin."""
    def respond(server: Server, seen: Seen) -> Reply:
        if seen.authorization not in (BASIC, f"Bearer {TOKEN}"):
            return json_reply(401, {"errors": [{"code": "UNAUTHORIZED"}]}, **{"WWW-Authenticate": challenge()})
        path = urlsplit(seen.path).path
        manifests = server.state.setdefault("manifests", {})
        if "/manifests/" in path and seen.method == "PUT":
            digest = "sha256:" + hashlib.sha256(seen.body).hexdigest()
            manifests[path] = seen.body
            return 201, {"Docker-Content-Digest": digest}, b""
        if "/manifests/" in path and redirect_manifests:
            return 307, {"Location": redirect_manifests() + path}, b""
        if "/manifests/" in path and path in manifests:
            body = manifests[path]
            return 200, {"Content-Type": json.loads(body).get("mediaType", ""),
                         "Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest()}, body
        if path.endswith("/blobs/uploads/") and seen.method == "POST":
            return 202, {"Location": f"{upload_to()}/upload/{uuid.uuid4().hex}?X-Signature=presigned"}, b""
        if path == "/v2/":
            return json_reply(200, {})
        return json_reply(404, {"errors": [{"code": "BLOB_UNKNOWN"}]})
    return respond


def token_service(server: Server, seen: Seen) -> Reply:
    """An https token service on another origin: Basic credentials here are the token protocol itself."""
    return json_reply(200, {"token": TOKEN}) if seen.authorization == BASIC else (401, {}, b"")


def push_args(servers, target: Server, tmp_path: Path) -> dict[str, Any]:
    facts = archive(tmp_path, layers=[{"opt/pps/model.bin": b"m" * 300_000}, {"etc/pps.conf": b"threads=4\n"}])
    return {"src": str(facts.path), "name": f"{target.address}/datarobot/pps", "tag": "1.0", "cache": "",
            "username": USER, "password": PASSWORD, "ca_path": servers.ca_path}


def record(ledger, case: str, held: bool, outcome, *places: Server) -> None:
    arrived = [found for place in places for found in place.credentials_seen()]
    ledger.record("bad_input", case, held=held and not arrived and no_traceback(outcome.stdout, outcome.stderr),
                  detail=f"{'failed: ' + outcome.result.get('msg', '')[:160] if outcome.failed else 'succeeded'}; "
                         f"credentials arriving elsewhere: {len(arrived)}")


def refused_untouched(ledger, case: str, outcome, refused: bool, untouched: Server) -> None:
    """A refusal where nothing at all reached `untouched`, not even without credentials: recorded, then asserted."""
    record(ledger, case, refused and not untouched.seen, outcome, untouched)
    assert refused, outcome.result.get("msg", "")
    assert untouched.seen == []
    assert_clean(outcome, untouched)


def assert_clean(outcome, *places: Server) -> None:
    for place in places:
        assert place.credentials_seen() == [], f"credentials arrived at {place.url}"
    assert not any(secret in outcome.stdout + outcome.stderr for secret in SECRETS)
    assert no_traceback(outcome.stdout, outcome.stderr)


def test_an_upload_location_on_another_origin_works_without_our_login(rig, servers, tmp_path, ledger):
    elsewhere = servers(storage)
    hostile = servers(registry(lambda: elsewhere.url))
    outcome = run_module(PUSH, push_args(servers, hostile, tmp_path))
    uploads = [seen for seen in elsewhere.seen if seen.method in ("PATCH", "PUT")]
    record(ledger, "registry: upload Location on another https origin (blob storage)",
           not outcome.failed and len(uploads) >= 6, outcome, elsewhere)
    assert not outcome.failed, outcome.result.get("msg")
    assert len(uploads) >= 6  # three blobs, each sent and committed there
    assert all(seen.authorization == BASIC for seen in hostile.seen[1:])  # the registry itself got the login
    assert_clean(outcome, elsewhere)


def test_a_bearer_token_stays_with_the_registry_while_its_https_realm_gets_the_login(rig, servers, tmp_path, ledger):
    elsewhere, tokens = servers(storage), servers(token_service)
    hostile = servers(registry(lambda: elsewhere.url, lambda: f'Bearer realm="{tokens.url}/token",service="hostile"'))
    outcome = run_module(PUSH, push_args(servers, hostile, tmp_path))
    record(ledger, "registry: Bearer token with an upload Location on another origin", not outcome.failed,
           outcome, elsewhere)
    assert not outcome.failed, outcome.result.get("msg")
    assert tokens.seen and all(seen.authorization == BASIC for seen in tokens.seen)  # the token protocol
    assert any(seen.authorization == f"Bearer {TOKEN}" for seen in hostile.seen)
    assert_clean(outcome, elsewhere)


def test_an_upload_location_stepping_down_to_plain_http_is_refused(rig, servers, tmp_path, ledger):
    plain = servers(storage, secure=False)
    hostile = servers(registry(lambda: plain.url))
    outcome = run_module(PUSH, push_args(servers, hostile, tmp_path))
    message = outcome.result.get("msg", "")
    refused = outcome.failed and "from HTTPS to plain HTTP: refused" in message
    record(ledger, "registry: upload Location on plain http (TLS stripped behind a load balancer)",
           refused and not plain.seen, outcome, plain)
    assert refused, message
    assert plain.seen == []  # nothing at all went there, not even without credentials
    assert "X-Signature" not in message
    assert_clean(outcome, plain)


def test_a_plain_http_token_realm_of_a_tls_registry_never_gets_the_login(rig, servers, tmp_path, ledger):
    plain = servers(token_service, secure=False)
    hostile = servers(registry(lambda: hostile.url, lambda: f'Bearer realm="{plain.url}/token",service="hostile"'))
    outcome = run_module(INFO, {"name": f"{hostile.address}/datarobot/pps", "tag": "1.0", "username": USER,
                                "password": PASSWORD, "ca_path": servers.ca_path})
    message = outcome.result.get("msg", "")
    refused = outcome.failed and "plain HTTP" in message and "https:// realm" in message
    refused_untouched(ledger, "registry: Bearer realm on plain http", outcome, refused, plain)


def test_a_challenge_from_another_origin_teaches_nothing(rig, servers, tmp_path, ledger):
    """Blob storage answering 401 with a realm of its own: no login, no token request goes anywhere new."""
    evil_realm = servers(token_service)

    def demanding_storage(server: Server, seen: Seen) -> Reply:
        return 401, {"WWW-Authenticate": f'Bearer realm="{evil_realm.url}/token",service="evil"'}, b""

    elsewhere = servers(demanding_storage)
    hostile = servers(registry(lambda: elsewhere.url))
    outcome = run_module(PUSH, push_args(servers, hostile, tmp_path))
    message = outcome.result.get("msg", "")
    clear = outcome.failed and "where registry" in message and "sent only to the registry itself" in message
    record(ledger, "registry: upload storage answers 401 with its own realm", clear and not evil_realm.seen,
           outcome, elsewhere, evil_realm)
    assert clear, message
    assert evil_realm.seen == []
    assert_clean(outcome, elsewhere, evil_realm)


def test_a_redirect_stepping_down_to_plain_http_is_refused(rig, servers, ledger):
    plain = servers(storage, secure=False)
    hostile = servers(registry(lambda: hostile.url, redirect_manifests=lambda: plain.url))
    outcome = run_module(INFO, {"name": f"{hostile.address}/datarobot/pps", "tag": "1.0", "username": USER,
                                "password": PASSWORD, "ca_path": servers.ca_path})
    message = outcome.result.get("msg", "")
    refused = outcome.failed and "from HTTPS to plain HTTP: refused" in message
    refused_untouched(ledger, "registry: 307 redirect to plain http", outcome, refused, plain)


# --- the DataRobot side --------------------------------------------------------------------------------------------

def datarobot(next_page: Callable[[], str] | None = None) -> Callable[[Server, Seen], Reply]:
    """A DataRobot list endpoint that knows one environment; its first page may link to another origin."""
    def respond(server: Server, seen: Seen) -> Reply:
        if seen.authorization != f"Bearer {API_TOKEN}":
            return json_reply(401, {"message": "Invalid API key"})
        environment = {"id": "65f1c2a9e4b0a1b2c3d4e5f6", "name": "trusted-env", "platform": "other",
                       "description": "", "supportedModelFormats": ["datarobot", "customModel"],
                       "isManagedByManagementAgent": True}
        if urlsplit(seen.path).path == "/api/v2/predictionEnvironments/" and "page" not in parse_qs(
                urlsplit(seen.path).query):
            link = f"{next_page()}/api/v2/predictionEnvironments/?page=2" if next_page else None
            return json_reply(200, {"data": [] if link else [environment], "next": link})
        return json_reply(200, {"data": [environment], "next": None})
    return respond


def environment_args(api: Server, servers, **extra: Any) -> dict[str, Any]:
    return {"name": "trusted-env", "endpoint": f"{api.url}/api/v2", "api_token": API_TOKEN,
            "ca_path": servers.ca_path, "description": "", **extra}


def test_a_next_link_to_another_origin_never_gets_the_api_token(rig, servers, ledger):
    elsewhere = servers(datarobot())
    hostile = servers(datarobot(lambda: elsewhere.url))
    outcome = run_module(ENVIRONMENT, environment_args(hostile, servers))
    message = outcome.result.get("msg", "")
    refused = outcome.failed and "another host, port or scheme: not followed" in message
    refused_untouched(ledger, "DataRobot: next link to another origin", outcome, refused, elsewhere)


def test_a_plain_http_endpoint_is_refused_unless_allowed(rig, servers, ledger):
    plain = servers(datarobot(), secure=False)
    refused = run_module(ENVIRONMENT, environment_args(plain, servers))
    message = refused.result.get("msg", "")
    held = refused.failed and "is plain HTTP" in message and "allow_insecure_http: true" in message
    refused_untouched(ledger, "DataRobot: http:// endpoint without the opt-out", refused, held, plain)
    allowed = run_module(ENVIRONMENT, environment_args(plain, servers, allow_insecure_http=True))
    assert not allowed.failed, allowed.result.get("msg")
    assert allowed.result["id"] == "65f1c2a9e4b0a1b2c3d4e5f6" and allowed.result["changed"] is False


def role_play(tmp_path: Path, role: str, variables: dict[str, Any], tasks_from: str = "main") -> str:
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "the role", "ansible.builtin.include_role": {
            "name": f"datarobot_mlops.management_agent.{role}", "tasks_from": tasks_from}, "vars": variables}]}]
    path = tmp_path / f"{role}.yml"
    path.write_text(json.dumps(play))
    return str(path)


@pytest.mark.parametrize("allowed", [False, True], ids=["refused", "opt-out"])
def test_the_roles_pass_the_opt_out(rig, servers, tmp_path, ledger, allowed):
    plain = servers(datarobot(), secure=False)
    variables = {"mlops_datarobot_endpoint": f"{plain.url}/api/v2", "mlops_datarobot_api_token": API_TOKEN,
                 "mlops_prediction_environment_name": "trusted-env", "mlops_prediction_environment_description": "",
                 "mlops_datarobot_allow_insecure_http": allowed}
    environment = run_playbook(role_play(tmp_path, "prediction_environment", variables))
    agent = run_playbook(role_play(tmp_path, "management_agent", {
        **variables, "mlops_prediction_environment_id": "65f1c2a9e4b0a1b2c3d4e5f6",
        "mlops_outfacing_url_root": "https://mlops.example.com/deployments/",
        "mlops_management_agent_version": "9.2.0"}, tasks_from="checks"))
    if allowed:
        assert environment.returncode == 0, environment.failure()
        assert agent.returncode == 0, agent.failure()
        return
    messages = environment.failure() + " | " + agent.failure()
    held = environment.returncode != 0 and agent.returncode != 0 and messages.count("plain HTTP") == 2 and not plain.seen
    ledger.record("bad_input", "DataRobot: http:// endpoint through the roles", held=held, detail=messages[:300])
    assert held, messages
    assert "mlops_datarobot_allow_insecure_http" in messages
