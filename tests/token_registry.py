"""Tests' handle on the rig's token-auth registry (tests/rig/token_auth_registry.py), as Docker Hub, GitLab and
ACR work: /v2/ answers a Bearer challenge and the token service checks Basic credentials and issues JWTs.

Built from the rig's environment (`RIG_TOKEN_REGISTRY*`, `RIG_CA`); what the token service was asked and which
repositories it refuses go through its test hooks (`/_fake/...`).
"""

from __future__ import annotations

import urllib.parse

import requests


class TokenRegistry:
    def __init__(self, rig: dict[str, str]) -> None:
        self.address = rig["RIG_TOKEN_REGISTRY"]
        self.username = rig["RIG_TOKEN_REGISTRY_USER"]
        self.password = rig["RIG_TOKEN_REGISTRY_PASSWORD"]
        self.ca_path = rig["RIG_CA"]
        realm = urllib.parse.urlsplit(rig["RIG_TOKEN_REGISTRY_REALM"])
        self.realm, self.service_base = rig["RIG_TOKEN_REGISTRY_REALM"], f"{realm.scheme}://{realm.netloc}"

    def _hook(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        answer = requests.request(method, f"{self.service_base}/_fake/{path}", json=body, verify=self.ca_path,
                                  timeout=30)
        answer.raise_for_status()
        return answer

    @property
    def requests(self) -> list[dict]:
        """What the token service was asked since the last reset: [{"scopes": [...], "authorized": bool}]."""
        return self._hook("GET", "requests").json()

    def hide(self, repository: str) -> None:
        """The token service grants nothing on `repository` any more (deleted, or not ours)."""
        self._hook("POST", "hidden", {"repositories": [repository]})

    def read_only(self, repository: str) -> None:
        """The token service grants only pull on `repository` (a login that may read there but not push)."""
        self._hook("POST", "read-only", {"repositories": [repository]})

    def reset(self) -> "TokenRegistry":
        self._hook("POST", "reset", {})
        return self

    def token(self, scope: str) -> str:
        """A pull/push token for `scope` (e.g. repository:x/y:pull), for a test's own requests to the registry."""
        answer = requests.get(self.realm, params={"service": "rig-token-registry", "scope": scope},
                              auth=(self.username, self.password), verify=self.ca_path, timeout=30)
        answer.raise_for_status()
        return answer.json()["token"]

    def get(self, path: str, scope: str, **kwargs) -> requests.Response:
        """GET https://<registry>/v2/<path> with a token for `scope`."""
        headers = {"Authorization": f"Bearer {self.token(scope)}", **kwargs.pop("headers", {})}
        return requests.get(f"https://{self.address}/v2/{path}", headers=headers, verify=self.ca_path, timeout=30,
                            **kwargs)
