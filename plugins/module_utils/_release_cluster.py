# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The live objects of one Helm release: read them, patch drifted fields back, find failing pods.

Built on _kubernetes.ReadOnlyCluster (kubernetes.core's client and its error messages); adds the
writes drift repair needs (a JSON patch guarded by the object's resourceVersion) and the release's
Lease (_release_lock), written with the resourceVersion it was read at.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_lock import (
    LEASE_API_VERSION,
    LeaseConflict,
    NamespaceMissing,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubernetes import (
    DynamicApiError,
    KubernetesAccessError,
    NotFoundError,
    ReadOnlyCluster,
    ResourceNotFoundError,
    TransportError,
    UNAUTHORIZED,
)


class UnknownKind(MlopsError):
    """The API server does not serve this kind (e.g. a CRD that is not installed)."""


def label_selector(selector: Mapping[str, Any] | None) -> str:
    """A Deployment's spec.selector as a label selector string."""
    selector = selector or {}
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


class ReleaseCluster(ReadOnlyCluster):
    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self._k8s.resource(kind, api_version)
        except ResourceNotFoundError as exc:
            raise UnknownKind(f"{api_version} {kind}") from exc

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""

        def call() -> dict[str, Any] | None:
            resource = self._resource(api_version, kind)
            try:
                scope = {"namespace": namespace} if getattr(resource, "namespaced", True) else {}
                return resource.get(name=name, **scope).to_dict()
            except NotFoundError:
                return None

        return self._ask(f"{kind} {name}", call)

    def patch(self, api_version: str, kind: str, namespace: str, name: str,
              operations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch (RFC 6902) to one object."""
        try:
            resource = self._resource(api_version, kind)
            return resource.patch(body=list(operations), name=name, namespace=namespace,
                                  content_type="application/json-patch+json").to_dict()
        except DynamicApiError as exc:
            if exc.status in (409, 422):
                raise KubernetesAccessError(
                    f"{kind} {name} changed while its drift was being repaired (the API server answered "
                    f"{exc.status}): run again.") from exc
            hints = {401: UNAUTHORIZED,
                     403: f"forbids patching {kind} objects in namespace {namespace}: grant the user that right."}
            hint = hints.get(exc.status, f"answered {exc.status} {exc.reason}.")
            raise KubernetesAccessError(f"Repairing {kind} {name} on {self.host} failed: the API server {hint}") from exc
        except (TransportError, OSError) as exc:
            raise KubernetesAccessError(f"Cannot reach the API server at {self.host} while repairing {kind} {name}: "
                                        f"{exc}") from exc

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        def call() -> list[dict[str, Any]]:
            found = self._k8s.resource("Pod", "v1").get(namespace=namespace, label_selector=selector)
            return found.to_dict().get("items", [])

        return self._ask(f"pods in {namespace}", call)

    def warning_events(self, namespace: str) -> list[dict[str, Any]]:
        def call() -> list[dict[str, Any]]:
            found = self._k8s.resource("Event", "v1").get(namespace=namespace, field_selector="type=Warning")
            return found.to_dict().get("items", [])

        return self._ask(f"events in {namespace}", call)

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(LEASE_API_VERSION, "Lease", namespace, name)

    def _write_lease(self, namespace: str, name: str, what: str, call: Callable[[Any], Any]) -> Any:
        try:
            return call(self._resource(LEASE_API_VERSION, "Lease"))
        except DynamicApiError as exc:
            if exc.status == 409:
                raise LeaseConflict(namespace, name) from exc
            if exc.status == 404 and what == "Creating":
                raise NamespaceMissing(namespace) from exc
            hints = {401: UNAUTHORIZED,
                     403: f"forbids it: grant the user create, get, update and delete on leases "
                          f"(coordination.k8s.io) in namespace {namespace}."}
            hint = hints.get(exc.status, f"answered {exc.status} {exc.reason}.")
            raise KubernetesAccessError(f"{what} Lease {name} in {namespace} on {self.host} failed: the API server "
                                        f"{hint}") from exc
        except (TransportError, OSError) as exc:
            raise KubernetesAccessError(f"Cannot reach the API server at {self.host} while writing Lease {name}: "
                                        f"{exc}") from exc

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._write_lease(namespace, body["metadata"]["name"], "Creating",
                                 lambda leases: leases.create(body=dict(body), namespace=namespace).to_dict())

    def replace_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._write_lease(namespace, body["metadata"]["name"], "Updating",
                                 lambda leases: leases.replace(body=dict(body), namespace=namespace).to_dict())

    def delete_lease(self, namespace: str, name: str, *, uid: str | None, resource_version: str | None) -> None:
        """Delete the Lease only as it was last seen (a 409 when another run wrote it since: LeaseConflict)."""
        preconditions = {key: value for key, value in (("uid", uid), ("resourceVersion", resource_version)) if value}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}

        def call(leases: Any) -> None:
            try:
                leases.delete(name=name, namespace=namespace, body=body)
            except NotFoundError:
                pass

        self._write_lease(namespace, name, "Deleting", call)
