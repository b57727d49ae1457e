# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How helm reaches the cluster: kubernetes.core's connection options (HELM_AUTH_ARG_SPEC) as helm's environment.

kubernetes.core's AnsibleHelmModule does this too, but it writes the kubeconfig into a temporary file whenever the
`kubeconfig` option (or K8S_AUTH_KUBECONFIG) is set, which a killed run leaves behind, holding whatever credentials
the kubeconfig holds. Here nothing is written: a kubeconfig path is handed to helm as is (KUBECONFIG), and a
kubeconfig given as a dictionary goes to helm through an in-memory file (memfd, Linux) that helm inherits and that
vanishes with the last process holding it.

`api_key` never goes into helm's environment (kubernetes.core passes it as HELM_KUBETOKEN, which everything helm
starts inherits: kubeconfig exec plugins, helm plugins, post-renderers) nor onto its command line (`--kube-token`,
readable by every user in /proc/<pid>/cmdline). It goes into an in-memory kubeconfig, the one helm is given: the
context helm would have used, from the kubeconfig it would have read, with the token added to that context's user,
as helm adds HELM_KUBETOKEN to it. The non-secret options (context, host, ca_cert, validate_certs) stay helm's
variables, applied on top as before. Only where there is no memfd (not Linux) does the token stay HELM_KUBETOKEN:
the other ways are a file on disk or the command line.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Iterable, Mapping

try:
    import yaml
    HAS_YAML = True
