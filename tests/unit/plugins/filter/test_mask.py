"""The mask filter: roles hide secrets with the same Masker as the modules."""

from __future__ import annotations

from ansible_collections.datarobot_mlops.management_agent.plugins.filter.mask import FilterModule, mask


def test_known_secrets_are_masked_and_empty_ones_ignored():
    assert mask("login as u with hunter2 failed", ["hunter2", ""]) == "login as u with ******** failed"
    assert mask("nothing to hide", []) == "nothing to hide"
    assert mask(None, "x") == ""


def test_a_token_and_its_base64_form_are_both_masked():
    assert mask("got dG9rLTEyMw== for tok-123", ["tok-123", "dG9rLTEyMw=="]) == "got ******** for ********"


def test_credential_words_are_masked_on_request_only():
    message = "unreachable: https://r/v2/?token=abc (password=pw1)"
    assert mask(message, [], credential_words=True) == "unreachable: https://r/v2/?******** (********"
    assert mask(message, []) == message
    assert FilterModule().filters()["mask"] is mask
