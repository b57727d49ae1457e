# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small client for the OCI distribution API: what an image push needs, no more.

Basic and Docker token (Bearer) auth, credentials from docker's config.json,
HEAD/mount/chunked upload of blobs with resume, manifests. Every failure
becomes a RegistryError whose message names the registry and what to check,
never a password or token.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlencode, urljoin, urlparse

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

try:
    import requests
    from requests.exceptions import RequestException, SSLError
    HAS_REQUESTS = True
except ImportError:  # the module reports the missing library
    HAS_REQUESTS = False

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers to a cross-repository mount that mean "not from there": the source is unknown, gone or not ours.
MOUNT_REFUSED = frozenset({400, 401, 403, 404, 405})
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
PLAIN_HTTP_ANSWERS = ("wrong version number", "record layer failure")  # what OpenSSL says when HTTP answers a hello


class RegistryError(MlopsError):
    """The registry refused or failed; the message says which registry and what to check."""


class RegistryAuthError(RegistryError):
    pass


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


# The options of the registry_auth doc fragment, as an argument spec (modules add retries and timeout).
REGISTRY_AUTH_ARGUMENT_SPEC: dict[str, dict[str, Any]] = dict(
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    docker_config=dict(type="path"),
    ca_path=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    insecure=dict(type="bool", default=False),
)


