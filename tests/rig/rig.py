"""The local rig of real parts: `rig.py up | down | status`.

up     builds (once, cached) and starts etcd, the Kubernetes control plane,
       kwok nodes, three registries (Basic auth over TLS, plain HTTP, token
       auth over TLS with its token service) and podman's Docker API; idempotent; writes
       .rig/env. `--flavour openshift` adds OpenShift's CRDs and objects,
       `--flavour kubernetes` (default) removes them again.
restart-apiserver  stops kube-apiserver, keeps it down `--down-for` seconds and
       starts it again (fault tests); the rest of the rig stays up.
down   stops exactly the processes `up` started (by pid file); `--purge`
       also deletes the rig's state (etcd data, registry storage, CA).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from control_plane import INGRESS_NGINX_CHART, ControlPlane  # noqa: E402
from datarobot_api import FakeDataRobot  # noqa: E402
from docker_api import DockerApi  # noqa: E402
from pki import CertificateAuthority  # noqa: E402
from processes import RigError, free_port, port_open  # noqa: E402
from registry import USER, Registries  # noqa: E402
from token_auth_registry import USER as TOKEN_USER  # noqa: E402
from token_auth_registry import TokenAuthRegistry  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STATE = Path(os.environ.get("RIG_DIR", REPO / ".rig")).resolve()
BIN_CACHE = Path(os.environ.get("RIG_BIN_CACHE", Path.home() / ".cache" / "datarobot-mlops-rig"))
PORT_NAMES = ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok", "registry", "registry_http",
              "datarobot", "token_registry", "token_service")
OPENSHIFT_CRDS = ("securitycontextconstraints.security.openshift.io", "routes.route.openshift.io",
                  "configs.imageregistry.operator.openshift.io")


def log(message: str) -> None:
    print(f"[rig] {message}", file=sys.stderr, flush=True)


def pinned_versions() -> dict[str, str]:
    """tests/rig/versions.env as a dictionary (NAME=value lines)."""
    lines = (HERE / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def ports() -> dict[str, int]:
    """Loopback ports chosen once per rig and kept, so restarts keep every address."""
    path = STATE / "ports.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    for name in PORT_NAMES:
        if name not in known:
            known[name] = free_port(taken=set(known.values()))
    path.write_text(json.dumps(known, indent=2))
    return known


class Rig:
    def __init__(self) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        STATE.chmod(0o700)
        self.ports = ports()
        self.ca = CertificateAuthority(STATE / "pki")
        self.bin = BIN_CACHE / "bin"
        # This checkout's helms (versions.env), linked into the rig's own bin: checkouts pinning other helms share
        # the binary cache. `helm` on the rig's PATH is helm 3; HELM4 names helm 4.
        pins = pinned_versions()
        self.helms = {"helm": BIN_CACHE / f"helm-{pins['HELM_VERSION']}" / "helm",
                      "helm4": BIN_CACHE / f"helm-{pins['HELM4_VERSION']}" / "helm"}
        self.rig_bin = STATE / "bin"
        self.cluster = ControlPlane(STATE, self.bin, self.ports, self.ca)
        self.registries = Registries(STATE, self.ports, self.ca)
        self.token_registry = TokenAuthRegistry(STATE, self.ports, self.ca)
        self.docker = DockerApi(STATE, self.ca.cert_path, (self.registries.secure_address, self.token_registry.address),
                                self.registries.insecure_address)
        self.datarobot = FakeDataRobot(STATE, self.ports["datarobot"], self.ca)

    def build(self) -> None:
        started = time.monotonic()
        subprocess.run(["bash", str(HERE / "build-binaries.sh")], check=True)
        log(f"binaries ready ({time.monotonic() - started:.1f}s)")

    def up(self, flavour: str) -> None:
        started = time.monotonic()
        self.build()
        self.ca.ensure()
        if self.cluster.healthy():
            log("control plane already running")
        else:
            self.cluster.start()
        self.cluster.register_nodes()
        if not self.registries.healthy():
            self.registries.start()
        if not self.token_registry.healthy():
            self.token_registry.start()
        if not self.docker.healthy():
            self.docker.start()
        self.docker.trust()  # also for a registry added since podman started
        if not self.datarobot.healthy():
            self.datarobot.start()
        self.set_flavour(flavour)
        self.write_env()
        log(f"rig up in {time.monotonic() - started:.1f}s; `source {STATE / 'env'}` to use it")

    def set_flavour(self, flavour: str) -> None:
        present = set(self.cluster.kubectl("get", "crd", "-o", "name").split())
        has_openshift = f"customresourcedefinition.apiextensions.k8s.io/{OPENSHIFT_CRDS[0]}" in present
        if flavour == "openshift":
            self.cluster.add_openshift_flavour()
        elif has_openshift:
            self.cluster.kubectl("delete", "-f", str(HERE / "openshift-flavour.yaml"), "--ignore-not-found",
                                 "--wait=true")
            self.cluster.kubectl("delete", "crd", *OPENSHIFT_CRDS, "--ignore-not-found", "--wait=true")
        (STATE / "flavour").write_text(flavour + "\n")
        log(f"flavour: {flavour}")

    def env(self) -> dict[str, str]:
        kubeconfig = str(self.cluster.admin_kubeconfig)
        return {
            "KUBECONFIG": kubeconfig,
            "K8S_AUTH_KUBECONFIG": kubeconfig,
            "RIG_DIR": str(STATE),
            "RIG_BIN": str(self.bin),
            "RIG_HELM_BIN": str(self.rig_bin),
            "RIG_CA": str(self.ca.cert_path),
            "RIG_REGISTRY": self.registries.secure_address,
            "RIG_REGISTRY_CA": str(self.ca.cert_path),
            "RIG_REGISTRY_USER": USER,
            "RIG_REGISTRY_PASSWORD": self.registries.password,
            "RIG_INSECURE_REGISTRY": self.registries.insecure_address,
            # The token-auth registry (Docker token flow, as Docker Hub): its CA is RIG_CA too.
            "RIG_TOKEN_REGISTRY": self.token_registry.address,
            "RIG_TOKEN_REGISTRY_USER": TOKEN_USER,
            "RIG_TOKEN_REGISTRY_PASSWORD": self.token_registry.password,
            "RIG_TOKEN_REGISTRY_REALM": self.token_registry.realm,
            "DOCKER_HOST": self.docker.docker_host,
            "DATAROBOT_ENDPOINT": self.datarobot.endpoint,
            "DATAROBOT_API_TOKEN": self.datarobot.token,
            "DATAROBOT_CA_PATH": str(self.ca.cert_path),
            "HELM": str(self.rig_bin / "helm"),
            "HELM3": str(self.rig_bin / "helm"),
            "HELM4": str(self.rig_bin / "helm4"),
            "KUBECTL": str(self.bin / "kubectl"),
            "RIG_FLAVOUR": (STATE / "flavour").read_text().strip() if (STATE / "flavour").exists() else "kubernetes",
            # The ingress-nginx chart the local inventory installs offline (tests/rig/assets/).
            "RIG_INGRESS_NGINX_CHART": str(INGRESS_NGINX_CHART),
        }

    def link_helms(self) -> None:
        self.rig_bin.mkdir(exist_ok=True)
        for name, target in self.helms.items():
            link = self.rig_bin / name
            if not link.is_symlink() or link.readlink() != target:
                link.unlink(missing_ok=True)
                link.symlink_to(target)

    def write_env(self) -> None:
        self.link_helms()
        lines = [f"export {key}={shlex.quote(value)}" for key, value in self.env().items()]
        lines.append(f'export PATH={shlex.quote(str(self.rig_bin))}:{shlex.quote(str(self.bin))}:"$PATH"')
        path = STATE / "env"
        path.write_text("# written by tests/rig/rig.py up; holds the rig's registry passwords\n" + "\n".join(lines) + "\n")
        path.chmod(0o600)

    def down(self, purge: bool) -> None:
        stopped = self.datarobot.stop() + self.docker.stop() + self.token_registry.stop() + self.registries.stop() + self.cluster.stop()
        log(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        listening = [f"{name}={port}" for name, port in self.ports.items() if port_open(port)]
        if listening:
            raise RigError(f"still listening after rig-down: {', '.join(listening)}")
        (STATE / "env").unlink(missing_ok=True)
        if purge:
            shutil.rmtree(STATE)
            log(f"removed {STATE}")

    def status(self) -> bool:
        parts = {**self.cluster.daemons, "registry-tls": self.registries.secure,
                 "registry-http": self.registries.insecure, "registry-token": self.token_registry.registry,
                 "token-service": self.token_registry.service, "podman": self.docker.daemon,
                 "datarobot": self.datarobot.daemon}
        for name, daemon in parts.items():
            pid = daemon.pid()
            print(f"{name:24} {'running pid ' + str(pid) if pid else 'stopped'}")
        return all(d.running() for d in parts.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--flavour", choices=("kubernetes", "openshift"), default="kubernetes")
    down = sub.add_parser("down")
    down.add_argument("--purge", action="store_true")
    restart = sub.add_parser("restart-apiserver")
    restart.add_argument("--down-for", type=float, default=0.0)
    sub.add_parser("status")
    sub.add_parser("env")
    args = parser.parse_args()
    try:
        rig = Rig()
        if args.command == "up":
            rig.up(args.flavour)
        elif args.command == "down":
            rig.down(args.purge)
        elif args.command == "restart-apiserver":
            log(f"kube-apiserver back after {rig.cluster.restart_apiserver(args.down_for):.1f}s")
        elif args.command == "status":
            return 0 if rig.status() else 1
        elif args.command == "env":
            print((STATE / "env").read_text())
    except (RigError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
