from __future__ import annotations

import pytest
import requests

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._url_origin import (
    downgrade_guard,
    downgrades,
    origin,
    realm_refusal,
    relative_to,
    same_origin,
    shown,
)


@pytest.mark.parametrize(("first", "second", "same"), [
    ("https://r.example/v2/", "https://R.example:443/other?x=1", True),
    ("http://r.example/", "http://r.example:80/", True),
    ("https://r.example:5000/", "https://r.example:5000/v2/", True),
    ("https://r.example/", "http://r.example/", False),
    ("https://r.example/", "https://r.example:8443/", False),
    ("https://r.example/", "https://storage.example/", False),
    ("https://r.example/", "https://r.example.evil.example/", False),
    ("https://r.example/", "https://user@evil.example/", False),
])
def test_origin_is_scheme_host_and_port(first, second, same):
    assert same_origin(first, second) is same


def test_an_unreadable_port_is_no_port():
    assert origin("https://r.example:99999/") == ("https", "r.example", None)


def test_only_https_to_http_is_a_step_down():
    assert downgrades("https://r.example/", "http://r.example/")
    assert not downgrades("http://r.example/", "https://r.example/")
    assert not downgrades("http://r.example/", "http://other.example/")


def test_shown_urls_carry_no_query_and_no_login():
    assert shown("https://user:pw@storage.example:9000/b/o?X-Amz-Signature=abc#f") == "https://storage.example:9000/b/o"


def test_relative_to_keeps_paths_on_the_origin_and_full_urls_elsewhere():
    base = "https://r.example:5000"
    assert relative_to("https://r.example:5000/v2/u?s=1", base) == "/v2/u?s=1"
    assert relative_to("https://s.example/u?s=1", base) == "https://s.example/u?s=1"


@pytest.mark.parametrize(("realm", "registry", "refusal"), [
    # https realms anywhere: the distribution token protocol (registry-1.docker.io -> auth.docker.io)
    ("https://auth.example/token", "https://registry.example", None),
    ("https://auth.example/token", "http://registry.example:5000", None),
    # plain http: only on the host the user marked insecure, whatever its port
    ("http://registry.example:5000/token", "http://registry.example:5000", None),
    ("http://REGISTRY.example:5001/token", "http://registry.example:5000", None),
    ("http://127.0.0.1/token", "http://127.0.0.1:5000", None),
    ("http://[::1]:5001/token", "http://[::1]:5000", None),
    ("http://auth.example/token", "http://registry.example:5000", "plain HTTP on auth.example"),
    ("http://127.0.0.2:5000/token", "http://127.0.0.1:5000", "plain HTTP on 127.0.0.2"),
    ("http://registry.example.evil.example/token", "http://registry.example", "plain HTTP on registry.example.evil"),
    ("http://registry.example:5000/token", "https://registry.example:5000", "plain HTTP"),
    ("http://auth.example/token", "https://registry.example", "plain HTTP"),
    ("/token", "https://registry.example", "not an https:// URL"),
    ("", "http://registry.example", "not an https:// URL"),
    ("ftp://registry.example/token", "http://registry.example", "not an https:// URL"),
])
def test_realms_must_be_https_urls_or_plain_http_on_the_insecure_registrys_own_host(realm, registry, refusal):
    found = realm_refusal(realm, registry)
    assert (found is None) if refusal is None else (refusal in found), found


def redirect(source: str, target: str) -> requests.Response:
    response = requests.Response()
    response.status_code, response.url = 302, source
    response.headers["Location"] = target
    return response


def test_the_redirect_guard_stops_a_step_down_and_lets_the_rest_through():
    hook = downgrade_guard(lambda source, target: ValueError(f"{source} -> {target}"))
    with pytest.raises(ValueError, match="https://r.example/a -> http://r.example/b"):
        hook(redirect("https://r.example/a", "http://r.example/b"))
    for source, target in [("https://r.example/a", "/b"), ("https://r.example/a", "https://s.example/b"),
                           ("http://r.example/a", "http://s.example/b")]:
        assert hook(redirect(source, target)).status_code == 302
