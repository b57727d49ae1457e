"""etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on loopback.

Real binaries with TLS, RBAC and ServiceAccount token signing, so the
collection meets the same API behaviour as on a managed cluster; kwok stands in
for kubelets (nodes stay Ready, bound pods are marked Running, Job pods complete; pods whose image
tag is `does-not-exist` wait in ImagePullBackOff, see kwok-stages/).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from pki import CertificateAuthority
from processes import Daemon, RigError, wait_until

SERVICE_CIDR = "10.96.0.0/16"
NODE_COUNT = 3
NODE_SIZE = {"cpu": "2", "memory": "6Gi", "ephemeral-storage": "40Gi", "pods": "110"}
# Third-party files the rig installs, kept in the repository (assets/README.md: source, version, license).
ASSETS = Path(__file__).resolve().with_name("assets")
INGRESS_NGINX_CHART = ASSETS / "ingress-nginx-4.15.1.tgz"
# Our own kwok stages (e.g. pods that never pull their image), loaded beside the ones kwok ships.
EXTRA_STAGES = Path(__file__).resolve().with_name("kwok-stages")


def kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "rig", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "rig", "context": {"cluster": "rig", "user": user}}],
        "current-context": "rig",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


class ControlPlane:
    def __init__(self, state: Path, bin_dir: Path, ports: dict[str, int], ca: CertificateAuthority) -> None:
        self.state, self.bin, self.ports, self.ca = state, bin_dir, ports, ca
        self.server = f"https://127.0.0.1:{ports['apiserver']}"
        self.daemons = {name: Daemon(name, state) for name in
                        ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")}
        self.admin_kubeconfig = state / "kubeconfig"

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.cert_path))

    def _get(self, url: str, context: ssl.SSLContext | None = None) -> bool:
        with urllib.request.urlopen(url, timeout=3, context=context) as answer:
            return answer.status == 200

    def _kubeconfigs(self) -> dict[str, Path]:
        ca = self.ca.cert_path
        users = {"admin": ("rig-admin", "system:masters"),
                 "controller-manager": ("system:kube-controller-manager", None),
                 "scheduler": ("system:kube-scheduler", None)}
        paths = {}
        for name, (common_name, org) in users.items():
            cert, key = self.ca.issue(name, common_name, organization=org, client=True)
            target = self.admin_kubeconfig if name == "admin" else self.state / f"{name}.kubeconfig"
            paths[name] = kubeconfig(target, self.server, ca, cert, key, common_name)
        return paths

    def start(self) -> None:
        ca = str(self.ca.cert_path)
        server_cert, server_key = self.ca.issue(
            "apiserver", "kube-apiserver",
            hosts=("127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default",
                   "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"))
        sa_key, sa_pub = self.ca.signing_key_pair("service-account")
        configs = self._kubeconfigs()
        p = self.ports

        etcd = self.daemons["etcd"]
        etcd.start([str(self.bin / "etcd"), "--name=rig", f"--data-dir={self.state / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{p['etcd']}",
                    f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
                    f"--listen-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
                    f"--initial-cluster=rig=http://127.0.0.1:{p['etcd_peer']}",
                    "--unsafe-no-fsync", "--quota-backend-bytes=2147483648", "--log-level=warn"])
        wait_until("etcd", lambda: self._get(f"http://127.0.0.1:{p['etcd']}/health"), 60, etcd.log, etcd.running)

        apiserver = self.daemons["kube-apiserver"]
        apiserver.start([
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={p['apiserver']}",
            f"--tls-cert-file={server_cert}", f"--tls-private-key-file={server_key}", f"--client-ca-file={ca}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Loopback cannot be an Endpoints address; nothing in-cluster dials the API service here.
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false", "--profiling=false", "--v=1"])
        wait_until("kube-apiserver", lambda: self._get(f"{self.server}/readyz", self._ssl()), 120,
                   apiserver.log, apiserver.running)

        for name, port_key in (("kube-controller-manager", "controller_manager"), ("kube-scheduler", "scheduler")):
            config = configs["controller-manager" if name == "kube-controller-manager" else "scheduler"]
            argv = [str(self.bin / name), f"--kubeconfig={config}", f"--authentication-kubeconfig={config}",
                    f"--authorization-kubeconfig={config}", "--bind-address=127.0.0.1",
                    f"--secure-port={p[port_key]}", "--leader-elect=false", "--v=1"]
            if name == "kube-controller-manager":
                argv += [f"--service-account-private-key-file={sa_key}", f"--root-ca-file={ca}",
                         "--use-service-account-credentials=true", "--controllers=*,-nodeipam,-service-lb-controller"]
            self.daemons[name].start(argv)

        kwok = self.daemons["kwok"]
        stages = [(self.bin / "stages.yaml").resolve(), *sorted(EXTRA_STAGES.glob("*.yaml"))]
        kwok.start([str(self.bin / "kwok"), f"--kubeconfig={configs['admin']}",
                    *(f"--config={path}" for path in stages), "--manage-all-nodes=false",
                    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                    "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
                    "--cidr=10.244.0.1/16", "--node-ip=10.0.0.10", "--node-lease-duration-seconds=40",
                    f"--server-address=127.0.0.1:{p['kwok']}"])

        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # self-signed serving certs
        for name, port_key in (("kube-controller-manager", "controller_manager"), ("kube-scheduler", "scheduler")):
            daemon = self.daemons[name]
            wait_until(name, lambda port=p[port_key]: self._get(f"https://127.0.0.1:{port}/healthz", insecure),
                       90, daemon.log, daemon.running)
        wait_until("kwok", lambda: self._get(f"http://127.0.0.1:{p['kwok']}/healthz"), 60, kwok.log, kwok.running)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([str(self.bin / "kubectl"), f"--kubeconfig={self.admin_kubeconfig}", *args],
                                input=stdin, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode:
            raise RigError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def register_nodes(self) -> None:
        """Create the missing simulated nodes and wait until every node is Ready; safe to repeat."""
        nodes = []
        for n in range(1, NODE_COUNT + 1):
            name = f"rig-node-{n}"
            nodes.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                                        "kubernetes.io/hostname": name, "type": "kwok",
                                        "node-role.kubernetes.io/worker": ""}},
                # kwok's node-initialize stage fills in conditions and nodeInfo, keeping these sizes.
                "status": {"capacity": NODE_SIZE, "allocatable": NODE_SIZE},
            })
        existing = set(self.kubectl("get", "nodes", "-o", "name").split())
        missing = [node for node in nodes if f"node/{node['metadata']['name']}" not in existing]
        if missing:
            self.kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": missing}))
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=90s")
        # The controller-manager creates each namespace's default ServiceAccount: pods need it.
        wait_until("default ServiceAccount", lambda: bool(self.kubectl("get", "serviceaccount", "default",
                                                                       "-o", "name")), 60)

    def add_openshift_flavour(self) -> None:
        crds = sorted((ASSETS / "openshift-crds").glob("*.yaml"))
        if not crds:
            raise RigError(f"no OpenShift CRDs in {ASSETS / 'openshift-crds'}")
        for crd in crds:
            self.kubectl("apply", "--server-side", "-f", str(crd))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd",
                     "securitycontextconstraints.security.openshift.io", "routes.route.openshift.io",
                     "configs.imageregistry.operator.openshift.io")
        self.kubectl("apply", "--server-side", "-f", str(Path(__file__).with_name("openshift-flavour.yaml")))

    def restart_apiserver(self, down_for: float) -> float:
        """Stop kube-apiserver (SIGTERM, as an operator or a node reboot does), keep it down, start it again.

        The other daemons stay up and reconnect on their own. Returns the seconds until /readyz answered again.
        """
        stopped_at = time.monotonic()
        self.daemons["kube-apiserver"].stop()
        time.sleep(down_for)
        self.start()  # starts only what is not running
        return time.monotonic() - stopped_at

    def healthy(self) -> bool:
        try:
            return all(d.running() for d in self.daemons.values()) and self._get(f"{self.server}/readyz", self._ssl())
        except OSError:
            return False

    def stop(self) -> list[str]:
        order = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
        return [name for name in order if self.daemons[name].stop()]
