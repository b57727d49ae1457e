from __future__ import annotations

import base64
import json
import os
import stat
import textwrap

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import (
    Credentials,
    DockerConfigError,
    credentials_from_docker_config,
)

REGISTRY = "registry.example:5000"


def write_config(tmp_path, config) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config) if not isinstance(config, str) else config)
    return str(path)


def helper_on_path(tmp_path, monkeypatch, name: str, script: str) -> None:
    """A docker-credential-<name> shell script in tmp_path, put first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text("#!/bin/sh\n" + script)
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_no_config_file_means_no_credentials(tmp_path):
    assert credentials_from_docker_config(REGISTRY, str(tmp_path / "absent.json")) is None


def test_default_path_follows_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    write_config(tmp_path, {"auths": {REGISTRY: {"username": "u", "password": "p"}}})
    assert credentials_from_docker_config(REGISTRY) == Credentials("u", "p")


@pytest.mark.parametrize("key", [REGISTRY, f"https://{REGISTRY}", f"http://{REGISTRY}",
                                 f"https://{REGISTRY}/v1/", f"https://{REGISTRY}/v2/"])
def test_auth_entry_is_found_under_each_spelling_and_decoded(tmp_path, key):
    auth = base64.b64encode(b"alice:pa:ss").decode()
    path = write_config(tmp_path, {"auths": {key: {"auth": auth}}})
    assert credentials_from_docker_config(REGISTRY, path) == Credentials("alice", "pa:ss")


def test_username_and_identity_token_entries(tmp_path):
    path = write_config(tmp_path, {"auths": {REGISTRY: {"username": "bob"}, "other": {"identitytoken": "tok"}}})
    assert credentials_from_docker_config(REGISTRY, path) == Credentials("bob", "")
    assert credentials_from_docker_config("other", path) == Credentials("<token>", "tok")


def test_unknown_registry_without_helper_has_no_credentials(tmp_path):
    path = write_config(tmp_path, {"auths": {"elsewhere": {"username": "x", "password": "y"}}})
    assert credentials_from_docker_config(REGISTRY, path) is None


def test_unreadable_config_is_a_clear_error(tmp_path):
    path = write_config(tmp_path, "{not json")
    with pytest.raises(DockerConfigError, match="Cannot read docker config"):
        credentials_from_docker_config(REGISTRY, path)


def test_credential_helper_for_the_registry_is_asked(tmp_path, monkeypatch):
    helper_on_path(tmp_path, monkeypatch, "fake",
                   'read server\necho "{\\"Username\\": \\"helped\\", \\"Secret\\": \\"s-$server\\"}"\n')
    path = write_config(tmp_path, {"credHelpers": {REGISTRY: "fake"}, "credsStore": "absent"})
    assert credentials_from_docker_config(REGISTRY, path) == Credentials("helped", f"s-{REGISTRY}")


def test_creds_store_is_the_fallback_and_a_helper_without_login_gives_none(tmp_path, monkeypatch):
    helper_on_path(tmp_path, monkeypatch, "store", 'echo "credentials not found" >&2\nexit 1\n')
    path = write_config(tmp_path, {"credsStore": "store"})
    assert credentials_from_docker_config(REGISTRY, path) is None


def test_auths_win_over_the_helper(tmp_path):
    path = write_config(tmp_path, {"auths": {REGISTRY: {"username": "u", "password": "p"}}, "credsStore": "none"})
    assert credentials_from_docker_config(REGISTRY, path) == Credentials("u", "p")


def test_a_helper_that_cannot_run_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = write_config(tmp_path, {"credsStore": "missing"})
    with pytest.raises(DockerConfigError, match="docker-credential-missing cannot be run"):
        credentials_from_docker_config(REGISTRY, path)


def test_password_is_not_in_the_repr():
    assert "secret" not in repr(Credentials("u", "secret"))


def test_a_credential_helper_does_not_inherit_the_runs_secrets(tmp_path, monkeypatch):
    """It answers with what it found in its environment: none of the run's secrets may be there."""
    helper_on_path(tmp_path, monkeypatch, "env", 'printf \'{"Username":"u","Secret":"%s|%s|%s"}\' '
                   '"$DATAROBOT_API_TOKEN" "$REGISTRY_PASSWORD" "$SITE_NOTE"\n')
    monkeypatch.setenv("DATAROBOT_API_TOKEN", "dr-token")
    monkeypatch.setenv("REGISTRY_PASSWORD", "registry-password")
    monkeypatch.setenv("SITE_NOTE", "neutral-canary")
    found = credentials_from_docker_config(REGISTRY, write_config(tmp_path, {"credsStore": "env"}))
    assert found == Credentials("u", "||")


