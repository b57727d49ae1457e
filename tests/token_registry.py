"""A registry that wants Docker token auth, as Docker Hub, ACR and GCR do: distribution + a tiny token service.

The token service checks Basic credentials and issues ES256 JWTs naming the
granted access; the registry trusts the signing certificate (x5c header)
through its rootcertbundle. Used to test the Bearer flow for real.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent / "rig"))
from processes import free_port  # noqa: E402
from registry import RegistryProcess  # noqa: E402

SERVICE, ISSUER = "rig-token-registry", "rig-token-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenRegistry:
    def __init__(self, workdir: Path, username: str = "tokenuser", password: str | None = None) -> None:
        self.workdir, self.username = workdir, username
        self.password = password or secrets.token_urlsafe(12)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.requests: list[dict] = []  # what the token service was asked
        self.hidden: set[str] = set()  # repositories the token service grants nothing on (gone, or not ours)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.registry: RegistryProcess | None = None
        self.server: ThreadingHTTPServer | None = None

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            if name in self.hidden:
                continue
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": self.username, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def __enter__(self) -> "TokenRegistry":
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                auth = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
                registry.requests.append({"scopes": query.get("scope", []), "authorized": auth == expected})
                if auth != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": registry.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        bundle = self.workdir / "token-signer.crt"
        bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        config = self.workdir / "token-registry.json"
        config.write_text(json.dumps({
            "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "token-registry-data")}},
            "http": {"addr": self.address},
            "auth": {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER,
                               "rootcertbundle": str(bundle)}},
        }))
        self.registry = RegistryProcess(config, self.address, ready_status=401).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.registry:
            self.registry.__exit__()
        if self.server:
            self.server.shutdown()
