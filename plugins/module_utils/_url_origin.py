# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Where a URL points, as far as credentials are concerned: its origin (scheme, host, port).

The registry and DataRobot clients send credentials only to the origin they were given, never follow a server
from https to plain http, and show URLs without their query (an upload URL's query may carry a signature).
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in; an unreadable port counts as none."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return scheme, host, None
    return scheme, host, port if port is not None else DEFAULT_PORTS.get(scheme)


def same_origin(first: str, second: str) -> bool:
    return origin(first) == origin(second)


def downgrades(source: str, target: str) -> bool:
    """True when following `target` from `source` leaves https for plain http."""
    return origin(source)[0] == "https" and origin(target)[0] == "http"


def shown(url: str) -> str:
    """The URL without query and fragment, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


def downgrade_guard(refuse: Callable[[str, str], Exception]) -> Callable[..., Any]:
    """A `requests` response hook that stops a redirect from https to http before it is followed.

    `refuse(from_url, to_url)` builds the exception raised instead.
    """
    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        if response.is_redirect:
            target = urljoin(response.url, response.headers["Location"])
            if downgrades(response.url, target):
                if response.raw is not None:
                    response.close()
                raise refuse(response.url, target)
        return response
    return hook


def relative_to(target: str, base: str) -> str:
    """`target` as a path (with its query) when it is on `base`'s origin, else as it is."""
    if not same_origin(target, base):
        return target
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def realm_refusal(realm: str, registry: str) -> str | None:
    """Why the token realm a registry names may not receive its credentials, or None when it may.

    `registry` is the registry's own URL (`https://host:port`, or `http://host:port` when the user marked it
    insecure). An https realm on any host may: the distribution token protocol names a token service of its own
    (registry-1.docker.io sends clients to auth.docker.io, a GitLab registry to the GitLab host), and TLS proves
    who it is. A plain-http realm may only on the host of a registry the user chose to reach over plain HTTP (any
    port: a token service beside the registry): the user accepted clear text to that host, and to no other."""
    scheme, host, _port = origin(realm)
    if host and scheme == "https":
        return None
    if host and scheme == "http":
        own_scheme, own_host, _own_port = origin(registry)
        if own_scheme == "http" and host == own_host:
            return None
        if own_scheme == "http":
            return (f"{shown(realm)}, which is plain HTTP on {host}, not the registry's own host {own_host} (insecure "
                    "covers that host only): they would travel in clear text to a host never chosen for it")
        return f"{shown(realm)}, which is plain HTTP: they would travel in clear text"
    return f"{realm[:100]!r}, which is not an https:// URL"


def downgrade_message(who: str, source: str, target: str) -> str:
    """Why following `source` to `target` (https to http) is refused; `who` is the server that sent us there."""
    return (f"{who} sent the client from {shown(source)} to {shown(target)}, from HTTPS to plain HTTP: refused, as the "
            "request (and on its own host the credentials) would travel in clear text. Check the server's external URL "
            "(behind a TLS load balancer: the forwarded protocol, e.g. X-Forwarded-Proto).")
