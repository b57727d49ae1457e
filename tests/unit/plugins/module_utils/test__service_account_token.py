"""When a ServiceAccount token login secret must be rewritten."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._service_account_token import (
    docker_config,
    jwt_claims,
    judge,
    legacy_token_secret_name,
    masked,
)

NOW = datetime.datetime(2026, 11, 25, tzinfo=datetime.timezone.utc)
SUBJECT = "system:serviceaccount:ns:builder"
REGISTRY = "image-registry.openshift-image-registry.svc:5000"


def jwt(**claims) -> str:
    def part(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def secret(token: str, registries=(REGISTRY,), username="serviceaccount", kind="kubernetes.io/dockerconfigjson"):
    data = base64.b64encode(json.dumps(docker_config(list(registries), username, token)).encode()).decode()
    return {"type": kind, "data": {".dockerconfigjson": data}}


UID = "6a1f0e9c-0000-4000-8000-000000000001"
EARLIER_UID = "6a1f0e9c-0000-4000-8000-000000000000"


def verdict(existing, authenticated=True, registries=(REGISTRY,), uid=UID):
    return judge(existing, registries=list(registries), username="serviceaccount", wanted_subject=SUBJECT, now=NOW,
                 renew_before=datetime.timedelta(days=30), authenticated=authenticated, wanted_uid=uid)


def bound(uid):
    """A TokenRequest token's claims name the ServiceAccount's uid under kubernetes.io."""
    return {"kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "builder", "uid": uid}}}


LEGACY_UID_CLAIM = "kubernetes.io/serviceaccount/service-account.uid"


def in_days(days: float) -> int:
    return int((NOW + datetime.timedelta(days=days)).timestamp())


def test_valid_token_is_kept():
    result = verdict(secret(jwt(sub=SUBJECT, exp=in_days(60))))
    assert not result.renew and result.expires_at == NOW + datetime.timedelta(days=60)


def test_non_expiring_legacy_token_is_kept():
    assert not verdict(secret(jwt(sub=SUBJECT))).renew


@pytest.mark.parametrize("existing, authenticated, reason", [
    (None, None, "does not exist"),
    (secret(jwt(sub=SUBJECT, exp=in_days(60)), kind="kubernetes.io/dockercfg"), True, "has type"),
    (secret(jwt(sub=SUBJECT, exp=in_days(60)), registries=("other:5000",)), True, "exactly these registries"),
    (secret(jwt(sub=SUBJECT, exp=in_days(60)), username=""), True, "exactly these registries"),
    (secret(jwt(sub="system:serviceaccount:ns:default", exp=in_days(60))), True, "is not system:serviceaccount"),
    (secret("not-a-jwt"), True, "is not system:serviceaccount"),
    (secret(jwt(sub=SUBJECT, exp=in_days(29))), True, "expires at"),
    (secret(jwt(sub=SUBJECT, exp=in_days(-1))), True, "expires at"),
    (secret(jwt(sub=SUBJECT, exp=in_days(60))), False, "no longer accepts"),
    # TokenReview forbidden (None): the uid the token names tells a ServiceAccount created again
    (secret(jwt(sub=SUBJECT, exp=in_days(60), **bound(EARLIER_UID))), None, "deleted and created again"),
    (secret(jwt(sub=SUBJECT, **{LEGACY_UID_CLAIM: EARLIER_UID})), None, "deleted and created again"),
])
def test_renewal_reasons(existing, authenticated, reason):
    result = verdict(existing, authenticated)
    assert result.renew and reason in result.reason


@pytest.mark.parametrize("claims, uid", [
    (bound(UID), UID),  # the token of this ServiceAccount
    ({}, UID),  # a token that names no uid: the other checks decide
    (bound(EARLIER_UID), None),  # a ServiceAccount whose uid is not known
    ({"kubernetes.io": "odd", LEGACY_UID_CLAIM: UID}, UID),
    ({LEGACY_UID_CLAIM: ["not", "a", "uid"]}, UID),
])
def test_a_token_is_kept_unless_it_names_another_uid(claims, uid):
    result = verdict(secret(jwt(sub=SUBJECT, exp=in_days(60), **claims)), authenticated=None, uid=uid)
    assert not result.renew, result.reason


def test_claims_of_garbage_are_empty():
    assert jwt_claims("a.b") == {} and jwt_claims("a.%%%.c") == {} and jwt_claims("a.bnVsbA.c") == {}


def test_legacy_token_secret_found_through_the_dockercfg_annotation():
    account = {"imagePullSecrets": [{"name": "b-dockercfg-x"}], "secrets": [{"name": "b-token-x"}]}
    secrets = [{"metadata": {"name": "b-token-x"}, "type": "kubernetes.io/service-account-token"},
               {"metadata": {"name": "b-dockercfg-x", "annotations": {"openshift.io/token-secret.name": "b-token-x"}},
                "type": "kubernetes.io/dockercfg"}]
    assert legacy_token_secret_name(account, secrets) == "b-token-x"
    assert legacy_token_secret_name({"imagePullSecrets": []}, secrets) is None


def test_masking_hides_password_and_auth():
    shown = json.dumps(masked(docker_config([REGISTRY], "u", "s3cret")))
    assert "s3cret" not in shown and base64.b64encode(b"u:s3cret").decode() not in shown


class FakeTokens:
    """The API calls behind the secret, answered from memory."""

    def __init__(self, account=None, stored=None, failure=None):
        self.account_, self.stored, self.failure, self.written = account, stored, failure, None
        self.requested = None

    def account(self):
        if self.failure:
            raise self.failure
        return self.account_

    def secret(self, name):
        return self.stored

    def authenticated(self, token):
        return True

    def legacy_token(self, account):
        return None

    def request_token(self, lifetime):
        self.requested = jwt(sub=SUBJECT, exp=in_days(90))
        return self.requested

    def write_secret(self, name, config, annotations, existing):
        self.written = (name, annotations)
        self.written_config = config


def renew(fake, monkeypatch, check_mode=False, diff=False):
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _service_account_token as sat

    monkeypatch.setattr(sat, "ServiceAccountTokens", lambda client, namespace, account: fake)
    want = sat.Renewal(namespace="ns", service_account="builder", name="registry-creds", registries=[REGISTRY],
                       registry_username="serviceaccount", token_source="auto", token_lifetime=7776000, renew_before=2592000)
    return sat.renew_registry_secret(lambda: None, want, check_mode, diff)


def test_renewal_writes_a_requested_token_when_the_secret_is_missing(monkeypatch):
    """The rewritten secret carries the requested token for the configured registries and username."""
    fake = FakeTokens(account={"metadata": {"name": "builder"}})
    result = renew(fake, monkeypatch, diff=True)
    assert result["changed"] and result["token_source"] == "token_request"
    assert fake.written[0] == "registry-creds" and "diff" in result
    # the secret written must log in to the wanted registry as the wanted user with the token just requested
    assert fake.requested is not None
    assert fake.written_config == docker_config([REGISTRY], "serviceaccount", fake.requested)


def test_renewal_in_check_mode_writes_nothing(monkeypatch):
    fake = FakeTokens(account={"metadata": {"name": "builder"}})
    result = renew(fake, monkeypatch, check_mode=True)
    assert result["changed"] and result["expires_at"] == "" and fake.written is None


def test_renewal_failures_are_one_error_class_with_the_same_messages(monkeypatch):
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

    with pytest.raises(MlopsError, match="ServiceAccount ns/builder does not exist: create it first"):
        renew(FakeTokens(), monkeypatch)
    with pytest.raises(MlopsError, match="Cannot reach the API server: refused. Check kubeconfig/context"):
        renew(FakeTokens(failure=ConnectionRefusedError("refused")), monkeypatch)


def _params(**changes):
    return {"namespace": "ns", "service_account": "builder", "name": "registry-creds", "registries": [REGISTRY],
            "registry_username": "serviceaccount", "token_source": "auto", "token_lifetime": 7776000, "renew_before": 2592000,
            "api_key": None, **changes}


def test_an_unverified_registry_brings_one_warning_naming_it_the_account_and_the_fix():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _service_account_token as sat

    assert sat.Renewal.from_params(_params(unverified_registries=[])).warnings() == []
    [warning] = sat.Renewal.from_params(_params(unverified_registries=[REGISTRY])).warnings()
    assert f"does not verify the certificate of {REGISTRY}: anything that answers for that address receives" in warning
    assert "ServiceAccount ns/builder" in warning and "secret ns/registry-creds" in warning
    assert "mlops_openshift_registry_tls: skip" in warning


def test_an_unverified_registry_must_be_one_of_the_registries():
    import pytest

    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _service_account_token as sat

    with pytest.raises(sat.TokenSecretError, match="unverified_registries names other.example, which registries"):
        sat.Renewal.from_params(_params(unverified_registries=["other.example"]))


def foreign(kind="Opaque", annotations=None):
    """A Secret of that name and another type, as another team (or this module, with its annotations) left it."""
    return {"type": kind, "data": {"token": "b3RoZXI="},
            "metadata": {"name": "registry-creds", "namespace": "ns", "uid": "uid-1", "resourceVersion": "5",
                         "annotations": annotations or {}}}


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_secret_of_another_type_not_made_here_is_refused_before_a_token_is_asked_for(monkeypatch, check_mode):
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._service_account_token import (
        TokenSecretError,
    )

    fake = FakeTokens(account={"metadata": {"name": "builder"}}, stored=foreign())
    with pytest.raises(TokenSecretError, match="The Secret ns/registry-creds exists with type Opaque and was not made "
                                               "by this collection: name another secret or remove it"):
        renew(fake, monkeypatch, check_mode=check_mode)
    assert fake.requested is None and fake.written is None


class SecretEndpoint:
    """The Secret endpoint of kubernetes.core's client: records each call, answers 409 to a delete when told to."""

    def __init__(self, conflict: bool = False) -> None:
        self.conflict, self.calls = conflict, []

    def delete(self, **request):
        from kubernetes.client.rest import ApiException
        from kubernetes.dynamic.exceptions import api_exception

        self.calls.append(("delete", request))
        if self.conflict:
            raise api_exception(ApiException(status=409, reason="Conflict"))

    def create(self, body, **request):
        self.calls.append(("create", body["metadata"]["name"]))

    def replace(self, body, **request):
        self.calls.append(("replace", body["metadata"]["name"]))


