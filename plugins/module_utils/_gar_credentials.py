# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A Google access token, minted at run time, as the user/password our pushes to Artifact Registry use.

Artifact Registry (and the old Container Registry) take user C(oauth2accesstoken) with an OAuth 2.0 access token
as the password. The token lives about an hour, so it is minted on every run from credentials that do not expire:
a service-account key (its JWT, signed with the key's private key, exchanged at the key's C(token_uri)) or
whatever Application Default Credentials find (C(GOOGLE_APPLICATION_CREDENTIALS), C(gcloud auth
application-default login), the metadata server of a GCE/GKE machine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timezone
from typing import Any

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

try:
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests
    from google.oauth2 import service_account
    HAS_GOOGLE_AUTH = True
except ImportError:
    HAS_GOOGLE_AUTH = False

USERNAME = "oauth2accesstoken"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_KEY_FIELDS = ("client_email", "private_key", "token_uri")


class GarCredentialsError(MlopsError):
    """No access token could be minted; the message says from what, why, and what to check."""


@dataclass(frozen=True)
class GarCredentials:
    username: str
    password: str
    expires_at: str
    source: str
    service_account: str


def _key_info(content: str, origin: str) -> dict[str, Any]:
    """The service-account key JSON, checked for the fields the token exchange needs."""
    try:
        info = json.loads(content)
    except ValueError as exc:
        raise GarCredentialsError(f"{origin} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); give "
                                  "the service-account key as Google's console or `gcloud iam service-accounts keys "
                                  "create` wrote it") from None
    if not isinstance(info, dict):
        raise GarCredentialsError(f"{origin} is JSON but not a key object; give a service-account key file's content")
    kind = info.get("type")
    if kind != "service_account":
        raise GarCredentialsError(
            f"{origin} is of type {kind!r}, not 'service_account': give a service-account key here, or leave "
            "credentials and credentials_file empty so Application Default Credentials are used "
            "(GOOGLE_APPLICATION_CREDENTIALS may name any credentials file gcloud writes)")
    missing = [field for field in _KEY_FIELDS if not info.get(field)]
    if missing:
        raise GarCredentialsError(f"{origin} lacks {', '.join(missing)}; download a new key for the service account")
    return info


def _from_key(content: str, origin: str, scopes: list[str]) -> Any:
    info = _key_info(content, origin)
    try:
        return service_account.Credentials.from_service_account_info(info, scopes=scopes)
    except (ValueError, TypeError, IndexError) as exc:
        raise GarCredentialsError(f"{origin}: the private key of {info['client_email']} cannot be read ({exc}); "
                                  "download a new key for the service account") from None


def _read_key_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except OSError as exc:
        raise GarCredentialsError(f"Cannot read the service-account key file {path}: {exc.strerror}; check "
                                  "credentials_file (it is read on the host that runs the module)") from None
    except UnicodeDecodeError:
        raise GarCredentialsError(f"The service-account key file {path} is not text; give the JSON key file") from None


def _application_default(scopes: list[str]) -> Any:
    try:
        credentials, _project = google.auth.default(scopes=scopes)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise GarCredentialsError(
            f"No Google credentials found ({exc}). Give credentials_file (a service-account key) or set "
            "GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, or run on a GCE/GKE "
            "machine whose service account may push") from None
    return credentials


def load_credentials(content: str | None, path: str | None, scopes: list[str]) -> tuple[Any, str]:
    """google-auth credentials and where they came from: key content, key file, else Application Default."""
    if content:
        return _from_key(content, "credentials", scopes), "credentials"
    if path:
        return _from_key(_read_key_file(path), f"The key file {path}", scopes), "credentials_file"
    return _application_default(scopes), "application_default"


def _expiry(credentials: Any) -> str:
    expiry = getattr(credentials, "expiry", None)
    return expiry.replace(tzinfo=timezone.utc).isoformat() if expiry is not None else ""


def mint(content: str | None = None, path: str | None = None, scopes: list[str] | None = None,
         request: Any = None) -> GarCredentials:
    """A fresh access token from the given key (content or file) or Application Default Credentials."""
    credentials, source = load_credentials(content, path, list(scopes or DEFAULT_SCOPES))
    email = str(getattr(credentials, "service_account_email", "") or "")
    who = f"service account {email}" if email and email != "default" else f"the {source.replace('_', ' ')} credentials"
    try:
        credentials.refresh(request or google.auth.transport.requests.Request())
    except google.auth.exceptions.RefreshError as exc:
        raise GarCredentialsError(
            f"Google refused to issue an access token for {who}: {exc}. Check that the key is not deleted or "
            "disabled and that the service account exists") from None
    except google.auth.exceptions.TransportError as exc:
        raise GarCredentialsError(f"Could not reach Google's token endpoint for {who}: {exc}. Check the network "
                                  "and proxy settings of the host that runs the module") from None
    token = getattr(credentials, "token", None)
    if not token:
        raise GarCredentialsError(f"Google's token endpoint answered without an access token for {who}")
    email = str(getattr(credentials, "service_account_email", "") or "")  # the metadata server's is known now
    return GarCredentials(username=USERNAME, password=str(token), expires_at=_expiry(credentials), source=source,
                          service_account=email if email != "default" else "")
