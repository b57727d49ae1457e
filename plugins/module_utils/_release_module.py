# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What agent_deployment does between its arguments and its result: build the parts, reconcile, report.

The module keeps the argument handling; this file turns the parameters into a ReleaseSpec, a Helm and a
cluster client, runs the Reconciler and turns its Outcome (or failure) into the module's result, with
every secret the Masker learned hidden from Ansible's output, invocation included. The secrets of `values` are
hidden from the moment the arguments are read (ReleaseArgumentsModule, as a kubeconfig dictionary's are in every
Kubernetes module), as Ansible's own validation can fail, printing the invocation, before the module has run.

The chart values reach helm on its standard input only (never a file: a killed run would leave it behind), and
helm runs with an allow-listed environment (_child_env, _helm_env), not the module's.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.validation import check_type_dict, check_type_list

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import helm_environment
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_cli import (
    Child,
    Helm,
    background_spawner,
    resolve_chart,
    SUPPORTED,
    run_child,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_env import helm_connection
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._duration import to_seconds
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._k8s_module import (
    K8sArgumentsModule,
    MlopsK8sModule,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import Masker, all_strings
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_cluster import ReleaseCluster
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import (
    InvalidReleaseRequest,
    ReleaseFailed,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_reconciler import (
    Outcome,
    Reconciler,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_values import (
    HAS_YAML,
    ReleaseSpec,
    compose_values,
    load_values_file,
)

VALUES_OPTIONS = ("values", "release_values")  # the option and its alias, as a task may spell it


class ReleaseArgumentsModule(K8sArgumentsModule):
    """K8sArgumentsModule that also hides the secrets of `values` as given, before validating them.

    `values` cannot be no_log: Ansible would then hide every string of it (a namespace, a URL, a replica count) in
    everything the module returns, `values` and `diff` included. So only its secrets are hidden, found as the module
    finds them (Masker), and found early: a failed validation prints the invocation before the module runs.
    """

    def secrets_of_arguments(self, params: Mapping[str, Any]) -> set[str]:
        return super().secrets_of_arguments(params) | secrets_of_values(params)


def secrets_of_values(params: Mapping[str, Any]) -> set[str]:
    """The secrets in agent_deployment's `values` as given (not validated yet)."""
    try:
        paths: list[str] | None = [str(path) for path in check_type_list(params.get("secret_value_paths") or [])
                                   if not isinstance(path, (dict, list))]
    except TypeError:
        paths = None  # which values are secret cannot be told: all of them are hidden
    found: set[str] = set()
    for option in VALUES_OPTIONS:
        values = params.get(option)
        if values is None:
            continue
        try:
            values = check_type_dict(values)
        except TypeError:  # not values at all (validation fails): hidden whole, as it may hold anything
            found |= all_strings(values)
            continue
        if paths is None:
            found |= all_strings(values)
            continue
        masker = Masker(paths)
        masker.collect_values(values)
        found |= masker.secrets
    return found


def run_agent_deployment(module: MlopsK8sModule) -> None:
    """Reconcile the release the parameters describe; exits the module with its result or failure."""
    if not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"))
    masker = Masker(module.params["secret_value_paths"])
    try:
        outcome = _reconcile(module, masker)
    except ReleaseFailed as exc:
        _finish(module, masker, str(exc), changed=exc.changed, status=exc.status, drift=exc.drift,
                **({"diagnostics": exc.diagnostics} if exc.diagnostics else {}))
    except MlopsError as exc:
        _finish(module, masker, str(exc), changed=False)
    _finish(module, masker, None, **_result(module, outcome))


def _finish(module: MlopsK8sModule, masker: Masker, failed_msg: str | None, **result: Any) -> None:
    """Every secret string found in values and manifests is hidden from Ansible's output, invocation included."""
    module.hide(masker.secrets)
    if failed_msg is not None:
        module.fail_json(msg=masker.text(failed_msg), **result)
    module.exit_json(**result)


def _result(module: MlopsK8sModule, outcome: Outcome) -> dict[str, Any]:
    result: dict[str, Any] = dict(changed=outcome.changed, operation=outcome.action, reasons=outcome.reasons,
                                  status=outcome.status, drift=outcome.drift)
    if module.params["state"] == "present":
        result["values"] = outcome.values
    if module._diff:
        result["diff"] = outcome.diff
    return result


def _reconcile(module: MlopsK8sModule, masker: Masker) -> Outcome:
    params = module.params
    params["wait_timeout"] = to_seconds(params["wait_timeout"], "wait_timeout")
    params["stuck_timeout"] = to_seconds(params["stuck_timeout"], "stuck_timeout")
    if params["wait_timeout"] <= 0:
        raise InvalidReleaseRequest("wait_timeout must be longer than 0: give seconds (600) or a duration such as 10m.")
    values = compose_values([load_values_file(path) for path in params["values_files"]], params["values"])
    masker.collect_values(values)
    params["binary_path"] = _helm_binary(module)
    chart = resolve_chart(params["chart_ref"], params["chart_version"], params["chart_repo_url"]) \
        if params["state"] == "present" or params["chart_ref"] else None
    cluster = ReleaseCluster.connect(module)  # also says so when the kubeconfig file does not exist
    reconciler = Reconciler(_helm(module, masker), cluster, masker, values_document, check_mode=module.check_mode,
                            leases=cluster)
    spec = ReleaseSpec(params["release_name"], params["release_namespace"], chart, values, wait=params["wait"],
                       wait_timeout=params["wait_timeout"], atomic=params["atomic"],
                       create_namespace=params["create_namespace"], stuck_timeout=params["stuck_timeout"],
                       force=params["force"])
    if params["state"] == "present":
        return reconciler.present(spec)
    return reconciler.absent(spec, params["wait"], params["wait_timeout"])


def _helm_binary(module: MlopsK8sModule) -> str:
    binary = module.params["binary_path"] or module.get_bin_path("helm")
    if not binary or not os.access(binary, os.X_OK):
        raise InvalidReleaseRequest(f"helm was not found ({module.params['binary_path'] or 'not on PATH'}): install "
                                    f"{SUPPORTED} or pass binary_path.")
    return binary


def _helm(module: MlopsK8sModule, masker: Masker) -> Helm:
    """helm with kubernetes.core's kubeconfig/context/host/CA settings in an environment of its own."""
    helm = Helm(module.params["binary_path"], _runner(Child(helm_environment(withhold=masker.secrets))))
    helm.check_version()
    child = helm_connection(module.params, helm.version, withhold=masker.secrets)
    helm.run, helm.spawn = _runner(child), background_spawner(child, module.tmpdir)
    return helm


def _runner(child: Child) -> Callable[..., tuple[int, str, str]]:
    def run(argv: Any, stdin: str | None = None) -> tuple[int, str, str]:
        return run_child(argv, stdin, child)

    return run


def values_document(values: dict[str, Any]) -> str:
    """The values as the JSON document helm reads from its standard input: in memory, never in a file."""
    return json.dumps(values, default=str)
