# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A registry login secret holding a ServiceAccount's token, renewed only when it must be.

OpenShift's integrated registry accepts a ServiceAccount token as password.
The SA's own dockercfg secret has the wrong format for Kaniko, so we write a
kubernetes.io/dockerconfigjson secret. Tokens come from the TokenRequest API
(bounded lifetime) or, where OpenShift still keeps one, the legacy token
secret. A token is replaced when it is missing, for another ServiceAccount (or
an earlier one of the same name), rejected by the API server, or within
`renew_before` of expiring, so re-runs do not churn the secret.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import (
    DynamicApiError,
    TransportError,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import MASK, Masker

LEGACY_TOKEN_ANNOTATION = "openshift.io/token-secret.name"
EXPIRY_ANNOTATION = "datarobot-mlops/token-expires-at"
SOURCE_ANNOTATION = "datarobot-mlops/token-source"


def jwt_claims(token: str) -> dict[str, Any]:
    """The unverified claims of a JWT; {} for anything that is not one (the API server judges validity)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def docker_config(registries: Sequence[str], username: str, token: str) -> dict[str, Any]:
    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    return {"auths": {registry: {"username": username, "password": token, "auth": auth} for registry in registries}}


def secret_docker_config(secret: Mapping[str, Any] | None) -> dict[str, Any]:
    """The decoded .dockerconfigjson of a secret, {} when absent or unreadable."""
    data = ((secret or {}).get("data") or {}).get(".dockerconfigjson")
    if not data:
        return {}
    try:
        decoded = json.loads(base64.b64decode(data))
    except (binascii.Error, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def stored_token(config: Mapping[str, Any], registries: Sequence[str], username: str) -> str | None:
    """The one token the secret gives for exactly these registries and user, else None."""
    auths = config.get("auths") or {}
    if sorted(auths) != sorted(registries):
        return None
    tokens = {entry.get("password") for entry in auths.values() if entry.get("username") == username}
    if len(tokens) != 1 or len([1 for entry in auths.values() if entry.get("username") == username]) != len(auths):
        return None
    return tokens.pop() or None


def account_uid(claims: Mapping[str, Any]) -> str | None:
    """The uid of the ServiceAccount a token was issued to, where its claims say: a TokenRequest's token under
    kubernetes.io.serviceaccount, a legacy token secret's under its own key."""
    bound = claims.get("kubernetes.io")
    account = bound.get("serviceaccount") if isinstance(bound, dict) else None
    uid = account.get("uid") if isinstance(account, dict) else claims.get("kubernetes.io/serviceaccount/service-account.uid")
    return uid if isinstance(uid, str) and uid else None


def expiry(token: str) -> datetime.datetime | None:
    exp = jwt_claims(token).get("exp")
    return datetime.datetime.fromtimestamp(exp, datetime.timezone.utc) if isinstance(exp, (int, float)) else None


@dataclass
class Verdict:
    """Whether the secret needs a new token, and why (for the user and the diff)."""

    renew: bool
    reason: str
    expires_at: datetime.datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


def judge(secret: Mapping[str, Any] | None, *, registries: Sequence[str], username: str, wanted_subject: str,
          now: datetime.datetime, renew_before: datetime.timedelta,
          authenticated: bool | None, wanted_uid: str | None = None) -> Verdict:
    """Decide from the existing secret and the ServiceAccount's uid (`wanted_uid`), plus the API server's TokenReview
    answer when we may ask for one: without it (no cluster-wide create on tokenreviews), a token of a ServiceAccount
    deleted and created again under the same name is still told by its uid."""
    if secret is None:
        return Verdict(True, "the secret does not exist")
    if secret.get("type") != "kubernetes.io/dockerconfigjson":
        return Verdict(True, f"the secret has type {secret.get('type')}, not kubernetes.io/dockerconfigjson")
    token = stored_token(secret_docker_config(secret), registries, username)
    if token is None:
        return Verdict(True, "the secret is not a login for exactly these registries and user")
    claims = jwt_claims(token)
    if claims.get("sub") != wanted_subject:
        return Verdict(True, f"the stored token is not {wanted_subject}'s")
    issued_to = account_uid(claims)
    if wanted_uid and issued_to and issued_to != wanted_uid:
        return Verdict(True, f"the stored token is of an earlier ServiceAccount of that name (uid {issued_to}, now "
                             f"{wanted_uid}): it was deleted and created again")
    expires_at = expiry(token)
    if authenticated is False:
        return Verdict(True, "the API server no longer accepts the stored token", expires_at)
    if expires_at is not None and expires_at - now <= renew_before:
        return Verdict(True, f"the stored token expires at {expires_at.isoformat()}", expires_at)
    return Verdict(False, "the stored token is valid", expires_at)


def legacy_token_secret_name(service_account: Mapping[str, Any], secrets: Sequence[Mapping[str, Any]]) -> str | None:
    """OpenShift < 4.16 keeps a non-expiring token secret, named by its dockercfg secret's annotation."""
    names = {ref.get("name") for ref in (service_account.get("imagePullSecrets") or []) + (service_account.get("secrets") or [])}
    for secret in secrets:
        metadata = secret.get("metadata") or {}
        if metadata.get("name") in names and secret.get("type") == "kubernetes.io/dockercfg":
            name = (metadata.get("annotations") or {}).get(LEGACY_TOKEN_ANNOTATION)
            if name:
                return name
    return None


def masked(config: Mapping[str, Any]) -> dict[str, Any]:
    """The login as the module shows it: password and auth always hidden, like any other secret the entry holds."""
    masker = Masker()
    return {"auths": {registry: {**masker.values(entry), "password": MASK, "auth": MASK}
                      for registry, entry in (config.get("auths") or {}).items()}}


class ServiceAccountTokens:
    """The few API calls behind the secret, on kubernetes.core's client (its errors pass through)."""

    def __init__(self, k8s_client: Any, namespace: str, service_account: str) -> None:
        self._k8s, self.namespace, self.service_account = k8s_client, namespace, service_account

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return self._k8s.resource(kind, "v1").get(name=name, namespace=self.namespace).to_dict()
        except NotFoundError:
            return None

    def account(self) -> dict[str, Any] | None:
        return self._get("ServiceAccount", self.service_account)

    def secret(self, name: str) -> dict[str, Any] | None:
        return self._get("Secret", name)

    def legacy_token(self, account: Mapping[str, Any]) -> str | None:
        refs = [ref.get("name") for ref in (account.get("imagePullSecrets") or []) + (account.get("secrets") or [])]
        secrets = [secret for secret in (self.secret(name) for name in refs if name) if secret]
        name = legacy_token_secret_name(account, secrets)
        token_secret = self.secret(name) if name else None
        data = ((token_secret or {}).get("data") or {}).get("token")
        return base64.b64decode(data).decode() if data else None

    def request_token(self, lifetime_seconds: int) -> str:
        resource = self._k8s.resource("ServiceAccount", "v1").subresources["token"]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": lifetime_seconds}}
        answer = resource.create(body=body, name=self.service_account, namespace=self.namespace).to_dict()
        return answer["status"]["token"]

    def authenticated(self, token: str) -> bool | None:
        """The API server's TokenReview verdict; None when we may not ask (the claims decide then)."""
        from kubernetes.dynamic.exceptions import ForbiddenError

        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        try:
            status = self._k8s.resource("TokenReview", "authentication.k8s.io/v1").create(review).to_dict()["status"]
        except ForbiddenError:
            return None
        return bool(status.get("authenticated")) and (status.get("user") or {}).get("username") == subject(
            self.namespace, self.service_account)

    def write_secret(self, name: str, config: Mapping[str, Any], annotations: Mapping[str, str],
                     existing: Mapping[str, Any] | None) -> None:
        body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": name, "namespace": self.namespace, "annotations": dict(annotations)},
                "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}
        resource = self._k8s.resource("Secret", "v1")
        if existing is None:
            resource.create(body, namespace=self.namespace)
        elif existing.get("type") != body["type"]:  # a secret's type cannot change in place
            refuse_foreign(existing, self.namespace, name)
            self._delete_as_read(resource, name, existing)
            resource.create(body, namespace=self.namespace)
        else:
            metadata = existing.get("metadata") or {}
            body["metadata"]["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
            body["metadata"]["labels"] = metadata.get("labels") or {}
            body["metadata"]["resourceVersion"] = metadata["resourceVersion"]
            resource.replace(body, namespace=self.namespace)

    def _delete_as_read(self, resource: Any, name: str, existing: Mapping[str, Any]) -> None:
        """Delete the secret only as it was read (its uid and resourceVersion): one recreated or changed since is
        someone else's doing, left alone."""
        from kubernetes.dynamic.exceptions import ConflictError

        metadata = existing.get("metadata") or {}
        preconditions = {key: metadata[key] for key in ("uid", "resourceVersion") if metadata.get(key)}
        try:
            resource.delete(name=name, namespace=self.namespace,
                            body={"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions})
        except ConflictError as exc:
            raise TokenSecretError(f"The Secret {self.namespace}/{name} was changed by someone else meanwhile: run "
                                   "again.") from exc


class TokenSecretError(MlopsError):
    """The secret could not be read or written; the message names the objects and what to check."""


def refuse_foreign(existing: Mapping[str, Any] | None, namespace: str, name: str) -> None:
    """A secret of another type is deleted to be rewritten: only one this module wrote (its SOURCE_ANNOTATION), never
    another team's that happens to have the name."""
    if existing is None or existing.get("type") == "kubernetes.io/dockerconfigjson":
        return
    if SOURCE_ANNOTATION not in ((existing.get("metadata") or {}).get("annotations") or {}):
        raise TokenSecretError(f"The Secret {namespace}/{name} exists with type {existing.get('type')} and was not "
                               "made by this collection: name another secret or remove it.")


@dataclass
class Renewal:
    """What the module was asked for: which login secret, for which ServiceAccount, renewed when."""

    namespace: str
    service_account: str
    name: str
    registries: list[str]
    registry_username: str
    token_source: str
    token_lifetime: int
    renew_before: int
    unverified_registries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.registries or not self.registry_username:
            raise TokenSecretError("registries and registry_username must not be empty.")
        stray = [host for host in self.unverified_registries if host not in self.registries]
        if stray:
            raise TokenSecretError(f"unverified_registries names {', '.join(stray)}, which registries does not: list "
                                   "there only hosts of registries.")
        if self.renew_before >= self.token_lifetime:
            raise TokenSecretError(f"renew_before ({self.renew_before} s) must be shorter than token_lifetime "
                                   f"({self.token_lifetime} s), or every run would renew the token.")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Renewal":
        return cls(**{key: params[key] for key in cls.__dataclass_fields__ if params.get(key) is not None})

    def warnings(self) -> list[str]:
        """One warning per registry the login's user reaches without verifying its certificate."""
        return [f"The login in secret {self.namespace}/{self.name} holds a token of ServiceAccount {self.namespace}/"
                f"{self.service_account}, and its user (Kaniko) does not verify the certificate of {host}: anything "
                "that answers for that address receives the token. Verify the registry instead (the openshift role: "
                "drop mlops_openshift_registry_tls: skip to use OpenShift's service CA, or set node_ca or ca_file)."
                for host in self.unverified_registries]


def _iso(moment: datetime.datetime | None) -> str:
    return moment.isoformat() if moment else ""


def renew_registry_secret(connect: Callable[[], Any], want: Renewal, check_mode: bool, diff: bool) -> dict[str, Any]:
    """The module's result; every failure, the client's included, becomes a TokenSecretError saying what to check."""
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException

    where = f"{want.namespace}/{want.service_account}"
    try:
        return _renew(ServiceAccountTokens(connect(), want.namespace, want.service_account), want, check_mode, diff)
    except DynamicApiError as exc:
        raise TokenSecretError(
            f"The API server refused an operation on {where}'s token or the secret {want.namespace}/{want.name}: "
            f"{exc.status} {exc.reason}. The caller needs get on serviceaccounts and secrets, create on "
            "serviceaccounts/token and secrets.") from exc
    except CoreException as exc:
        raise TokenSecretError(f"{str(exc).rstrip('.')}. Check kubeconfig/context (K8S_AUTH_KUBECONFIG).") from exc
    except (TransportError, OSError) as exc:
        raise TokenSecretError(
            f"Cannot reach the API server: {exc}. Check kubeconfig/context (K8S_AUTH_KUBECONFIG).") from exc


def _renew(tokens: ServiceAccountTokens, want: Renewal, check_mode: bool, diff: bool) -> dict[str, Any]:
    """Judge the stored token and, unless it is still good (or this is check mode), write a new one."""
    account = tokens.account()
    if account is None:
        raise TokenSecretError(f"ServiceAccount {want.namespace}/{want.service_account} does not exist: create it "
                               "first (the openshift role does).")
    existing = tokens.secret(want.name)
    refuse_foreign(existing, want.namespace, want.name)
    current = stored_token(secret_docker_config(existing), want.registries, want.registry_username)
    verdict = judge(existing, registries=want.registries, username=want.registry_username,
                    wanted_subject=subject(want.namespace, want.service_account),
                    now=datetime.datetime.now(datetime.timezone.utc),
                    renew_before=datetime.timedelta(seconds=want.renew_before),
                    authenticated=tokens.authenticated(current) if current else None,
                    wanted_uid=(account.get("metadata") or {}).get("uid"))
    result: dict[str, Any] = dict(changed=verdict.renew, reason=verdict.reason, expires_at=_iso(verdict.expires_at),
                                  token_source="existing")
    if verdict.renew and not check_mode:
        expires_at, source = _write_new_token(tokens, account, existing, want)
        result.update(expires_at=_iso(expires_at), token_source=source)
    elif verdict.renew:
        result["expires_at"] = ""
    if diff:
        before = masked(secret_docker_config(existing)) if existing else {}
        after = masked(docker_config(want.registries, want.registry_username, "x")) if verdict.renew else before
        result["diff"] = dict(before={"secret": before, "expires_at": _iso(verdict.expires_at)},
                              after={"secret": after, "expires_at": result["expires_at"] or "(new token)"})
    return result


def _write_new_token(tokens: ServiceAccountTokens, account: Mapping[str, Any], existing: Mapping[str, Any] | None,
                     want: Renewal) -> tuple[datetime.datetime | None, str]:
    """Store a fresh token (the legacy one first when `auto` allows it); its expiry and where it came from."""
    token, source = None, "token_request"
    if want.token_source == "auto":
        token, source = tokens.legacy_token(account), "legacy_secret"
    if not token:
        token, source = tokens.request_token(want.token_lifetime), "token_request"
    expires_at = expiry(token)
    tokens.write_secret(want.name, docker_config(want.registries, want.registry_username, token),
                        {EXPIRY_ANNOTATION: _iso(expires_at) or "never", SOURCE_ANNOTATION: source}, existing)
    return expires_at, source
