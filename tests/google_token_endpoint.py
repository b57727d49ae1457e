"""A local stand-in for Google's OAuth 2.0 token endpoint, and throwaway service-account keys that point at it.

It does what Google's endpoint does with a service-account key's JWT bearer grant (RFC 7523): checks the RS256
signature with the public half of the key it issued, the issuer, audience (Google's token URL), scope and expiry, and
answers with a fresh random access token; anything else gets Google's `invalid_grant` error. google-auth sends the
grant to the key's `token_uri`, so a key naming this server proves the real exchange, signature included.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The audience Google requires in the assertion, wherever the key's token_uri points.
AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass
class ServiceAccount:
    email: str
    key: rsa.RSAPrivateKey
    key_id: str = field(default_factory=lambda: secrets.token_hex(20))

    def pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()


class TokenEndpoint:
    """`with TokenEndpoint() as endpoint:` serves on 127.0.0.1; `endpoint.key_json(...)` makes keys for it."""

    def __init__(self) -> None:
        self.accounts: dict[str, ServiceAccount] = {}
        self.issued: list[dict[str, Any]] = []  # claims and the token of every grant it accepted
        self.refused: list[str] = []
        self.expires_in = 3599
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                status, answer = endpoint.grant(self.path, urllib.parse.parse_qs(body))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def __enter__(self) -> TokenEndpoint:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def account(self, email: str = "gar-push@my-project.iam.gserviceaccount.com") -> ServiceAccount:
        account = ServiceAccount(email, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.accounts[email] = account
        return account

    def key_json(self, account: ServiceAccount, **override: Any) -> str:
        """A service-account key file's content, as Google writes it, with `token_uri` at this endpoint."""
        key = {"type": "service_account", "project_id": "my-project", "private_key_id": account.key_id,
               "private_key": account.pem(), "client_email": account.email, "client_id": "1" * 21,
               "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.url}
        return json.dumps({**key, **override})

    def write_key(self, directory: Path, account: ServiceAccount, **override: Any) -> Path:
        path = directory / "key.json"
        path.write_text(self.key_json(account, **override))
        path.chmod(0o600)
        return path

    def _refuse(self, why: str) -> tuple[int, dict[str, str]]:
        self.refused.append(why)
        return 400, {"error": "invalid_grant", "error_description": why}

    def grant(self, path: str, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if path != "/token" or form.get("grant_type") != [GRANT] or len(form.get("assertion", [])) != 1:
            return self._refuse("Unsupported grant")
        try:
            header_b64, claims_b64, signature_b64 = form["assertion"][0].split(".")
            header, claims = json.loads(_b64(header_b64)), json.loads(_b64(claims_b64))
        except ValueError:
            return self._refuse("Malformed JWT")
        account = self.accounts.get(claims.get("iss", ""))
        if account is None or header.get("alg") != "RS256" or header.get("kid") != account.key_id:
            return self._refuse("Invalid JWT: unknown issuer or key")
        try:
            account.key.public_key().verify(_b64(signature_b64), f"{header_b64}.{claims_b64}".encode(),
                                            padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return self._refuse("Invalid JWT Signature.")
        now = time.time()
        fresh = claims.get("iat", now + 3600) <= now + 60 < claims.get("exp", 0) + 60
        if claims.get("aud") != AUDIENCE or not claims.get("scope") or not fresh:
            return self._refuse("Invalid JWT: audience, scope or time")
        token = "ya29." + secrets.token_urlsafe(48)
        self.issued.append({"claims": claims, "token": token})
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
