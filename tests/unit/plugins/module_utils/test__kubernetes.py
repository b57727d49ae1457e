from __future__ import annotations

import pytest
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._cluster_survey import survey
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import ReadOnlyCluster


class Answer:
    def __init__(self, data: dict) -> None:
        self.data = data

    def to_dict(self) -> dict:
        return self.data


class AccessReviews:
    """The SelfSubjectAccessReview endpoint: records each review, allows what `allowed` lists (verb, resource)."""

    def __init__(self, allowed: set[tuple[str, str]]) -> None:
        self.allowed, self.reviews = allowed, []

    def create(self, review: dict) -> Answer:
        self.reviews.append(review)
        attributes = review["spec"]["resourceAttributes"]
        resource = "/".join(filter(None, (attributes["resource"], attributes.get("subresource"))))
        return Answer({"status": {"allowed": (attributes["verb"], resource) in self.allowed}})


class Client:
    def __init__(self, reviews: AccessReviews) -> None:
        self.reviews = reviews
        self.configuration = type("Configuration", (), {"host": "https://api.example:6443"})()

    def resource(self, kind: str, api_version: str) -> AccessReviews:
        assert (kind, api_version) == ("SelfSubjectAccessReview", "authorization.k8s.io/v1")
        return self.reviews


def test_a_subresource_is_reviewed_as_one_and_named_in_the_denial():
    reviews = AccessReviews({("get", "secrets")})
    denied = ReadOnlyCluster(Client(reviews)).denied_permissions([
        {"verb": "get", "resource": "secrets", "namespace": "mlops"},
        {"verb": "create", "resource": "serviceaccounts", "subresource": "token", "namespace": "mlops"},
        {"verb": "create", "group": "authentication.k8s.io", "resource": "tokenreviews", "subresource": None},
    ])
    assert [review["spec"]["resourceAttributes"] for review in reviews.reviews] == [
        {"verb": "get", "resource": "secrets", "group": "", "namespace": "mlops"},
        {"verb": "create", "resource": "serviceaccounts", "group": "", "subresource": "token", "namespace": "mlops"},
        {"verb": "create", "resource": "tokenreviews", "group": "authentication.k8s.io"},
    ]
    assert denied == [
        "Not allowed to create serviceaccounts/token (core API group) in namespace mlops: bind the user to a role "
        "that grants it.",
        "Not allowed to create tokenreviews (authentication.k8s.io API group) cluster-wide: bind the user to a role "
        "that grants it.",
    ]


class _NodesOnly:
    """A Kubernetes 1.18 API server: no networking.k8s.io/v1 (IngressClass came in 1.19)."""

    configuration = type("Configuration", (), {"host": "https://k8s-1-18.example:6443"})()

    def resource(self, kind: str, api_version: str) -> Answer:
        raise ResourceNotFoundError(f"No matches found for {{'api_version': '{api_version}', 'kind': '{kind}'}}")


def test_a_cluster_without_the_ingressclass_api_has_no_ingress_classes():
    assert ReadOnlyCluster(_NodesOnly()).ingress_classes() == []


def test_a_cluster_older_than_the_minimum_is_reported_not_a_traceback():
    """cluster_requirements on 1.18: the survey reaches its verdict (too old) instead of failing on IngressClass."""

    class Nodes:
        def get(self, **query: str) -> Answer:
            return Answer({"items": [{"metadata": {"name": "n1"}, "spec": {}, "status": {
                "capacity": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "100Gi"},
                "conditions": [{"type": "Ready", "status": "True"}]}}]})

    class OldCluster(_NodesOnly):
        class client:  # noqa: N801 (the dynamic client's attribute)
            version = {"kubernetes": {"gitVersion": "v1.18.20", "major": "1", "minor": "18"}}

            @staticmethod
            def request(method: str, path: str) -> Answer:
                return Answer({"groups": [{"name": "apps"}]})

        def resource(self, kind: str, api_version: str):
            return Nodes() if kind == "Node" else super().resource(kind, api_version)

    params = dict(min_node_cpu="2", min_node_memory="6G", min_node_ephemeral_storage="38G", platform="auto",
                  node_selector=None, permissions=[], kubernetes_permissions=[], openshift_permissions=[],
                  fail_on_unmet=True)
    with pytest.raises(MlopsError, match=r"1\.18") as raised:
        survey(ReadOnlyCluster(OldCluster()), params)
    assert raised.value.result["ingress_classes"] == []


def test_a_kind_the_api_server_does_not_serve_elsewhere_is_a_clear_error():
    with pytest.raises(MlopsError, match=r"Reading nodes from https://k8s-1-18\.example:6443 failed: the API server "
                                         r"does not serve it .*supported Kubernetes or OpenShift version"):
        ReadOnlyCluster(_NodesOnly()).nodes()


def test_a_kubeconfig_option_may_list_files_as_kubeconfig_does(tmp_path):
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import kubeconfig_files

    (tmp_path / "a").write_text("{}")
    (tmp_path / "b").write_text("{}")
    listed = f"{tmp_path / 'missing'}:{tmp_path / 'a'}::{tmp_path / 'b'}"
    assert kubeconfig_files(listed) == [str(tmp_path / "a"), str(tmp_path / "b")]  # missing ones skipped
    assert kubeconfig_files(str(tmp_path / "a")) == [str(tmp_path / "a")]
    assert kubeconfig_files(f"{tmp_path / 'x'}:{tmp_path / 'y'}") == []


class _Module:
    """What connect reads of an AnsibleK8SModule: a host and a token, so that no kubeconfig is looked for."""

    params = {"host": "https://api.example:6443", "api_key": "t0ken-not-shown"}


@pytest.mark.parametrize("status, reason, expected, kind", [
    (401, "Unauthorized", r"rejected our credentials: refresh the kubeconfig's token", "KubernetesAccessError"),
    (403, "Forbidden", r"forbids it: grant the user read access", "KubernetesAccessError"),
    (503, "Service Unavailable", r"answered 503 Service Unavailable", "ApiUnavailable"),
], ids=["401", "403", "503"])
def test_an_api_server_refusing_the_version_while_connecting_is_a_clear_error(monkeypatch, status, reason, expected,
                                                                              kind):
    """get_api_client reads /version while it builds the client: a refused token arrives there, not in _ask."""
    from kubernetes.client.rest import ApiException
    from kubernetes.dynamic.exceptions import api_exception

    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _kubernetes
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client

    def refused(module):
        raise api_exception(ApiException(status=status, reason=reason))

    monkeypatch.setattr(client, "get_api_client", refused)
    monkeypatch.setattr(_kubernetes, "keep_kube_credentials_in_memory", lambda: False)
    with pytest.raises(MlopsError, match=r"Reading the server version from https://api\.example:6443 failed: the "
                                         r"API server " + expected) as raised:
        ReadOnlyCluster.connect(_Module())
    assert type(raised.value).__name__ == kind
    assert "t0ken" not in str(raised.value)
