# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The base of the modules that talk to Kubernetes: kubernetes.core's module class, extended the way it invites.

AnsibleK8SModule checks the kubernetes and PyYAML libraries and is what kubernetes.core's client and helm helpers
take. It proxies only part of AnsibleModule; this subclass adds what our modules also use (running helm, temporary
files, hiding secrets found at run time), so that no module reaches into its private attributes, and turns an
MlopsError into fail_json in one place.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NoReturn

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import exit_with
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule


class MlopsK8sModule(AnsibleK8SModule):
    """AnsibleK8SModule plus the AnsibleModule services our Kubernetes modules need."""

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
