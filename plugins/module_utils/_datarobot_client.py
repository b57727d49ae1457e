# Copyright: DataRobot MLOps collection maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small client for the parts of DataRobot's public REST API the collection uses.

The official SDK pulls pandas and numpy, too heavy for a module; this speaks
the same contract (tests prove it against the SDK). Errors become
DataRobotError with a message naming the endpoint and what to check, never the
token.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urljoin

from ansible.module_utils.basic import env_fallback

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._http_retry import RETRY_STATUSES
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._errors import MlopsError
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._secret_env import secret_fallback
from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._url_origin import (
    downgrade_guard,
    downgrade_message,
    same_origin,
    shown,
)

# The AWX DataRobot credential injects its token with its endpoint; a survey answer or the inventory may name another
# endpoint, where that token must not follow (the registry login is scoped to REGISTRY_HOST the same way).
ENDPOINT_ENV, TOKEN_ENV = "DATAROBOT_ENDPOINT", "DATAROBOT_API_TOKEN"


# The options of the datarobot_auth doc fragment, as an argument spec.
DATAROBOT_AUTH_ARGUMENT_SPEC: dict[str, dict[str, Any]] = dict(
    endpoint=dict(type="str", fallback=(env_fallback, [ENDPOINT_ENV])),
    api_token=dict(type="str", no_log=True, fallback=(secret_fallback, [TOKEN_ENV])),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path", fallback=(env_fallback, ["DATAROBOT_CA_PATH"])),
    timeout=dict(type="raw", default=60),
    allow_insecure_http=dict(type="bool", default=False),
)

try:
    import requests
    from requests.exceptions import ConnectTimeout, RequestException, SSLError
    from urllib3.exceptions import NewConnectionError
    HAS_REQUESTS = True
except ImportError:
    HAS_REQUESTS = False


class DataRobotError(MlopsError):
    """The API failed or refused; the message names the endpoint and what to check."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _with_scheme(endpoint: str) -> str:
    endpoint = endpoint.strip()
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def env_token_problem(endpoint: str, env_endpoint: str, survey_endpoint: str = "") -> str:
    """Why the environment's API token (which belongs to `env_endpoint`) must not go to `endpoint`; empty when it
    may. Without an endpoint in the environment the token is bound to none (a token exported by hand, an AWX
    credential made without one), except to `survey_endpoint`, an endpoint chosen when an AWX job is launched."""
    if not endpoint.strip():
        return ""
    if not env_endpoint.strip():
        if not survey_endpoint.strip():
            return ""
        return (f"The AWX survey names the DataRobot endpoint {shown(_with_scheme(survey_endpoint))}, and the DataRobot "
                "API token comes from the environment (the AWX DataRobot credential's), which names no endpoint "
                f"({ENDPOINT_ENV} is empty): the token is not sent to an endpoint chosen at launch, and nothing was "
                "changed. Give the credential the endpoint its token is for (a survey answer must then be on that "
                "host), or name the endpoint in the inventory (mlops_datarobot_endpoint) and leave the survey's "
                "answer empty.")
    wanted, own = _with_scheme(endpoint), _with_scheme(env_endpoint)
    if same_origin(wanted, own):
        return ""
    return (f"The DataRobot API token comes from the environment ({TOKEN_ENV}, or the file {TOKEN_ENV}_FILE names, "
            f"as the AWX DataRobot credential gives it), which is for the DataRobot at {shown(own)} ({ENDPOINT_ENV}), "
            f"but the endpoint to use is {shown(wanted)}, another host, port or scheme: the token is not sent there, "
            "and nothing was changed. To use that endpoint, give its own token (api_token; the roles' "
            "mlops_datarobot_api_token, from Vault) or a DataRobot credential whose endpoint it is; to use "
            f"{shown(own)}, leave the endpoint empty (endpoint; the roles' mlops_datarobot_endpoint; the AWX survey's "
            "DataRobot endpoint).")


# What follows an answer that did not come from DataRobot's API: another service, or a proxy's page, at the endpoint.
NOT_DATAROBOT = ("the endpoint did not answer as DataRobot's API does. Check endpoint (the roles' "
                 "mlops_datarobot_endpoint): DataRobot's URL, such as https://app.datarobot.com/api/v2, with nothing "
                 "else (another service, a proxy's login page) answering in its place.")
_JSON_KINDS = {dict: "a JSON object", list: "a JSON array", str: "a JSON string", int: "a JSON number",
               float: "a JSON number", bool: "a JSON boolean", type(None): "JSON null"}

# Says what is wrong with a decoded answer (`None` when nothing is), given it and its text as it came.
AnswerCheck = Callable[[Any, str], Optional[str]]


def _quoted(kind: str, text: str) -> str:
    text = text.strip()
    return f"{kind} ({text[:100]}{'...' if len(text) > 100 else ''})"


def an_object(value: Any, text: str) -> str | None:
    """What nearly every endpoint answers: one JSON object."""
    if isinstance(value, dict):
        return None
    kind = _quoted(_JSON_KINDS.get(type(value), "JSON"), text) if text.strip() else "an empty body"
    return f"{kind}, where DataRobot's API answers a JSON object"


def a_page(value: Any, text: str) -> str | None:
    """A page of a list: an object with the items (objects) in `data` and the next page's link, if any, in `next`."""
    problem = an_object(value, text)
    if problem:
        return problem
    data = value.get("data", [])
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        return "a JSON object whose data is no list of objects, where DataRobot's API answers a page of a list"
    if value.get("next") and not isinstance(value["next"], str):
        return "a JSON object whose next is no link, where DataRobot's API answers a page of a list"
    return None


