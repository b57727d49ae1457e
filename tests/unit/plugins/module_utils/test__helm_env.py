from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _helm_env
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._helm_env import helm_connection
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._release_errors import InvalidReleaseRequest

HELM = (3, 19, 0)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """TMPDIR an empty directory of its own: whatever a connection writes to disk would land here."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    return tmp_path


def test_connection_options_become_helms_variables(private_tmp):
    child = helm_connection({"context": "prod", "host": "https://k:6443", "ca_cert": "/ca.pem",
                             "validate_certs": True, "kubeconfig": "~/kube/config"}, HELM,
                            source={"PATH": "/usr/bin", "DATAROBOT_API_TOKEN": "dr", "K8S_AUTH_KUBECONFIG": "/k"})
    assert child.env == {"PATH": "/usr/bin", "HELM_KUBECONTEXT": "prod", "HELM_KUBEAPISERVER": "https://k:6443",
                         "HELM_KUBECAFILE": "/ca.pem", "KUBECONFIG": os.path.expanduser("~/kube/config")}
    assert child.pass_fds == ()
    assert not list(private_tmp.iterdir())  # a kubeconfig path is handed on as is, never copied


def test_a_kubeconfig_dictionary_reaches_helm_in_memory_only(private_tmp):
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "users": [{"name": "u", "user": {"token": "kube-token-2"}}]}
    child = helm_connection({"kubeconfig": kubeconfig}, HELM, source={"PATH": os.environ["PATH"]})
    path = child.env["KUBECONFIG"]
    assert path.startswith("/dev/fd/")
    # a real child, given the descriptor as helm is, reads it (twice: client-go may open it more than once)
    read = subprocess.run(["sh", "-c", f'cat {path}; cat {path}'], pass_fds=child.pass_fds, capture_output=True,
                          text=True, env=child.env, check=True).stdout
    assert read.count("kube-token-2") == 2
    assert not list(private_tmp.iterdir())
    os.close(child.pass_fds[0])


def test_skipping_tls_verification_needs_a_helm_that_can():
    assert helm_connection({"validate_certs": False}, HELM, source={}).env == {
        "HELM_KUBEINSECURE_SKIP_TLS_VERIFY": "true"}
    with pytest.raises(InvalidReleaseRequest, match="helm >= 3.10"):
        helm_connection({"validate_certs": False}, (3, 9, 4), source={})


def test_a_kubeconfig_that_is_neither_path_nor_dictionary_is_refused():
    with pytest.raises(InvalidReleaseRequest, match="path of a kubeconfig file or a kubeconfig as a dictionary"):
        helm_connection({"kubeconfig": ["x"]}, HELM, source={})


TOKEN = "kube-api-key-0123456789"


def _given_kubeconfig(child) -> dict:
    """The kubeconfig helm is given: KUBECONFIG names a descriptor helm inherits, read here through this process."""
    path = child.env["KUBECONFIG"]
    assert path.startswith("/dev/fd/") and int(path[len("/dev/fd/"):]) in child.pass_fds
    with open(f"/proc/self/fd/{path[len('/dev/fd/'):]}", encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def _no_token_in(env) -> bool:
    return "HELM_KUBETOKEN" not in env and not any(TOKEN in value for value in env.values())


@pytest.fixture
def closing():
    """Closes the descriptors of the Child objects a test makes."""
    children = []
    yield children.append
    for child in children:
        for fd in child.pass_fds:
            os.close(fd)


def test_api_key_reaches_helm_in_an_in_memory_kubeconfig_never_in_its_environment(private_tmp, closing):
    home = private_tmp / "home"  # no ~/.kube/config
    child = helm_connection({"host": "https://k:6443", "api_key": TOKEN, "ca_cert": "/ca.pem", "validate_certs": True},
                            HELM, source={"PATH": "/usr/bin", "HOME": str(home), "HELM_KUBETOKEN": "the-users-own"})
    closing(child)
    assert _no_token_in(child.env) and "the-users-own" not in child.env.values()
    assert child.env == {"PATH": "/usr/bin", "HOME": str(home), "HELM_KUBEAPISERVER": "https://k:6443",
                         "HELM_KUBECAFILE": "/ca.pem", "KUBECONFIG": child.env["KUBECONFIG"]}
    given = _given_kubeconfig(child)
    assert given["current-context"] == "datarobot-mlops-api-key"
    assert given["contexts"] == [{"name": "datarobot-mlops-api-key", "context": {"user": "datarobot-mlops-api-key"}}]
    assert given["users"] == [{"name": "datarobot-mlops-api-key", "user": {"token": TOKEN}}]
    assert given["clusters"] == []  # the server and CA stay HELM_KUBEAPISERVER / HELM_KUBECAFILE, on top as before
    assert not list(private_tmp.iterdir())  # nothing written


KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: dev
clusters:
- {name: prod, cluster: {server: "https://prod:6443", certificate-authority: certs/ca.crt, proxy-url: "http://p:3128"}}
- {name: dev, cluster: {server: "https://dev:6443"}}
contexts:
- {name: prod, context: {cluster: prod, user: admin, namespace: agents}}
- {name: dev, context: {cluster: dev, user: dev}}
users:
- name: admin
  user:
    client-certificate: certs/admin.crt
    client-key: /abs/admin.key
    tokenFile: token.txt
    exec: {apiVersion: client.authentication.k8s.io/v1, command: ./bin/auth, args: [x]}
- {name: dev, user: {token: dev-token}}
"""


