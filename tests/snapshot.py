"""Snapshot what a --check run must not change, as JSON: compare two snapshots for equality.

Cluster: namespaces (but other tests' t-*); every listable object in the given namespaces and every cluster-scoped
RBAC object and IngressClass, by kind/name with resourceVersion; helm releases with revision and status. Registries:
tags and manifest digests of the four repositories a site run uses, in the rig's TLS and HTTP registries. DataRobot: the fake's prediction environments.
Used by the Molecule check scenario and the reliability suite. Reads the rig's environment (.rig/env).

    python tests/snapshot.py OUT.json NAMESPACE...       take a snapshot
    python tests/snapshot.py --compare BEFORE AFTER [NAMESPACE...]
        print the entries that differ; exit 1 if any does. With namespaces: only entries a site.yml run in those
        namespaces could have touched count; the others (other work on the shared rig) are listed, not counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import requests

CLUSTER_KINDS = "clusterroles,clusterrolebindings,ingressclasses,namespaces"
# The repositories a site run pushes to (other tests push to repositories of their own).
OUR_REPOSITORIES = ("datarobot/mlops-management-agent", "datarobot/mlops-tracking-agent",
                    "datarobot/datarobot-portable-prediction-api", "mlops/frozen-models")
INGRESS_RELEASE = "nginx-ingress"
ENVIRONMENT_NAME = "management-agent-local-rig"  # the prediction environment site.yml keeps for the local inventory
SITE_TAG = "9.2.0"  # the tags site.yml pushes (mlops_pps_image_version, the fixture tarball's appVersion)


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout


def _objects(*args: str, skip_namespaces: tuple[str, ...] = ()) -> list[str]:
    items = json.loads(_run(os.environ["KUBECTL"], "get", *args, "-o", "json"))["items"]
    # Other tests' namespaces (t-...) come and go; the ones asked for are always kept.
    items = [item for item in items if not (item["kind"] == "Namespace" and item["metadata"]["name"].startswith("t-")
                                            and item["metadata"]["name"] not in skip_namespaces)]
    return sorted(f"{item['kind']}/{item['metadata'].get('namespace', '')}/{item['metadata']['name']}"
                  f"@{item['metadata'].get('resourceVersion')}" for item in items)


def cluster(namespaces: list[str]) -> dict[str, Any]:
    kinds = _run(os.environ["KUBECTL"], "api-resources", "--namespaced=true", "--verbs=list", "-o", "name").split()
    # Events move on their own. Leases stay: in our namespaces the only one is agent_deployment's (kwok's pods run no
    # leader election), and a --check run must not take it.
    kinds = [kind for kind in kinds if kind.split(".")[0] != "events"]
    existing = set(_run(os.environ["KUBECTL"], "get", "namespaces", "-o", "name").split())
    snapshot: dict[str, Any] = {"cluster": _objects(CLUSTER_KINDS, skip_namespaces=tuple(namespaces))}
    for namespace in namespaces:
        snapshot[namespace] = (_objects(",".join(kinds), "-n", namespace)
                               if f"namespace/{namespace}" in existing else "absent")
    releases = json.loads(_run(os.environ["HELM"], "list", "--all-namespaces", "--all", "-o", "json"))
    snapshot["helm"] = sorted(f"{r['namespace']}/{r['name']}@{r['revision']}:{r['status']}" for r in releases
                              if not r["namespace"].startswith("t-") or r["namespace"] in namespaces)
    return snapshot


def registry(address: str, secure: bool) -> dict[str, list[str]]:
    session = requests.Session()
    verify: Any = os.environ["RIG_REGISTRY_CA"] if secure else False
    auth = (os.environ["RIG_REGISTRY_USER"], os.environ["RIG_REGISTRY_PASSWORD"]) if secure else None
    base = f"{'https' if secure else 'http'}://{address}/v2"
    accept = ", ".join(["application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.oci.image.index.v1+json"])
    answer = session.get(f"{base}/_catalog?n=1000", auth=auth, verify=verify, timeout=30)
    answer.raise_for_status()
    repositories = answer.json()
    result = {}
    for repository in repositories.get("repositories") or []:
        if repository not in OUR_REPOSITORIES:
            continue
        tags = session.get(f"{base}/{repository}/tags/list", auth=auth, verify=verify, timeout=30).json()
        digests = []
        for tag in tags.get("tags") or []:
            head = session.head(f"{base}/{repository}/manifests/{tag}", auth=auth, verify=verify, timeout=30,
                                headers={"Accept": accept})
            digests.append(f"{tag}@{head.headers.get('Docker-Content-Digest')}")
        result[repository] = sorted(digests)
    return result


def datarobot() -> list[str]:
    url: str | None = os.environ["DATAROBOT_ENDPOINT"].rstrip("/") + "/predictionEnvironments/?limit=100"
    items = []
    while url:
        answer = requests.get(url, headers={"Authorization": f"Token {os.environ['DATAROBOT_API_TOKEN']}"},
                              verify=os.environ["DATAROBOT_CA_PATH"], timeout=30)
        answer.raise_for_status()
        page = answer.json()
        items += page.get("data", [])
        url = page.get("next")
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def snapshot(namespaces: list[str]) -> dict[str, Any]:
    return {**cluster(namespaces), "registry": registry(os.environ["RIG_REGISTRY"], True),
            "insecure_registry": registry(os.environ["RIG_INSECURE_REGISTRY"], False), "datarobot": datarobot()}


def entries(value: Any) -> set[str]:
    """One snapshot key's value as a set of comparable entries."""
    if isinstance(value, dict):  # registry: repository -> [tag@digest]
        return {f"{repository}:{tag}" for repository, tags in value.items() for tag in tags} | {
            f"{repository}:(repository)" for repository in value}
    if isinstance(value, list):
        return set(value)
    return {str(value)}  # "absent"


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, entry) for every entry present in only one of the two snapshots."""
    return [(key, entry) for key in sorted(set(before) | set(after))
            for entry in sorted(entries(before.get(key, [])) ^ entries(after.get(key, [])))]


def site_could_touch(key: str, entry: str, namespaces: list[str]) -> bool:
    """Whether a snapshot entry is something site.yml (local inventory) in these namespaces could have touched."""
    if key in namespaces:
        return True
    if key == "helm":
        return entry.split("/", 1)[0] in namespaces
    if key == "cluster":
        kind, rest = entry.split("//", 1) if "//" in entry else (entry, "")
        name = rest.rsplit("@", 1)[0]
        if kind == "Namespace":
            return name in namespaces
        return name.startswith(INGRESS_RELEASE) or name == "mlops" or any(ns in name for ns in namespaces)
    if key in ("registry", "insecure_registry"):
        repository, tag = entry.split(":", 1) if ":" in entry else (entry, "")
        return repository in OUR_REPOSITORIES and (tag == "(repository)" or tag.startswith(SITE_TAG + "@"))
    if key == "datarobot":
        return json.loads(entry).get("name") == ENVIRONMENT_NAME
    return True


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compare"]:
        loaded = []
        for path in argv[1:3]:
            with open(path, encoding="utf-8") as source:
                loaded.append(json.load(source))
        namespaces = argv[3:]
        found = differences(*loaded)
        counted = [(key, entry) for key, entry in found if not namespaces or site_could_touch(key, entry, namespaces)]
        for key, entry in found:
            print(f"{key}: {entry[:240]}" + ("" if (key, entry) in counted else "   (not ours: ignored)"))
        print(f"{len(counted)} entries differ" if counted else
              f"identical{f' (but {len(found)} entries of others)' if found else ''}")
        return 1 if counted else 0
    with open(argv[0], "w", encoding="utf-8") as out:
        json.dump(snapshot(argv[1:]), out, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
