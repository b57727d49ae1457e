"""The rig's token-auth registry: Debian's docker-registry wanting Docker token (Bearer) auth, and its token
service (token_service.py), both over TLS from the rig's CA.

Most registries users push to work this way (Docker Hub, GitLab, ACR, Harbor): /v2/ answers 401 with a
`Bearer realm=...` challenge, the client fetches a JWT from the realm with its Basic credentials, and sends
that. The token service has its own htpasswd user (`tokenuser`, random password in .rig, 0600); the JWT
signing key and its certificate stay in .rig so that restarts keep trust.
"""

from __future__ import annotations

import datetime
import json
import secrets
import shutil
import ssl
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki import CertificateAuthority
from processes import Daemon, RigError, http_status, wait_until
from registry import REGISTRY_BINARY, htpasswd_login

USER = "tokenuser"
SERVICE, ISSUER = "rig-token-registry", "rig-token-issuer"


class TokenAuthRegistry:
    def __init__(self, state: Path, ports: dict[str, int], ca: CertificateAuthority) -> None:
        self.state, self.ports, self.ca = state / "token-registry", ports, ca
        self.registry = Daemon("registry-token", state)
        self.service = Daemon("token-service", state)
        self.password_file = self.state / "password"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['token_registry']}"

    @property
    def realm(self) -> str:
        return f"https://127.0.0.1:{self.ports['token_service']}/token"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def _htpasswd(self) -> Path:
        return htpasswd_login(self.state, USER)

    def _signer(self) -> tuple[Path, Path]:
        """The JWT signing key and its self-signed certificate (the registry's rootcertbundle), made once."""
        key_path, cert_path = self.state / "signer.key", self.state / "signer.crt"
        if key_path.exists() and cert_path.exists():
            return key_path, cert_path
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path

    def _registry_config(self, bundle: Path, cert: Path, key: Path) -> Path:
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.state / "data")}, "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.address, "secret": secrets.token_hex(16),
                     "headers": {"X-Content-Type-Options": ["nosniff"]},
                     "tls": {"certificate": str(cert), "key": str(key)}},
            "auth": {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                               "rootcertbundle": str(bundle)}},
        }
        path = self.state / "registry.json"  # YAML is a superset of JSON
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> None:
        if not Path(REGISTRY_BINARY).exists():
            raise RigError("docker-registry is missing: apt-get install docker-registry")
        if not shutil.which("htpasswd"):
            raise RigError("htpasswd is missing: apt-get install apache2-utils")
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o700)
        htpasswd = self._htpasswd()
        signer_key, signer_cert = self._signer()
        cert, key = self.ca.issue("token-registry", "rig-token-registry", hosts=("127.0.0.1", "localhost"))
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        self.service.start([sys.executable, str(Path(__file__).with_name("token_service.py")),
                            f"--port={self.ports['token_service']}", f"--htpasswd={htpasswd}",
                            f"--signer-key={signer_key}", f"--signer-cert={signer_cert}", f"--cert={cert}",
                            f"--key={key}"])
        wait_until("token service", lambda: http_status(self.realm, context=context) == 401, 30, self.service.log,
                   self.service.running)
        self.registry.start([REGISTRY_BINARY, "serve", str(self._registry_config(signer_cert, cert, key))])
        wait_until("token-auth registry", lambda: http_status(f"https://{self.address}/v2/", context=context) == 401,
                   30, self.registry.log, self.registry.running)

    def healthy(self) -> bool:
        return self.registry.running() and self.service.running()

    def stop(self) -> list[str]:
        return [d.name for d in (self.registry, self.service) if d.stop()]