def write_over(existing, endpoint: SecretEndpoint) -> None:
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _service_account_token as sat

    client = type("Client", (), {"resource": lambda self, kind, api_version: endpoint})()
    sat.ServiceAccountTokens(client, "ns", "builder").write_secret(
        "registry-creds", docker_config([REGISTRY], "serviceaccount", "t"), {sat.SOURCE_ANNOTATION: "token_request"},
        existing)


def test_a_secret_of_another_type_is_replaced_only_when_ours_and_as_it_was_read():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _service_account_token as sat

    endpoint = SecretEndpoint()
    with pytest.raises(sat.TokenSecretError, match="not made by this collection"):
        write_over(foreign(), endpoint)
    assert endpoint.calls == []
    write_over(foreign("kubernetes.io/dockercfg", {sat.SOURCE_ANNOTATION: "legacy_secret"}), endpoint)
    assert endpoint.calls == [
        ("delete", {"name": "registry-creds", "namespace": "ns",
                    "body": {"apiVersion": "v1", "kind": "DeleteOptions",
                             "preconditions": {"uid": "uid-1", "resourceVersion": "5"}}}),
        ("create", "registry-creds")]


def test_a_secret_changed_by_someone_else_meanwhile_is_left_and_the_run_says_so():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _service_account_token as sat

    endpoint = SecretEndpoint(conflict=True)
    with pytest.raises(sat.TokenSecretError, match="The Secret ns/registry-creds was changed by someone else "
                                                   "meanwhile: run again"):
        write_over(foreign("kubernetes.io/dockercfg", {sat.SOURCE_ANNOTATION: "legacy_secret"}), endpoint)
    assert [call[0] for call in endpoint.calls] == ["delete"]
