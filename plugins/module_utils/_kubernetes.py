# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Read-only questions to the API server, with errors a user can act on.

kubernetes.core builds the client (its kubeconfig/context/host/api_key
conventions); this wrapper only turns the client's exceptions into messages
that name the cluster and say what to check.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping, TypeVar

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._http_retry import RETRY_STATUSES
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubeconfig_exec import (
    auth_setting,
    missing_exec_plugin,
    uses_a_kubeconfig,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._memory_files import (
    keep_kube_credentials_in_memory,
)

try:
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError
    from urllib3.exceptions import HTTPError as TransportError
except ImportError:  # AnsibleK8SModule reports the missing library before any of this runs

    class DynamicApiError(Exception):  # type: ignore[no-redef]
        status: int = 0
        reason: str = ""

    class NotFoundError(DynamicApiError):  # type: ignore[no-redef]
        pass

    class ResourceNotFoundError(Exception):  # type: ignore[no-redef]
        pass

    class TransportError(Exception):  # type: ignore[no-redef]
        pass

T = TypeVar("T")


UNAUTHORIZED = "rejected our credentials: refresh the kubeconfig's token or client certificate."  # a 401's hint


class KubernetesAccessError(MlopsError):
    """The API server could not be reached or refused us; the message says what to check."""


class ApiUnavailable(KubernetesAccessError):
    """No answer, or a transient one (RETRY_STATUSES): what a restarting or overloaded API server gives; may pass."""


def _unreachable(host: str, what: str, exc: Exception) -> KubernetesAccessError:
    return ApiUnavailable(
        f"Cannot reach the API server at {host} while reading {what}: {exc}. Is the cluster up and the "
        "kubeconfig's server address right? Is its CA trusted (ca_cert)?")


def _refused(host: str, what: str, exc: DynamicApiError) -> KubernetesAccessError:
    """An error answer, with what to do for the usual ones: a token that is wrong or expired (401), a user without the
    rights (403); a transient one (RETRY_STATUSES) is ApiUnavailable."""
    hints = {
        401: UNAUTHORIZED,
        403: "forbids it: grant the user read access, or run as a cluster administrator.",
    }
    hint = hints.get(exc.status, f"answered {exc.status} {exc.reason}.")
    error = ApiUnavailable if exc.status in RETRY_STATUSES else KubernetesAccessError
    return error(f"Reading {what} from {host} failed: the API server {hint}")


def kubeconfig_files(kubeconfig: str) -> list[str]:
    """The files of a kubeconfig option that exist: it may list several, separated as in KUBECONFIG (os.pathsep), as
    kubernetes.core's option and the kubernetes client (which merges them, skipping missing ones) take it."""
    paths = (os.path.expanduser(path) for path in kubeconfig.split(os.pathsep) if path)
    return [path for path in paths if os.path.exists(path)]


class ReadOnlyCluster:
    def __init__(self, k8s_client: Any) -> None:
        self._k8s = k8s_client
        self.host = getattr(k8s_client.configuration, "host", "the API server")

    @classmethod
    def connect(cls, module: Any) -> "ReadOnlyCluster":
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException

        kubeconfig = auth_setting(module.params, os.environ, "kubeconfig")
        if (isinstance(kubeconfig, str) and kubeconfig and uses_a_kubeconfig(module.params, os.environ)
                and not kubeconfig_files(kubeconfig)):
            raise KubernetesAccessError(
                "The kubeconfig file given does not exist (its path is not shown: kubeconfig is no_log): pass an existing "
                "file (kubeconfig, K8S_AUTH_KUBECONFIG or KUBECONFIG).")
        missing = missing_exec_plugin(module.params)
        if missing:
            raise KubernetesAccessError(
                f"The kubeconfig's user {missing[0]} gets its token from the program {missing[1]} (an exec plugin), "
                "which is not on PATH where the module runs: install it there (in AWX, in the execution "
                "environment), or use a kubeconfig whose user has a token or a client certificate.")
        keep_kube_credentials_in_memory()  # a killed run leaves no file with the kubeconfig's key behind
        host = module.params.get("host") or "the kubeconfig's server"
        try:
            return cls(get_api_client(module=module))
        except DynamicApiError as exc:  # the client asks for /version while it is built: a bad token is refused there
            raise _refused(host, "the server version", exc) from exc
        except (TransportError, OSError) as exc:
            raise _unreachable(host, "the server version", exc) from exc
        except CoreException as exc:
            raise KubernetesAccessError(
                f"{str(exc).rstrip('.')}. Check that kubeconfig/context (or K8S_AUTH_KUBECONFIG) point at the "
                "cluster.") from exc

    def _ask(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except DynamicApiError as exc:
            raise _refused(self.host, what, exc) from exc
        except (TransportError, OSError) as exc:
            raise _unreachable(self.host, what, exc) from exc
        except ResourceNotFoundError as exc:  # the kind is not served: an API server older (or other) than supported
            raise KubernetesAccessError(
                f"Reading {what} from {self.host} failed: the API server does not serve it ({exc}). Check that the "
                "cluster runs a supported Kubernetes or OpenShift version.") from exc

    def version(self) -> Mapping[str, Any]:
        return self._ask("the server version", lambda: self._k8s.client.version["kubernetes"])

    def api_groups(self) -> list[str]:
        answer = self._ask("the API groups", lambda: self._k8s.client.request("get", "/apis"))
        return sorted(group["name"] for group in answer.to_dict().get("groups", []))

    def _list(self, what: str, api_version: str, kind: str, *, unserved_is_empty: bool = False,
              **query: str) -> list[dict[str, Any]]:
        """The items of `kind`; with `unserved_is_empty`, none where the API server does not serve the kind at all."""

        def call() -> list[dict[str, Any]]:
            try:
                resource = self._k8s.resource(kind, api_version)
            except ResourceNotFoundError:
                if unserved_is_empty:
                    return []
                raise
            return resource.get(**query).to_dict().get("items", [])

        return self._ask(what, call)

    def nodes(self, label_selector: str = "") -> list[dict[str, Any]]:
        """Every node, or those the label selector picks (the pool the agent runs on)."""
        if label_selector:
            return self._list("nodes", "v1", "Node", label_selector=label_selector)
        return self._list("nodes", "v1", "Node")

    def ingress_classes(self) -> list[str]:
        """The IngressClass names; none where the API server has no networking.k8s.io/v1 IngressClass (before 1.19),
        so that the survey can still say the cluster is older than the minimum."""
        return sorted(item["metadata"]["name"] for item in self._list("ingress classes", "networking.k8s.io/v1",
                                                                      "IngressClass", unserved_is_empty=True))

    def openshift_version(self) -> str | None:
        """The desired version in ClusterVersion 'version', or None where the cluster has none."""

        def call() -> str | None:
            try:
                resource = self._k8s.resource("ClusterVersion", "config.openshift.io/v1")
                cluster_version = resource.get(name="version").to_dict()
            except (ResourceNotFoundError, NotFoundError):
                return None
            return ((cluster_version.get("status") or {}).get("desired") or {}).get("version")

        return self._ask("the OpenShift ClusterVersion", call)

    def denied_permissions(self, permissions: Iterable[Mapping[str, Any]]) -> list[str]:
        """One line per action the API server says we may not perform."""
        denied = []
        for wanted in permissions:
            attributes = {"verb": wanted["verb"], "resource": wanted["resource"], "group": wanted.get("group") or ""}
            for optional in ("subresource", "namespace"):
                if wanted.get(optional):
                    attributes[optional] = wanted[optional]
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            }

            def call() -> dict[str, Any]:
                resource = self._k8s.resource("SelfSubjectAccessReview", "authorization.k8s.io/v1")
                # A review is never stored, so it is safe in check mode too.
                return resource.create(review).to_dict()

            status = self._ask("access reviews", call).get("status") or {}
            if not status.get("allowed"):
                group = attributes["group"] or "core"
                where = f" in namespace {attributes['namespace']}" if "namespace" in attributes else " cluster-wide"
                resource = "/".join(filter(None, (attributes["resource"], attributes.get("subresource"))))
                denied.append(
                    f"Not allowed to {attributes['verb']} {resource} ({group} API group){where}: "
                    "bind the user to a role that grants it.")
        return denied
