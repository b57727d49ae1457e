from __future__ import annotations

import base64
import os
import subprocess

import pytest
from kubernetes.config import kube_config

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._memory_files import (
    keep_kube_credentials_in_memory,
    memory_file,
)

KEY = "-----BEGIN PRIVATE KEY-----\nnot-a-real-key-canary-7f3a\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setattr(kube_config, "_create_temp_file_with_content", kube_config._create_temp_file_with_content)
    return tmp_path


def kubeconfig() -> dict:
    cluster = {"server": "https://127.0.0.1:1", "certificate-authority-data": base64.b64encode(b"CA").decode()}
    return {"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "k", "cluster": cluster}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "users": [{"name": "u", "user": {"client-certificate-data": base64.b64encode(b"CERT").decode(),
                                             "client-key-data": base64.b64encode(KEY.encode()).decode()}}]}


def load(config: dict):
    configuration = type("Configuration", (), {})()
    kube_config.KubeConfigLoader(config_dict=config).load_and_set(configuration)
    return configuration


def test_the_kubernetes_client_writes_inline_keys_to_temporary_files_by_default(private_tmp):
    """What a killed run leaves behind without the change: the key in a file of TMPDIR."""
    configuration = load(kubeconfig())
    assert os.path.dirname(configuration.key_file) == str(private_tmp)
    with open(configuration.key_file, encoding="utf-8") as handle:
        assert handle.read() == KEY


def test_inline_keys_stay_in_memory(private_tmp):
    assert keep_kube_credentials_in_memory() is True
    assert keep_kube_credentials_in_memory() is True  # twice is once
    configuration = load(kubeconfig())
    for path, content in ((configuration.key_file, KEY), (configuration.cert_file, "CERT"),
                          (configuration.ssl_ca_cert, "CA")):
        assert path.startswith("/proc/self/fd/")
        with open(path, encoding="utf-8") as handle:  # readable by path, as OpenSSL reads it, and more than once
            assert handle.read() == content
        with open(path, encoding="utf-8") as handle:
            assert handle.read() == content
    assert not list(private_tmp.iterdir())


def test_a_memory_file_is_read_by_a_child_given_its_descriptor():
    fd = memory_file("x", b"hello" * 100000)
    try:
        out = subprocess.run(["wc", "-c", f"/dev/fd/{fd}"], pass_fds=(fd,), capture_output=True, text=True,
                             check=True).stdout
        assert out.split()[0] == "500000"
    finally:
        os.close(fd)
