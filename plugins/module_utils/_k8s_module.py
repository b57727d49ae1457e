# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The base of the modules that talk to Kubernetes: kubernetes.core's module class, extended the way it invites.

AnsibleK8SModule checks the kubernetes and PyYAML libraries and is what kubernetes.core's client and helm helpers
take. It proxies only part of AnsibleModule; this subclass adds what our modules also use (running helm, temporary
files, hiding secrets found at run time), so that no module reaches into its private attributes, and turns an
MlopsError into fail_json in one place. Its AnsibleModule (K8sArgumentsModule, kubernetes.core's module_class
setting) hides a kubeconfig dictionary's secrets as soon as the arguments are read.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, NoReturn

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import exit_with
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._masking import kubeconfig_secrets
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule


class K8sArgumentsModule(AnsibleModule):
    """AnsibleModule that hides the secrets of the arguments as given, before validating them: a failed validation
    prints the invocation before the module runs (and before kubernetes.core hides a kubeconfig's, in 6.x only)."""

    def _load_params(self) -> None:
        super()._load_params()
        self.no_log_values.update(self.secrets_of_arguments(self.params))

    def secrets_of_arguments(self, params: Mapping[str, Any]) -> set[str]:
        """The secrets among the raw arguments; a subclass adds those of its own options."""
        kubeconfig = params.get("kubeconfig")
        return kubeconfig_secrets(kubeconfig) if isinstance(kubeconfig, dict) else set()


class MlopsK8sModule(AnsibleK8SModule):
    """AnsibleK8SModule plus the AnsibleModule services our Kubernetes modules need."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("module_class", K8sArgumentsModule)
        super().__init__(**kwargs)

    def run_command(self, *args: Any, **kwargs: Any) -> tuple[int, str, str]:
        return self._module.run_command(*args, **kwargs)

    def get_bin_path(self, *args: Any, **kwargs: Any) -> str | None:
        return self._module.get_bin_path(*args, **kwargs)

    def add_cleanup_file(self, path: str) -> None:
        self._module.add_cleanup_file(path)

    @property
    def tmpdir(self) -> str:
        return self._module.tmpdir

    def hide(self, secrets: Iterable[str]) -> None:
        """Mask these strings, learned at run time, in everything the module returns (invocation included)."""
        self._module.no_log_values.update(secrets)

    def run(self, action: Callable[[], dict[str, Any]]) -> NoReturn:
        """Exit with what `action` returns, or fail with the message of the MlopsError it raised."""
        exit_with(self, action)
