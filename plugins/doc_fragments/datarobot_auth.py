# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    """How our modules reach DataRobot's REST API."""

    DOCUMENTATION = r"""
options:
  endpoint:
    description:
      - DataRobot URL, as the web app (C(https://app.datarobot.com)) or the API (C(https://app.datarobot.com/api/v2)).
      - Default from C(DATAROBOT_ENDPOINT).
    type: str
  api_token:
    description:
      - API key (Developer Tools in DataRobot). Never shown.
      - Default from C(DATAROBOT_API_TOKEN), else the content of the file that C(DATAROBOT_API_TOKEN_FILE) names
        (what this collection's AWX credential type sets, so that the token is not in the job's environment).
      - A token from the environment is for the DataRobot C(DATAROBOT_ENDPOINT) names, when it names one. An
        I(endpoint) on another scheme, host or port then fails before anything is sent; pass that endpoint's own
        I(api_token).
    type: str
  validate_certs:
    description: Verify DataRobot's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: PEM file of the CA that signed DataRobot's certificate (self-managed installations). Default from
      C(DATAROBOT_CA_PATH).
    type: path
  timeout:
    description:
      - How long to wait for one answer; 408, 429 and 5xx answers and connection errors are retried with backoff.
      - Whole seconds (C(600)) or a duration string as kubernetes.core's C(helm) module and helm's C(--timeout)
        take it, such as C(90s), C(10m), C(1h30m), C(1.5h) (units C(h), C(m), C(s), C(ms), C(us), C(ns); a fraction
        of a second is rounded up).
    type: raw
    default: 60
  allow_insecure_http:
    description:
      - Accept an C(http://) I(endpoint). The API token then travels in clear text, so this is only for a test
        endpoint on a trusted network; without it an C(http://) endpoint is refused before anything is sent.
      - Either way, links in DataRobot's answers (the C(next) page of a list) are followed only on the
        endpoint's own scheme, host and port, and a redirect from https to http is refused.
    type: bool
    default: false
"""
