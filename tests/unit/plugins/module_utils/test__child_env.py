from __future__ import annotations

import os
import shutil
import subprocess
import sys

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


def _run_clean(extra: list[str], env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The program behind the wrapper, started with `env` (not the test's environment: prefixes are matched where
    the command runs)."""
    return subprocess.run(clean_env_argv(extra) + list(args), capture_output=True, text=True, env=env, check=check,
                          timeout=30)


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
    # values no path can contain by chance (USER_ENV's "/c" is in a checkout under /ci/, say)
    env = {name: f"value-canary-of-{name}" for name in USER_ENV}
    env["PATH"] = os.environ["PATH"]
    argv = clean_env_argv()
    child = _run_clean([], env, "env").stdout
    pairs = dict(line.split("=", 1) for line in child.splitlines())
    assert not {"DATAROBOT_API_TOKEN", "REGISTRY_PASSWORD", "K8S_AUTH_API_KEY", "MY_NOTE", "KUBECONFIG",
                "HELM_CACHE_HOME", "CLOUDSDK_CONFIG", "AWS_PROFILE"} & set(pairs)
    assert pairs["HTTPS_PROXY"] == "value-canary-of-HTTPS_PROXY"  # the allowed ones do get through
    assert not any("value-canary" in item for item in argv)


def test_clean_env_argv_hands_the_programs_arguments_over_unchanged():
    args = ["a b", "$HOME", "", 'x"y', "--flag=it's", "*"]
    out = _run_clean([], {"PATH": os.environ["PATH"]}, "printf", "[%s]\n", *args).stdout
    assert out.splitlines() == [f"[{arg}]" for arg in args]


def test_clean_env_argv_starts_no_program_but_its_launcher_before_the_environment_is_cleared(tmp_path):
    """Every program started before the launcher clears the environment would hold all of it, secrets included: the
    shell's builtins only, then the launcher (which clears it at once). Programs on PATH that record being run stand
    in for any the script could start."""
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


SECRETS = {"HTTPS_PROXY": "http://proxyuser:Pr0xy-Passw0rd-1@proxy.example:3128",
           "CLOUDSDK_PROXY_PASSWORD": "gcloud-proxy-pass-2", "DOCKER_HOST": "tcp://docker-host-secret-3:2375",
           "LC_NOTE": "line one\nline-two-secret-4"}


def test_clean_env_argv_puts_no_value_on_the_command_line_of_any_process(tmp_path):
    """/proc/<pid>/cmdline is readable by every local user: no allowed variable's value may be in the argv of any
    process the wrapper starts, not even for the instant before it starts the program."""
    assert shutil.which("strace"), "strace sees the argv of every process started: make system-packages installs it"
    env = dict(SECRETS, PATH=os.environ["PATH"], HOME="/home/u", REGISTRY_PASSWORD="reg-password-5")
    trace = tmp_path / "trace"
    run = subprocess.run(["strace", "-f", "-qq", "-s", "65536", "-e", "trace=execve", "-o", str(trace)]
                         + clean_env_argv(["CLOUDSDK_*", "DOCKER_HOST"]) + ["env"],
                         capture_output=True, text=True, env=env, check=True, timeout=60)
    execs = [line for line in trace.read_text().splitlines() if "execve(" in line]
    assert len(execs) >= 2, execs  # the wrapper and the program at least: strace saw them
    for name, value in SECRETS.items():
        shown = value.replace("\n", "\\n")  # as strace prints it
        assert not [line for line in execs if shown in line or value.rsplit("\n", maxsplit=1)[-1] in line], name
    child = dict(line.split("=", 1) for line in run.stdout.replace("line one\n", "line one ").splitlines())
    assert child == {"PATH": os.environ["PATH"], "HOME": "/home/u", "HTTPS_PROXY": SECRETS["HTTPS_PROXY"],
                     "CLOUDSDK_PROXY_PASSWORD": SECRETS["CLOUDSDK_PROXY_PASSWORD"],
                     "DOCKER_HOST": SECRETS["DOCKER_HOST"], "LC_NOTE": "line one line-two-secret-4"}


def test_clean_env_argv_reads_the_prefixes_where_the_command_runs_not_where_the_argv_is_built(monkeypatch):
    monkeypatch.delenv("CLOUDSDK_LATE_NOTE", raising=False)
    argv = clean_env_argv(["CLOUDSDK_*"])  # built where no CLOUDSDK_LATE_NOTE is set
    env = {"PATH": os.environ["PATH"], "CLOUDSDK_LATE_NOTE": "set where it runs", "CLOUDSDKX": "no"}
    out = subprocess.run(argv + ["env"], capture_output=True, text=True, env=env, check=True, timeout=30).stdout
    assert sorted(out.splitlines()) == ["CLOUDSDK_LATE_NOTE=set where it runs", f"PATH={os.environ['PATH']}"]


def test_clean_env_argv_passes_no_variable_a_shell_cannot_name_and_keeps_odd_values_whole():
    """Names a shell cannot unset (an exported bash function, a dotted name) still never reach the program, and a
    value with newlines or quotes arrives as it was."""
    value = "a\nexport EVIL='x'\n\"b\" $HOME `id`"
    env = {"PATH": os.environ["PATH"], "LC_ODD": value, "BASH_FUNC_f%%": "() {  echo secret-fn-6\n}",
           "dotted.name": "secret-dot-7", "SHELLOPTS": "braceexpand:hashall", "SHLVL": "4"}
    out = _run_clean([], env, "cat", "/proc/self/environ").stdout  # the program's environment, exactly
    assert sorted(out.split("\0")[:-1]) == [f"LC_ODD={value}", f"PATH={os.environ['PATH']}"]


def test_clean_env_argv_says_so_when_the_program_cannot_be_run():
    run = _run_clean([], {"PATH": os.environ["PATH"]}, "no-such-program-here", "x", check=False)
    assert run.returncode == 127
    assert "no-such-program-here" in run.stderr


@pytest.mark.parametrize("lc_ctype", [None, "C", "", "xx_XX.NOT-INSTALLED"])
def test_clean_env_argv_hands_lc_ctype_on_as_it_was_though_python_coerces_it(lc_ctype):
    """The launcher's Python sets LC_CTYPE=C.UTF-8 when the locale is C (PEP 538): the program still gets the caller's
    LC_CTYPE, or none."""
    env = {"PATH": os.environ["PATH"], **({} if lc_ctype is None else {"LC_CTYPE": lc_ctype})}
    out = _run_clean([], env, "cat", "/proc/self/environ").stdout
    assert sorted(out.split("\0")[:-1]) == sorted(f"{key}={value}" for key, value in env.items())


def test_clean_env_argv_falls_back_to_python3_on_path_and_says_so_when_there_is_none(tmp_path):
    argv = clean_env_argv(python=str(tmp_path / "no-python-here")) + ["cat", "/proc/self/environ"]
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "cat").symlink_to(shutil.which("cat"))
    (tools / "python3").symlink_to(os.path.realpath(sys.executable))
    env = {"PATH": str(tools), "LC_X": "x", "SECRET_NOTE": "s"}
    run = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=30)
    assert sorted(run.stdout.split("\0")[:-1]) == ["LC_X=x", f"PATH={tools}"]
    (tools / "python3").unlink()
    run = subprocess.run(argv, capture_output=True, text=True, env={"PATH": str(tools)}, check=False, timeout=30)
    assert run.returncode == 127 and "clean_env: no Python to start the command with" in run.stderr
