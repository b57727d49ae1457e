#!/usr/bin/python
# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: download
short_description: Download a file into a cache directory, resumably, and verify its checksum
version_added: 0.1.0
description:
  - Downloads I(url) into I(cache_dir) as I(filename) (default the last segment of the URL's path), verifies it against
    I(checksum) and returns its path. The agent tarball, the agent image archives and the PPS image archive of this
    collection's roles come through it when they are given by URL.
  - A file already in the cache that matches the checksum is used as it is (C(changed=false)); no request is made.
  - While it arrives the file is C(<filename>.part) in I(cache_dir). An interrupted transfer continues where it
    stopped, in the same run (up to I(retries) times) or in a later one, with an HTTP C(Range) request that names the
    server's C(ETag) or C(Last-Modified) (C(If-Range)); the server's whole length is checked too. When the server
    ignores the range or the file changed, the part is discarded and the download starts again from the beginning.
  - The finished file is hashed and moved into place only when it matches I(checksum). On a mismatch nothing is
    kept in the cache, and the task fails with both digests.
  - A login in the URL (C(https://user:password@host/...)) and I(headers) (e.g. an C(Authorization) header) are sent
    only to the URL's own origin (scheme, host, port); a redirect to another origin (object storage) is followed
    without them, and a redirect from https to http is refused. The URL's userinfo and query (a signed URL's token)
    are hidden in the task's output and never written to the cache.
  - Parallel runs (forks) downloading the same file into the same cache take turns (a lock file C(<filename>.lock)).
author:
  - DataRobot MLOps collection maintainers (@datarobot-community)
options:
  url:
    description:
      - C(http://) or C(https://) URL of the file. It may hold a login (C(user:password@), or a token alone as
        C(TOKEN@)) or a signed query; both are hidden in the output. When the arguments fail validation, the whole URL
        is hidden.
    type: str
    required: true
  checksum:
    description:
      - C(<algorithm>:<hex digest>), e.g. C(sha256:) and the 64 hex digits C(sha256sum) prints. The algorithms are
        those of M(ansible.builtin.get_url) with a fixed digest size (C(md5), C(sha1), C(sha224), C(sha256),
        C(sha384), C(sha512), C(sha3_224) ... C(sha3_512), C(blake2b), C(blake2s)). A URL of a checksum file is not
        accepted.
    type: str
    required: true
  cache_dir:
    description:
      - Directory the file (and, while it arrives, its C(.part)) goes into; made when missing.
      - In an AWX execution environment C(~/.cache) does not outlive the job; mount a volume and point this at it to
        keep downloads between jobs (see the collection's C(awx/README.md)).
    type: path
    default: ~/.cache/datarobot_mlops/downloads
  filename:
    description: Name of the file in I(cache_dir). Default the last segment of the URL's path.
    type: str
  headers:
    description: HTTP headers to send with the request (to the URL's own origin only), e.g. C(Authorization).
    type: dict
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: PEM file of the CA(s) to trust for the server's certificate, instead of the system's.
    type: path
  retries:
    description:
      - Attempts after a connection error, a transfer cut midway (continued from where it stopped) or a 408, 429 or 5xx
        answer, with exponential backoff.
    type: int
    default: 5
  timeout:
    description:
      - How long to wait for the server's next bytes.
      - Whole seconds (C(600)) or a duration string such as C(90s), C(10m), C(1h30m) (units C(h), C(m), C(s), C(ms),
        C(us), C(ns)).
    type: raw
    default: 60
attributes:
  check_mode:
    support: full
    description:
      - Downloads nothing. A cached file that matches is reported with C(changed=false); otherwise C(changed=true) and
        I(would_download) the length a C(HEAD) request announces (null when the server does not say).
  diff_mode:
    support: none
    description: A downloaded file has no textual diff; I(path), I(size) and I(bytes_downloaded) say what happened.
  idempotent:
    support: full
    description: A second run finds the verified file in the cache and reports C(changed=false) without a request.
requirements:
  - requests
"""

EXAMPLES = r"""
- name: The PPS image archive, from a signed URL, cached between runs
  datarobot_mlops.management_agent.download:
    url: "{{ pps_archive_url }}"
    checksum: sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270
    cache_dir: /runner/cache/datarobot_mlops
  register: pps_archive

- name: The agent tarball from a server that wants a token
  datarobot_mlops.management_agent.download:
    url: https://files.example.com/datarobot-mlops-agent-9.2.0.tar.gz
    checksum: "{{ agent_tarball_checksum }}"
    headers:
      Authorization: "Bearer {{ files_token }}"
"""

RETURN = r"""
path:
  description: The verified file in the cache (where it would be, in check mode).
  returned: always
  type: str
  sample: /home/runner/.cache/datarobot_mlops/downloads/datarobot-portable-prediction-api-9.2.0.tar.gz
size:
  description: Size of the file in bytes (0 in check mode when it is not cached).
  returned: always
  type: int
bytes_downloaded:
  description: Bytes received in this run (less than I(size) when an earlier part was continued).
  returned: always
  type: int
resumed:
  description: Whether the download continued a part an earlier run left.
  returned: always
  type: bool
restarts:
  description: Parts discarded because the server ignored the range or the file had changed.
  returned: always
  type: int
would_download:
  description: In check mode, the bytes a download would fetch, when the server announces its length; else null.
  returned: always
  type: int
url:
  description: The URL without its login, query and fragment.
  returned: always
  type: str
checksum:
  description: The checksum the file matches (normalised, C(<algorithm>:<hex>)).
  returned: always
  type: str
"""

from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._download import (
    HAS_REQUESTS,
    Checksum,
    Downloader,
    Source,
)
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._duration import to_seconds
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import exit_with

ARGUMENT_SPEC = dict(
    url=dict(type="str", required=True, no_log=True),
    checksum=dict(type="str", required=True),
    cache_dir=dict(type="path", default="~/.cache/datarobot_mlops/downloads"),
    filename=dict(type="str"),
    headers=dict(type="dict", no_log=True),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    retries=dict(type="int", default=5),
    timeout=dict(type="raw", default=60),
)


def hide_url_secrets(module: AnsibleModule) -> None:
    """The URL's userinfo (a login, or a token given as the user name: https://TOKEN@host/...), its password and its
    query (a signed URL's token) are masked in everything the module returns.

    `url` is no_log, so a failed validation (which prints the invocation before main() could get here) shows none
    of it. Once the arguments are valid only its secrets stay hidden, so the URL itself can be shown (the `url`
    result, messages): hidden whole, a URL without secrets would read `********` everywhere. A URL urlsplit cannot
    read stays hidden whole; Source says what is wrong with it.
    """
    url = module.params["url"]
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    module.no_log_values.discard(url)
    for secret in (parts.netloc.rpartition("@")[0], parts.password, parts.query):
        if secret:
            module.no_log_values.add(secret)


def download(module: AnsibleModule) -> dict:
    params = module.params
    source = Source(params["url"], headers={str(k): str(v) for k, v in (params["headers"] or {}).items()},
                    validate_certs=params["validate_certs"], ca_path=params["ca_path"],
                    timeout=to_seconds(params["timeout"], "timeout"), retries=max(params["retries"], 0))
    checksum = Checksum.parse(params["checksum"])
    downloader = Downloader(source, checksum, params["cache_dir"], params["filename"])
    outcome = downloader.probe() if module.check_mode else downloader.fetch()
    return outcome.as_result(source, checksum)


def main() -> None:
    module = AnsibleModule(ARGUMENT_SPEC, supports_check_mode=True)
    hide_url_secrets(module)
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"))
    exit_with(module, lambda: download(module))


if __name__ == "__main__":
    main()
