# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Downloads that resume, are checked against a checksum, and stay in a cache directory.

The file goes to `<cache_dir>/<name>`; while it arrives it is `<name>.part`, with `<name>.part.json` saying what it
is a part of (the URL without userinfo and query, the expected checksum, the server's ETag / Last-Modified and the
whole length). An interrupted transfer, in this run or an earlier one, continues with an HTTP Range request
(`If-Range` with the validator); when the server ignores the Range, or the file changed, the part is dropped and the
download starts again. The finished part is hashed and renamed into place only when the checksum matches; on a
mismatch nothing is kept. One lock file per name keeps parallel runs (Ansible forks) from writing the same part.

Credentials (URL userinfo, `headers`) are sent only to the URL's own origin: a redirect elsewhere (object storage)
goes without them, and a redirect from https to http is refused. Messages and the cache show URLs without userinfo
and query (`_url_origin.shown`).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._http_retry import (
    RETRY_STATUSES,
    retry_delay,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._url_origin import (
    downgrade_message,
    downgrades,
    same_origin,
    shown,
)

try:
    import requests
    from requests.exceptions import RequestException, SSLError
    from urllib3.exceptions import HTTPError
    HAS_REQUESTS = True
except ImportError:  # the module reports the missing library
    HAS_REQUESTS = False

CONNECT_TIMEOUT = 15.0
CHUNK = 64 * 1024  # what a cut connection may cost: the block being read is lost
MAX_REDIRECTS = 10
# What a server may answer to HEAD alone (a URL signed for GET, a server without HEAD): check mode goes on without a length.
HEAD_REFUSALS = frozenset({403, 405, 501})
# The algorithms ansible.builtin.get_url's `checksum` takes that have a fixed digest size.
ALGORITHMS = tuple(sorted(name for name in hashlib.algorithms_guaranteed if not name.startswith("shake_")))
# What a write into the cache fails with when its file system has no room for the file: no retry makes room.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DownloadError(MlopsError):
    """A download failed or could not be verified; the message names the URL (without secrets) and what to check."""


class _Refused(DownloadError):
    """The server answered an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Interrupted(MlopsError):
    """The transfer stopped midway; what arrived is kept for the next attempt (caught in this file: a retry, then a
    DownloadError)."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: str

    @classmethod
    def parse(cls, text: str) -> "Checksum":
        algorithm, _sep, digest = (text or "").strip().partition(":")
        algorithm = algorithm.lower().replace("-", "_")
        if algorithm not in ALGORITHMS or not digest:
            raise DownloadError(f"checksum {text[:80]!r} is not <algorithm>:<hex digest> with an algorithm of "
                                f"{', '.join(ALGORITHMS)}, e.g. sha256:<64 hex digits> (sha256sum's output).")
        digest = digest.strip().lower()
        size = hashlib.new(algorithm).digest_size * 2
        if len(digest) != size or any(c not in "0123456789abcdef" for c in digest):
            raise DownloadError(f"checksum {text[:80]!r}: a {algorithm} digest is {size} hexadecimal digits.")
        return cls(algorithm, digest)

    def of_file(self, path: str) -> str:
        hasher = hashlib.new(self.algorithm)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                hasher.update(block)
        return hasher.hexdigest()

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.digest}"


@dataclass
class Source:
    """Where to download from and how: `headers` (and the URL's userinfo) go only to the URL's own origin."""
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    validate_certs: bool = True
    ca_path: str | None = None
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0  # seconds before the first retry, doubling

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
        except ValueError as exc:  # e.g. "Invalid IPv6 URL": a [ without its ]
            raise _unreadable(self.url, exc) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DownloadError(f"url {shown(self.url)!r} is not an http:// or https:// URL.")
        if parts.username is not None:
            login = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.headers = {"Authorization": "Basic " + base64.b64encode(login).decode(), **self.headers}
            self.url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass
