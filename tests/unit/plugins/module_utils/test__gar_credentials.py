"""Minting Artifact Registry push tokens with google-auth, against a local token endpoint (a real JWT exchange)."""

from __future__ import annotations

import datetime
import json
import socket

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._gar_credentials import (
    GarCredentialsError,
    mint,
)
from google_token_endpoint import AUDIENCE, TokenEndpoint


@pytest.fixture
def endpoint():
    with TokenEndpoint() as served:
        yield served


def test_key_content_is_exchanged_for_a_token(endpoint):
    account = endpoint.account()
    minted = mint(content=endpoint.key_json(account))
    assert len(endpoint.issued) == 1
    claims = endpoint.issued[0]["claims"]
    assert (claims["iss"], claims["aud"]) == (account.email, AUDIENCE)
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert (minted.username, minted.password) == ("oauth2accesstoken", endpoint.issued[0]["token"])
    assert (minted.source, minted.service_account) == ("credentials", account.email)
    expires = datetime.datetime.fromisoformat(minted.expires_at)
    left = expires - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(minutes=55) < left <= datetime.timedelta(hours=1)


def test_every_call_mints_a_new_token(endpoint, tmp_path):
    path = endpoint.write_key(tmp_path, endpoint.account())
    first, second = mint(path=str(path)), mint(path=str(path))
    assert first.password != second.password and first.source == "credentials_file"
    assert len(endpoint.issued) == 2


def test_application_default_credentials_read_the_key_file(endpoint, tmp_path, monkeypatch):
    account = endpoint.account("adc@my-project.iam.gserviceaccount.com")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(endpoint.write_key(tmp_path, account)))
    minted = mint(scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
    assert (minted.source, minted.service_account) == ("application_default", account.email)
    assert endpoint.issued[0]["claims"]["scope"] == "https://www.googleapis.com/auth/devstorage.read_write"
    assert minted.password == endpoint.issued[0]["token"]


def test_a_key_the_endpoint_does_not_know_is_refused(endpoint):
    known = endpoint.account()
    impostor = TokenEndpoint().account(known.email)  # same e-mail and key id format, another private key
    forged = json.loads(endpoint.key_json(known))
    forged["private_key"] = impostor.pem()
    with pytest.raises(GarCredentialsError) as caught:
        mint(content=json.dumps(forged))
    assert endpoint.refused == ["Invalid JWT Signature."]
    message = str(caught.value)
    assert message.startswith(f"Google refused to issue an access token for service account {known.email}")
    assert "Invalid JWT Signature" in message and "not deleted or disabled" in message
    assert "PRIVATE KEY" not in message


def test_unreachable_token_endpoint(endpoint):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = endpoint.key_json(endpoint.account(), token_uri=f"http://127.0.0.1:{port}/token")
    with pytest.raises(GarCredentialsError, match="Could not reach Google's token endpoint .* Check the network"):
        mint(content=key)


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "credentials is not JSON"),
    ("[1]", "is JSON but not a key object"),
    ('{"type": "authorized_user"}', "is of type 'authorized_user', not 'service_account'"),
    ('{"type": "service_account", "client_email": "a@b"}', "lacks private_key, token_uri"),
    ('{"type": "service_account", "client_email": "a@b", "token_uri": "http://x", "private_key": "garbage"}',
     "the private key of a@b cannot be read"),
])
def test_bad_key_content_says_what_is_wrong(content, expected):
    with pytest.raises(GarCredentialsError, match=expected):
        mint(content=content)


def test_missing_key_file(tmp_path):
    with pytest.raises(GarCredentialsError, match=r"Cannot read the service-account key file .*missing.json: No such"):
        mint(path=str(tmp_path / "missing.json"))


def test_no_application_default_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(GarCredentialsError, match="No Google credentials found .* set GOOGLE_APPLICATION_CREDENTIALS"):
        mint()