def credentials_from_docker_config(registry: str, path: str | None = None) -> Credentials | None:
    """The login `docker login` stored for `registry` in config.json (auths, credHelpers, credsStore)."""
    path = path or os.path.join(os.environ.get("DOCKER_CONFIG", os.path.expanduser("~/.docker")), "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise RegistryAuthError(f"Cannot read docker config {path}: {exc}") from exc
    keys = (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/")
    for key in keys:
        entry = (config.get("auths") or {}).get(key)
        if entry:
            if entry.get("auth"):
                username, password = (base64.b64decode(entry["auth"]).decode().split(":", 1) + [""])[:2]
                return Credentials(username, password)
            if entry.get("username"):
                return Credentials(entry["username"], entry.get("password", ""))
            if entry.get("identitytoken"):
                return Credentials("<token>", entry["identitytoken"])
    helper = (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")
    if helper:
        return _from_helper(helper, registry)
    return None


def _from_helper(helper: str, registry: str) -> Credentials | None:
    try:
        proc = subprocess.run([f"docker-credential-{helper}", "get"], input=registry, capture_output=True,
                              text=True, timeout=60, check=False)
    except OSError as exc:
        raise RegistryAuthError(f"docker config names credential helper {helper!r}, but docker-credential-{helper} "
                                "cannot be run: install it or pass username/password.") from exc
    if proc.returncode:
        return None
    answer = json.loads(proc.stdout)
    return Credentials(answer.get("Username", ""), answer.get("Secret", ""))


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


class RegistryClient:
    def __init__(self, registry: str, credentials: Credentials | None = None, *, ca_path: str | None = None,
                 validate_certs: bool = True, insecure: bool = False, retries: int = 5,
                 timeout: float = 300, backoff: float = 0.5) -> None:
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
            self._local.session = session
        return session

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
            answer = self._session.get(f"{realm}?{urlencode(params)}", auth=auth, timeout=60, verify=self.verify)
        except RequestException as exc:
            raise RegistryError(f"Cannot reach the token service {realm} of registry {self.registry}: "
                                f"{_reason(exc)}") from exc
        if answer.status_code in (401, 403):
            raise RegistryAuthError(self._rejected())
        if answer.status_code != 200:
            raise RegistryError(f"Token service {realm} of registry {self.registry} answered {answer.status_code}.")
        body = answer.json()
        token = body.get("token") or body.get("access_token")
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

    def _learn_challenge(self, response: "requests.Response") -> bool:
        """Adopt the auth scheme the registry asks for; False when we cannot answer it differently."""
        header = response.headers.get("WWW-Authenticate", "")
        scheme = header.split(" ", 1)[0].lower()
        with self._lock:
            if scheme == "bearer" and self._challenge is None:
                self._challenge = dict(_CHALLENGE.findall(header))
                return True
            if scheme == "basic" and not self._basic and self.credentials:
                self._basic = True
                return True
        return False

    def request(self, method: str, url: str, *, scopes: tuple[str, ...], expected: Iterable[int],
                headers: dict[str, str] | None = None, data: Any = None, retry: bool = True,
                _renewed: bool = False) -> "requests.Response":
        url = url if url.startswith("http") else urljoin(self.base, url)
        attempts = self.retries if retry else 1
        expected = set(expected)
        for attempt in range(1, attempts + 1):
            try:
                answer = self._session.request(method, url, headers={**(headers or {}), **self._authorization(scopes)},
                                               data=data, timeout=(15, self.timeout), allow_redirects=True,
                                               verify=self.verify)
            except SSLError as exc:
                reason = _reason(exc)
                if reason in PLAIN_HTTP_ANSWERS:
                    raise RegistryError(f"TLS with registry {self.registry} failed: {reason}: it answers in plain "
                                        "HTTP. If it is an HTTP registry, set insecure: true; otherwise check the "
                                        "port.") from exc
                raise RegistryError(f"TLS with registry {self.registry} failed: {reason}. Is its CA trusted? "
                                    "Pass ca_path, or validate_certs: false for a test registry.") from exc
            except RequestException as exc:
                if attempt == attempts:
                    raise RegistryError(f"Cannot reach registry {self.registry} ({method} {urlparse(url).path}): "
                                        f"{_reason(exc)}. Check the host, port and network (tried {attempt} "
                                        "times).") from exc
                self._sleep(attempt, None)
                continue
            if answer.status_code == 401 and not _renewed:
                # First contact tells us the scheme; later, a Bearer token may simply have expired mid-push.
                if self._learn_challenge(answer) or self._forget_tokens():
                    return self.request(method, url, scopes=scopes, expected=expected, headers=headers, data=data,
                                        retry=retry, _renewed=True)
            if answer.status_code in expected:
                return answer
            if answer.status_code in (401, 403):
                raise RegistryAuthError(self._rejected())
            if answer.status_code in RETRY_STATUSES and attempt < attempts:
                self._sleep(attempt, answer.headers.get("Retry-After"))
                continue
            raise RegistryError(f"Registry {self.registry} answered {answer.status_code} to {method} "
                                f"{urlparse(url).path}: {_error_text(answer)}"
                                + (f" (after {attempt} attempts)" if attempt > 1 else ""))
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 2)
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 60.0))
        time.sleep(delay)

    # --- API -------------------------------------------------------------------------------------------------

    def check_access(self, repository: str) -> None:
        """Fails with a clear error unless we may push to `repository`."""
        self.request("GET", "/v2/", scopes=(f"repository:{repository}:pull,push",), expected={200})

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

    def send(self, repository: str, chunks: Iterable[bytes],
             on_progress: Callable[[int], None] | None = None) -> "OpenUpload":
        """Send every chunk to a new upload session and leave it open: nothing is stored until `commit`.

        A dropped connection resumes at the offset the registry says it holds; a failure cancels the session.
        """
        scopes = (f"repository:{repository}:pull,push",)
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scopes=scopes, expected={202})
        upload = OpenUpload(start.headers["Location"], 0, scopes)
        try:
            for chunk in chunks:
                upload.location, upload.size = self._send_chunk(upload.location, chunk, upload.size, scopes)
                if on_progress:
                    on_progress(len(chunk))
        except BaseException:
            self.cancel(upload)
            raise
        return upload

    def commit(self, upload: "OpenUpload", digest: str) -> Blob:
        separator = "&" if "?" in upload.location else "?"
        self.request("PUT", f"{upload.location}{separator}{urlencode({'digest': digest})}", scopes=upload.scopes,
                     expected={201}, headers={"Content-Length": "0"}, data=b"")
        return Blob(digest, upload.size)

    def cancel(self, upload: "OpenUpload") -> None:
        self._cancel(upload.location, upload.scopes)

    def _send_chunk(self, location: str, chunk: bytes, offset: int, scopes: tuple[str, ...]) -> tuple[str, int]:
        sent = 0
        for attempt in range(1, self.retries + 1):
            piece = memoryview(chunk)[sent:] if sent else chunk  # no copy of a chunk being resent
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(piece)),
                       "Content-Range": f"{offset + sent}-{offset + len(chunk) - 1}"}
            try:
                answer = self.request("PATCH", location, scopes=scopes, expected={202}, headers=headers, data=piece,
                                      retry=False)
                return answer.headers.get("Location", location), offset + len(chunk)
            except RegistryAuthError:
                raise
            except RegistryError:
                if attempt == self.retries:
                    raise
                self._sleep(attempt, None)
                held = self._held(location, scopes)  # what the registry kept of the upload so far
                if held is None or held < offset or held > offset + len(chunk):
                    raise
                sent = held - offset
        raise AssertionError("unreachable")

    def _held(self, location: str, scopes: tuple[str, ...]) -> int | None:
        try:
            answer = self.request("GET", location, scopes=scopes, expected={204})
        except RegistryError:
            return None
        match = re.match(r"^(?:bytes=)?0-(\d+)$", answer.headers.get("Range", ""))
        if not match:
            return 0
        # distribution answers "0-0" for an empty upload (and, ambiguously, for a one-byte one): read it as empty.
        end = int(match.group(1))
        return 0 if end == 0 else end + 1

    def manifest(self, repository: str, reference: str) -> tuple[str, str, bytes] | None:
        """(digest, media type, body) of a tag or digest, or None when the registry has none."""
        answer = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                              scopes=(f"repository:{repository}:pull",), expected={200, 404},
                              headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if answer.status_code == 404:
            return None
        body = answer.content
        digest = answer.headers.get("Docker-Content-Digest") or ""
        return digest, answer.headers.get("Content-Type", ""), body

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        answer = self.request("PUT", f"/v2/{repository}/manifests/{reference}",
                              scopes=(f"repository:{repository}:pull,push",), expected={201},
                              headers={"Content-Type": media_type}, data=body)
        return answer.headers.get("Docker-Content-Digest", "")


def client_from_params(registry: str, params: Mapping[str, Any]) -> tuple["RegistryClient", Credentials | None]:
    """The client a module's registry_auth options (plus retries and timeout) describe, and its credentials."""
    credentials = Credentials(params["username"], params["password"]) if params["username"] else \
        credentials_from_docker_config(registry, params["docker_config"])
    client = RegistryClient(registry, credentials, ca_path=params["ca_path"], validate_certs=params["validate_certs"],
                            insecure=params["insecure"], retries=params["retries"], timeout=params["timeout"])
    return client, credentials


def _reason(exc: Exception) -> str:
    text = str(exc)
    tls = re.search(r"certificate verify failed: [^'(]*|wrong version number|record layer failure", text)
    if tls:
        return tls.group(0).strip()
    refused = re.search(r"\[Errno -?\d+\] [^'\"\\)]*", text)
    if refused:
        return refused.group(0).strip()
    for marker in ("Caused by ", "Max retries exceeded with url"):
        if marker in text:
            text = text.split(marker, 1)[-1]
    return text.strip(" ()'\"")[:300]


def _error_text(answer: "requests.Response") -> str:
    try:
        errors = answer.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or answer.text[:200]
    except ValueError:
        return answer.text[:200]
