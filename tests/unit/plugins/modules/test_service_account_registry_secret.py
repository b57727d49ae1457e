"""service_account_registry_secret connects the way every Kubernetes module of the collection does: a kubeconfig's
inline key stays in memory, so a run killed while it connects leaves no file holding it."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from kubernetes.config import kube_config

from fixtures.module_args import module_args
from ansible_collections.datarobot_mlops.management_agent.plugins.modules import service_account_registry_secret

WRITES_TEMP_FILES = kube_config._create_temp_file_with_content  # the client's own, as imported before any test ran


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """TMPDIR an empty directory of its own, and the kubernetes client as it comes (writing temporary files)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setattr(kube_config, "_create_temp_file_with_content", WRITES_TEMP_FILES)
    return tmp_path


def test_a_kubeconfigs_client_key_is_written_to_no_file(capsys, private_tmp):
    canary = f"not-a-real-key-canary-{uuid.uuid4()}"  # new content: the client reuses a file it wrote for the same
    user = {"client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(canary.encode()).decode()}
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
                  "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
                  "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                  "users": [{"name": "u", "user": user}]}
    args = {"namespace": "ns", "service_account": "builder", "registries": ["r.example"], "kubeconfig": kubeconfig}
    with module_args(args), pytest.raises(SystemExit):
        service_account_registry_secret.main()
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] is True and "Cannot reach the API server" in result["msg"]  # it got as far as connecting
    files = [path for path in private_tmp.rglob("*") if path.is_file()]
    assert [path for path in files if canary in path.read_text(errors="replace")] == []