def test_api_key_is_added_to_the_user_of_the_context_helm_would_use_of_the_kubeconfig_given(tmp_path, closing):
    """As helm merges HELM_KUBETOKEN into the selected context's user: the rest of that user is kept, with its
    relative paths made absolute against the kubeconfig's directory (the copy lives in /dev/fd)."""
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "config").write_text(KUBECONFIG)
    child = helm_connection({"context": "prod", "api_key": TOKEN, "kubeconfig": str(tmp_path / "kube" / "config")},
                            HELM, source={"PATH": "/usr/bin"})
    closing(child)
    assert _no_token_in(child.env) and child.env["HELM_KUBECONTEXT"] == "prod"
    given, kube = _given_kubeconfig(child), tmp_path / "kube"
    assert given["current-context"] == "prod"
    assert given["contexts"] == [
        {"name": "prod", "context": {"cluster": "prod", "user": "admin", "namespace": "agents"}}]
    assert given["clusters"] == [{"name": "prod", "cluster": {
        "server": "https://prod:6443", "proxy-url": "http://p:3128", "certificate-authority": f"{kube}/certs/ca.crt"}}]
    assert given["users"] == [{"name": "admin", "user": {
        "client-certificate": f"{kube}/certs/admin.crt", "client-key": "/abs/admin.key",
        "tokenFile": f"{kube}/token.txt",
        "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": f"{kube}/bin/auth", "args": ["x"]},
        "token": TOKEN}}]


def test_without_a_context_option_the_first_current_context_of_kubeconfigs_files_is_used(tmp_path, closing):
    """KUBECONFIG lists files: the first to name a context, cluster or user wins, and the first current-context."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text(yaml.safe_dump({"users": [{"name": "dev", "user": {"username": "from-first"}}]}))
    second.write_text(KUBECONFIG)
    child = helm_connection({"api_key": TOKEN}, HELM, source={
        "PATH": "/usr/bin", "KUBECONFIG": f"{tmp_path}/missing:{first}:{second}:{first}"})
    closing(child)
    given = _given_kubeconfig(child)
    assert _no_token_in(child.env) and "HELM_KUBECONTEXT" not in child.env
    assert given["current-context"] == "dev" and given["contexts"] == [
        {"name": "dev", "context": {"cluster": "dev", "user": "dev"}}]
    assert given["users"] == [{"name": "dev", "user": {"username": "from-first", "token": TOKEN}}]
    assert given["clusters"] == [{"name": "dev", "cluster": {"server": "https://dev:6443"}}]


def test_the_home_kubeconfig_is_read_when_nothing_names_another(tmp_path, closing):
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(KUBECONFIG)
    child = helm_connection({"api_key": TOKEN}, HELM, source={"PATH": "/usr/bin", "HOME": str(tmp_path)})
    closing(child)
    assert _given_kubeconfig(child)["users"] == [{"name": "dev", "user": {"token": TOKEN}}]


def test_api_key_with_a_kubeconfig_dictionary_stays_in_memory(private_tmp, closing):
    kubeconfig = yaml.safe_load(KUBECONFIG)
    child = helm_connection({"kubeconfig": kubeconfig, "api_key": TOKEN, "context": "prod"}, HELM,
                            source={"PATH": "/usr/bin"})
    closing(child)
    given = _given_kubeconfig(child)
    assert _no_token_in(child.env) and len(child.pass_fds) == 1
    # relative paths stay as they were: the dictionary was read from /dev/fd before too
    assert given["users"][0]["user"]["client-certificate"] == "certs/admin.crt"
    assert given["users"][0]["user"]["token"] == TOKEN
    assert not list(private_tmp.iterdir())


def test_a_context_that_does_not_exist_gets_no_token(tmp_path, closing):
    (tmp_path / "config").write_text(KUBECONFIG)
    child = helm_connection({"context": "nope", "api_key": TOKEN, "kubeconfig": str(tmp_path / "config")}, HELM,
                            source={})
    closing(child)
    assert TOKEN not in json.dumps(_given_kubeconfig(child))  # helm fails on the missing context, as it did


def test_an_unreadable_kubeconfig_is_a_clear_error_that_quotes_nothing_of_it(tmp_path):
    (tmp_path / "config").write_text("users: [{name: u, user: {token: 'secret-in-file'}}\n: : bad")
    with pytest.raises(InvalidReleaseRequest, match=r"is not valid YAML \(line \d+\)") as raised:
        helm_connection({"api_key": TOKEN, "kubeconfig": str(tmp_path / "config")}, HELM, source={})
    assert "secret-in-file" not in str(raised.value) and str(tmp_path) not in str(raised.value)


def test_without_memory_files_the_token_stays_helms_variable(monkeypatch):
    """Not Linux: the other ways would be a file on disk or helm's command line."""
    monkeypatch.setattr(_helm_env, "AVAILABLE", False)
    child = helm_connection({"api_key": TOKEN}, HELM, source={"HELM_KUBETOKEN": "the-users-own"})
    assert child.env == {"HELM_KUBETOKEN": TOKEN} and child.pass_fds == ()
