from __future__ import annotations

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
