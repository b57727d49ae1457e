# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which HTTP answers mean "try again later", and how long to wait, for every client in the collection.

One set, so that the registry, DataRobot and Kubernetes clients agree on what is transient.
"""

from __future__ import annotations

# 408: the server gave up waiting for our request; 429: too many requests; 500/502/503/504: a server or the proxy in
# front of it is failing or restarting. None of them means the request was carried out.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def should_retry(status: int, attempt: int, attempts: int) -> bool:
    """A transient answer is worth another try while attempts remain."""
    return status in RETRY_STATUSES and attempt < attempts


def retry_delay(backoff: float, attempt: int, retry_after: str | None, jitter: float) -> float:
    """Exponential backoff with up to 50% jitter (`jitter` in [0, 1)); a Retry-After in seconds, up to 60, wins."""
    delay = backoff * 2 ** (attempt - 1) * (1 + jitter / 2)
    if retry_after and retry_after.isdigit():
        delay = max(delay, min(float(retry_after), 60.0))
    return delay
