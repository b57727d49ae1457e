# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Reading a registry's answers: bodies read up to a bound, the token in a token answer, what to quote of an error.

Every body is read with a bound, so that a server sending an endless (or enormous) answer is refused instead of
filling the module's memory.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Iterator

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError

if TYPE_CHECKING:
    import requests

# The most we read of an answer: a manifest as large as Docker Distribution accepts (4 MiB), anything else (token JSON,
# error bodies, upload answers) 1 MiB. A server that sends more (an endless body) is refused, not read into memory.
MANIFEST_LIMIT = 4 << 20
ANSWER_LIMIT = 1 << 20
READ_PIECE = 64 << 10


class RegistryError(MlopsError):
    """The registry refused or failed; the message says which registry and what to check."""


class RegistryAuthError(RegistryError):
    """The registry (or its token service) refused the credentials."""


def read_bounded(answer: "requests.Response", limit: int) -> bool:
    """Read the body of a streamed answer, at most `limit` bytes (decoded), so that `.content`, `.text` and `.json()`
    have it; False (and the connection closed) when the server sends more."""
    body = bytearray()
    for piece in answer.iter_content(READ_PIECE):
        body += piece
        if len(body) > limit:
            answer.close()
            return False
    answer._content = bytes(body)  # pylint: disable=protected-access  # what requests reads .content from
    return True


def token_of(answer: "requests.Response") -> str:
    """The token in a token service's JSON answer, or "" when there is none (or no JSON object at all)."""
    try:
        body = answer.json()
    except ValueError:
        return ""
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else ""
    return token if isinstance(token, str) else ""


def first_bytes(pieces: Iterable[bytes], count: int) -> Iterator[bytes]:
    """The first `count` bytes of `pieces`, in the same pieces (the last one cut); stops reading there."""
    iterator = iter(pieces)
    try:
        for piece in iterator:
            yield piece[:count] if len(piece) > count else piece
            count -= len(piece)
            if count <= 0:
                return
        if count > 0:
            raise RegistryError(f"the blob read again is {count} bytes shorter than what was sent before.")
    finally:
        close = getattr(iterator, "close", None)
        if close:
            close()


def reason(exc: Exception) -> str:
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


def _json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's own words (an array, not a list)."""
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "a JSON boolean"
    kinds = {dict: "a JSON object", list: "a JSON array", str: "a JSON string", int: "a JSON number",
             float: "a JSON number"}
    return kinds.get(type(value), "JSON")


def error_text(answer: "requests.Response") -> str:
    """What to quote of an error answer: the distribution API's error codes and messages, else the body (cut).

    JSON that is no error object (an array, a string, "errors" that are no list of objects) comes from something
    other than a registry's distribution API: a mistaken host, port or path. Said so, instead of failing to read it.
    """
    text = answer.text[:200]
    try:
        body = answer.json()
    except ValueError:
        return text
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(body, dict) and not errors:
        return text
    if isinstance(errors, list) and all(isinstance(error, dict) for error in errors):
        return "; ".join(f"{error.get('code')}: {error.get('message')}" for error in errors)
    what = (f'{_json_kind(body)} whose "errors" is no list of codes and messages' if isinstance(body, dict)
            else _json_kind(body))
    return (f"{what} ({text}), where the distribution API answers an error object "
            '({"errors": [{"code": ..., "message": ...}]}): it did not come from a registry; check that the '
            "registry's host, port and path lead to the registry (not to another service or a proxy's page).")
