"""A Docker-compatible API without a Docker engine: podman's API service.

The docker SDK path of the collection (`method: daemon`, the seed's
`docker load/tag/push`) runs against it for real. Storage stays under .rig;
the rig's CA is trusted for the TLS registries, and the HTTP registry is declared
insecure, the way users configure a Docker daemon.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from processes import Daemon, RigError, wait_until

PODMAN = shutil.which("podman") or "/usr/bin/podman"
CERTS_D = Path("/etc/containers/certs.d")


def _ping(socket_path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(str(socket_path))
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        status_line = sock.recv(64).split(b"\r\n", 1)[0]
        return status_line.split(b" ")[1:2] == [b"200"]


class DockerApi:
    def __init__(self, state: Path, ca_cert: Path, secure_registries: tuple[str, ...], insecure_registry: str) -> None:
        self.state = state / "podman"
        self.daemon = Daemon("podman", state)
        self.socket = self.state / "podman.sock"
        self.ca_cert, self.secure_registries, self.insecure_registry = ca_cert, secure_registries, insecure_registry

    @property
    def trust_dirs(self) -> list[Path]:
        return [CERTS_D / registry for registry in self.secure_registries]

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def trust(self) -> None:
        """containers/image reads per-registry CAs only from this system path (a token realm is trusted through
        its registry's directory too: the same client fetches the token)."""
        for trust_dir in self.trust_dirs:
            trust_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.ca_cert, trust_dir / "ca.crt")

    def start(self) -> None:
        if not Path(PODMAN).exists():
            raise RigError("podman is missing: apt-get install podman")
        self.state.mkdir(parents=True, exist_ok=True)
        self.trust()
        registries = self.state / "registries.conf"
        registries.write_text(
            'unqualified-search-registries = []\n\n'
            f'[[registry]]\nlocation = "{self.insecure_registry}"\ninsecure = true\n')
        self.daemon.start(
            [PODMAN, f"--root={self.state / 'storage'}", f"--runroot={self.state / 'run'}",
             "--storage-driver=vfs", "--cgroup-manager=cgroupfs", "--events-backend=file",
             f"--tmpdir={self.state / 'tmp'}", "system", "service", "--time=0", self.docker_host],
            env={"CONTAINERS_REGISTRIES_CONF": str(registries), "XDG_RUNTIME_DIR": str(self.state / "xdg")})
        wait_until("podman API service", lambda: _ping(self.socket), 60, self.daemon.log, self.daemon.running)

    def healthy(self) -> bool:
        try:
            return self.daemon.running() and _ping(self.socket)
        except OSError:
            return False

    def stop(self) -> list[str]:
        stopped = [self.daemon.name] if self.daemon.stop() else []
        for trust_dir in self.trust_dirs:
            shutil.rmtree(trust_dir, ignore_errors=True)
        self.socket.unlink(missing_ok=True)
        return stopped
