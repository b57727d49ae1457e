"""preflight on the rig: passes on a fitting cluster, otherwise one message listing every gap."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_cli import ansible_env, run_playbook
from conftest import REPO, _up, kubectl
from token_registry import TokenRegistry

PLAYBOOK = "playbooks/preflight.yml"


def _registry(rig, password: str | None = None, host: str | None = None) -> dict:
    return {"host": host or rig["RIG_REGISTRY"], "username": rig["RIG_REGISTRY_USER"],
            "password": password or rig["RIG_REGISTRY_PASSWORD"], "ca_path": rig["RIG_REGISTRY_CA"]}


def test_preflight_passes_on_the_rig_and_publishes_facts(rig):
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_registry": _registry(rig)}, check=True)
    assert run.returncode == 0, run.failure()
    assert run.changed == 0
    facts = run.task("Publish what later stages need")["ansible_facts"]
    assert facts["__preflight_published"]["platform"] == "kubernetes"
    assert facts["__preflight_published"]["server_version"] == "1.35"
    assert rig["RIG_REGISTRY_PASSWORD"] not in run.stdout + run.stderr


def test_every_problem_is_listed_in_one_failure(rig):
    run = run_playbook(PLAYBOOK, extra_vars={
        "mlops_preflight_registry": _registry(rig, password="wrong-password"),
        "mlops_helm_binary": "/nonexistent/helm",
        "mlops_preflight_min_node_memory": "64Gi",
        "mlops_management_agent_ingress_class": "absent-class",
        "mlops_ingress_nginx_enabled": False,
    })
    assert run.returncode != 0
    message = run.failure()
    lines = message.split("\n- ")
    assert lines[0] == "The cluster is not ready for the management agent:"
    assert any("memory capacity 6.0Gi (6.0Gi allocatable) < 64Gi" in line for line in lines)
    assert ("helm (/nonexistent/helm) was not found or did not run: install helm 3.8.0 or later 3.x, or helm 4.x, "
            "or set mlops_helm_binary.") in message
    assert (f"Registry {rig['RIG_REGISTRY']} rejected the credentials for user '{rig['RIG_REGISTRY_USER']}': check "
            "username/password") in message
    assert "No ingress class absent-class exists and ingress_nginx will not install one" in message
    assert len(lines) == 5
    assert "wrong-password" not in run.stdout + run.stderr


@pytest.mark.parametrize("helm", ["HELM3", "HELM4"])
def test_a_site_floor_above_the_helm_is_refused_with_the_version_message(rig, helm):
    pins = (REPO / "tests/rig/versions.env").read_text()
    version = pins.split(f"\n{'HELM' if helm == 'HELM3' else helm}_VERSION=v")[1].split()[0]
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_helm_min_version": "9.0.0",
                                             "mlops_helm_binary": rig[helm]})
    assert f"The collection requires helm >= 9.0.0, current version is {version}: upgrade helm." in run.failure()


def test_an_unreachable_registry_is_named(rig):
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_registry": _registry(rig, host="127.0.0.1:9")})
    message = run.failure()
    assert "Cannot reach registry 127.0.0.1:9 (GET /v2/): [Errno 111] Connection refused" in message, message
    assert "Check the host, port and network" in message


def test_only_small_nodes(rig):
    small = {"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": "small-node", "annotations": {"kwok.x-k8s.io/node": "fake"}},
             "status": {"capacity": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "10Gi", "pods": "110"},
                        "allocatable": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "10Gi", "pods": "110"}}}
    kubectl("create", "-f", "-", stdin=json.dumps(small))
    try:
        kubectl("wait", "--for=condition=Ready", "node/small-node", "--timeout=60s")
        kubectl("delete", "node", "rig-node-1", "rig-node-2", "rig-node-3")
        run = run_playbook(PLAYBOOK)
        assert run.returncode != 0
        assert ("No schedulable node has at least 2 CPU, 6G memory and 38G ephemeral storage (node capacity) "
                "(small-node: cpu capacity 1 (1 allocatable) < 2, memory capacity 2.0Gi (2.0Gi allocatable) < 6G, "
                "ephemeral-storage capacity 10.0Gi (10.0Gi allocatable) < 38G): add or resize a node pool"
                in run.failure())
    finally:
        kubectl("delete", "node", "small-node", check=False)
        _up("kubernetes")  # puts the rig's three nodes back


def kubeconfig_of(namespace: str, account: str, path: Path) -> tuple[Path, str]:
    """A kubeconfig that acts as ServiceAccount `account` of `namespace` (created here), and its token."""
    kubectl("-n", namespace, "create", "serviceaccount", account)
    token = kubectl("-n", namespace, "create", "token", account).stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": account,
        "clusters": [{"name": "rig", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "rig", "user": account}}],
    }
    path.write_text(json.dumps(kubeconfig))
    return path, token


def test_a_kubeconfig_without_rights(rig, namespace, tmp_path):
    path, token = kubeconfig_of(namespace, "nobody", tmp_path / "kubeconfig")
    run = run_playbook(PLAYBOOK, env=ansible_env(KUBECONFIG=str(path)))
    assert run.returncode != 0
    assert "forbids it: grant the user read access, or run as a cluster administrator." in run.failure()
    assert token not in run.stdout + run.stderr


def test_bad_variables_fail_before_anything_runs(rig):
    # A collection-wide variable: the playbook's own check, before the role starts.
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_cluster_platform": "windows", "mlops_preflight_registry": "not-a-dict"})
    assert run.returncode != 0
    message = run.failure()
    assert "mlops_cluster_platform" in message and "windows" in message
    assert not any("cluster_requirements" in str(task["task"]) or task["task"]["name"].endswith("Check the cluster's "
                   "version, nodes and permissions") for play in run.document["plays"] for task in play["tasks"])
    # The role's own variable: its argument spec.
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_registry": "not-a-dict"})
    assert run.returncode != 0
    assert "mlops_preflight_registry" in run.failure()


def test_a_token_auth_registry_is_probed_through_the_pushing_client(rig):
    """Docker Hub, GitLab and ACR want a Bearer token from their token service: Basic auth on /v2/ is always
    answered 401, so a probe that sends Basic would call correct credentials rejected. The rig's token registry,
    over TLS with its CA."""
    registry = TokenRegistry(rig).reset()
    login = {"host": registry.address, "username": registry.username, "password": registry.password,
             "ca_path": registry.ca_path}
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_registry": login}, check=True)
    assert run.returncode == 0, run.failure()
    assert run.changed == 0
    asked = registry.requests
    assert asked and all(request["authorized"] for request in asked)
    assert all(request["scopes"] == [] for request in asked)  # a login check reads no repository
    assert registry.password not in run.stdout + run.stderr
    registry.reset()
    wrong = run_playbook(PLAYBOOK, extra_vars={"mlops_preflight_registry": {**login, "password": "wrong-one"}})
    assert wrong.returncode != 0
    assert (f"Registry {registry.address} rejected the credentials for user '{registry.username}': check "
            "username/password") in wrong.failure(), wrong.failure()
    assert registry.requests and not any(request["authorized"] for request in registry.requests)
    assert "wrong-one" not in wrong.stdout + wrong.stderr


# What the checked list asked for before it covered the run's real calls: a user holding exactly this passed.
EARLIER_GRANTS = [
    {"verb": "create", "resource": "namespaces"},
    {"verb": "create", "resource": "secrets", "namespaced": True},
    {"verb": "create", "resource": "configmaps", "namespaced": True},
    {"verb": "create", "resource": "serviceaccounts", "namespaced": True},
    {"verb": "create", "group": "apps", "resource": "deployments", "namespaced": True},
    {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "roles", "namespaced": True},
    {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "rolebindings", "namespaced": True},
    {"verb": "update", "group": "coordination.k8s.io", "resource": "leases", "namespaced": True},
    {"verb": "create", "group": "networking.k8s.io", "resource": "ingressclasses"},
]
# What cluster_requirements itself reads (nodes, ingress classes).
SURVEY_GRANTS = [
    {"verb": "list", "resource": "nodes"},
    {"verb": "list", "group": "networking.k8s.io", "resource": "ingressclasses"},
]


def role_defaults(namespace: str, platform: str = "kubernetes") -> list[dict]:
    """The role's own permission lists for `platform` (defaults/main.yml), its namespace template filled in."""
    text = (REPO / "roles/preflight/defaults/main.yml").read_text().replace("{{ mlops_namespace }}", namespace)
    defaults = yaml.safe_load(text)
    return defaults["mlops_preflight_permissions"] + defaults[f"mlops_preflight_{platform}_permissions"]


