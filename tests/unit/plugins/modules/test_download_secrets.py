"""download keeps the login and the signed query of `url` out of its output, even when Ansible's own argument
validation fails before the module runs; its `url` result is the URL without them, readable."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from fixtures.module_args import module_args
from ansible_collections.datarobot_mlops.management_agent.plugins.modules import download

PASSWORD, SIGNATURE = "S3cretPassw0rd", "SIGNATURE123"
SIGNED = f"https://bob:{PASSWORD}@files.example.com/a.tgz?X-Amz-Signature={SIGNATURE}"
CHECKSUM = "sha256:" + "0" * 64


def run_main(capsys, args: dict[str, Any], check: bool = False) -> tuple[str, dict[str, Any]]:
    """What main() prints for `args` (it always exits), as text and as JSON."""
    with module_args({**args, "_ansible_check_mode": check}), pytest.raises(SystemExit):
        download.main()
    out = capsys.readouterr().out
    return out, json.loads(out)


@pytest.mark.parametrize("bad", [{"retries": "many"}, {"no_such_option": 1}, {"checksum": None},
                                 {"validate_certs": "perhaps"}], ids=["type", "unsupported", "required", "bool"])
def test_the_login_and_signature_stay_out_of_a_failed_validation(capsys, bad):
    args = {"url": SIGNED, "checksum": CHECKSUM, **bad}
    out, result = run_main(capsys, {key: value for key, value in args.items() if value is not None})
    assert result["failed"] is True
    assert PASSWORD not in out and SIGNATURE not in out


@pytest.mark.parametrize("url", [SIGNED, "https://files.example.com/a.tgz"], ids=["signed", "plain"])
def test_the_url_returned_is_the_url_without_its_secrets(capsys, tmp_path, url):
    """A cached file is reported without a request; the URL it came from is shown, not masked as a whole."""
    content = b"agent tarball"
    (tmp_path / "a.tgz").write_bytes(content)
    checksum = "sha256:" + hashlib.sha256(content).hexdigest()
    out, result = run_main(capsys, {"url": url, "checksum": checksum, "cache_dir": str(tmp_path)}, check=True)
    assert result.get("failed") is not True, result
    assert result["url"] == "https://files.example.com/a.tgz" and result["changed"] is False
    assert PASSWORD not in out and SIGNATURE not in out
    assert "files.example.com" in result["invocation"]["module_args"]["url"]  # only its secrets are hidden


def test_a_token_given_as_the_urls_user_name_is_hidden(capsys, tmp_path):
    """https://TOKEN@host/... (how GitHub tokens are often given): a userinfo without a password is a secret too."""
    token = "ghp_T0kenWithoutPassw0rd"
    content = b"agent tarball"
    (tmp_path / "a.tgz").write_bytes(content)
    checksum = "sha256:" + hashlib.sha256(content).hexdigest()
    out, result = run_main(capsys, {"url": f"https://{token}@files.example.com/a.tgz", "checksum": checksum,
                                    "cache_dir": str(tmp_path)}, check=True)
    assert result.get("failed") is not True, result
    assert token not in out
    assert result["invocation"]["module_args"]["url"] == "https://********@files.example.com/a.tgz"


def test_a_url_that_cannot_be_read_fails_clearly_and_stays_hidden(capsys):
    out, result = run_main(capsys, {"url": f"https://ghp_T0ken@[fe80::1/a.tgz?sig={SIGNATURE}",
                                    "checksum": CHECKSUM})
    assert result["failed"] is True and "cannot be read (Invalid IPv6 URL)" in result["msg"], result
    assert "ghp_T0ken" not in out and SIGNATURE not in out
