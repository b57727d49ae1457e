# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Whether the kubeconfig's user gets its token from an exec plugin that cannot run here.

EKS, GKE and AKS (Entra ID) kubeconfigs run a program for a token (`aws eks get-token`, `gke-gcloud-auth-plugin`,
`kubelogin`). Where that program is missing, as in an AWX execution environment without the cloud's CLI, the
kubernetes client logs the failure and goes on without credentials: the API server then answers as to an anonymous
user (403 "system:anonymous"), which reads as a missing permission. Asked first, the cause is named instead.

Only what the kubernetes client would use is looked at, settled as kubernetes.core settles it: each connection
option, else its K8S_AUTH_* variable (the roles pick a cluster with K8S_AUTH_KUBECONFIG and K8S_AUTH_CONTEXT in the
play's environment); no kubeconfig at all where a token, a login or a client certificate is given with the host, nor
in a pod (the in-cluster config comes first there); else the context given (or the first `current-context` among the
files), its user, the first entry of that name across the files (the order of KUBECONFIG). Anything unreadable or
unusual is left to the kubernetes client, which reports it itself.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Mapping

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubeconfig_files import (
    first_entry,
    listed_paths,
)

try:
    import yaml

    UNREADABLE: tuple[type[Exception], ...] = (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError)
except ImportError:  # the kubernetes client needs PyYAML too: without it there is nothing to check with
    yaml = None
    UNREADABLE = (OSError,)


def _documents(kubeconfig: Any, environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The kubeconfig documents the client would read: the dictionary given, the files listed (as in KUBECONFIG),
    else KUBECONFIG's, else ~/.kube/config."""
    if isinstance(kubeconfig, dict):
        return [kubeconfig]
    if yaml is None:
        return []
    listed = kubeconfig if isinstance(kubeconfig, str) and kubeconfig else environ.get("KUBECONFIG", "")
    documents = []
    for path in dict.fromkeys(os.path.expanduser(path) for path in listed_paths(listed, environ.get("HOME", "~"))):
        try:
            with open(path, encoding="utf-8") as stream:
                document = yaml.safe_load(stream)
        except UNREADABLE:
            continue
        if isinstance(document, dict):
            documents.append(document)
    return documents


def _named(documents: list[dict[str, Any]], kind: str, name: Any) -> dict[str, Any]:
    """The fields of the first entry called `name` (a context's, a user's); {} when it has none."""
    found = first_entry(((document, None) for document in documents), kind, name)
    fields = found[0].get(kind[:-1]) if found else None
    return fields if isinstance(fields, dict) else {}


SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # the in-cluster config's


def auth_setting(params: Mapping[str, Any], environ: Mapping[str, str], name: str) -> Any:
    """A connection option as kubernetes.core takes it: the option, else K8S_AUTH_<NAME>."""
    value = params.get(name)
    return value if value is not None else environ.get(f"K8S_AUTH_{name.upper()}")


def uses_a_kubeconfig(params: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    def given(*names: str) -> bool:
        return all(auth_setting(params, environ, name) for name in names)

    if given("api_key"):  # the token is sent whatever the kubeconfig's user says
        return False
    if given("host") and (given("username", "password") or given("cert_file", "key_file")):
        return False
    if given("kubeconfig") or given("context"):
        return True
    return not (environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(SERVICE_ACCOUNT_TOKEN))


def missing_exec_plugin(params: Mapping[str, Any],
                        environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(user, program) when the kubeconfig user that the connection options (`params`, else the K8S_AUTH_*
    variables of `environ`, default this process's environment) lead to runs an exec plugin that is not on PATH;
    else None."""
    environ = os.environ if environ is None else environ
    if not uses_a_kubeconfig(params, environ):
        return None
    documents = _documents(auth_setting(params, environ, "kubeconfig"), environ)
    chosen = auth_setting(params, environ, "context") or next(
        (document.get("current-context") for document in documents if document.get("current-context")), None)
    if not chosen:
        return None
    user = _named(documents, "contexts", chosen).get("user")
    plugin = _named(documents, "users", user).get("exec") or {}
    program = plugin.get("command") if isinstance(plugin, dict) else None
    if not isinstance(program, str) or not program:
        return None
    if os.path.isabs(program):
        found = os.access(program, os.X_OK)
    elif os.sep in program:  # relative to the kubeconfig's directory, as client-go resolves it: left to the client
        found = True
    else:  # the plugin's own env may set PATH: the client runs the program with it
        own = {str(entry.get("name")): str(entry.get("value")) for entry in plugin.get("env") or []
               if isinstance(entry, dict)}
        found = shutil.which(program, path=own.get("PATH") or environ.get("PATH", os.defpath)) is not None
    return None if found else (str(user), program)
