from __future__ import annotations

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import (
    child_environment,
    credential_helper_environment,
    helm_environment,
)

USER_ENV = {
    "PATH": "/usr/bin", "HOME": "/home/u", "LC_ALL": "C.UTF-8", "XDG_CONFIG_HOME": "/home/u/.config",
    "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost", "SSL_CERT_FILE": "/etc/ca.pem",
    "KUBECONFIG": "/home/u/.kube/config", "HELM_CACHE_HOME": "/c", "AWS_PROFILE": "eks", "CLOUDSDK_CONFIG": "/g",
    "DATAROBOT_API_TOKEN": "dr-token-123456", "REGISTRY_PASSWORD": "reg-password-1", "K8S_AUTH_API_KEY": "kube-key-1",
    "MY_NOTE": "neutral-canary-1", "ANSIBLE_CONFIG": "/a.cfg", "GNUPGHOME": "/home/u/.gnupg",
}


def test_helm_gets_the_common_variables_and_its_own_and_none_of_the_others():
    env = helm_environment({"HELM_KUBECONTEXT": "prod"}, source=USER_ENV)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "LC_ALL": "C.UTF-8", "XDG_CONFIG_HOME": "/home/u/.config",
                   "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost", "SSL_CERT_FILE": "/etc/ca.pem",
                   "KUBECONFIG": "/home/u/.kube/config", "HELM_CACHE_HOME": "/c", "AWS_PROFILE": "eks",
                   "CLOUDSDK_CONFIG": "/g", "HELM_KUBECONTEXT": "prod"}


def test_a_credential_helper_gets_its_own_variables_and_not_helms():
    env = credential_helper_environment(source=USER_ENV)
    assert env["GNUPGHOME"] == "/home/u/.gnupg" and env["AWS_PROFILE"] == "eks"
    assert not {"KUBECONFIG", "HELM_CACHE_HOME", "DATAROBOT_API_TOKEN", "REGISTRY_PASSWORD", "MY_NOTE"} & set(env)


def test_a_variable_holding_a_known_secret_is_withheld_whatever_its_name():
    source = {**USER_ENV, "AWS_SESSION_NOTE": "x-chart-secret-value-x", "HELM_KUBETOKEN": "kube-token-42"}
    env = helm_environment({"HELM_KUBEAPISERVER": "https://k"}, source=source,
                           withhold=["chart-secret-value", "short", "", "kube-token-42"])
    assert "AWS_SESSION_NOTE" not in env and "HELM_KUBETOKEN" not in env
    assert env["PATH"] == "/usr/bin"  # "short" is below the minimum length: it could take anything away
    # what the caller gives is meant for the child, and kept
    assert child_environment(update={"HELM_KUBETOKEN": "kube-token-42"}, source={},
                             withhold=["kube-token-42"]) == {"HELM_KUBETOKEN": "kube-token-42"}
