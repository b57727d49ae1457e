"""ECR's authorization token decoding."""

from __future__ import annotations

import base64
import datetime

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._ecr_credentials import (
    EcrTokenError,
    credentials_from_token,
)


def _data(token: str, endpoint: str = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com") -> dict:
    return {"authorizationToken": base64.b64encode(token.encode()).decode(), "proxyEndpoint": endpoint,
            "expiresAt": datetime.datetime(2026, 11, 26, 3, tzinfo=datetime.timezone.utc)}


def test_decodes_user_password_and_host():
    creds = credentials_from_token(_data("AWS:pa:ss"))
    assert (creds.registry, creds.username, creds.password) == (
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "AWS", "pa:ss")
    assert creds.expires_at == "2026-11-26T03:00:00+00:00"


@pytest.mark.parametrize("data", [
    {"authorizationToken": "%%%", "proxyEndpoint": "https://x"},
    _data("no-colon"),
    _data("AWS:"),
    _data("AWS:pw", endpoint=""),
    {"proxyEndpoint": "https://x"},
])
def test_malformed_tokens_are_refused(data):
    with pytest.raises(EcrTokenError):
        credentials_from_token(data)
