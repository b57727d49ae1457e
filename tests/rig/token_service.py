"""The token service of the rig's token-auth registry, as Docker Hub, GitLab, ACR and Harbor run one.

GET /token?service=...&scope=repository:<name>:<actions> with Basic credentials (checked against a bcrypt
htpasswd file with `htpasswd -v`) answers {"token": ..., "access_token": ...}: an ES256 JWT naming the granted
access, signed by a key whose certificate the registry trusts (its rootcertbundle). Wrong credentials: 401.

Test hooks (loopback only, like the fake DataRobot's): GET /_fake/requests lists what the service was asked
({"scopes": [...], "authorized": bool}); POST /_fake/hidden {"repositories": [...]} makes it grant nothing on
those repositories (gone, or not ours), POST /_fake/read-only {"repositories": [...]} only pull on them (a login that
may read but not write there); POST /_fake/reset forgets all of it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import ssl
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

SERVICE, ISSUER = "rig-token-registry", "rig-token-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class State:
    def __init__(self, htpasswd: Path, signer_key: Path, signer_cert: Path) -> None:
        self.htpasswd = htpasswd
        self.key = serialization.load_pem_private_key(signer_key.read_bytes(), password=None)
        self.cert = x509.load_pem_x509_certificate(signer_cert.read_bytes())
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.hidden: set[str] = set()
        self.read_only: set[str] = set()
        self.verdicts: dict[str, str | None] = {}  # sha256 of an Authorization header -> user, None when refused

    def user(self, authorization: str) -> str | None:
        """The htpasswd user whose Basic credentials these are, else None (each header checked once)."""
        digest = hashlib.sha256(authorization.encode()).hexdigest()
        with self.lock:
            if digest in self.verdicts:
                return self.verdicts[digest]
        user = None
        if authorization.startswith("Basic "):
            try:
                name, password = base64.b64decode(authorization[6:]).decode().split(":", 1)
            except (ValueError, UnicodeDecodeError):
                name, password = "", ""
            if name and ":" not in name:
                check = subprocess.run(["htpasswd", "-vi", str(self.htpasswd), name], input=password,
                                       capture_output=True, text=True, check=False, timeout=30)
                user = name if check.returncode == 0 else None
        with self.lock:
            self.verdicts[digest] = user
        return user

    def token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) != 3 or parts[1] in self.hidden:
                continue
            actions = [action for action in parts[2].split(",") if parts[1] not in self.read_only or action == "pull"]
            if actions:
                access.append({"type": parts[0], "name": parts[1], "actions": actions})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urllib.parse.urlparse(self.path)
            if url.path == "/_fake/requests":
                with state.lock:
                    return self._json(200, state.requests)
            if url.path != "/token":
                return self._json(404, {"errors": [{"code": "NOT_FOUND"}]})
            scopes = urllib.parse.parse_qs(url.query).get("scope", [])
            user = state.user(self.headers.get("Authorization", ""))
            with state.lock:
                state.requests.append({"scopes": scopes, "authorized": user is not None})
            if user is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Basic realm="{SERVICE}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            token = state.token(user, scopes)
            return self._json(200, {"token": token, "access_token": token, "expires_in": 300})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                if self.path == "/_fake/hidden":
                    state.hidden.update(body.get("repositories", []))
                elif self.path == "/_fake/read-only":
                    state.read_only.update(body.get("repositories", []))
                elif self.path == "/_fake/reset":
                    state.requests.clear()
                    state.hidden.clear()
                    state.read_only.clear()
                else:
                    return self._json(404, {"errors": [{"code": "NOT_FOUND"}]})
            return self._json(200, {})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--htpasswd", type=Path, required=True)
    parser.add_argument("--signer-key", type=Path, required=True)
    parser.add_argument("--signer-cert", type=Path, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port),
                                 make_handler(State(args.htpasswd, args.signer_key, args.signer_cert)))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