except ImportError:
    HAS_YAML = False

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import helm_environment
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import Child
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubeconfig_files import (
    first_entry,
    listed_paths,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._memory_files import (
    AVAILABLE,
    memory_file,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import InvalidReleaseRequest

SKIP_TLS_VERIFY = (3, 10, 0)  # HELM_KUBEINSECURE_SKIP_TLS_VERIFY
# The context and user of the in-memory kubeconfig when the kubeconfig helm would read selects none.
API_KEY_ENTRY = "datarobot-mlops-api-key"


def helm_connection(params: Mapping[str, Any], version: tuple[int, int, int], *,
                    source: Mapping[str, str] | None = None, withhold: Iterable[str] = ()) -> Child:
    """helm's environment for the module's connection options: the allow-listed part of ours, then those options.
    The in-memory kubeconfig stays open as long as the module runs (its descriptor is in the Child's pass_fds)."""
    update: dict[str, str] = {}
    for option, variable in (("context", "HELM_KUBECONTEXT"), ("host", "HELM_KUBEAPISERVER"),
                             ("ca_cert", "HELM_KUBECAFILE")):
        if params.get(option):
            update[variable] = str(params[option])
    if params.get("validate_certs") is False:
        if version < SKIP_TLS_VERIFY:
            raise InvalidReleaseRequest("validate_certs: false needs helm >= 3.10 (HELM_KUBEINSECURE_SKIP_TLS_VERIFY): "
                                        "install a newer helm, or pass ca_cert instead.")
        update["HELM_KUBEINSECURE_SKIP_TLS_VERIFY"] = "true"
    kubeconfig = params.get("kubeconfig")
    if kubeconfig and not isinstance(kubeconfig, (str, dict)):
        raise InvalidReleaseRequest("kubeconfig must be the path of a kubeconfig file or a kubeconfig as a dictionary.")
    if isinstance(kubeconfig, dict) and kubeconfig and not AVAILABLE:
        raise InvalidReleaseRequest("kubeconfig given as a dictionary is handed to helm in memory, which needs "
                                    "Linux: pass the path of a kubeconfig file instead.")
    if isinstance(kubeconfig, str) and kubeconfig:
        update["KUBECONFIG"] = os.path.expanduser(kubeconfig)
    env = helm_environment(update, source=source, withhold=withhold)
    document = kubeconfig if isinstance(kubeconfig, dict) and kubeconfig else None
    api_key = str(params.get("api_key") or "")
    if api_key:
        env.pop("HELM_KUBETOKEN", None)  # one of the user's own would take api_key's place
        if AVAILABLE:
            loaded = [(document, "")] if document else _kubeconfig_files(env)
            document = _with_token(loaded, str(params.get("context") or ""), api_key)
        else:
            env["HELM_KUBETOKEN"] = api_key
    if document is None:
        return Child(env)
    fd = memory_file("kubeconfig", json.dumps(document).encode())
    env["KUBECONFIG"] = f"/dev/fd/{fd}"
    return Child(env, (fd,))


def _kubeconfig_files(env: Mapping[str, str]) -> list[tuple[dict[str, Any], str]]:
    """The kubeconfig files helm would read with `env`, each with its path, as client-go chooses them: the files of
    KUBECONFIG (the first of a repeated path; missing ones skipped), else $HOME/.kube/config if it exists."""
    listed = env.get("KUBECONFIG", "")
    where = "the kubeconfig option or KUBECONFIG" if listed else "~/.kube/config"  # no path: kubeconfig is no_log
    found = []
    for path in listed_paths(listed, env.get("HOME", "")):
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidReleaseRequest(f"A kubeconfig file helm would read cannot be read ({where}): "
                                        f"{getattr(exc, 'strerror', None) or type(exc).__name__}.") from exc
        found.append((_parsed(text, where), path))
    return found


def _parsed(text: str, where: str) -> dict[str, Any]:
    if not HAS_YAML:
        raise InvalidReleaseRequest("api_key is handed to helm inside its kubeconfig, which needs PyYAML to read "
                                    "the kubeconfig file: install PyYAML (the kubernetes library needs it too).")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its message can quote the file: only the line is shown
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidReleaseRequest(f"A kubeconfig file helm would read ({where}) is not valid YAML{line}.") from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise InvalidReleaseRequest(f"A kubeconfig file helm would read ({where}) is not a kubeconfig (a mapping).")
    return document


def _entry(loaded: list[tuple[dict[str, Any], str]], kind: str, name: str) -> tuple[dict[str, Any], str] | None:
    """The first `kind` (clusters, users, contexts) entry called `name`, with the path of its file: the one client-go
    keeps when several files name it."""
    found = first_entry(loaded, kind, name)
    return (copy.deepcopy(found[0]), found[1]) if found else None


def _resolved(fields: dict[str, Any], keys: Iterable[str], path: str) -> None:
    """Relative file references made absolute against their kubeconfig file's directory, as client-go does: the
    in-memory copy lives in /dev/fd. A kubeconfig given as a dictionary (no path) lived there already."""
    if not path:
        return
    base = os.path.abspath(os.path.dirname(path))
    for key in keys:
        value = fields.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            fields[key] = os.path.normpath(os.path.join(base, value))  # filepath.Join cleans the path too


def _with_token(loaded: list[tuple[dict[str, Any], str]], context: str, token: str) -> dict[str, Any]:
    """The kubeconfig helm is given for `api_key`: the context it would use (`context`, else the first current-context
    of `loaded`), its cluster, and its user with `token` set - as helm merges HELM_KUBETOKEN into that user (the rest
    of the user stays: a tokenFile, say, still wins over the token, as it did). With no context to use, one of its
    own, whose user holds only the token. Only that context is given: helm uses no other."""
    name = context or next((str(doc["current-context"]) for doc, _source in loaded if doc.get("current-context")), "")
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}
    found = _entry(loaded, "contexts", name) if name else None
    if name and found is None:  # helm fails on the missing context, as it did; no token to a context of our own
        document["current-context"] = name
        return document
    entry, _path = found or ({"name": API_KEY_ENTRY, "context": {}}, "")
    fields = entry.get("context") if isinstance(entry.get("context"), dict) else {}
    entry["context"] = fields
    document["current-context"] = entry["name"]
    cluster = _entry(loaded, "clusters", str(fields.get("cluster") or "")) if fields.get("cluster") else None
    if cluster is not None and isinstance(cluster[0].get("cluster"), dict):
        _resolved(cluster[0]["cluster"], ("certificate-authority",), cluster[1])
        document["clusters"].append(cluster[0])
    user_name = str(fields.get("user") or API_KEY_ENTRY)
    fields["user"] = user_name
    user, user_path = _entry(loaded, "users", user_name) or ({"name": user_name, "user": {}}, "")
    settings = user.get("user") if isinstance(user.get("user"), dict) else {}
    _resolved(settings, ("client-certificate", "client-key", "tokenFile"), user_path)
    exec_plugin = settings.get("exec")
    if isinstance(exec_plugin, dict) and os.sep in str(exec_plugin.get("command") or ""):
        _resolved(exec_plugin, ("command",), user_path)
    settings["token"] = token
    user["user"] = settings
    document["contexts"].append(entry)
    document["users"].append(user)
    return document