def grant(name: str, namespace: str, account: str, permissions: list[dict]) -> None:
    """A ClusterRole for the cluster-wide actions and a Role for the namespaced ones, bound to the account."""
    def rules(entries):
        return [{"apiGroups": [entry.get("group", "")],
                 "resources": [entry["resource"] + (f"/{entry['subresource']}" if entry.get("subresource") else "")],
                 "verbs": [entry["verb"]]} for entry in entries]

    namespaced = [entry for entry in permissions if entry.get("namespace") or entry.get("namespaced")]
    cluster_wide = [entry for entry in permissions if entry not in namespaced]
    subject = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    objects = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": rules(cluster_wide)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": namespace}, "rules": rules(namespaced)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}, "subjects": subject},
    ]
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def test_permissions_cover_what_the_run_does(rig, namespace, tmp_path):
    """Helm's release storage (secrets get/list/update/delete), drift repair (patch) and the release Lease
    (get/create/update/delete) are asked for before anything changes; the role's list is exactly enough."""
    path = kubeconfig_of(namespace, "installer", tmp_path / "kubeconfig")[0]
    name = f"{namespace}-installer"
    settings = {"mlops_namespace": namespace}
    try:
        grant(name, namespace, "installer", EARLIER_GRANTS + SURVEY_GRANTS)
        earlier = run_playbook(PLAYBOOK, extra_vars=settings, env=ansible_env(KUBECONFIG=str(path)))
        assert earlier.returncode != 0, "a user who may not manage helm's release secrets passed preflight"
        message = earlier.failure()
        for missing in ("get secrets (core API group)", "list secrets (core API group)",
                        "update secrets (core API group)", "delete secrets (core API group)",
                        "patch deployments (apps API group)", "patch configmaps (core API group)",
                        "patch secrets (core API group)", "get leases (coordination.k8s.io API group)",
                        "create leases (coordination.k8s.io API group)",
                        "delete leases (coordination.k8s.io API group)"):
            assert f"Not allowed to {missing} in namespace {namespace}" in message, message
        kubectl("delete", "clusterrole,clusterrolebinding", name)
        grant(name, namespace, "installer", role_defaults(namespace) + SURVEY_GRANTS)
        enough = run_playbook(PLAYBOOK, extra_vars=settings, env=ansible_env(KUBECONFIG=str(path)), check=True)
        assert enough.returncode == 0, enough.failure()
    finally:
        kubectl("delete", "clusterrole,clusterrolebinding", name, "--ignore-not-found", check=False)


