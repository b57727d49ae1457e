from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest
import requests
from requests.exceptions import ConnectionError as RequestsConnectionError, SSLError

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils import _registry_client
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import Credentials
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._http_retry import (
    RETRY_STATUSES,
    retry_delay,
    should_retry,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_client import (
    CONNECT_TIMEOUT,
    OpenUpload,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
)

REGISTRY = "registry.example:5000"


def answer(status: int, headers: dict | None = None, body: bytes = b"") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = body  # pylint: disable=protected-access
    response._content_consumed = True  # pylint: disable=protected-access  # read, as a streamed answer is
    return response


class FakeSession:
    """Plays back answers (or raises exceptions) in order and records every call."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict]] = []

    def _next(self, method: str, url: str, **kwargs):
        self.calls.append((method, url, kwargs))
        item = self.answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def request(self, method, url, **kwargs):
        return self._next(method, url, **kwargs)

    def get(self, url, **kwargs):
        return self._next("GET", url, **kwargs)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(_registry_client.time, "sleep", slept.append)
    return slept


def client_and_session(*answers, credentials: Credentials | None = None,
                       **kwargs) -> tuple[RegistryClient, FakeSession]:
    client = RegistryClient(REGISTRY, credentials, **kwargs)
    session = FakeSession(*answers)
    client._local.session = session  # pylint: disable=protected-access
    return client, session


def client_with(*answers, credentials: Credentials | None = None, **kwargs) -> RegistryClient:
    return client_and_session(*answers, credentials=credentials, **kwargs)[0]


# --- retry decision -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
def test_transient_answers_are_retried_while_attempts_remain(status):
    assert should_retry(status, 1, 3) and should_retry(status, 2, 3)
    assert not should_retry(status, 3, 3)


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 501])
def test_other_answers_are_final(status):
    assert not should_retry(status, 1, 5)


def test_delay_doubles_with_jitter_and_honours_retry_after_up_to_a_minute():
    assert retry_delay(0.5, 1, None, 0.0) == 0.5
    assert retry_delay(0.5, 3, None, 0.0) == 2.0
    assert retry_delay(0.5, 1, None, 1.0) == 0.75
    assert retry_delay(0.5, 1, "7", 0.0) == 7.0
    assert retry_delay(0.5, 1, "600", 0.0) == 60.0
    assert retry_delay(0.5, 4, "1", 0.0) == 4.0
    assert retry_delay(0.5, 1, "Wed, 21 Oct 2015 07:28:00 GMT", 0.0) == 0.5


def test_a_burst_of_503_is_retried_then_passes(no_sleep):
    client, session = client_and_session(answer(503), answer(503, {"Retry-After": "2"}), answer(200), backoff=0.1)
    assert client.request("GET", "/v2/", scopes=(), expected={200}).status_code == 200
    assert len(session.calls) == 3 and len(no_sleep) == 2 and no_sleep[1] >= 2


def test_retry_false_sends_once():
    client, session = client_and_session(answer(503))
    with pytest.raises(RegistryError, match="answered 503") as raised:
        client.request("GET", "/v2/", scopes=(), expected={200}, retry=False)
    assert len(session.calls) == 1 and "attempts" not in str(raised.value)


def test_connection_errors_are_retried_then_reported():
    client, session = client_and_session(*[RequestsConnectionError("boom")] * 3, retries=3)
    with pytest.raises(RegistryError, match=r"Cannot reach registry registry.example:5000 \(GET /v2/\).*tried 3 times"):
        client.request("GET", "/v2/", scopes=(), expected={200})
    assert len(session.calls) == 3


# --- error mapping --------------------------------------------------------------------------------------------------

def test_exhausted_retries_name_the_registry_the_call_and_its_errors():
    body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "try later"}]}).encode()
    client = client_with(*[answer(503, body=body)] * 2, retries=2)
    with pytest.raises(RegistryError) as raised:
        client.request("PUT", "/v2/app/manifests/1.0", scopes=(), expected={201})
    assert str(raised.value) == ("Registry registry.example:5000 answered 503 to PUT /v2/app/manifests/1.0: "
                                 "UNAVAILABLE: try later (after 2 attempts)")


def test_a_non_json_error_body_is_quoted_short():
    client = client_with(answer(400, body=b"x" * 500))
    with pytest.raises(RegistryError, match="answered 400 to GET /v2/: x{200}$"):
        client.request("GET", "/v2/", scopes=(), expected={200})


@pytest.mark.parametrize("status", [401, 403])
def test_refusal_names_the_user_never_the_password(status):
    client = client_with(answer(status), credentials=Credentials("alice", "s3cret"))
    with pytest.raises(RegistryAuthError, match="rejected the credentials for user 'alice'") as raised:
        client.request("GET", "/v2/", scopes=(), expected={200})
    assert "s3cret" not in str(raised.value)


def test_plain_http_registry_behind_tls_is_named_and_not_retried():
    client, session = client_and_session(SSLError("[SSL] wrong version number (_ssl.c:1000)"))
    with pytest.raises(RegistryError, match="answers in plain HTTP.*insecure: true"):
        client.request("GET", "/v2/", scopes=(), expected={200})
    assert len(session.calls) == 1


def test_untrusted_certificate_points_at_ca_path():
    client = client_with(SSLError("certificate verify failed: self-signed certificate in chain ('x')"))
    with pytest.raises(RegistryError, match="certificate verify failed: self-signed certificate in chain.*ca_path"):
        client.request("GET", "/v2/", scopes=(), expected={200})


# --- auth: challenge parsing and re-authentication ------------------------------------------------------------------

BEARER = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:app:pull"'


def test_bearer_challenge_is_parsed_and_a_scoped_token_fetched_with_the_common_timeouts():
    token = answer(200, body=json.dumps({"token": "t0k"}).encode())
    client, session = client_and_session(answer(401, {"WWW-Authenticate": BEARER}), token, answer(200),
                                         credentials=Credentials("u", "p"), timeout=42)
    client.request("GET", "/v2/", scopes=("repository:app:pull,push",), expected={200})
    assert client._challenge == {"realm": "https://auth.example/token", "service": "registry.example",  # pylint: disable=protected-access
                                 "scope": "repository:app:pull"}
    token_url, token_call = session.calls[1][1:]
    assert token_url == ("https://auth.example/token?service=registry.example&"
                         "scope=repository%3Aapp%3Apull%2Cpush")
    assert token_call["auth"] == ("u", "p") and token_call["timeout"] == (CONNECT_TIMEOUT, 42)
    assert session.calls[2][2]["headers"]["Authorization"] == "Bearer t0k"
    assert session.calls[2][2]["timeout"] == (CONNECT_TIMEOUT, 42)


def test_basic_challenge_sends_the_credentials_once_learnt():
    client, session = client_and_session(answer(401, {"WWW-Authenticate": 'Basic realm="r"'}), answer(200),
                                         credentials=Credentials("u", "p"))
    client.request("GET", "/v2/", scopes=(), expected={200})
    assert "Authorization" not in session.calls[0][2]["headers"]
    assert session.calls[1][2]["headers"]["Authorization"] == "Basic dTpw"


def test_an_expired_token_is_renewed_once_then_refused():
    """A 401 on a cached token fetches a new one once (and sends it); a second 401 is refused."""
    token = answer(200, body=json.dumps({"access_token": "a"}).encode())
    client, session = client_and_session(answer(401, {"WWW-Authenticate": BEARER}), token, answer(200),
                                         answer(401, {"WWW-Authenticate": BEARER}),
                                         answer(200, body=b'{"token": "b"}'), answer(401, {"WWW-Authenticate": BEARER}))
    client.request("GET", "/v2/", scopes=("s",), expected={200})
    with pytest.raises(RegistryAuthError, match="anonymous access"):
        client.request("GET", "/v2/", scopes=("s",), expected={200})
    assert [call[1].split("?")[0] for call in session.calls].count("https://auth.example/token") == 2
    # each token got is the one sent: first "a", and "b" only after the renewal (not a stale cached token)
    sent = [(call[1], (call[2].get("headers") or {}).get("Authorization")) for call in session.calls
            if not call[1].startswith("https://auth.example/")]
    assert [authorization for _url, authorization in sent] == [None, "Bearer a", "Bearer a", "Bearer b"]


def test_an_expected_401_is_returned_when_auth_cannot_change():
    client = client_with(answer(401))  # no challenge, no credentials, no token
    assert client.request("POST", "/v2/a/blobs/uploads/", scopes=(), expected={201, 401}).status_code == 401


def test_token_service_refusal_and_emptiness_are_clear():
    client = client_with(answer(401, {"WWW-Authenticate": BEARER}), answer(403))
    with pytest.raises(RegistryAuthError, match="rejected the credentials"):
        client.request("GET", "/v2/", scopes=("s",), expected={200})
    client = client_with(answer(401, {"WWW-Authenticate": BEARER}), answer(200, body=b"{}"))
    with pytest.raises(RegistryError, match="returned no token"):
        client.request("GET", "/v2/", scopes=("s",), expected={200})


# --- Location resolution and where credentials go ------------------------------------------------------------------

def test_locations_resolve_against_the_answering_url_and_stay_paths_on_the_registry():
    client, session = client_and_session(answer(202, {"Location": "/v2/app/blobs/uploads/u1?state=s"}),
                                         answer(202, {"Location": "u2?state=t"}),
                                         answer(202, {"Location": "https://registry.example:5000/v2/app/blobs/uploads/u3"}),
                                         answer(201))
    uploads = [client.send("app", []), client.send("app", []), client.send("app", [])]
    assert [upload.location for upload in uploads] == ["/v2/app/blobs/uploads/u1?state=s",
                                                       "/v2/app/blobs/uploads/u2?state=t",
                                                       "/v2/app/blobs/uploads/u3"]
    client.commit(uploads[1], "sha256:abc")
    assert session.calls[-1][1] == "https://registry.example:5000/v2/app/blobs/uploads/u2?state=t&digest=sha256%3Aabc"


BASIC = Credentials("u", "p")


def basic_client(*answers, **kwargs) -> tuple[RegistryClient, FakeSession]:
    """A client that has learnt Basic auth from the registry's 401 (first two answers are spent on that)."""
    client, session = client_and_session(answer(401, {"WWW-Authenticate": 'Basic realm="r"'}), answer(200), *answers,
                                         credentials=BASIC, **kwargs)
    client.check_login()
    assert session.calls[1][2]["headers"]["Authorization"] == "Basic dTpw"
    return client, session


# --- whether the login may push ---------------------------------------------------------------------------------

def test_check_access_opens_an_upload_session_and_cancels_it_at_once():
    client, session = basic_client(answer(200), answer(202, {"Location": "/v2/app/blobs/uploads/u1"}), answer(204))
    client.check_access("app")
    assert [(call[0], call[1].split(REGISTRY)[-1]) for call in session.calls[2:]] == [
        ("GET", "/v2/"), ("POST", "/v2/app/blobs/uploads/"), ("DELETE", "/v2/app/blobs/uploads/u1")]
    assert all(call[2]["headers"]["Authorization"] == "Basic dTpw" for call in session.calls[2:])


@pytest.mark.parametrize("status", [401, 403])
def test_a_login_that_may_only_pull_is_named_before_the_push(status):
    denied = json.dumps({"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]})
    client, session = basic_client(answer(200), answer(status, body=denied.encode()))
    with pytest.raises(RegistryAuthError, match=rf"accepts the login of user 'u' but refuses it a push to app: it "
                                                rf"answered {status} .*requested access to the resource is denied.*"
                                                "push rights") as raised:
        client.check_access("app")
    assert "dTpw" not in str(raised.value) and "'p'" not in str(raised.value)
    assert [call[0] for call in session.calls[2:]] == ["GET", "POST"]  # no session opened: nothing to cancel


def test_a_registry_that_refuses_anonymous_pushes_asks_for_a_login():
    client, session = client_and_session(answer(200), answer(401))
    with pytest.raises(RegistryAuthError, match=r"refuses pushes to app without a login: it answered 401 .*Give a "
                                                r"username and password"):
        client.check_access("app")
    assert [call[0] for call in session.calls] == ["GET", "POST"]


def test_a_bearer_token_without_push_is_named_as_such_not_as_wrong_credentials():
    token = answer(200, body=json.dumps({"token": "t0k"}).encode())
    insufficient = answer(401, {"WWW-Authenticate": BEARER + ',error="insufficient_scope"'})
    client, session = client_and_session(answer(401, {"WWW-Authenticate": BEARER}), token, answer(200),
                                         insufficient, token, insufficient, credentials=BASIC)
    with pytest.raises(RegistryAuthError, match="refuses it a push to app"):
        client.check_access("app")
    assert [call[0] for call in session.calls] == ["GET", "GET", "GET", "POST", "GET", "POST"]


@pytest.mark.parametrize("location", ["https://storage.example/upload/u2?sig=x", "https://registry.example/u",
                                      "https://registry.example:5001/u", "//storage.example/u"])
def test_an_upload_location_on_another_origin_gets_no_credentials(location):
    client, session = basic_client(answer(202, {"Location": location}), answer(202, {"Location": location}),
                                   answer(201))
    client.commit(client.send("app", [b"abc"]), "sha256:abc")
    post, patch, put = session.calls[2:]
    assert post[2]["headers"]["Authorization"] == "Basic dTpw"
    assert "Authorization" not in patch[2]["headers"] and "Authorization" not in put[2]["headers"]
    assert patch[1].startswith("https://") and patch[1].split("//")[1].split("/")[0] != REGISTRY


def test_a_bearer_token_never_follows_a_location_to_another_origin():
    token = answer(200, body=json.dumps({"token": "t0k"}).encode())
    client, session = client_and_session(answer(401, {"WWW-Authenticate": BEARER}), token, answer(202, {
        "Location": "https://storage.example/u"}), answer(202), credentials=BASIC)
    client.send("app", [b"abc"])
    assert session.calls[2][2]["headers"]["Authorization"] == "Bearer t0k"
    assert "Authorization" not in session.calls[3][2]["headers"]


@pytest.mark.parametrize("location", ["http://registry.example:5000/v2/app/blobs/uploads/u1",
                                      "http://storage.example/u"])
def test_a_step_down_to_plain_http_is_refused_before_anything_is_sent(location):
    client, session = basic_client(answer(202, {"Location": location}))
    with pytest.raises(RegistryError, match=r"from HTTPS to plain HTTP: refused.*clear text") as raised:
        client.send("app", [b"abc"])
    assert [call[0] for call in session.calls[2:]] == ["POST"]  # nor the cancel: it would go there too
    assert "dTpw" not in str(raised.value)


def test_a_plain_http_registry_may_use_plain_http_locations():
    client, session = client_and_session(answer(202, {"Location": "http://registry.example:5000/u"}), answer(202),
                                         insecure=True)
    client.send("app", [b"abc"])
    assert session.calls[1][1] == "http://registry.example:5000/u"


def test_a_401_from_another_origin_teaches_nothing_and_names_where_it_came_from():
    evil = 'Bearer realm="https://evil.example/token",service="x"'
    client, session = basic_client(answer(202, {"Location": "https://storage.example/u?sig=secret"}),
                                   answer(401, {"WWW-Authenticate": evil}), answer(401, {"WWW-Authenticate": evil}),
                                   answer(204))
    with pytest.raises(RegistryError, match=r"https://storage.example/u, where registry .* answered 401 to PATCH"
                                            r".*sent only to the registry itself") as raised:
        client.send("app", [b"abc"])
    assert client._challenge is None  # pylint: disable=protected-access
    assert not any("evil.example" in call[1] for call in session.calls)
    assert [call[0] for call in session.calls[3:]] == ["PATCH", "GET", "DELETE"]  # status and cancel: storage too
    assert all("Authorization" not in call[2]["headers"] for call in session.calls[3:])
    assert "sig=secret" not in str(raised.value)


@pytest.mark.parametrize("realm", ["http://auth.example/token", "http://registry.example:5000/token"])
def test_a_plain_http_realm_of_a_tls_registry_never_gets_the_credentials(realm):
    client, session = client_and_session(answer(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="s"'}),
                                         credentials=BASIC)
    with pytest.raises(RegistryError, match=r"asks for tokens from http://.*plain HTTP.*https:// realm"):
        client.request("GET", "/v2/", scopes=("s",), expected={200})
    assert len(session.calls) == 1


@pytest.mark.parametrize("realm", ["", "/token", "ftp://auth.example/token", "https:///token"])
def test_a_realm_that_is_no_https_url_is_refused(realm):
    client, session = client_and_session(answer(401, {"WWW-Authenticate": f'Bearer realm="{realm}"'}),
                                         credentials=BASIC)
    with pytest.raises(RegistryError, match="which is not an https:// URL"):
        client.request("GET", "/v2/", scopes=("s",), expected={200})
    assert len(session.calls) == 1


def test_a_plain_http_registry_may_name_a_plain_http_realm_on_its_own_host():
    token = answer(200, body=b'{"token": "t"}')
    client, session = client_and_session(
        answer(401, {"WWW-Authenticate": 'Bearer realm="http://registry.example:5001/t"'}),
        token, answer(200), credentials=BASIC, insecure=True)
    client.request("GET", "/v2/", scopes=("s",), expected={200})
    assert session.calls[1][1].startswith("http://registry.example:5001/t?") and session.calls[1][2]["auth"] == ("u", "p")


def test_a_plain_http_registry_never_sends_the_credentials_to_a_plain_http_realm_elsewhere():
    client, session = client_and_session(answer(401, {"WWW-Authenticate": 'Bearer realm="http://auth.example/t"'}),
                                         credentials=BASIC, insecure=True)
    with pytest.raises(RegistryError, match=r"plain HTTP on auth.example, not the registry's own host.*own host only"):
        client.request("GET", "/v2/", scopes=("s",), expected={200})
    assert len(session.calls) == 1


def test_a_chunk_answer_moves_the_location():
    client, session = client_and_session(answer(202, {"Location": "/v2/app/blobs/uploads/u1"}),
                                         answer(202, {"Location": "/v2/app/blobs/uploads/u1?n=2"}))
    upload = client.send("app", [b"abc"])
    assert upload == OpenUpload("/v2/app/blobs/uploads/u1?n=2", 3, ("repository:app:pull,push",))
    assert session.calls[1][2]["headers"]["Content-Range"] == "0-2"


# --- put_manifest ---------------------------------------------------------------------------------------------------

MANIFEST = b'{"schemaVersion": 2}'
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


@pytest.mark.parametrize("header", [{"Docker-Content-Digest": MANIFEST_DIGEST}, {}])
def test_put_manifest_returns_our_digest_when_the_registry_agrees_or_is_silent(header):
    client, session = client_and_session(answer(201, header))
    assert client.put_manifest("app", "1.0", MANIFEST, "application/vnd.oci.image.manifest.v1+json") == MANIFEST_DIGEST
    assert session.calls[0][2]["data"] == MANIFEST


def test_put_manifest_fails_clearly_when_the_registry_stored_something_else():
    client = client_with(answer(201, {"Docker-Content-Digest": "sha256:" + "0" * 64}))
    with pytest.raises(RegistryError, match=f"app:1.0 as sha256:0{{64}}, but the manifest sent has digest "
                                            f"{MANIFEST_DIGEST}"):
        client.put_manifest("app", "1.0", MANIFEST, "application/vnd.oci.image.manifest.v1+json")


# --- resuming an upload ---------------------------------------------------------------------------------------------

CUT = RequestsConnectionError("connection reset")
INVALID = answer(404, {"Content-Type": "application/json"},
                 json.dumps({"errors": [{"code": "BLOB_UPLOAD_INVALID", "message": "blob upload invalid"}]}).encode())


def test_a_chunk_the_registry_already_holds_is_not_sent_again():
    """The answer to a stored PATCH was lost: the status says all of it arrived; go on from its Location."""
    client, session = client_and_session(answer(202, {"Location": "/u?s=0"}), CUT,
                                         answer(204, {"Range": "0-2", "Location": "/u?s=3"}),
                                         answer(202, {"Location": "/u?s=5"}), retries=3)
    upload = client.send("app", [b"abc", b"de"])
    assert [(call[0], call[1].split("5000")[1]) for call in session.calls] == [
        ("POST", "/v2/app/blobs/uploads/"), ("PATCH", "/u?s=0"), ("GET", "/u?s=0"), ("PATCH", "/u?s=3")]
    assert session.calls[3][2]["headers"]["Content-Range"] == "3-4"
    assert (upload.location, upload.size) == ("/u?s=5", 5)


def test_a_partly_held_chunk_resumes_at_the_held_offset_with_the_status_location():
    client, session = client_and_session(answer(202, {"Location": "/u?s=0"}), CUT,
                                         answer(204, {"Range": "0-1", "Location": "/u?s=2"}),
                                         answer(202, {"Location": "/u?s=4"}), retries=3)
    upload = client.send("app", [b"abcd"])
    resumed = session.calls[3]
    assert resumed[1].endswith("/u?s=2") and bytes(resumed[2]["data"]) == b"cd"
    assert resumed[2]["headers"]["Content-Range"] == "2-3" and upload.size == 4


def test_a_session_the_registry_dropped_restarts_with_the_bytes_it_held_read_again():
    client, session = client_and_session(answer(202, {"Location": "/a?s=0"}), answer(202, {"Location": "/a?s=3"}),
                                         CUT, INVALID,  # 2nd chunk cut, then the registry drops the session
                                         answer(202, {"Location": "/b?s=0"}), answer(202, {"Location": "/b?s=2"}),
                                         answer(202, {"Location": "/b?s=3"}), answer(202, {"Location": "/b?s=5"}),
                                         retries=3)
    upload = client.send("app", [b"abc", b"de"], replay=lambda: iter([b"ab", b"cde"]))
    patches = [(call[1].split("5000")[1], bytes(call[2]["data"])) for call in session.calls if call[0] == "PATCH"]
    # the lost session's 3 bytes again (cut where the replay's pieces reach them), then the cut chunk
    assert patches == [("/a?s=0", b"abc"), ("/a?s=3", b"de"), ("/b?s=0", b"ab"), ("/b?s=2", b"c"), ("/b?s=3", b"de")]
    assert (upload.location, upload.size, upload.restarts) == ("/b?s=5", 5, 1)


def test_a_session_dropped_in_the_first_chunk_restarts_without_reading_again():
    client, session = client_and_session(answer(202, {"Location": "/a"}), CUT, INVALID, answer(202, {"Location": "/b"}),
                                         answer(202, {"Location": "/b?s=3"}), retries=3)
    upload = client.send("app", [b"abc"])
    assert [call[0] for call in session.calls] == ["POST", "PATCH", "GET", "POST", "PATCH"]
    assert upload.size == 3 and upload.restarts == 1


def test_a_dropped_session_that_cannot_be_replayed_fails_clearly_and_is_cancelled():
    client, session = client_and_session(answer(202, {"Location": "/a"}), answer(202, {"Location": "/a?s=3"}), CUT,
                                         INVALID, answer(404), retries=3)
    with pytest.raises(RegistryError, match=r"dropped the upload session after 3 bytes.*run again"):
        client.send("app", [b"abc", b"de"])
    assert session.calls[-1][0] == "DELETE"


def test_sessions_dropped_again_and_again_stop_after_the_retry_limit():
    client = client_with(answer(202, {"Location": "/a"}), *[CUT, INVALID, answer(202, {"Location": "/n"})] * 2,
                         CUT, INVALID, answer(404), retries=2)
    with pytest.raises(RegistryError):
        client.send("app", [b"abc"])


def test_an_upload_session_without_a_location_is_a_clear_error():
    client = client_with(answer(202))
    with pytest.raises(RegistryError, match="answered 202 to POST /v2/app/blobs/uploads/ without a Location"):
        client.send("app", [b"abc"])


# --- check_login: what `docker login` does ---------------------------------------------------------------------------

def test_check_login_asks_a_token_for_no_repository_as_docker_login_does():
    token = answer(200, body=json.dumps({"token": "t0k"}).encode())
    client, session = client_and_session(answer(401, {"WWW-Authenticate": BEARER}), token, answer(200),
                                         credentials=Credentials("u", "p"))
    assert client.check_login() == "bearer"
    assert [call[0] for call in session.calls] == ["GET", "GET", "GET"]
    assert session.calls[1][1] == "https://auth.example/token?service=registry.example"  # no scope: nothing read
    assert session.calls[1][2]["auth"] == ("u", "p")
    assert session.calls[2][2]["headers"]["Authorization"] == "Bearer t0k"


def test_check_login_answers_basic_and_open_registries():
    basic, session = client_and_session(answer(401, {"WWW-Authenticate": 'Basic realm="r"'}), answer(200),
                                        credentials=Credentials("u", "p"))
    assert basic.check_login() == "basic" and session.calls[1][2]["headers"]["Authorization"] == "Basic dTpw"
    assert client_with(answer(200)).check_login() == "none"


def test_check_login_names_a_rejected_login_without_the_password():
    token_refused = client_with(answer(401, {"WWW-Authenticate": BEARER}), answer(401),
                                credentials=Credentials("u", "s3cret-pass"))
    with pytest.raises(RegistryAuthError, match="rejected the credentials for user 'u'") as refused:
        token_refused.check_login()
    assert "s3cret-pass" not in str(refused.value)
    basic_refused = client_with(answer(401, {"WWW-Authenticate": 'Basic realm="r"'}),
                                answer(401, {"WWW-Authenticate": 'Basic realm="r"'}), credentials=Credentials("u", "p"))
    with pytest.raises(RegistryAuthError, match="rejected the credentials for user 'u'"):
        basic_refused.check_login()


# --- a hostile server: answers without end (a real HTTP server on loopback) ---------------------------------------

class _Endless(http.server.BaseHTTPRequestHandler):
    """Answers by path: /token and /v2/big/manifests/* stream without end, /v2/err/* a 500 whose body never ends,
    /v2/fine/manifests/* a 3 MiB manifest, /v2/ asks for a Bearer token from /token (or /good-token)."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _endless(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        piece = b"x" * 65536
        self.server.sent = 0
        try:
            while self.server.sent < 256 << 20:  # until the client hangs up (or 256 MiB: "endless" for a test)
                self.wfile.write(piece)
                self.server.sent += len(piece)
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/v2/" and "Authorization" not in self.headers:
            self.send_response(401)
            realm = f"http://{self.headers['Host']}{self.server.realm}"
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="t"')
            self.end_headers()
        elif path == "/good-token":
            body = b'{"token": "tok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/token" or path.startswith("/v2/big/manifests/"):
            self._endless(200)
        elif path.startswith("/v2/err/"):
            self._endless(500)
        elif path.startswith("/v2/fine/manifests/"):
            body = b" " * (3 << 20)
            self.send_response(200)
            self.send_header("Content-Type", MANIFEST_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(200)
            self.end_headers()


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def hostile():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    server.daemon_threads = True
    server.realm, server.sent = "/good-token", 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _hostile_client(server) -> RegistryClient:
    return RegistryClient(f"127.0.0.1:{server.server_address[1]}", Credentials("u", "p"), insecure=True,
                          retries=2, timeout=10)


def test_an_endless_manifest_is_refused_after_4_mib_with_a_clear_error(hostile):
    with pytest.raises(RegistryError, match=r"sent more than 4 MiB in answer to GET /v2/big/manifests/v1, more than "
                                            r"a manifest may hold .* check that the host and port are the registry's"):
        _hostile_client(hostile).manifest("big", "v1")
    assert hostile.sent < 64 << 20  # read no further than the bound


def test_a_manifest_under_the_bound_is_read_whole(hostile):
    digest, media_type, body = _hostile_client(hostile).manifest("fine", "v1")
    assert len(body) == 3 << 20 and media_type == MANIFEST_TYPE and digest == ""


def test_an_endless_token_answer_is_refused_after_1_mib(hostile):
    hostile.realm = "/token"
    with pytest.raises(RegistryError, match=r"Token service http://127\.0\.0\.1:\d+/token of registry .* sent more "
                                            r"than 1 MiB; a token answer is a small JSON document"):
        _hostile_client(hostile).check_login()
    assert hostile.sent < 64 << 20


def test_an_endless_error_body_is_refused_not_retried_into_memory(hostile):
    with pytest.raises(RegistryError, match=r"sent more than 4 MiB in answer to GET /v2/err/manifests/v1, more than "
                                            r"a manifest may hold"):
        _hostile_client(hostile).manifest("err", "v1")
    with pytest.raises(RegistryError, match=r"sent more than 1 MiB in answer to GET /v2/err/x, more than an answer "
                                            r"of the distribution API may hold"):
        _hostile_client(hostile).request("GET", "/v2/err/x", scopes=(), expected={200})
    assert hostile.sent < 64 << 20


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"token": 5}'])
def test_a_token_answer_that_is_no_json_object_with_a_token_is_a_clear_error(body):
    client = client_with(answer(401, {"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'}),
                         answer(200, body=body))
    with pytest.raises(RegistryError, match="returned no token"):
        client.check_login()


# --- options refused before anything is sent ------------------------------------------------------------------------

@pytest.mark.parametrize("retries", [0, -1])
def test_fewer_than_one_attempt_is_refused_when_the_client_is_built(retries):
    with pytest.raises(RegistryError, match=rf"retries is {retries}: give 1 or more .*1 sends each request once"):
        RegistryClient(REGISTRY, retries=retries)


def test_one_attempt_sends_each_request_once():
    client, session = client_and_session(answer(503), retries=1)
    with pytest.raises(RegistryError, match="answered 503 to GET /v2/: $"):
        client.request("GET", "/v2/", scopes=(), expected={200})
    assert len(session.calls) == 1