class Outcome:
    path: str
    size: int
    changed: bool
    downloaded: int = 0  # bytes received in this run
    resumed: bool = False  # began from a part an earlier attempt left
    restarts: int = 0  # parts dropped because the server ignored Range or the file changed
    would_download: int | None = None  # check mode: the length the server announces, if it does

    def as_result(self, source: Source, checksum: Checksum) -> dict[str, Any]:
        return dict(changed=self.changed, path=self.path, size=self.size, bytes_downloaded=self.downloaded,
                    resumed=self.resumed, restarts=self.restarts, would_download=self.would_download,
                    url=shown(source.url), checksum=str(checksum))


def file_name(url: str, name: str | None) -> str:
    """The cache file's name: `name`, or the last segment of the URL's path."""
    chosen = name if name else unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not chosen or chosen in (".", "..") or "/" in chosen or "\0" in chosen or chosen.endswith((".part", ".lock")):
        raise DownloadError(f"cannot name the download after {shown(url)!r} ({chosen!r}): set a file name "
                            "(filename) without '/' that does not end with .part or .lock.")
    return chosen


@contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Downloader:
    def __init__(self, source: Source, checksum: Checksum, cache_dir: str, name: str | None = None,
                 session: Any = None) -> None:
        self.source = source
        self.checksum = checksum
        self.path = os.path.join(cache_dir, file_name(source.url, name))
        self.part = self.path + ".part"
        self.meta = self.part + ".json"
        self.session = session or requests.Session()

    # -- public -----------------------------------------------------------------------------------------------------
    def cached(self) -> bool:
        """The cache holds the file and it matches the checksum."""
        return os.path.isfile(self.path) and self.checksum.of_file(self.path) == self.checksum.digest

    def probe(self) -> Outcome:
        """Check mode: what a download would do, from a HEAD request; nothing is written."""
        if self.cached():
            return Outcome(self.path, os.path.getsize(self.path), changed=False)
        try:
            response = self._request("HEAD", {})
        except _Refused as exc:
            if exc.status not in HEAD_REFUSALS:
                raise
            return Outcome(self.path, 0, changed=True)  # a signed GET URL may refuse HEAD: the length stays unknown
        response.close()
        length = response.headers.get("Content-Length")
        return Outcome(self.path, 0, changed=True,
                       would_download=int(length) if length and length.isdigit() else None)

    def fetch(self) -> Outcome:
        """The file in the cache, verified: downloaded, resumed or found there already."""
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            with _locked(self.path + ".lock"):
                if self.cached():
                    return Outcome(self.path, os.path.getsize(self.path), changed=False)
                outcome = self._download()
                self._commit()
        except OSError as exc:
            raise DownloadError(f"cannot write the download of {shown(self.source.url)} into {directory}: "
                                f"{exc.strerror or exc}. Check mlops_download_cache_dir (cache_dir): it must be a "
                                "writable directory.") from exc
        outcome.size = os.path.getsize(self.path)
        return outcome

    # -- the transfer -----------------------------------------------------------------------------------------------
    def _download(self) -> Outcome:
        outcome = Outcome(self.path, 0, changed=True, resumed=self._partial()[0] > 0)
        failures = 0
        while True:
            try:
                if self._attempt(outcome):
                    return outcome
            except _Interrupted as exc:
                failures += 1
                if failures > self.source.retries:
                    raise DownloadError(f"the download of {shown(self.source.url)} stopped {failures} times "
                                        f"({exc}); the {os.path.getsize(self.part)} bytes received are kept in "
                                        f"{self.part} and the next run continues from there.") from None
                self._pause(failures)
            if outcome.restarts > self.source.retries:
                raise DownloadError(f"{shown(self.source.url)} did not continue the partial download "
                                    f"{outcome.restarts} times in a row (a Range request answered 416, or a changing "
                                    "file); check the URL and the server.")

    def _attempt(self, outcome: Outcome) -> bool:
        """One request: True when the part is complete, False to start again from zero (the part was dropped)."""
        offset, state = self._partial()
        if offset and offset == state.get("length"):
            return True  # a complete part an earlier run could not verify: _commit decides
        headers = {"Accept-Encoding": "identity"}  # the file's own bytes: the checksum and Range are about them
        if offset:
            headers["Range"] = f"bytes={offset}-"
        validator = state.get("etag") or state.get("last_modified")
        if offset and validator:
            headers["If-Range"] = validator
        response = self._request("GET", headers)
        with response:
            if response.status_code not in (206, 416):  # the whole file: Range ignored, or If-Range saw a change
                outcome.restarts += 1 if offset else 0
                offset = 0
                self._remember(response)
            elif response.status_code == 416 or not self._continues(response, offset, state):
                outcome.restarts += 1
                self._drop()
                return False
            self._receive(response, offset, outcome)
        return True

    def _continues(self, response: Any, offset: int, state: dict[str, Any]) -> bool:
        """A 206 answer that continues our part: same start, same whole length, same ETag / Last-Modified."""
        span = response.headers.get("Content-Range", "")
        start, _sep, total = span.removeprefix("bytes ").partition("/")
        same = {"etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")}
        return (start.split("-", 1)[0] == str(offset) and (not state.get("length") or total == str(state["length"]))
                and all(not state.get(key) or state[key] == value for key, value in same.items()))

    def _receive(self, response: Any, offset: int, outcome: Outcome) -> None:
        mode = "r+b" if offset else "wb"
        try:
            with open(self.part, mode) as handle:
                handle.seek(offset)
                handle.truncate()
                for block in _arriving(response):
                    handle.write(block)
                    outcome.downloaded += len(block)
        except OSError as exc:  # the cache's disk, not the network (_arriving): another attempt would fail the same
            if exc.errno not in NO_ROOM:
                raise  # fetch says the directory must be writable
            kept = os.path.getsize(self.part) if os.path.exists(self.part) else 0
            raise DownloadError(f"cannot write the download of {shown(self.source.url)} to {self.part}: "
                                f"{exc.strerror or exc}. Free space there, or set mlops_download_cache_dir "
                                f"(cache_dir) to a directory with room for it; the {kept} bytes received are kept "
                                "and the next run continues from there.") from None
        expected = _int(self._partial()[1].get("length"))
        if expected is not None and os.path.getsize(self.part) < expected:
            raise _Interrupted("the server closed the connection early")

    def _commit(self) -> None:
        """Rename the part into place when it matches the checksum; on a mismatch keep nothing."""
        actual = self.checksum.of_file(self.part)
        if actual != self.checksum.digest:
            size = os.path.getsize(self.part)
            self._drop()
            raise DownloadError(f"the download of {shown(self.source.url)} ({size} bytes) has {self.checksum.algorithm} "
                                f"{actual}, not the expected {self.checksum.digest}: nothing was kept. Check the "
                                "checksum (the digest published with the file) and that the URL names that file.")
        os.replace(self.part, self.path)
        _remove(self.meta)

    # -- the part and its state ---------------------------------------------------------------------------------------
    def _partial(self) -> tuple[int, dict[str, Any]]:
        """Bytes held in the part and its state, when the part belongs to this URL and checksum; else (0, {})."""
        try:
            with open(self.meta, encoding="utf-8") as handle:
                state = json.load(handle)
            size = os.path.getsize(self.part)
        except (OSError, ValueError):
            return 0, {}
        if not isinstance(state, dict) or state.get("url") != shown(self.source.url) \
                or state.get("checksum") != str(self.checksum):
            return 0, {}
        return size, state

    def _remember(self, response: Any) -> None:
        state = dict(url=shown(self.source.url), checksum=str(self.checksum), etag=response.headers.get("ETag"),
                     last_modified=response.headers.get("Last-Modified"),
                     length=_int(response.headers.get("Content-Length")))
        with open(self.meta, "w", encoding="utf-8") as handle:
            json.dump(state, handle)

    def _drop(self) -> None:
        _remove(self.part)
        _remove(self.meta)

    # -- HTTP -------------------------------------------------------------------------------------------------------
    def _request(self, method: str, headers: dict[str, str]) -> Any:
        """The answer to `method` on the URL, following redirects; credentials only to the URL's own origin."""
        url = self.source.url
        for _hop in range(MAX_REDIRECTS + 1):
            sent = dict(headers, **self.source.headers) if same_origin(url, self.source.url) else dict(headers)
            response = self._send(method, url, sent)
            if not response.is_redirect:
                return self._checked(response, url)
            target = urljoin(url, response.headers["Location"])
            response.close()
            if downgrades(url, target):
                raise DownloadError(downgrade_message(f"The server of {shown(self.source.url)}", url, target))
            url = target
        raise DownloadError(f"{shown(self.source.url)} redirected more than {MAX_REDIRECTS} times.")

    def _send(self, method: str, url: str, headers: dict[str, str]) -> Any:
        verify: bool | str = (self.source.ca_path or True) if self.source.validate_certs else False
        for attempt in range(self.source.retries + 1):
            try:
                response = self.session.request(method, url, headers=headers, stream=True, allow_redirects=False,
                                                verify=verify, timeout=(CONNECT_TIMEOUT, self.source.timeout))
            except SSLError as exc:
                raise DownloadError(f"TLS with {shown(url)} failed: {_reason(exc, url)}. Pass ca_path (the CA that "
                                    "signed its certificate), or validate_certs: false.") from None
            except RequestException as exc:
                if attempt < self.source.retries:
                    self._pause(attempt + 1)
                    continue
                raise DownloadError(f"cannot reach {shown(url)}: {_reason(exc, url)}. Check the URL, the network and "
                                    "any proxy (https_proxy / no_proxy).") from None
            if response.status_code in RETRY_STATUSES and attempt < self.source.retries:
                response.close()
                self._pause(attempt + 1, response.headers.get("Retry-After"))
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, attempt: int, retry_after: str | None = None) -> None:
        time.sleep(retry_delay(self.source.backoff, attempt, retry_after, random.random()))

    def _checked(self, response: Any, url: str) -> Any:
        status = response.status_code
        if status < 400 or status == 416:
            return response
        response.close()
        hint = {404: "check the URL: the file is not there",
                401: "the server wants a login: put it in the URL (user:password@) or headers",
                403: "the server refuses access: check the login or the signed URL's expiry"}.get(
            status, "try again later, or check the server")
        raise _Refused(f"{shown(url)} answered {status} {response.reason or ''}".rstrip() + f": {hint}.", status)