def _kubernetes_core_seen(env: dict[str, str] | None) -> str:
    """The kubernetes.core version ansible-galaxy resolves first with `env` (what a task would run)."""
    proc = subprocess.run([str(REPO / ".venv/bin/ansible-galaxy"), "collection", "list", "kubernetes.core",
                           "--format", "json"], capture_output=True, text=True, env=env or ansible_env(), cwd=REPO,
                          check=True, timeout=120)
    found = [info["version"] for collections in json.loads(proc.stdout).values()
             for fqcn, info in collections.items() if fqcn == "kubernetes.core"]
    return found[0]


@pytest.mark.parametrize("collections", ["ansible package", "checkout"])
def test_helm_4_with_a_kubernetes_core_that_cannot_drive_it_is_refused(rig, collections, tmp_path):
    """Under helm 4 the ingress stage needs kubernetes.core 6.6.0+. With only our collection on the collections path
    the `ansible` package's older one (6.2.0) is what runs, and preflight refuses before anything changes; the
    checkout's .collections (`make setup`) holds 6.6.0, and preflight passes."""
    env = None
    if collections == "ansible package":
        link = tmp_path / "ansible_collections" / "datarobot_mlops" / "management_agent"
        link.parent.mkdir(parents=True)
        link.symlink_to(REPO)
        env = ansible_env(ANSIBLE_COLLECTIONS_PATH=str(tmp_path))
    version = _kubernetes_core_seen(env)
    run = run_playbook(PLAYBOOK, extra_vars={"mlops_helm_binary": rig["HELM4"]}, env=env)
    if collections == "checkout":
        assert version == "6.6.0"
        assert run.returncode == 0, run.failure()
        return
    assert version.split(".")[0] == "6" and tuple(map(int, version.split(".")[:2])) < (6, 6), version
    message = run.failure()
    assert (f"helm is 4.x and the ingress stage installs the NGINX controller with kubernetes.core.helm, but "
            f"kubernetes.core {version} (at ") in message, message
    assert "install kubernetes.core 6.6.0 or later (ansible-galaxy collection install 'kubernetes.core>=6.6.0')" in message
    assert "or set mlops_ingress_nginx_enabled to false" in message and "or use helm 3" in message
    # the same helm 4 with the ingress stage off: nothing to refuse
    quiet = run_playbook(PLAYBOOK, extra_vars={"mlops_helm_binary": rig["HELM4"], "mlops_ingress_nginx_enabled": False,
                                               "mlops_ingress_nginx_class": "absent-class"}, env=env)
    assert "No ingress class absent-class exists" in quiet.failure()
    assert "kubernetes.core.helm" not in quiet.failure()
    # the same helm 4 with the ingress stage on but left out of the run: nothing to refuse either, and the class is
    # checked, as this run will not install it
    skipped = run_playbook(PLAYBOOK, extra_vars={"mlops_helm_binary": rig["HELM4"],
                                                 "mlops_ingress_nginx_class": "absent-class"},
                           skip_tags="ingress", env=env)
    assert ("No ingress class absent-class exists and this run skips the ingress stage (--skip-tags): run it, or set "
            "mlops_ingress_nginx_class to an existing class") in skipped.failure()
    assert "kubernetes.core.helm" not in skipped.failure()
