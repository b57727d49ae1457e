"""Which token realm a plain-HTTP (insecure) registry's password may go to, seen on the wire.

Two loopback servers: the registry (plain HTTP on 127.0.0.1, as a user marks it `insecure`) and a token service
that records the Authorization it is sent, on the registry's own host (another port) or on another host (127.0.0.2,
which loopback answers too).
"""

from __future__ import annotations

import base64
import http.server
import threading
from typing import Iterator

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import Credentials
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (
    RegistryClient,
    RegistryError,
)

PASSWORD = "insecure-registry-password-1"


class _Recording(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.seen.append(self.headers.get("Authorization") or "")
        body = self.server.answer(self)
        self.end_headers()
        self.wfile.write(body)


def _serve(host: str, answer) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer((host, 0), _Recording)
    server.daemon_threads, server.seen, server.answer = True, [], answer
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _token(handler) -> bytes:
    handler.send_response(200)
    return b'{"token": "t0k"}'


@pytest.fixture
def servers() -> Iterator[dict]:
    started: dict = {}

    def registry(handler) -> bytes:
        if (handler.headers.get("Authorization") or "").startswith("Bearer "):
            handler.send_response(200)
            return b"{}"
        handler.send_response(401)
        handler.send_header("WWW-Authenticate", f'Bearer realm="{started["realm"]}",service="reg"')
        return b"{}"

    started["registry"] = _serve("127.0.0.1", registry)
    yield started
    for name in ("registry", "token"):
        if name in started:
            started[name].shutdown()
            started[name].server_close()


def _login(servers: dict, token_host: str) -> RegistryClient:
    servers["token"] = _serve(token_host, _token)
    servers["realm"] = f"http://{token_host}:{servers['token'].server_address[1]}/token"
    client = RegistryClient(f"127.0.0.1:{servers['registry'].server_address[1]}", Credentials("alice", PASSWORD),
                            insecure=True, retries=1, timeout=10)
    return client


def test_an_insecure_registry_may_send_its_login_to_a_plain_http_realm_on_its_own_host(servers):
    client = _login(servers, "127.0.0.1")
    assert client.check_login() == "bearer"
    assert servers["token"].seen == ["Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()]


def test_an_insecure_registry_never_sends_its_login_to_a_plain_http_realm_on_another_host(servers):
    client = _login(servers, "127.0.0.2")
    with pytest.raises(RegistryError, match=r"asks for tokens from http://127\.0\.0\.2:\d+/token, which is plain HTTP "
                                            r"on 127\.0\.0\.2, not the registry's own host 127\.0\.0\.1"):
        client.check_login()
    assert servers["token"].seen == []  # not asked at all, with or without the password