def _blocks(response: Any) -> Iterator[bytes]:
    """The body as it arrives: urllib3 2's read1 hands over what came before a cut; iter_content drops that block."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(CHUNK)
        return
    while True:
        block = read1(CHUNK)
        if not block:
            return
        yield block


def _arriving(response: Any) -> Iterator[bytes]:
    """_blocks, a cut connection (or a stalled one) raising _Interrupted: what arrived before it is kept."""
    try:
        yield from _blocks(response)
    except (RequestException, OSError, HTTPError) as exc:
        raise _Interrupted(type(exc).__name__) from None


def _unreadable(url: str, exc: ValueError) -> DownloadError:
    """The error for a URL urlsplit refuses: shown as far as it reads, without userinfo, query and fragment (split
    where urlsplit splits them), as everywhere."""
    scheme, sep, rest = url.partition("//")
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    path = re.split(r"[?#]", rest[len(netloc):], maxsplit=1)[0]
    userinfo, _at, host = netloc.rpartition("@")
    reason = str(exc).replace(userinfo, "...") if userinfo else str(exc)
    return DownloadError(f"url {scheme + sep + host + path!r} cannot be read ({reason}): check it; an IPv6 address "
                         "is written in brackets, as in https://[fe80::1]:8443/file.tgz.")


def _reason(exc: Exception, url: str) -> str:
    """A library's words about a failure, without the URL's query (it may hold a token) and at most 300 characters."""
    text = str(exc)
    query = urlsplit(url).query
    if query:
        text = text.replace(query, "...")
    return text if len(text) < 300 else text[:300] + "..."


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
