"""Which kubeconfig user an exec plugin serves, and whether that program is here: the connection settled as
kubernetes.core settles it (options, else K8S_AUTH_*), the context and user as client-go chooses them."""

from __future__ import annotations

import json
import os

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _kubeconfig_exec
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._kubeconfig_exec import (
    missing_exec_plugin,
)


def kubeconfig(current: str, users: dict[str, dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "contexts": [{"name": name, "context": {"cluster": "c", "user": f"{name}-user"}} for name in users],
            "users": [{"name": f"{name}-user", "user": user} for name, user in users.items()]}


EKS = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws-cli-not-here",
                "args": ["eks", "get-token", "--cluster-name", "prod"]}}
TOKEN = {"token": "not-a-token"}
MISSING = ("eks-user", "aws-cli-not-here")


def test_the_chosen_contexts_exec_plugin_missing_from_path_is_named(tmp_path):
    path = tmp_path / "config"
    path.write_text(json.dumps(kubeconfig("eks", {"eks": EKS, "plain": TOKEN})))
    env = {"PATH": str(tmp_path)}
    assert missing_exec_plugin({"kubeconfig": str(path)}, env) == MISSING
    assert missing_exec_plugin({"kubeconfig": str(path), "context": "plain"}, env) is None  # over current-context
    assert missing_exec_plugin({"kubeconfig": kubeconfig("eks", {"eks": EKS})}, env) == MISSING


def test_the_k8s_auth_variables_choose_as_the_roles_environment_does(tmp_path):
    """The roles pick a cluster with K8S_AUTH_KUBECONFIG and K8S_AUTH_CONTEXT in the play's environment."""
    chosen, default = tmp_path / "chosen", tmp_path / "default"
    chosen.write_text(json.dumps(kubeconfig("gke", {"gke": EKS, "eks": TOKEN})))
    default.write_text(json.dumps(kubeconfig("gke", {"gke": EKS})))
    env = {"PATH": "", "KUBECONFIG": str(default), "K8S_AUTH_KUBECONFIG": str(chosen), "K8S_AUTH_CONTEXT": "eks"}
    assert missing_exec_plugin({}, env) is None  # eks in the chosen file has a token; gke is not used
    assert missing_exec_plugin({"context": "gke"}, env) == ("gke-user", "aws-cli-not-here")  # the option wins
    assert missing_exec_plugin({}, {"PATH": "", "KUBECONFIG": str(default)}) == ("gke-user", "aws-cli-not-here")


def test_no_kubeconfig_is_read_where_the_client_reads_none(tmp_path, monkeypatch):
    path = tmp_path / "config"
    path.write_text(json.dumps(kubeconfig("eks", {"eks": EKS})))
    env = {"PATH": "", "K8S_AUTH_KUBECONFIG": str(path)}
    assert missing_exec_plugin({}, env) == MISSING
    assert missing_exec_plugin({"api_key": "t"}, env) is None  # the token is sent whatever the user says
    assert missing_exec_plugin({}, {**env, "K8S_AUTH_API_KEY": "t"}) is None
    assert missing_exec_plugin({"host": "https://k", "username": "u", "password": "p"}, env) is None
    assert missing_exec_plugin({"host": "https://k", "cert_file": "c", "key_file": "k"}, env) is None
    assert missing_exec_plugin({"host": "https://k"}, env) == MISSING  # a host alone: the kubeconfig's user
    token = tmp_path / "token"
    token.write_text("sa-token")
    monkeypatch.setattr(_kubeconfig_exec, "SERVICE_ACCOUNT_TOKEN", str(token))
    in_pod = {"PATH": "", "KUBECONFIG": str(path), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert missing_exec_plugin({}, in_pod) is None  # in a pod the in-cluster config comes first
    assert missing_exec_plugin({"kubeconfig": str(path)}, in_pod) == MISSING  # unless a kubeconfig is named


def test_a_program_on_path_in_the_plugins_own_path_or_absolute_and_executable_is_there(tmp_path):
    program = tmp_path / "aws-cli-not-here"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    config = {"kubeconfig": kubeconfig("eks", {"eks": EKS})}
    assert missing_exec_plugin(config, {"PATH": str(tmp_path)}) is None
    own_path = {"exec": {**EKS["exec"], "env": [{"name": "PATH", "value": str(tmp_path)}]}}
    assert missing_exec_plugin({"kubeconfig": kubeconfig("eks", {"eks": own_path})}, {"PATH": ""}) is None
    absolute = {"kubeconfig": kubeconfig("eks", {"eks": {"exec": {**EKS["exec"], "command": str(program)}}})}
    assert missing_exec_plugin(absolute, {"PATH": ""}) is None
    program.chmod(0o644)
    assert missing_exec_plugin(absolute, {"PATH": ""}) == ("eks-user", str(program))


def test_files_are_read_as_kubeconfig_lists_them_first_entry_first(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text(json.dumps({"current-context": "eks", "users": [{"name": "eks-user", "user": TOKEN}]}))
    second.write_text(json.dumps(kubeconfig("other", {"eks": EKS})))
    listed = os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)])
    assert missing_exec_plugin({"kubeconfig": listed}, {"PATH": ""}) is None  # the first file's eks-user: a token
    assert missing_exec_plugin({}, {"KUBECONFIG": f"{second}", "PATH": ""}) is None  # current: other
    assert missing_exec_plugin({"context": "eks"}, {"KUBECONFIG": f"{second}", "PATH": ""}) == MISSING


def test_what_it_cannot_read_is_left_to_the_kubernetes_client(tmp_path):
    (tmp_path / "bad").write_text("{not yaml: [")
    (tmp_path / "list").write_text("[1, 2]")
    home = tmp_path / "home"
    assert missing_exec_plugin({"kubeconfig": str(tmp_path / "bad")}, {}) is None
    assert missing_exec_plugin({"kubeconfig": str(tmp_path / "list")}, {}) is None
    assert missing_exec_plugin({}, {"HOME": str(home)}) is None  # no ~/.kube/config
    relative = kubeconfig("eks", {"eks": {"exec": {**EKS["exec"], "command": "./bin/token"}}})
    assert missing_exec_plugin({"kubeconfig": relative}, {"PATH": ""}) is None
    assert missing_exec_plugin({"kubeconfig": kubeconfig("", {"eks": EKS})}, {"PATH": ""}) is None  # no context
    assert missing_exec_plugin({"kubeconfig": kubeconfig("gone", {"eks": EKS})}, {"PATH": ""}) is None  # unknown
