# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which HTTP answers mean "try again later", for every client in the collection.

One set, so that the registry, DataRobot and Kubernetes clients agree on what is transient.
"""

from __future__ import annotations

# 408: the server gave up waiting for our request; 429: too many requests; 500/502/503/504: a server or the proxy in
# front of it is failing or restarting. None of them means the request was carried out.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