def _never_sent(exc: "RequestException") -> bool:
    """The connection was never made (refused, unreachable, connect timeout): the server saw nothing."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, ConnectTimeout) or isinstance(reason, NewConnectionError)


def api_base(endpoint: str, allow_insecure_http: bool = False) -> str:
    """`https://app.datarobot.com` and `https://app.datarobot.com/api/v2[/]` both mean `.../api/v2/`.

    Plain http only with `allow_insecure_http`: the API token would travel in clear text.
    """
    base = endpoint.strip().rstrip("/")
    if not base.lower().startswith(("http://", "https://")):
        raise DataRobotError(f"DataRobot endpoint {endpoint!r} must start with https://, e.g. "
                             "https://app.datarobot.com")
    if base.lower().startswith("http://") and not allow_insecure_http:
        raise DataRobotError(f"DataRobot endpoint {shown(base)} is plain HTTP: the API token would travel in clear "
                             "text, so nothing was sent. Use its https:// URL; only for a test endpoint, set "
                             "allow_insecure_http: true (the roles' mlops_datarobot_allow_insecure_http).")
    if not base.endswith("/api/v2"):
        base += "/api/v2"
    return base + "/"


class DataRobotClient:
    def __init__(self, endpoint: str, token: str, *, verify: bool | str = True, timeout: float = 60,
                 retries: int = 4, backoff: float = 0.5, allow_insecure_http: bool = False) -> None:
        """`retries` counts the attempts of each request; fewer than one would send nothing, so it is refused here."""
        if retries < 1:
            raise DataRobotError(f"retries is {retries}: give 1 or more (the attempts for each DataRobot request; 1 "
                                 "sends each request once).")
        self.base = api_base(endpoint, allow_insecure_http)
        self.token, self.verify, self.timeout = token, verify, timeout
        self.retries, self.backoff = retries, backoff
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json",
                                     "User-Agent": "datarobot_mlops.management_agent"})
        self.session.hooks["response"].append(downgrade_guard(
            lambda source, target: DataRobotError(downgrade_message(f"DataRobot at {self.base}", source, target))))

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                expected: tuple[int, ...] = (200,), idempotent: bool = True,
                check: AnswerCheck | None = an_object) -> Any:
        """`idempotent=False` (a create): never sent twice once it may have reached the server.

        `check` says what is wrong with an expected answer that DataRobot's API would not give (another service at
        the endpoint), a DataRobotError then; `None` takes any answer, an empty body as None (a DELETE's 204).

        `path` may be a link from an answer (`next`): followed only on the endpoint's own origin, as the session
        carries the API token.
        """
        url = urljoin(self.base, path)
        if not same_origin(url, self.base):
            raise DataRobotError(f"DataRobot at {self.base} answered with a link to {shown(url)}, another host, port or "
                                 "scheme: not followed, as the request would carry the API token there. Check the "
                                 "endpoint (a proxy rewriting links?).")
        for attempt in range(1, self.retries + 1):
            try:
                answer = self.session.request(method, url, json=body, params=params, timeout=self.timeout,
                                              verify=self.verify)
            except SSLError as exc:
                raise DataRobotError(f"TLS with DataRobot at {self.base} failed: is its CA trusted? Pass ca_path, "
                                     "or validate_certs: false for a test instance.") from exc
            except RequestException as exc:
                if not idempotent and not _never_sent(exc):
                    raise DataRobotError(f"DataRobot at {self.base} did not answer {method} {path} "
                                         f"({type(exc).__name__}; timeout {self.timeout}s) after receiving it, so it "
                                         "may have carried it out. Not sent again, which could make a duplicate: run "
                                         "again, the result is then found by name.") from exc
                if attempt == self.retries:
                    raise DataRobotError(f"Cannot reach DataRobot at {self.base} (tried {attempt} times): "
                                         f"{type(exc).__name__}. Check the endpoint and the network.") from exc
                self._sleep(attempt)
                continue
            if answer.status_code in expected:
                return self._expected(method, path, answer, check)
            if answer.status_code in RETRY_STATUSES and attempt < self.retries:
                self._sleep(attempt)
                continue
            raise self._error(method, path, answer, attempt)
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 2))

    def _expected(self, method: str, path: str, answer: "requests.Response", check: AnswerCheck | None) -> Any:
        """The decoded answer, once `check` finds nothing wrong with it."""
        value = self._json(answer) if answer.content else None
        problem = check(value, answer.text) if check else None
        if problem:
            raise self._not_datarobot(method, path, answer.status_code, problem)
        return value

    def _not_datarobot(self, method: str, path: str, status: int, problem: str) -> DataRobotError:
        problem = problem.replace(self.token, "********") if self.token else problem
        return DataRobotError(f"DataRobot at {self.base} answered {status} to {method} {path}: {problem}: "
                              f"{NOT_DATAROBOT}", status)

    def _json(self, answer: "requests.Response") -> Any:
        try:
            return answer.json()
        except ValueError as exc:
            raise DataRobotError(f"DataRobot at {self.base} answered {answer.status_code} with something that is "
                                 f"not JSON ({answer.headers.get('Content-Type', 'no content type')}): is the "
                                 "endpoint right, or is a proxy in the way?", answer.status_code) from exc

    def _error(self, method: str, path: str, answer: "requests.Response", attempt: int) -> DataRobotError:
        """DataRobot's refusal, with its message; JSON that is no error object is not DataRobot's, and said so."""
        status = answer.status_code
        hints = {401: "the API token was rejected: check api_token (DATAROBOT_API_TOKEN) and that it belongs "
                      "to this endpoint",
                 403: "the token's user may not do this: check its permissions"}
        if not answer.content:
            detail = "an empty body"
        else:
            try:
                body = answer.json()
            except ValueError:
                detail = f"a non-JSON answer ({answer.headers.get('Content-Type', 'no content type')})"
            else:
                if not isinstance(body, dict) and status not in hints:
                    return self._not_datarobot(method, path, status, an_object(body, answer.text) or "")
                detail = (body.get("message") if isinstance(body, dict) else None) or answer.text[:200]
        hint = hints.get(status, detail)
        tries = f" after {attempt} attempts" if attempt > 1 else ""
        return DataRobotError(f"DataRobot at {self.base} answered {status} to {method} {path}{tries}: {hint}", status)

    # --- endpoints -------------------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return self.request("GET", "version/")

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, following `next` links."""
        page = self.request("GET", path, params={"offset": 0, "limit": 100, **(params or {})}, check=a_page)
        while True:
            yield from page.get("data", [])
            if not page.get("next"):
                return
            page = self.request("GET", page["next"], check=a_page)

    def prediction_environments(self, search: str | None = None) -> list[dict[str, Any]]:
        return list(self.pages("predictionEnvironments/", {"search": search} if search else None))

    def prediction_environment(self, environment_id: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"predictionEnvironments/{environment_id}/")
        except DataRobotError as exc:
            if exc.status == 404:
                return None
            raise

    def create_prediction_environment(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "predictionEnvironments/", body=body, expected=(201,), idempotent=False)

    def update_prediction_environment(self, environment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", f"predictionEnvironments/{environment_id}/", body=body)

    def delete_prediction_environment(self, environment_id: str) -> bool:
        """True when deleted now; False when it was already gone (404/410)."""
        try:
            self.request("DELETE", f"predictionEnvironments/{environment_id}/", expected=(204,), check=None)
            return True
        except DataRobotError as exc:
            if exc.status in (404, 410):
                return False
            raise
