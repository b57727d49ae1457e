"""Two Docker v2 registries (Debian's docker-registry, i.e. distribution):
one with TLS from the rig's CA and htpasswd (bcrypt) auth, one plain HTTP.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
from pathlib import Path

from pki import CertificateAuthority
from processes import Daemon, RigError, http_status, wait_until

REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
USER = "rig"


def htpasswd_login(state: Path, user: str) -> Path:
    """A bcrypt htpasswd file in `state` for `user`, whose random password is kept beside it (`password`, 0600);
    both made once, and the htpasswd made again when the password is new."""
    password_file, htpasswd = state / "password", state / "htpasswd"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(18) + "\n")
        password_file.chmod(0o600)
        htpasswd.unlink(missing_ok=True)
    if not htpasswd.exists():
        result = subprocess.run(["htpasswd", "-iBc", str(htpasswd), user], input=password_file.read_text().strip(),
                                capture_output=True, text=True, check=False)
        if result.returncode:
            raise RigError(f"htpasswd failed: {result.stderr.strip()} (apt-get install apache2-utils)")
        htpasswd.chmod(0o600)
    return htpasswd


class RegistryProcess:
    """A throw-away docker-registry serving `config` on `address`, for tests and benchmarks (not pid-filed)."""

    def __init__(self, config: Path, address: str, ready_status: int, binary: str | None = None) -> None:
        self.config, self.address, self.ready_status = config, address, ready_status
        self.binary = binary or REGISTRY_BINARY
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "RegistryProcess":
        self.process = subprocess.Popen([self.binary, "serve", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until(f"registry on {self.address}",
                   lambda: http_status(f"http://{self.address}/v2/") == self.ready_status, 30)
        return self

    def __exit__(self, *exc) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=30)


class Registries:
    def __init__(self, state: Path, ports: dict[str, int], ca: CertificateAuthority) -> None:
        self.state, self.ports, self.ca = state / "registry", ports, ca
        self.secure = Daemon("registry-tls", state)
        self.insecure = Daemon("registry-http", state)
        self.password_file = self.state / "password"

    @property
    def secure_address(self) -> str:
        return f"127.0.0.1:{self.ports['registry']}"

    @property
    def insecure_address(self) -> str:
        return f"127.0.0.1:{self.ports['registry_http']}"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def _credentials(self) -> Path:
        """bcrypt htpasswd for user `rig` with a random password kept in .rig (0600)."""
        return htpasswd_login(self.state, USER)

    def _config(self, name: str, port: int, tls: bool) -> Path:
        config: dict = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.state / name)}, "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        if tls:
            cert, key = self.ca.issue("registry", "rig-registry", hosts=("127.0.0.1", "localhost"))
            config["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
            config["auth"] = {"htpasswd": {"realm": "rig-registry", "path": str(self._credentials())}}
        path = self.state / f"{name}.json"  # YAML is a superset of JSON
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> None:
        if not Path(REGISTRY_BINARY).exists():
            raise RigError("docker-registry is missing: apt-get install docker-registry")
        self.state.mkdir(parents=True, exist_ok=True)
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        for daemon, port_key, tls in ((self.secure, "registry", True), (self.insecure, "registry_http", False)):
            config = self._config(daemon.name, self.ports[port_key], tls)
            daemon.start([REGISTRY_BINARY, "serve", str(config)])
            scheme = "https" if tls else "http"
            url = f"{scheme}://127.0.0.1:{self.ports[port_key]}/v2/"
            expected = 401 if tls else 200
            wait_until(daemon.name, lambda url=url, expected=expected, tls=tls:
                       http_status(url, context=context if tls else None) == expected, 30, daemon.log, daemon.running)

    def healthy(self) -> bool:
        return self.secure.running() and self.insecure.running()

    def stop(self) -> list[str]:
        return [d.name for d in (self.secure, self.insecure) if d.stop()]
