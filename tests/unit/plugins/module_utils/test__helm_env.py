from __future__ import annotations

import os
import subprocess

import pytest

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
    child = helm_connection({"context": "prod", "host": "https://k:6443", "api_key": "kube-token-1",
                             "ca_cert": "/ca.pem", "validate_certs": True, "kubeconfig": "~/kube/config"}, HELM,
                            source={"PATH": "/usr/bin", "DATAROBOT_API_TOKEN": "dr", "K8S_AUTH_KUBECONFIG": "/k"})
    assert child.env == {"PATH": "/usr/bin", "HELM_KUBECONTEXT": "prod", "HELM_KUBEAPISERVER": "https://k:6443",
                         "HELM_KUBETOKEN": "kube-token-1", "HELM_KUBECAFILE": "/ca.pem",
                         "KUBECONFIG": os.path.expanduser("~/kube/config")}
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
