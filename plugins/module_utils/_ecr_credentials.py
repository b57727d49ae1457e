# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""ECR's authorization token as the user/password our registry client pushes with.

ECR has no long-lived push password: GetAuthorizationToken returns
base64("AWS:<password>") valid for 12 hours, per registry endpoint.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError


class EcrTokenError(MlopsError):
    """ECR answered with something that is not an authorization token."""


@dataclass(frozen=True)
class EcrCredentials:
    registry: str
    username: str
    password: str
    expires_at: str


def credentials_from_token(authorization_data: Mapping[str, Any]) -> EcrCredentials:
    """Decode one entry of GetAuthorizationToken's authorizationData."""
    try:
        decoded = base64.b64decode(authorization_data["authorizationToken"], validate=True).decode("utf-8")
    except (KeyError, binascii.Error, UnicodeDecodeError) as exc:
        raise EcrTokenError(f"ECR returned an authorization token that is not base64 'user:password' ({exc})") from exc
    username, sep, password = decoded.partition(":")
    if not sep or not username or not password:
        raise EcrTokenError("ECR returned an authorization token without the 'user:password' form")
    endpoint = str(authorization_data.get("proxyEndpoint") or "")
    registry = urlsplit(endpoint).netloc or endpoint
    if not registry:
        raise EcrTokenError("ECR returned an authorization token without its registry endpoint (proxyEndpoint)")
    expires = authorization_data.get("expiresAt")
    expires_at = expires.isoformat() if hasattr(expires, "isoformat") else str(expires or "")
    return EcrCredentials(registry=registry, username=username, password=password, expires_at=expires_at)
