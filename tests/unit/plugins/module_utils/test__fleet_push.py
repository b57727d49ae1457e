"""A fleet's destinations in one pps_image run: whose login each gets, and how one failure stays its own."""

from __future__ import annotations

import threading

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import Credentials
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._fleet_push import (
    FleetError,
    destination_params,
    destinations,
    fleet_diff,
    identity,
    push_all,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_module import login_for

RUN = {"username": "own-user", "password": "own-secret", "credentials_host": None, "docker_config": None,
       "ca_path": "/own/ca.pem", "validate_certs": True, "insecure": False, "retries": 5, "timeout": 300}


def given(key="cluster-1", name="registry-1.example.com/pps", **options):
    return {"key": key, "name": name, "username": None, "password": None, "ca_path": None, "validate_certs": True,
            "insecure": False, **options}


def test_a_destination_with_its_own_login_gets_that_login_and_its_own_tls_options():
    options = destination_params(RUN, given(username="them", password="their-secret", insecure=True), environ={})
    assert (options["username"], options["password"], options["ca_path"], options["insecure"]) == \
        ("them", "their-secret", None, True)
    assert options["retries"] == 5  # the run's own


def test_a_destination_without_a_login_never_gets_the_runs_own_but_the_environments():
    assert (destination_params(RUN, given(), environ={})["username"],
            destination_params(RUN, given(), environ={})["password"]) == (None, None)
    environ = {"REGISTRY_USERNAME": "env-user", "REGISTRY_PASSWORD": "env-secret"}
    options = destination_params(RUN, given(), environ=environ)
    assert (options["username"], options["password"]) == ("env-user", "env-secret")


def test_the_environments_login_goes_only_to_registry_host_whatever_the_runs_credentials_host(tmp_path):
    """REGISTRY_USERNAME and REGISTRY_PASSWORD are REGISTRY_HOST's (the AWX registry credential): a destination of
    the run's own credentials_host, another registry, never receives them."""
    run = {**RUN, "credentials_host": "a.example", "docker_config": str(tmp_path / "no-config.json")}
    environ = {"REGISTRY_HOST": "b.example", "REGISTRY_USERNAME": "env-user", "REGISTRY_PASSWORD": "env-secret"}
    logins = {registry: login_for(registry, destination_params(run, given(name=f"{registry}/pps"), environ=environ))
              for registry in ("a.example", "b.example")}
    assert logins["a.example"][0] is None and "not sent to a.example" in logins["a.example"][1]
    assert logins["b.example"] == (Credentials("env-user", "env-secret"), None)


def test_keys_are_checked():
    """Each key once and none empty; a fleet that keeps to that is accepted, each key with its own repository."""
    fleet = [given("cluster-1", username="u1", password="p1"),
             given("cluster-2", name="registry-2.example.com/pps", username="u2", password="p2")]
    found = destinations({**RUN, "fleet": fleet})
    assert [(one.key, one.name) for one in found] == [("cluster-1", "registry-1.example.com/pps"),
                                                      ("cluster-2", "registry-2.example.com/pps")]
    assert [one.params["username"] for one in found] == ["u1", "u2"]
    with pytest.raises(MlopsError, match="twice"):
        destinations({**RUN, "fleet": [given("a"), given("a", name="other/pps")]})
    with pytest.raises(MlopsError, match="empty key"):
        destinations({**RUN, "fleet": [given("")]})


def test_two_hosts_of_one_registry_and_login_are_one_destination():
    one = destination_params(RUN, given(username="u", password="p"), environ={})
    other = destination_params(RUN, given("cluster-2", username="u", password="p"), environ={})
    assert identity("r/pps", one) == identity("r/pps", other)
    assert identity("r/pps", one) != identity("r2/pps", other)
    assert identity("r/pps", one) != identity("r/pps", {**other, "password": "q"})


def entry(image):
    return lambda: {"changed": True, "image": image, "digest": "sha256:abc"}


def failing(message):
    def push():
        raise MlopsError(message)
    return push


def test_one_destination_failing_leaves_the_others_and_the_run_whole():
    result = push_all(entry("own"), {"a": failing("a refused"), "b": entry("b")}, {"a": "a:1", "b": "b:1"})
    assert result["image"] == "own" and result["changed"]
    assert result["fleet"]["a"] == {"failed": True, "changed": False, "image": "a:1", "msg": "a refused"}
    assert result["fleet"]["b"]["image"] == "b"


def test_the_runs_own_failure_fails_the_run_with_every_entry():
    with pytest.raises(FleetError, match="own refused") as raised:
        push_all(failing("own refused"), {"a": entry("a")}, {"a": "a:1", "twin": "own:1"}, {"twin": ""})
    assert raised.value.result["fleet"]["a"]["image"] == "a"
    assert raised.value.result["fleet"]["twin"]["msg"] == "own refused"


def test_a_destination_met_twice_is_pushed_once_and_reported_for_both():
    calls = []
    result = push_all(lambda: calls.append("own") or {"image": "own", "changed": True},
                      {"a": lambda: calls.append("a") or {"image": "a", "changed": True}},
                      {"a": "a:1", "a-twin": "a:1", "own-twin": "own:1"}, {"a-twin": "a", "own-twin": ""})
    assert sorted(calls) == ["a", "own"]
    assert result["fleet"]["a-twin"] == result["fleet"]["a"] and result["fleet"]["own-twin"]["image"] == "own"
    assert "fleet" not in result["fleet"]["own-twin"]


def test_the_pushes_run_side_by_side():
    barrier = threading.Barrier(3, timeout=10)  # each push waits for the other two: only side by side do they end

    def push(name):
        return lambda: barrier.wait() is not None and {"image": name}
    result = push_all(push("own"), {"a": push("a"), "b": push("b")}, {"a": "a:1", "b": "b:1"})
    assert {result["image"], result["fleet"]["a"]["image"], result["fleet"]["b"]["image"]} == {"own", "a", "b"}


def pushed_with_diff(image, before, after):
    return lambda: {"image": image, "changed": before != after,
                    "diff": {"before": {"image": image, "digest": before}, "after": {"image": image, "digest": after}}}


def test_the_diff_shows_every_registry_once_headed_by_its_image():
    result = push_all(pushed_with_diff("own:1", "", "sha256:new"),
                      {"a": pushed_with_diff("a:1", "sha256:old", "sha256:new"), "b": failing("b refused")},
                      {"a": "a:1", "a-twin": "a:1", "b": "b:1", "own-twin": "own:1"}, {"a-twin": "a", "own-twin": ""})
    diffs = fleet_diff(result)
    assert [(diff["before_header"], diff["after_header"]) for diff in diffs] == [("own:1", "own:1"), ("a:1", "a:1")]
    assert [(diff["before"]["digest"], diff["after"]["digest"]) for diff in diffs] == \
        [("", "sha256:new"), ("sha256:old", "sha256:new")]
    assert "before_header" not in result["fleet"]["a"]["diff"]  # each entry keeps its own diff as it was


def test_the_run_changed_when_any_destination_did_each_entry_keeping_its_own():
    def pushed(image, changed):
        return lambda: {"image": image, "changed": changed}
    result = push_all(pushed("own", False), {"a": pushed("a", True), "b": pushed("b", False)},
                      {"a": "a:1", "b": "b:1", "own-twin": "own:1"}, {"own-twin": ""})
    assert result["changed"] is True and result["own_changed"] is False and result["image"] == "own"
    assert [result["fleet"][key]["changed"] for key in ("a", "b", "own-twin")] == [True, False, False]
    unchanged = push_all(pushed("own", False), {"a": pushed("a", False), "b": failing("b refused")},
                         {"a": "a:1", "b": "b:1"})
    assert unchanged["changed"] is False  # a failed destination changed nothing
    assert push_all(pushed("own", True), {"a": pushed("a", False)}, {"a": "a:1"})["own_changed"] is True
