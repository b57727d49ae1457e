"""What the client tells the user when a registry (or whatever listens there) answers an error it cannot read.

A real HTTP server on loopback answers every request with one status and body, so the whole path (requests, the
bounded read, the error text) runs as in a module.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_answers import RegistryError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import RegistryClient


class _Fixed(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's `status` and `body` (JSON)."""

    def _answer(self) -> None:
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def registry() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    server.daemon_threads = True
    server.status, server.body = 400, b""  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(server: http.server.ThreadingHTTPServer) -> RegistryClient:
    return RegistryClient(f"127.0.0.1:{server.server_address[1]}", insecure=True, retries=1, timeout=5)


@pytest.mark.parametrize("body, what", [
    (["nope"], "a JSON array"),
    ("nope", "a JSON string"),
    (5, "a JSON number"),
    (None, "JSON null"),
    ({"errors": "nope"}, 'a JSON object whose "errors" is no list of codes and messages'),
    ({"errors": ["nope"]}, 'a JSON object whose "errors" is no list of codes and messages'),
])
def test_json_that_is_no_error_object_says_what_came_back_and_what_to_check(registry, body, what):
    registry.body = json.dumps(body).encode()
    with pytest.raises(RegistryError) as raised:
        _client(registry).check_login()
    message = str(raised.value)
    assert message.startswith(f"Registry 127.0.0.1:{registry.server_address[1]} answered 400 to GET /v2/: ")
    assert what in message and json.dumps(body) in message
    assert "check that the registry's host, port and path lead to the registry" in message


def test_what_came_back_is_quoted_short(registry):
    registry.body = json.dumps(["x" * 1000]).encode()
    with pytest.raises(RegistryError) as raised:
        _client(registry).check_login()
    assert "x" * 200 not in str(raised.value) and "x" * 150 in str(raised.value)


@pytest.mark.parametrize("status", [400, 500])
def test_the_registrys_own_errors_are_still_quoted(registry, status):
    registry.status = status
    errors = [{"code": "UNSUPPORTED", "message": "no"}, {"code": "DENIED", "message": "go away"}]
    registry.body = json.dumps({"errors": errors}).encode()
    with pytest.raises(RegistryError) as raised:
        _client(registry).check_login()
    assert str(raised.value).endswith(f"answered {status} to GET /v2/: UNSUPPORTED: no; DENIED: go away")


def test_an_object_without_errors_is_quoted_as_it_came(registry):
    registry.body = b'{"detail": "maintenance"}'
    with pytest.raises(RegistryError, match=r'answered 400 to GET /v2/: \{"detail": "maintenance"\}$'):
        _client(registry).check_login()


def test_a_json_array_in_a_manifest_error_is_a_registry_error(registry):
    """pps_image and registry_image_info read manifests too: the same answer there is as clear."""
    registry.body = b'["nope"]'
    with pytest.raises(RegistryError, match=r'answered 400 to GET /v2/app/manifests/v1: a JSON array \(\["nope"\]\), '):
        _client(registry).manifest("app", "v1")
