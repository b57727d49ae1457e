# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How helm reaches the cluster: kubernetes.core's connection options (HELM_AUTH_ARG_SPEC) as helm's environment.

kubernetes.core's AnsibleHelmModule does this too, but it writes the kubeconfig into a temporary file whenever the
`kubeconfig` option (or K8S_AUTH_KUBECONFIG) is set, which a killed run leaves behind, holding whatever credentials
the kubeconfig holds. Here nothing is written: a kubeconfig path is handed to helm as is (KUBECONFIG), and a
kubeconfig given as a dictionary goes to helm through an in-memory file (memfd, Linux) that helm inherits and that
vanishes with the last process holding it.

`api_key` becomes HELM_KUBETOKEN, as kubernetes.core does: helm has no other way to take a token but its argv
(`--kube-token`, readable by every user in /proc/<pid>/cmdline) or a file. The environment of a process can be read
only by its own user (and root), the same as the module's own memory, and helm is the only child that gets it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import helm_environment
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import Child
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._memory_files import (
    AVAILABLE,
    memory_file,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import InvalidReleaseRequest

SKIP_TLS_VERIFY = (3, 10, 0)  # HELM_KUBEINSECURE_SKIP_TLS_VERIFY


def helm_connection(params: Mapping[str, Any], version: tuple[int, int, int], *,
                    source: Mapping[str, str] | None = None, withhold: Iterable[str] = ()) -> Child:
    """helm's environment for the module's connection options: the allow-listed part of ours, then those options.
    The in-memory kubeconfig stays open as long as the module runs (its descriptor is in the Child's pass_fds)."""
    update: dict[str, str] = {}
    for option, variable in (("context", "HELM_KUBECONTEXT"), ("host", "HELM_KUBEAPISERVER"),
                             ("api_key", "HELM_KUBETOKEN"), ("ca_cert", "HELM_KUBECAFILE")):
        if params.get(option):
            update[variable] = str(params[option])
    if params.get("validate_certs") is False:
        if version < SKIP_TLS_VERIFY:
            raise InvalidReleaseRequest("validate_certs: false needs helm >= 3.10 (HELM_KUBEINSECURE_SKIP_TLS_VERIFY): "
                                        "install a newer helm, or pass ca_cert instead.")
        update["HELM_KUBEINSECURE_SKIP_TLS_VERIFY"] = "true"
    kubeconfig = params.get("kubeconfig")
    fds: tuple[int, ...] = ()
    if isinstance(kubeconfig, str) and kubeconfig:
        update["KUBECONFIG"] = os.path.expanduser(kubeconfig)
    elif isinstance(kubeconfig, dict) and kubeconfig:
        if not AVAILABLE:
            raise InvalidReleaseRequest("kubeconfig given as a dictionary is handed to helm in memory, which needs "
                                        "Linux: pass the path of a kubeconfig file instead.")
        fd = memory_file("kubeconfig", json.dumps(kubeconfig).encode())
        fds = (fd,)
        update["KUBECONFIG"] = f"/dev/fd/{fd}"
    elif kubeconfig:
        raise InvalidReleaseRequest("kubeconfig must be the path of a kubeconfig file or a kubeconfig as a dictionary.")
    return Child(helm_environment(update, source=source, withhold=withhold), fds)