# --- Docker Hub: docker login keeps its login under the legacy index URL ---------------------------------------

HUB_LOGIN = {"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"acme-bot:hub-token").decode()}}}


@pytest.mark.parametrize("registry", ["registry-1.docker.io", "docker.io", "index.docker.io"])
def test_docker_hub_login_is_found_under_the_index_url(tmp_path, registry):
    path = write_config(tmp_path, HUB_LOGIN)
    assert credentials_from_docker_config(registry, path) == Credentials("acme-bot", "hub-token")


def test_another_registry_does_not_get_the_hub_login(tmp_path):
    assert credentials_from_docker_config(REGISTRY, write_config(tmp_path, HUB_LOGIN)) is None


def test_a_credential_helper_is_asked_about_docker_hub_by_its_index_url(tmp_path, monkeypatch):
    """docker asks `get` with https://index.docker.io/v1/ for Docker Hub, and credHelpers is keyed by it."""
    helper_on_path(tmp_path, monkeypatch, "hub",
                   'read server; [ "$server" = "https://index.docker.io/v1/" ] || exit 1\n'
                   'echo \'{"Username": "acme-bot", "Secret": "from-helper"}\'\n')
    path = write_config(tmp_path, {"credHelpers": {"https://index.docker.io/v1/": "hub"}})
    assert credentials_from_docker_config("registry-1.docker.io", path) == Credentials("acme-bot", "from-helper")


# --- a config.json or a helper answer of another shape: a DockerConfigError that says what to fix --------------

@pytest.mark.parametrize("config, why", [
    ([], r"is not a JSON object"),
    (None, r"is not a JSON object"),
    ({"auths": ["registry.example:5000"]}, r"its auths is not a JSON object"),
    ({"credHelpers": "fake"}, r"its credHelpers is not a JSON object"),
    ({"auths": {REGISTRY: "u:p"}}, rf"its auths entry for {REGISTRY} is not a JSON object"),
], ids=["list", "null", "auths-list", "credHelpers-string", "entry-string"])
def test_a_config_of_another_shape_is_a_clear_error(tmp_path, config, why):
    path = write_config(tmp_path, json.dumps(config))
    with pytest.raises(DockerConfigError, match=rf"docker config {path} .*{why}.*docker login"):
        credentials_from_docker_config(REGISTRY, path)


@pytest.mark.parametrize("auth", ["c2VjcmV0LXRva2Vu!", "YWxpY2U6c2VjcmV0LXRva2V", base64.b64encode(b"\xff:x").decode(),
                                  42], ids=["not-base64", "bad-padding", "not-utf8", "number"])
def test_an_auth_that_is_not_base64_of_a_login_is_a_clear_error_without_it(tmp_path, auth):
    """docker itself decodes it strictly: a character outside base64 is an error there too, not a login."""
    path = write_config(tmp_path, {"auths": {REGISTRY: {"auth": auth}}})
    with pytest.raises(DockerConfigError, match=rf"docker config {path}: the auth of {REGISTRY} is not") as raised:
        credentials_from_docker_config(REGISTRY, path)
    assert "c2Vjc" not in str(raised.value) and "secret" not in str(raised.value)


@pytest.mark.parametrize("answer", ["echo not json s3cret", "echo '[\"s3cret\"]'"], ids=["not-json", "not-object"])
def test_a_helper_answer_that_is_not_a_json_object_is_a_clear_error_without_it(tmp_path, monkeypatch, answer):
    helper_on_path(tmp_path, monkeypatch, "odd", answer + "\n")
    path = write_config(tmp_path, {"credsStore": "odd"})
    with pytest.raises(DockerConfigError, match=r"docker-credential-odd get answered with no JSON object") as raised:
        credentials_from_docker_config(REGISTRY, path)
    assert "s3cret" not in str(raised.value)


def test_a_helper_that_does_not_answer_in_time_is_a_clear_error(tmp_path, monkeypatch):
    import subprocess

    from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _docker_config

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])

    monkeypatch.setattr(_docker_config.subprocess, "run", hangs)
    path = write_config(tmp_path, {"credsStore": "slow"})
    with pytest.raises(DockerConfigError, match=r"docker-credential-slow get did not answer within 60 seconds"):
        credentials_from_docker_config(REGISTRY, path)


def test_an_auth_wrapped_by_base64_is_read_as_docker_reads_it(tmp_path):
    """`base64` wraps at 76 columns, and Go's decoder (docker's) skips the line breaks: so does ours."""
    login = "robot$account:" + "s" * 80
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(login.encode()).decode(), 76)) + "\n"
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"registry.example.com": {"auth": wrapped}}}))
    assert credentials_from_docker_config("registry.example.com", str(path)) == Credentials("robot$account", "s" * 80)
