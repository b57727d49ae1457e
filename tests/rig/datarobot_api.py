"""The rig's fake DataRobot API (fake_datarobot.py) as a daemon: HTTPS with the rig's CA, a random token."""

from __future__ import annotations

import secrets
import ssl
import sys
from pathlib import Path

from pki import CertificateAuthority
from processes import Daemon, http_status, wait_until


class FakeDataRobot:
    def __init__(self, state: Path, port: int, ca: CertificateAuthority) -> None:
        self.state, self.port, self.ca = state / "datarobot", port, ca
        self.daemon = Daemon("datarobot", state)
        self.token_file = self.state / "token"

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}/api/v2"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        if not self.token_file.exists():
            self.token_file.write_text(secrets.token_urlsafe(32) + "\n")
            self.token_file.chmod(0o600)
        cert, key = self.ca.issue("datarobot", "rig-datarobot", hosts=("127.0.0.1", "localhost"))
        self.daemon.start([sys.executable, str(Path(__file__).with_name("fake_datarobot.py")), f"--port={self.port}",
                           f"--token-file={self.token_file}", f"--state={self.state / 'state.json'}",
                           f"--cert={cert}", f"--key={key}"])
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        wait_until("fake DataRobot API", lambda: http_status(f"{self.endpoint}/version/", context=context) == 401,
                   30, self.daemon.log, self.daemon.running)

    def healthy(self) -> bool:
        return self.daemon.running()

    def stop(self) -> list[str]:
        return [self.daemon.name] if self.daemon.stop() else []
