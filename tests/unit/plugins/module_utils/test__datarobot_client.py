from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.datarobot_mlops.management_agent.plugins.module_utils._datarobot_client import (
    DataRobotClient,
    DataRobotError,
    api_base,
)

TOKEN = "s3cr3t-token-value"


class Api:
    """A tiny DataRobot stand-in: answers queued per path, records every request."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[int, str, str]]] = {}
        self.seen: list[tuple[str, str, dict, str | None]] = []
        self.url = ""

    def answer(self, path: str, *answers: tuple[int, object]) -> None:
        self.answers[path] = [(status, json.dumps(body) if body is not None else "", "application/json")
                              if not isinstance(body, bytes) else (status, body.decode(), "text/html")
                              for status, body in answers]


def serve() -> Iterator[Api]:
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            state.seen.append((self.command, parts.path, parse_qs(parts.query), self.headers.get("Authorization")))
            queue = state.answers.get(parts.path) or [(404, json.dumps({"message": "no such thing"}),
                                                       "application/json")]
            status, body, kind = queue.pop(0) if len(queue) > 1 else queue[0]
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


api = pytest.fixture(serve)
elsewhere = pytest.fixture(serve)  # another loopback port: another origin


def client(api, **kwargs) -> DataRobotClient:
    """The stand-in speaks plain HTTP, as a test endpoint may with the opt-out."""
    return DataRobotClient(api.url, TOKEN, backoff=0, timeout=5, allow_insecure_http=True, **kwargs)


@pytest.mark.parametrize("endpoint", ["https://app.example.com", "https://app.example.com/",
                                      "https://app.example.com/api/v2", " https://app.example.com/api/v2/ "])
def test_api_base_accepts_the_host_or_the_api_root(endpoint):
    assert api_base(endpoint) == "https://app.example.com/api/v2/"


def test_api_base_wants_a_scheme():
    with pytest.raises(DataRobotError, match="must start with https://"):
        api_base("app.example.com")


@pytest.mark.parametrize("endpoint", ["http://app.example.com", "HTTP://app.example.com/api/v2"])
def test_a_plain_http_endpoint_needs_the_opt_out(endpoint):
    with pytest.raises(DataRobotError, match="is plain HTTP: the API token would travel in clear text.*"
                                             "allow_insecure_http: true"):
        api_base(endpoint)
    assert api_base(endpoint, allow_insecure_http=True).endswith("app.example.com/api/v2/")


def test_a_plain_http_endpoint_is_refused_before_anything_is_sent(api):
    with pytest.raises(DataRobotError, match="plain HTTP"):
        DataRobotClient(api.url, TOKEN).version()
    assert api.seen == []


@pytest.mark.parametrize("where", ["elsewhere", "https"])
def test_a_next_link_to_another_origin_is_not_followed(api, elsewhere, where):
    """Another port on the same host, or the same host and port over https: either would get the token."""
    target = elsewhere.url if where == "elsewhere" else api.url.replace("http://", "https://")
    api.answer("/api/v2/predictionEnvironments/", (200, {"data": [{"id": "1"}],
                                                         "next": f"{target}/api/v2/predictionEnvironments/p2/?x=s3"}))
    elsewhere.answer("/api/v2/predictionEnvironments/p2/", (200, {"data": [], "next": None}))
    with pytest.raises(DataRobotError, match=r"a link to http.*/p2/, another host, port or scheme: not followed") \
            as caught:
        client(api).prediction_environments()
    assert elsewhere.seen == [] and len(api.seen) == 1
    assert "x=s3" not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_relative_next_link_is_followed(api):
    api.answer("/api/v2/predictionEnvironments/", (200, {"data": [{"id": "1"}],
                                                         "next": "/api/v2/predictionEnvironments/p2/"}))
    api.answer("/api/v2/predictionEnvironments/p2/", (200, {"data": [{"id": "2"}], "next": None}))
    assert [e["id"] for e in client(api).prediction_environments()] == ["1", "2"]


def test_pages_follow_next_links_to_the_end(api):
    api.answer("/api/v2/predictionEnvironments/",
               (200, {"data": [{"id": "1"}, {"id": "2"}],
                      "next": f"{api.url}/api/v2/predictionEnvironments/page2/"}))
    api.answer("/api/v2/predictionEnvironments/page2/", (200, {"data": [{"id": "3"}], "next": None}))
    found = client(api).prediction_environments(search="prod")
    assert [e["id"] for e in found] == ["1", "2", "3"]
    first = api.seen[0]
    assert first[2] == {"offset": ["0"], "limit": ["100"], "search": ["prod"]}
    assert first[3] == f"Bearer {TOKEN}"
    assert [seen[1] for seen in api.seen] == ["/api/v2/predictionEnvironments/", "/api/v2/predictionEnvironments/page2/"]


def test_server_errors_are_retried_then_succeed(api):
    api.answer("/api/v2/version/", (503, {"message": "busy"}), (502, None), (200, {"major": 2}))
    assert client(api).version() == {"major": 2}
    assert len(api.seen) == 3


def test_server_errors_beyond_the_retries_name_the_attempts(api):
    api.answer("/api/v2/version/", (503, {"message": "busy"}))
    with pytest.raises(DataRobotError, match="answered 503 to GET version/ after 3 attempts: busy") as caught:
        client(api, retries=3).version()
    assert caught.value.status == 503 and len(api.seen) == 3


@pytest.mark.parametrize("status, hint", [(401, "API token was rejected"), (403, "may not do this")])
def test_refusals_say_what_to_check_and_never_show_the_token(api, status, hint):
    api.answer("/api/v2/version/", (status, {"message": "nope"}))
    with pytest.raises(DataRobotError, match=hint) as caught:
        client(api).version()
    assert TOKEN not in str(caught.value) and len(api.seen) == 1


def test_a_non_json_answer_points_at_the_endpoint_or_a_proxy(api):
    api.answer("/api/v2/version/", (200, b"<html>login</html>"))
    with pytest.raises(DataRobotError, match="not JSON .*text/html.*proxy"):
        client(api).version()


def test_missing_and_gone_environments_are_answers_not_errors(api):
    api.answer("/api/v2/predictionEnvironments/abc/", (404, {"message": "not found"}), (410, None))
    assert client(api).prediction_environment("abc") is None
    assert client(api).delete_prediction_environment("abc") is False


def test_create_sends_the_body_and_expects_201(api):
    api.answer("/api/v2/predictionEnvironments/", (201, {"id": "new"}))
    assert client(api).create_prediction_environment({"name": "n"}) == {"id": "new"}
    assert api.seen[0][0] == "POST"


def test_an_unreachable_endpoint_is_tried_then_named():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = DataRobotClient(f"http://127.0.0.1:{port}", TOKEN, backoff=0, timeout=2, retries=2,
                                  allow_insecure_http=True)
    with pytest.raises(DataRobotError, match="Cannot reach DataRobot .* \\(tried 2 times\\)"):
        unreachable.version()


# --- answers that are not DataRobot's: another service (or a proxy) at the endpoint ---------------------------------

NOT_DATAROBOT = (r"did not answer as DataRobot's API does\. Check endpoint \(the roles' mlops_datarobot_endpoint\): "
                 r"DataRobot's URL, such as https://app\.datarobot\.com/api/v2")


@pytest.mark.parametrize("body, what", [(["nope"], r'a JSON array \(\["nope"\]\)'),
                                        ("nope", r'a JSON string \("nope"\)'), (7, r"a JSON number \(7\)")])
def test_an_error_that_is_no_json_object_says_the_endpoint_is_not_datarobots(api, body, what):
    api.answer("/api/v2/version/", (400, body))
    with pytest.raises(DataRobotError, match=f"answered 400 to GET version/: {what}.*" + NOT_DATAROBOT) as caught:
        client(api).version()
    assert caught.value.status == 400 and TOKEN not in str(caught.value)


def test_an_error_with_an_empty_body_says_so(api):
    api.answer("/api/v2/version/", (400, None))
    with pytest.raises(DataRobotError, match="answered 400 to GET version/: an empty body$"):
        client(api).version()


@pytest.mark.parametrize("body, what", [([], r"a JSON array \(\[\]\)"), (None, "an empty body"),
                                        ({"data": "abc"}, "a JSON object whose data is no list of objects"),
                                        ({"data": [1, 2]}, "a JSON object whose data is no list of objects"),
                                        ({"data": [], "next": 5}, "a JSON object whose next is no link")])
def test_a_list_page_that_is_not_datarobots_is_a_clear_error(api, body, what):
    api.answer("/api/v2/predictionEnvironments/", (200, body))
    with pytest.raises(DataRobotError, match=f"answered 200 to GET predictionEnvironments/: {what}.*" + NOT_DATAROBOT):
        client(api).prediction_environments(search="prod")


@pytest.mark.parametrize("body", [[], None, "id"])
def test_an_environment_answer_that_is_no_object_is_an_error_not_a_missing_environment(api, body):
    """An empty 200 read as "no such environment" would send the user after a wrong id."""
    api.answer("/api/v2/predictionEnvironments/abc/", (200, body))
    with pytest.raises(DataRobotError, match="answered 200 to GET predictionEnvironments/abc/: .*" + NOT_DATAROBOT):
        client(api).prediction_environment("abc")


@pytest.mark.parametrize("body", [[], None])
def test_a_create_or_update_answer_that_is_no_object_is_a_clear_error(api, body):
    api.answer("/api/v2/predictionEnvironments/", (201, body))
    api.answer("/api/v2/predictionEnvironments/abc/", (200, body))
    with pytest.raises(DataRobotError, match="answered 201 to POST predictionEnvironments/: .*" + NOT_DATAROBOT):
        client(api).create_prediction_environment({"name": "n"})
    with pytest.raises(DataRobotError, match="answered 200 to PATCH predictionEnvironments/abc/: .*" + NOT_DATAROBOT):
        client(api).update_prediction_environment("abc", {"name": "n"})


def test_a_delete_answers_with_no_body(api):
    api.answer("/api/v2/predictionEnvironments/abc/", (204, None))
    assert client(api).delete_prediction_environment("abc") is True


@pytest.mark.parametrize("retries", [0, -2])
def test_fewer_than_one_attempt_is_refused_when_the_client_is_built(api, retries):
    with pytest.raises(DataRobotError, match=f"retries is {retries}: give 1 or more"):
        client(api, retries=retries)
    assert api.seen == []


def test_a_refused_token_is_named_whatever_json_comes_with_it(api):
    api.answer("/api/v2/version/", (401, ["denied"]))
    with pytest.raises(DataRobotError, match="answered 401 to GET version/: the API token was rejected"):
        client(api).version()
