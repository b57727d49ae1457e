"""Which kubeconfig user an exec plugin serves, and whether that program is here: as client-go chooses them."""

from __future__ import annotations

import json
import os

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


def test_the_current_contexts_exec_plugin_missing_from_path_is_named(tmp_path):
    path = tmp_path / "config"
    path.write_text(json.dumps(kubeconfig("eks", {"eks": EKS, "plain": TOKEN})))
    env = {"PATH": str(tmp_path)}
    assert missing_exec_plugin(str(path), None, env) == ("eks-user", "aws-cli-not-here")
    assert missing_exec_plugin(str(path), "plain", env) is None  # the context given wins over current-context
    assert missing_exec_plugin(kubeconfig("eks", {"eks": EKS}), None, env) == ("eks-user", "aws-cli-not-here")


def test_a_program_on_path_or_an_executable_absolute_one_is_there(tmp_path):
    program = tmp_path / "aws-cli-not-here"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    config = kubeconfig("eks", {"eks": EKS})
    assert missing_exec_plugin(config, None, {"PATH": str(tmp_path)}) is None
    absolute = kubeconfig("eks", {"eks": {"exec": {**EKS["exec"], "command": str(program)}}})
    assert missing_exec_plugin(absolute, None, {"PATH": ""}) is None
    program.chmod(0o644)
    assert missing_exec_plugin(absolute, None, {"PATH": ""}) == ("eks-user", str(program))


def test_files_are_read_as_kubeconfig_lists_them_first_entry_first(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text(json.dumps({"current-context": "eks", "users": [{"name": "eks-user", "user": TOKEN}]}))
    second.write_text(json.dumps(kubeconfig("other", {"eks": EKS})))
    listed = os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)])
    assert missing_exec_plugin(listed, None, {"PATH": ""}) is None  # the first file's eks-user has a token
    assert missing_exec_plugin(None, None, {"KUBECONFIG": f"{second}", "PATH": ""}) is None  # current: other
    assert missing_exec_plugin(None, "eks", {"KUBECONFIG": f"{second}", "PATH": ""}) == ("eks-user",
                                                                                         "aws-cli-not-here")


def test_what_it_cannot_read_is_left_to_the_kubernetes_client(tmp_path):
    (tmp_path / "bad").write_text("{not yaml: [")
    (tmp_path / "list").write_text("[1, 2]")
    home = tmp_path / "home"
    assert missing_exec_plugin(str(tmp_path / "bad"), None, {}) is None
    assert missing_exec_plugin(str(tmp_path / "list"), None, {}) is None
    assert missing_exec_plugin(None, None, {"HOME": str(home)}) is None  # no ~/.kube/config
    relative = kubeconfig("eks", {"eks": {"exec": {**EKS["exec"], "command": "./bin/token"}}})
    assert missing_exec_plugin(relative, None, {"PATH": ""}) is None
    assert missing_exec_plugin(kubeconfig("", {"eks": EKS}), None, {"PATH": ""}) is None  # no context chosen
