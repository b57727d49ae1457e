# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small client for the OCI distribution API: what an image push needs, no more.

Basic and Docker token (Bearer) auth, HEAD/mount/chunked upload of blobs with
resume, manifests; docker's config.json logins come from _docker_config. Every
failure becomes a RegistryError whose message names the registry and what to
check, never a password or token.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple
from urllib.parse import urlencode, urljoin, urlparse

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._docker_config import Credentials

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._http_retry import (
    retry_delay,
    should_retry,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._registry_answers import (
    ANSWER_LIMIT,
    MANIFEST_LIMIT,
    RegistryAuthError,
    RegistryError,
    error_text as _error_text,
    first_bytes as _first_bytes,
    read_bounded as _read_bounded,
    reason as _reason,
    token_of as _token_of,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._url_origin import (
    downgrade_guard,
    downgrade_message,
    downgrades,
    realm_refusal,
    relative_to,
    same_origin,
    shown,
)

try:
    import requests
    from requests.exceptions import RequestException, SSLError
    HAS_REQUESTS = True
except ImportError:  # the module reports the missing library
    HAS_REQUESTS = False

CONNECT_TIMEOUT = 15.0  # seconds to open a connection; reading an answer may take the client's `timeout`
# Answers to a cross-repository mount that mean "not from there": the source is unknown, gone or not ours.
MOUNT_REFUSED = frozenset({400, 401, 403, 404, 405})
# A stored chunk: 202 by the distribution spec; Amazon ECR answers 201 (and a Range that stops advancing, so the
# offset is counted here from what was sent, never read back from a successful PATCH).
CHUNK_STORED = frozenset({201, 202, 204})
PUSH_REFUSED = frozenset({401, 403})  # to a login the registry has accepted: it may not write there
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
PLAIN_HTTP_ANSWERS = ("wrong version number", "record layer failure")  # what OpenSSL says when HTTP answers a hello


@dataclass
class Blob:
    digest: str
    size: int


@dataclass
class OpenUpload:
    """An upload session holding every byte of a blob, not yet committed under a digest."""

    location: str
    size: int
    scopes: tuple[str, ...]
    restarts: int = 0  # new sessions opened after the registry dropped one


class SessionStatus(NamedTuple):
    """What an upload session's status answer says: bytes held, and the Location to go on with."""

    held: int
    location: str


LOST_SESSION = SessionStatus(-1, "")  # the registry no longer knows the session (or has cancelled it)


class _Sending(NamedTuple):
    """One call as `request` sends it (again after a new login)."""

    method: str
    url: str
    scopes: tuple[str, ...]
    expected: frozenset[int]
    headers: dict[str, str] | None
    data: Any
    attempts: int
    own: bool
    limit: int


class RegistryClient:
    def __init__(self, registry: str, credentials: Credentials | None = None, *, ca_path: str | None = None,
                 validate_certs: bool = True, insecure: bool = False, retries: int = 5,
                 timeout: float = 300, backoff: float = 0.5) -> None:
        """`retries` counts the attempts of each request; fewer than one would send nothing, so it is refused here."""
        if retries < 1:
            raise RegistryError(f"retries is {retries}: give 1 or more (the attempts for each registry request; "
                                "1 sends each request once, without retrying).")
        self.registry = registry
        self.base = f"{'http' if insecure else 'https'}://{registry}"
        self.credentials = credentials
        self.verify: bool | str = (ca_path or True) if validate_certs else False
        self.retries, self.timeout, self.backoff = retries, timeout, backoff
        self._local = threading.local()
        self._tokens: dict[str, str] = {}
        self._challenge: dict[str, str] | None = None  # Bearer parameters, once the registry asked for them
        self._basic = False
        self._lock = threading.Lock()

    # --- plumbing --------------------------------------------------------------------------------------------

    @property
    def _session(self) -> "requests.Session":
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "datarobot_mlops.management_agent"
            session.hooks["response"].append(downgrade_guard(self._downgrade_error))
            self._local.session = session
        return session

    def close_connections(self) -> None:
        """Close this thread's connections (before a fork: the worker opens its own); the login is kept."""
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            del self._local.session

    def _authorization(self, scopes: tuple[str, ...]) -> dict[str, str]:
        if self._challenge is not None:
            return {"Authorization": f"Bearer {self._token(scopes)}"}
        if self._basic and self.credentials:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _token(self, scopes: tuple[str, ...]) -> str:
        key = " ".join(sorted(scopes))
        with self._lock:
            if key in self._tokens:
                return self._tokens[key]
        challenge = self._challenge or {}
        params = [("service", challenge.get("service", ""))] + [("scope", s) for s in scopes]
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        realm = challenge.get("realm", "")
        try:
            answer = self._session.get(f"{realm}?{urlencode(params)}", auth=auth, timeout=self._timeouts,
                                       verify=self.verify, stream=True)
            whole = _read_bounded(answer, ANSWER_LIMIT)
        except RequestException as exc:
            raise RegistryError(f"Cannot reach the token service {realm} of registry {self.registry}: "
                                f"{_reason(exc)}") from exc
        if not whole:
            raise RegistryError(f"Token service {realm} of registry {self.registry} sent more than "
                                f"{ANSWER_LIMIT >> 20} MiB; a token answer is a small JSON document: check the "
                                "registry's token service (its realm) and any proxy in front of it.")
        if answer.status_code in (401, 403):
            raise RegistryAuthError(self._rejected())
        if answer.status_code != 200:
            raise RegistryError(f"Token service {realm} of registry {self.registry} answered {answer.status_code}.")
        token = _token_of(answer)
        if not token:
            raise RegistryError(f"Token service {realm} of registry {self.registry} returned no token.")
        with self._lock:
            self._tokens[key] = token
        return token

    def _forget_tokens(self) -> bool:
        with self._lock:
            had = bool(self._tokens)
            self._tokens.clear()
        return had

    def _rejected(self) -> str:
        who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
        return (f"Registry {self.registry} rejected the credentials for {who}: check username/password "
                "(or the docker config.json login) and that the user may push there.")

    def _push_refused(self, repository: str, answer: "requests.Response") -> str:
        answered = f"it answered {answer.status_code} to the start of an upload ({_error_text(answer)})"
        if not self.credentials:
            return (f"Registry {self.registry} refuses pushes to {repository} without a login: {answered}. Give a "
                    "username and password (or a docker config.json login) that may push there.")
        return (f"Registry {self.registry} accepts the login of user {self.credentials.username!r} but refuses it a "
                f"push to {repository}: {answered}. Give that login push rights on the repository (a writer role, "
                "not a reader's; ECR: ecr:InitiateLayerUpload and the other layer upload actions), or name a "
                "repository it may push to.")

    def _learn_challenge(self, response: "requests.Response") -> bool:
        """Adopt the auth scheme the registry asks for; False when we cannot answer it differently."""
        header = response.headers.get("WWW-Authenticate", "")
        scheme = header.split(" ", 1)[0].lower()
        with self._lock:
            if scheme == "bearer" and self._challenge is None:
                challenge = dict(_CHALLENGE.findall(header))
                self._check_realm(challenge.get("realm", ""))
                self._challenge = challenge
                return True
            if scheme == "basic" and not self._basic and self.credentials:
                self._basic = True
                return True
        return False

    def _check_realm(self, realm: str) -> None:
        refusal = realm_refusal(realm, self.base)
        if refusal:
            raise RegistryError(f"Registry {self.registry} asks for tokens from {refusal}, so the credentials are not "
                                "sent. Give its token service an https:// realm (a plain-HTTP registry, insecure: true, "
                                "may name a plain-HTTP realm on its own host only).")

    def _downgrade_error(self, source: str, target: str) -> RegistryError:
        return RegistryError(downgrade_message(f"Registry {self.registry}", source, target))

    def _resolve(self, url: str) -> str:
        """`url` (a path or a Location, as given) as an absolute URL; a step down from https is refused."""
        absolute = urljoin(self.base + "/", url)
        if downgrades(self.base, absolute):
            raise self._downgrade_error(self.base, absolute)
        return absolute

    def request(self, method: str, url: str, *, scopes: tuple[str, ...], expected: Iterable[int],
                headers: dict[str, str] | None = None, data: Any = None, retry: bool = True,
                limit: int = ANSWER_LIMIT) -> "requests.Response":
        """One registry call: retried while transient, re-authenticated once on a 401, else a RegistryError.

        Credentials go only to the registry's own origin: a Location elsewhere (blob storage) gets the request
        without Authorization, and a 401 from there teaches nothing about how to authenticate. The answer's body is
        read whole, up to `limit` bytes: a longer one is a RegistryError.
        """
        url = self._resolve(url)
        own = same_origin(url, self.base)
        expected = frozenset(expected)
        attempts = self.retries if retry else 1
        sending = _Sending(method, url, scopes, expected, headers, data, attempts, own, limit)
        answer, attempt = self._retrying(sending)
        # First contact tells us the scheme; later, a Bearer token may simply have expired mid-push.
        if answer.status_code == 401 and own and same_origin(answer.url or url, self.base) and self._renew_auth(answer):
            answer, attempt = self._retrying(sending)
        if answer.headers.get("Location"):  # resolved against the URL that answered; a path on the registry
            answer.headers["Location"] = relative_to(urljoin(answer.url or url, answer.headers["Location"]), self.base)
        if answer.status_code in expected:
            return answer
        raise self._status_error(answer, method, url, attempt)

    def _retrying(self, sending: "_Sending") -> tuple["requests.Response", int]:
        """Send until the answer is final (expected, not transient, or the last attempt's) and say which try it was."""
        method, url, attempts = sending.method, sending.url, sending.attempts
        for attempt in range(1, attempts + 1):
            auth = self._authorization(sending.scopes) if sending.own else {}
            try:
                answer = self._session.request(method, url, headers={**(sending.headers or {}), **auth},
                                               data=sending.data, timeout=self._timeouts, allow_redirects=True,
                                               verify=self.verify, stream=True)
                whole = _read_bounded(answer, sending.limit)
            except RequestException as exc:
                if isinstance(exc, SSLError) or attempt == attempts:
                    raise self._transport_error(exc, method, url, attempt) from exc
                self._sleep(attempt, None)
                continue
            if not whole:
                raise self._oversized(sending)
            if answer.status_code in sending.expected or not should_retry(answer.status_code, attempt, attempts):
                return answer, attempt
            self._sleep(attempt, answer.headers.get("Retry-After"))
        raise AssertionError("unreachable")

    def _oversized(self, sending: "_Sending") -> RegistryError:
        what = "a manifest" if sending.limit == MANIFEST_LIMIT else "an answer of the distribution API"
        return RegistryError(f"Registry {self.registry} sent more than {sending.limit >> 20} MiB in answer to "
                             f"{sending.method} {urlparse(sending.url).path}, more than {what} may hold (Docker "
                             "Distribution's own limit for a manifest is 4 MiB): check that the host and port are the "
                             "registry's, and any proxy in front of it.")

    def _renew_auth(self, answer: "requests.Response") -> bool:
        """After a 401: True when sending again may pass (a scheme learnt, or expired tokens dropped)."""
        return self._learn_challenge(answer) or self._forget_tokens()

    def _transport_error(self, exc: Exception, method: str, url: str, attempt: int) -> RegistryError:
        """What to tell the user when no HTTP answer came: TLS trouble, or an unreachable registry."""
        reason = _reason(exc)
        if isinstance(exc, SSLError) and reason in PLAIN_HTTP_ANSWERS:
            return RegistryError(f"TLS with registry {self.registry} failed: {reason}: it answers in plain HTTP. "
                                 "If it is an HTTP registry, set insecure: true; otherwise check the port.")
        if isinstance(exc, SSLError):
            return RegistryError(f"TLS with registry {self.registry} failed: {reason}. Is its CA trusted? "
                                 "Pass ca_path, or validate_certs: false for a test registry.")
        return RegistryError(f"Cannot reach registry {self.registry} ({method} {urlparse(url).path}): {reason}. "
                             f"Check the host, port and network (tried {attempt} times).")

    def _status_error(self, answer: "requests.Response", method: str, url: str, attempt: int) -> RegistryError:
        """What to tell the user about an answer we did not expect: rejected credentials, or the registry's errors."""
        if answer.status_code in (401, 403) and not same_origin(answer.url or url, self.base):
            return RegistryError(f"{shown(answer.url or url)}, where registry {self.registry} sent the client, answered "
                                 f"{answer.status_code} to {method}: the registry's credentials are sent only to the "
                                 "registry itself. Check the registry's storage redirect settings.")
        if answer.status_code in (401, 403):
            return RegistryAuthError(self._rejected())
        return RegistryError(f"Registry {self.registry} answered {answer.status_code} to {method} "
                             f"{urlparse(url).path}: {_error_text(answer)}"
                             + (f" (after {attempt} attempts)" if attempt > 1 else ""))

    @property
    def _timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds, the same for every call, token requests included."""
        return CONNECT_TIMEOUT, self.timeout

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        time.sleep(retry_delay(self.backoff, attempt, retry_after, random.random()))

    # --- API -------------------------------------------------------------------------------------------------

    def check_access(self, repository: str) -> None:
        """Fails with a clear error unless we may push to `repository`.

        The login first (GET /v2/), then what a push does first: an upload session, opened and cancelled at once
        (a registry that cannot cancel one lets it expire). /v2/ alone answers 200 to a login that may only pull
        (a read-only robot account, a token without push), whose push would fail only once under way.
        """
        scopes = (f"repository:{repository}:pull,push",)
        self.request("GET", "/v2/", scopes=scopes, expected={200})
        answer = self.request("POST", f"/v2/{repository}/blobs/uploads/", scopes=scopes,
                              expected={202} | PUSH_REFUSED)
        if answer.status_code in PUSH_REFUSED:
            raise RegistryAuthError(self._push_refused(repository, answer))
        self._cancel(answer.headers.get("Location"), scopes)

    def check_login(self) -> str:
        """Fails with a clear error unless the registry answers and accepts our login; the scheme it asked for.

        What `docker login` does: GET /v2/, answering the challenge the registry sends (Basic, or a token asked
        for no repository), so no repository is read and nothing is written.
        """
        self.request("GET", "/v2/", scopes=(), expected={200})
        return "bearer" if self._challenge is not None else "basic" if self._basic else "none"

    def blob_size(self, repository: str, digest: str) -> int | None:
        answer = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes=(f"repository:{repository}:pull",),
                              expected={200, 404})
        return int(answer.headers.get("Content-Length", 0)) if answer.status_code == 200 else None

    def mount(self, repository: str, digest: str, source: str) -> bool:
        """Cross-repository mount; True when the registry linked the blob without an upload.

        Anything but 201 means "upload it instead": 202 (not mounted, here is an upload session) and a refusal
        (the source is gone, or we may not read it; remembered sources can be stale) alike.
        """
        scopes = (f"repository:{repository}:pull,push", f"repository:{source}:pull")
        answer = self.request("POST", f"/v2/{repository}/blobs/uploads/?{urlencode({'mount': digest, 'from': source})}",
                              scopes=scopes, expected={201, 202} | MOUNT_REFUSED)
        if answer.status_code == 201:
            return True
        if answer.status_code == 202:
            self._cancel(answer.headers.get("Location"), scopes)  # not mounted: drop the session it opened
        return False

    def _cancel(self, location: str | None, scopes: tuple[str, ...]) -> None:
        if location:
            try:
                self.request("DELETE", location, scopes=scopes, expected={204, 404, 405}, retry=False)
            except RegistryError:
                pass

    def upload(self, repository: str, chunks: Iterable[bytes], digest_of: Callable[[], str],
               on_progress: Callable[[int], None] | None = None) -> Blob:
        """Chunked upload, committed at once; `digest_of()` is asked after the last chunk."""
        pending = self.send(repository, chunks, on_progress)
        try:
            return self.commit(pending, digest_of())
        except BaseException:
            self.cancel(pending)
            raise

    def send(self, repository: str, chunks: Iterable[bytes], on_progress: Callable[[int], None] | None = None,
             replay: Callable[[], Iterable[bytes]] | None = None) -> "OpenUpload":
        """Send every chunk to a new upload session and leave it open: nothing is stored until `commit`.

        A dropped connection resumes at the offset the registry says it holds. When the registry has dropped the
        session (Docker Distribution does once its upload state and what it received disagree), the blob restarts
        in a new session: `replay()` gives the blob's bytes again from the start, to send what the lost session
        held. A failure cancels the session.
        """
        scopes = (f"repository:{repository}:pull,push",)
        upload = OpenUpload(self._open_session(repository, scopes), 0, scopes)
        try:
            for chunk in chunks:
                self._send_chunk(upload, chunk, replay)
                if on_progress:
                    on_progress(len(chunk))
        except BaseException:
            self.cancel(upload)
            raise
        return upload

    def _open_session(self, repository: str, scopes: tuple[str, ...]) -> str:
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scopes=scopes, expected={202})
        location = start.headers.get("Location")
        if not location:
            raise RegistryError(f"Registry {self.registry} answered 202 to POST /v2/{repository}/blobs/uploads/ "
                                "without a Location for the upload: it does not speak the distribution API; check "
                                "the registry host and port.")
        return location

    def commit(self, upload: "OpenUpload", digest: str) -> Blob:
        separator = "&" if "?" in upload.location else "?"
        self.request("PUT", f"{upload.location}{separator}{urlencode({'digest': digest})}", scopes=upload.scopes,
                     expected={201}, headers={"Content-Length": "0"}, data=b"")
        return Blob(digest, upload.size)

    def cancel(self, upload: "OpenUpload") -> None:
        self._cancel(upload.location, upload.scopes)

    def _send_chunk(self, upload: "OpenUpload", chunk: bytes, replay: Callable[[], Iterable[bytes]] | None) -> None:
        """Append `chunk` to the session; after a failure, ask what it holds and send only the rest."""
        offset = upload.size
        sent = 0
        for attempt in range(1, self.retries + 1):
            piece = memoryview(chunk)[sent:] if sent else chunk  # no copy of a chunk being resent
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(piece)),
                       "Content-Range": f"{offset + sent}-{offset + len(chunk) - 1}"}
            try:
                answer = self.request("PATCH", upload.location, scopes=upload.scopes, expected=CHUNK_STORED,
                                      headers=headers, data=piece, retry=False)
                upload.location, upload.size = answer.headers.get("Location", upload.location), offset + len(chunk)
                return
            except RegistryAuthError:
                raise
            except RegistryError:
                if attempt == self.retries:
                    raise
                self._sleep(attempt, None)
                status = self._held(upload)  # what the registry kept of the session so far
                if status is LOST_SESSION:
                    self._restart(upload, replay)  # a new session holding the `offset` bytes sent before
                    offset, sent = upload.size, 0
                    continue
                if status is None or not offset <= status.held <= offset + len(chunk):
                    raise
                upload.location = status.location  # the status answer's Location carries the current state
                if status.held == offset + len(chunk):
                    upload.size = status.held  # all of it arrived, only the answer was lost: nothing to resend
                    return
                sent = status.held - offset
        raise AssertionError("unreachable")

    def _held(self, upload: "OpenUpload") -> "SessionStatus | None":
        """How many bytes the session holds, LOST_SESSION when the registry no longer knows it, None if unknown."""
        try:
            answer = self.request("GET", upload.location, scopes=upload.scopes, expected={204, 404})
        except RegistryError:
            return None
        if answer.status_code == 404:  # BLOB_UPLOAD_UNKNOWN, or BLOB_UPLOAD_INVALID (the session was cancelled)
            return LOST_SESSION
        location = answer.headers.get("Location", upload.location)
        match = re.match(r"^(?:bytes=)?0-(\d+)$", answer.headers.get("Range", ""))
        if not match:
            return SessionStatus(0, location)
        # distribution answers "0-0" for an empty upload (and, ambiguously, for a one-byte one): read it as empty.
        end = int(match.group(1))
        return SessionStatus(0 if end == 0 else end + 1, location)

    def _restart(self, upload: "OpenUpload", replay: Callable[[], Iterable[bytes]] | None) -> None:
        """Open a new session for a lost one and send again the bytes the lost one held."""
        held = upload.size
        if held and replay is None:
            raise RegistryError(f"Registry {self.registry} dropped the upload session after {held} bytes, and this "
                                "blob cannot be read again: run again.")
        if upload.restarts >= self.retries:
            raise RegistryError(f"Registry {self.registry} dropped the upload session {upload.restarts + 1} times: "
                                "check the network path to the registry (a proxy cutting long requests?).")
        upload.restarts += 1
        repository = upload.scopes[0].split(":")[1]  # "repository:<name>:pull,push"
        upload.location, upload.size = self._open_session(repository, upload.scopes), 0
        if held and replay is not None:
            for piece in _first_bytes(replay(), held):
                self._send_chunk(upload, piece, replay)

    def manifest(self, repository: str, reference: str) -> tuple[str, str, bytes] | None:
        """(digest, media type, body) of a tag or digest, or None when the registry has none."""
        answer = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                              scopes=(f"repository:{repository}:pull",), expected={200, 404},
                              headers={"Accept": ", ".join(MANIFEST_TYPES)}, limit=MANIFEST_LIMIT)
        if answer.status_code == 404:
            return None
        body = answer.content
        digest = answer.headers.get("Docker-Content-Digest") or ""
        return digest, answer.headers.get("Content-Type", ""), body

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store `body` under `reference`; its digest, once the registry's Docker-Content-Digest agrees with ours."""
        answer = self.request("PUT", f"/v2/{repository}/manifests/{reference}",
                              scopes=(f"repository:{repository}:pull,push",), expected={201},
                              headers={"Content-Type": media_type}, data=body)
        ours = "sha256:" + hashlib.sha256(body).hexdigest()
        theirs = answer.headers.get("Docker-Content-Digest", "")
        if theirs and theirs != ours and theirs.split(":", 1)[0] == "sha256":
            raise RegistryError(f"Registry {self.registry} stored the manifest of {repository}:{reference} as "
                                f"{theirs}, but the manifest sent has digest {ours}: a proxy or the registry changed it. "
                                "Check what the tag now points at before using it.")
        return ours
