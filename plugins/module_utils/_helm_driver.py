# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Whether the installed kubernetes.core can drive a helm: its helm modules before 6.6.0 run `helm list --all`,
which helm 4 refuses ("unknown flag: --all"), so the ingress stage (kubernetes.core.helm) fails under helm 4."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ._helm_cli import HelmError, parse_helm_version

# The first kubernetes.core release the collection has run the ingress stage under helm 4 with.
KUBERNETES_CORE_FOR_HELM4 = (6, 6, 0)


def collection_version(root: str | Path | None) -> str | None:
    """The version of the collection installed at `root` (MANIFEST.json of a built collection, else the galaxy.yml
    of a source checkout), or None when there is none or it cannot be read."""
    if not root:
        return None
    base = Path(root)
    try:
        return str(json.loads((base / "MANIFEST.json").read_text())["collection_info"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        found = re.search(r"^version:\s*['\"]?([^'\"\s#]+)", (base / "galaxy.yml").read_text(), re.MULTILINE)
    except OSError:
        return None
    return found.group(1) if found else None


def _release(version: str) -> tuple[int, ...] | None:
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", version.strip())
    return tuple(int(part) for part in found.groups()) if found else None


def helm4_driver_problem(helm_version_text: str, version: str | None, location: str | None) -> str:
    """Why kubernetes.core (`version` found at `location`, None: not installed) cannot drive the helm that printed
    `helm_version_text`, or "" when it can, when that helm is no helm 4, or when its version cannot be read (the
    helm version check reports that)."""
    try:
        major = parse_helm_version(helm_version_text or "")[0]
    except HelmError:
        return ""
    if major < 4:
        return ""
    need = ".".join(str(part) for part in KUBERNETES_CORE_FOR_HELM4)
    release = _release(version) if version else None
    if release is not None and release >= KUBERNETES_CORE_FOR_HELM4:
        return ""
    if location is None:
        found = "kubernetes.core is not installed"
    elif release is None:
        found = f"the version of kubernetes.core at {location} cannot be read"
    else:
        found = f"kubernetes.core {version} (at {location}) cannot drive helm 4 (its helm module runs helm list --all)"
    return (f"helm is 4.x and the ingress stage installs the NGINX controller with kubernetes.core.helm, but {found}: "
            f"install kubernetes.core {need} or later (ansible-galaxy collection install 'kubernetes.core>={need}'), "
            "or set mlops_ingress_nginx_enabled to false and install an ingress controller yourself, "
            "or use helm 3 (mlops_helm_binary).")
