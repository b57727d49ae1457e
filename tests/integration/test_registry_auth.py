"""The registry modules' shared auth options: environment fallbacks, REGISTRY_HOST scoping, module_defaults group."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_cli import ansible_env, run_module, run_playbook

INFO = "datarobot_mlops.management_agent.registry_image_info"
PUSH = "datarobot_mlops.management_agent.pps_image"
LOGIN_VARS = ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "REGISTRY_HOST", "REGISTRY_CA_PATH", "REGISTRY_VALIDATE_CERTS")


def env_login(rig, **extra: str) -> dict[str, str]:
    return ansible_env(without=LOGIN_VARS, REGISTRY_USERNAME=rig["RIG_REGISTRY_USER"],
                       REGISTRY_PASSWORD=rig["RIG_REGISTRY_PASSWORD"], REGISTRY_CA_PATH=rig["RIG_REGISTRY_CA"], **extra)


def lookup(rig) -> dict:
    return {"name": f"{rig['RIG_REGISTRY']}/datarobot/auth-{uuid.uuid4().hex[:8]}", "tag": "1.0"}


def test_the_login_comes_from_the_environment(rig):
    anonymous = run_module(INFO, lookup(rig), env=ansible_env(without=LOGIN_VARS, REGISTRY_CA_PATH=rig["RIG_REGISTRY_CA"]))
    assert anonymous.failed and "credentials" in anonymous.result["msg"].lower()
    outcome = run_module(INFO, lookup(rig), env=env_login(rig))
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["exists"] is False
    assert rig["RIG_REGISTRY_PASSWORD"] not in outcome.stdout + outcome.stderr


@pytest.mark.parametrize("scope", ["{registry}", "https://{registry}/"])
def test_a_login_scoped_to_the_registry_is_used(rig, scope):
    outcome = run_module(INFO, lookup(rig), env=env_login(rig, REGISTRY_HOST=scope.format(registry=rig["RIG_REGISTRY"])))
    assert not outcome.failed, outcome.result.get("msg")
    assert not outcome.result.get("warnings")


class AuthRecorder(BaseHTTPRequestHandler):
    """A registry on another port that asks for Basic auth and records every Authorization header it gets."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.headers.get("Authorization"):
            type(self).seen.append(self.headers["Authorization"])
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="elsewhere"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def elsewhere():
    AuthRecorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("scoped", [False, True], ids=["unscoped", "scoped-to-the-rig"])
def test_a_login_scoped_to_another_registry_never_reaches_it(rig, elsewhere, scoped):
    extra = {"REGISTRY_HOST": rig["RIG_REGISTRY"]} if scoped else {}
    outcome = run_module(INFO, {"name": f"{elsewhere}/datarobot/agent", "tag": "1.0", "insecure": True,
                                "docker_config": "/nonexistent/config.json"}, env=env_login(rig, **extra))
    assert outcome.failed and "Traceback" not in outcome.stdout + outcome.stderr
    if scoped:
        assert AuthRecorder.seen == []
        assert any(f"not sent to {elsewhere}" in warning for warning in outcome.result.get("warnings", []))
    else:  # without a scope the task's registry gets the login: what REGISTRY_HOST is there to prevent
        assert AuthRecorder.seen


def test_module_defaults_of_the_registry_group_reach_both_modules(rig, tmp_path):
    defaults = {"username": rig["RIG_REGISTRY_USER"], "password": rig["RIG_REGISTRY_PASSWORD"],
                "ca_path": rig["RIG_REGISTRY_CA"]}
    target = lookup(rig)
    push = {**target, "src": str(tmp_path / "missing.tar"), "cache": ""}
    plays = [{"hosts": "localhost", "gather_facts": False,
              "module_defaults": {"group/datarobot_mlops.management_agent.registry": defaults},
              "tasks": [{"name": "look up", INFO: target}, {"name": "push", PUSH: push, "ignore_errors": True}]},
             {"hosts": "localhost", "gather_facts": False,
              "tasks": [{"name": "push without defaults", PUSH: {**push, "ca_path": rig["RIG_REGISTRY_CA"]},
                         "ignore_errors": True}]}]
    playbook = tmp_path / "defaults.yml"
    playbook.write_text(json.dumps(plays))
    run = run_playbook(str(playbook), env=ansible_env(without=LOGIN_VARS))
    assert run.task("look up")["exists"] is False
    # With the group's login the push gets past the registry's access check and stops at the archive;
    # without it, it stops at the login.
    assert "missing.tar does not exist" in run.task("push")["msg"]
    assert "credentials" in run.task("push without defaults")["msg"].lower()


def test_registry_checks_only_the_login_and_says_why_it_fails(rig):
    """registry_image_info's `registry` mode (the preflight's probe): the TLS+htpasswd registry answers Basic."""
    args = {"registry": rig["RIG_REGISTRY"], "username": rig["RIG_REGISTRY_USER"],
            "password": rig["RIG_REGISTRY_PASSWORD"], "ca_path": rig["RIG_REGISTRY_CA"]}
    accepted = run_module(INFO, args, check=True, env=ansible_env(without=LOGIN_VARS))
    assert not accepted.failed, accepted.result.get("msg")
    assert accepted.result["changed"] is False
    assert accepted.result["registry"] == rig["RIG_REGISTRY"] and accepted.result["auth"] == "basic"
    assert "exists" not in accepted.result
    refused = run_module(INFO, {**args, "password": "not-the-password"}, env=ansible_env(without=LOGIN_VARS))
    assert refused.failed
    assert refused.result["msg"].startswith(f"Registry {rig['RIG_REGISTRY']} rejected the credentials for user "
                                            f"'{rig['RIG_REGISTRY_USER']}'")
    assert "not-the-password" not in refused.stdout + refused.stderr
    untrusted = run_module(INFO, {**args, "ca_path": None}, env=ansible_env(without=LOGIN_VARS))
    assert untrusted.failed and "Is its CA trusted? Pass ca_path" in untrusted.result["msg"]


@pytest.mark.parametrize("args, message", [
    ({"registry": "https://registry.example.com"}, "give host[:port] without a scheme or path"),
    ({"registry": "registry.example.com", "name": "registry.example.com/a"}, "mutually exclusive: registry|name"),
    ({"registry": "registry.example.com", "tag": "1.0"}, "mutually exclusive: registry|tag"),
    ({"name": "registry.example.com/a"}, "missing parameter(s) required by 'name': tag"),
    ({"tag": "1.0"}, "one of the following is required: registry, name"),
])
def test_registry_mode_refuses_what_it_cannot_mean(rig, args, message):
    outcome = run_module(INFO, args, env=ansible_env(without=LOGIN_VARS))
    assert outcome.failed and message in outcome.result["msg"], outcome.result["msg"]
    assert "Traceback" not in outcome.stdout + outcome.stderr
