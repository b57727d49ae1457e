from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import (
    BadChildEnvName,
    child_environment,
    clean_env_argv,
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


def test_withheld_names_are_what_the_allow_list_leaves_out_and_the_module_keeps_its_own():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import withheld_names

    source = {**USER_ENV, "PYTHONPATH": "/p", "LD_LIBRARY_PATH": "/l", "K8S_AUTH_CONTEXT": "c"}
    assert withheld_names("helm_module", source=source) == ["ANSIBLE_CONFIG", "DATAROBOT_API_TOKEN", "GNUPGHOME",
                                                            "MY_NOTE", "REGISTRY_PASSWORD"]
    # helm itself is given less than the module that runs it: the same rule child_environment applies
    helm_out = withheld_names("helm", source=source)
    assert set(helm_out) == set(source) - set(helm_environment(source=source))
    assert {"K8S_AUTH_API_KEY", "PYTHONPATH", "LD_LIBRARY_PATH"} <= set(helm_out)


def test_withheld_names_blank_an_allowed_name_holding_a_run_secret_unless_kept():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import withheld_names

    source = {"PATH": "/usr/bin", "HELM_NOTE": "x-registry-pass-1-x", "AWS_PROFILE": "eks", "MY_NOTE": "n"}
    assert withheld_names("helm_module", source=source, withhold=["registry-pass-1", "short"]) == [
        "HELM_NOTE", "MY_NOTE"]
    assert withheld_names("helm_module", source=source, withhold=["registry-pass-1"], keep=["MY_NOTE"]) == [
        "HELM_NOTE"]


def test_an_unknown_kind_is_an_mlops_error_naming_the_kinds():
    import pytest

    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import (
        UnknownChildKind,
        withheld_names,
    )
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

    with pytest.raises(UnknownChildKind, match="helm_module") as caught:
        withheld_names("kubectl", source={})
    assert isinstance(caught.value, MlopsError)


def test_blanked_environment_maps_each_settable_name_to_empty():
    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._child_env import (
        blanked_environment,
    )

    source = {"PATH": "/usr/bin", "DATAROBOT_API_TOKEN": "t", "BASH_FUNC_x%%": "() { :; }", "SITE_NOTE": "n"}
    assert blanked_environment("helm_module", source=source) == {"DATAROBOT_API_TOKEN": "", "SITE_NOTE": ""}


def _run_clean(extra: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(clean_env_argv(extra, environ_names=env) + list(args), capture_output=True, text=True,
                          env=env, check=True, timeout=30)


def test_clean_env_argv_keeps_the_common_and_the_callers_variables_read_where_it_runs():
    env = dict(USER_ENV, PATH=os.environ["PATH"], CLOUDSDK_CORE_PROJECT="p 'one' $HOME", GOOGLE_X="g",
               GCE_METADATA_HOST="m", LC_TIME="C", EVIL_CLOUDSDK_X="no")
    child = _run_clean(["CLOUDSDK_*", "GOOGLE_*", "GCE_METADATA_HOST"], env, "env").stdout
    pairs = dict(line.split("=", 1) for line in child.splitlines())
    assert pairs == {"PATH": os.environ["PATH"], "HOME": "/home/u", "LC_ALL": "C.UTF-8", "LC_TIME": "C",
                     "XDG_CONFIG_HOME": "/home/u/.config", "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost",
                     "SSL_CERT_FILE": "/etc/ca.pem", "CLOUDSDK_CONFIG": "/g", "CLOUDSDK_CORE_PROJECT": "p 'one' $HOME",
                     "GOOGLE_X": "g", "GCE_METADATA_HOST": "m"}


def test_clean_env_argv_without_extras_passes_no_secret_and_puts_no_value_in_the_argv():
    env = dict(USER_ENV, PATH=os.environ["PATH"])
    argv = clean_env_argv()
    child = _run_clean([], env, "env").stdout
    names = {line.split("=", 1)[0] for line in child.splitlines()}
    assert not {"DATAROBOT_API_TOKEN", "REGISTRY_PASSWORD", "K8S_AUTH_API_KEY", "MY_NOTE", "KUBECONFIG",
                "HELM_CACHE_HOME", "CLOUDSDK_CONFIG", "AWS_PROFILE"} & names
    assert not any(value in " ".join(argv) for value in USER_ENV.values())


def test_clean_env_argv_hands_the_programs_arguments_over_unchanged():
    args = ["a b", "$HOME", "", 'x"y', "--flag=it's", "*"]
    out = _run_clean([], {"PATH": os.environ["PATH"]}, "printf", "[%s]\n", *args).stdout
    assert out.splitlines() == [f"[{arg}]" for arg in args]


def test_clean_env_argv_starts_no_program_before_env_clears_the_environment(tmp_path):
    """Every program the script started before `env -i` would hold the whole environment, secrets included: the
    shell's builtins only, then `env` (which clears it at once). Programs that record being run stand in for any
    the script could start."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("sed", "grep", "awk", "cut", "tr", "printenv", "cat"):
        (tools / name).write_text(f"#!/bin/sh\necho {name} >> {tmp_path}/ran\nexit 0\n")
        (tools / name).chmod(0o755)
    env = dict(USER_ENV, PATH=f"{tools}:{os.environ['PATH']}", CLOUDSDK_CORE_PROJECT="p", LC_TIME="C")
    child = _run_clean(["CLOUDSDK_*"], env, "env").stdout
    assert not (tmp_path / "ran").exists(), (tmp_path / "ran").read_text()
    assert "CLOUDSDK_CORE_PROJECT=p" in child.splitlines() and "LC_TIME=C" in child.splitlines()


def test_clean_env_argv_refuses_a_name_a_shell_cannot_read():
    for bad in ("A B", "X;rm", "1ABC", "*", "A*B*", "$(id)"):
        with pytest.raises(BadChildEnvName, match="not a variable name"):
            clean_env_argv([bad])
