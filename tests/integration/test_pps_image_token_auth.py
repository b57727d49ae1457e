"""pps_image against the rig's registry that wants Docker token (Bearer) auth (TLS, the rig's CA)."""

from __future__ import annotations

import uuid

import pytest

from ansible_cli import run_module
from test_pps_image import MODULE, archive
from token_registry import TokenRegistry


@pytest.fixture
def token_registry(rig):
    """The rig's token-auth registry, its token service's log and refusals cleared; a unique repository prefix."""
    return TokenRegistry(rig).reset()


@pytest.fixture
def repo_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def args(registry, src, repo, **extra):
    return {"src": str(src), "name": f"{registry.address}/{repo}", "tag": "1.0", "ca_path": registry.ca_path,
            "cache": "", "username": registry.username, "password": registry.password, **extra}


def test_push_through_the_token_flow(token_registry, repo_prefix, tmp_path):
    facts = archive(tmp_path, compress=True)
    first = run_module(MODULE, args(token_registry, facts.path, f"{repo_prefix}/pps"))
    assert not first.failed, first.result.get("msg")
    assert first.result["blobs_uploaded"] == 3
    asked = token_registry.requests
    scopes = {scope for request in asked for scope in request["scopes"]}
    assert f"repository:{repo_prefix}/pps:pull,push" in scopes
    assert asked and all(request["authorized"] for request in asked)
    again = run_module(MODULE, args(token_registry, facts.path, f"{repo_prefix}/pps"))
    assert again.result["changed"] is False


def test_mount_asks_for_pull_on_the_source_repository(token_registry, repo_prefix, tmp_path):
    facts = archive(tmp_path, compress=True)
    cache = str(tmp_path / "cache.json")
    run_module(MODULE, args(token_registry, facts.path, f"{repo_prefix}/first", cache=cache))
    outcome = run_module(MODULE, args(token_registry, facts.path, f"{repo_prefix}/second", cache=cache))
    assert outcome.result["blobs_mounted"] == 2
    scopes = {scope for request in token_registry.requests for scope in request["scopes"]}
    assert f"repository:{repo_prefix}/first:pull" in scopes


def test_wrong_password_at_the_token_service(token_registry, repo_prefix, tmp_path):
    facts = archive(tmp_path)
    outcome = run_module(MODULE, args(token_registry, facts.path, f"{repo_prefix}/pps", password="wrong-one"))
    assert outcome.failed
    assert f"Registry {token_registry.address} rejected the credentials for user '{token_registry.username}'" in outcome.result["msg"]
    assert "wrong-one" not in outcome.stdout + outcome.stderr


def test_a_stale_cache_entry_whose_mount_is_refused_falls_back_to_an_upload(token_registry, repo_prefix, tmp_path):
    """The cache says the blobs live in a repository the token service no longer grants (deleted, or not ours):
    the registry refuses the mount, and the push uploads them instead of failing."""
    facts = archive(tmp_path, compress=True)
    cache = str(tmp_path / "cache.json")
    first = run_module(MODULE, args(token_registry, facts.path, f"{repo_prefix}/first", cache=cache))
    assert not first.failed, first.result.get("msg")
    token_registry.hide(f"{repo_prefix}/first")
    outcome = run_module(MODULE, args(token_registry, facts.path, f"{repo_prefix}/second", cache=cache))
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["blobs_mounted"] == 0
    assert outcome.result["blobs_uploaded"] == 3
    scopes = {scope for request in token_registry.requests for scope in request["scopes"]}
    assert f"repository:{repo_prefix}/first:pull" in scopes  # the mount was tried, and refused
