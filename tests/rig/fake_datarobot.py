"""A local stand-in for DataRobot's public REST API: version, account info and prediction environments.

It follows the contract DataRobot's own clients rely on: every path ends in
`/`; `Authorization: Token <key>` or `Bearer <key>`; JSON bodies in camelCase
with `Content-Type: application/json` exactly; paginated lists with absolute
`next`/`previous` links and `offset`/`limit`/`search`; 24-hex ids; 401/403/404/
410/422 answers with `{"message": ...}`. It rejects what the real API rejects.
The tests prove it against the official `datarobot` Python client.

Run: python fake_datarobot.py --port N --token T [--state FILE] [--cert C --key K]
Fault injection for tests: POST /_fake/faults {"status": 503, "count": 2} | {"delay": 3, "count": 1} |
{"html": true, "count": 1}; POST /_fake/in-use/<id> marks an environment as used by a deployment.
"""

from __future__ import annotations

import argparse
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

API = "/api/v2/"
VERSION = {"major": 2, "minor": 49, "versionString": "2.49.0"}
PLATFORMS = ("aws", "gcp", "azure", "onPremise", "datarobot", "datarobotServerless", "openShift", "other",
             "snowflake", "sapAiCore")
FORMATS = ("datarobot", "datarobotScoringCode", "customModel", "externalModel")
CREATE_FIELDS = {"name", "platform", "description", "plugin", "supportedModelFormats", "isManagedByManagementAgent",
                 "datastoreId", "credentialId"}
PATCH_FIELDS = CREATE_FIELDS - {"platform"}  # assumption, see docs/testing.md: platform is fixed once created
MAX_LIMIT = 100


class State:
    def __init__(self, path: Path | None, token: str) -> None:
        self.path, self.token = path, token
        self.lock = threading.Lock()
        self.environments: dict[str, dict[str, Any]] = {}
        self.in_use: set[str] = set()
        self.faults: list[dict[str, Any]] = []
        self.user = {"uid": secrets.token_hex(12), "username": "mlops-agent@example.com",
                     "email": "mlops-agent@example.com", "firstName": "MLOps", "lastName": "Agent",
                     "company": "Example", "permissions": []}
        if path and path.exists():
            saved = json.loads(path.read_text())
            self.environments, self.user = saved["environments"], saved.get("user", self.user)

    def save(self) -> None:
        if self.path:
            self.path.write_text(json.dumps({"environments": self.environments, "user": self.user}))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _validate(body: Any, fields: set[str], creating: bool) -> str | None:
    """The 422 message the real API gives for this body, or None."""
    if not isinstance(body, dict):
        return "Malformed request: body must be a JSON object"
    unknown = sorted(set(body) - fields)
    if unknown:
        return f"{unknown[0]} is not allowed key"
    if creating:
        for key in ("name", "platform"):
            if key not in body:
                return f"{key} is required"
    if "name" in body and (not isinstance(body["name"], str) or not body["name"].strip() or len(body["name"]) > 512):
        return "name: value should be a non-empty string of at most 512 characters"
    if "platform" in body and body["platform"] not in PLATFORMS:
        return f"platform: value must be one of {', '.join(PLATFORMS)}"
    if "description" in body and body["description"] is not None and not isinstance(body["description"], str):
        return "description: value is not a string"
    formats = body.get("supportedModelFormats")
    if formats is not None:
        if not isinstance(formats, list) or not formats:
            return "supportedModelFormats: value should be a non-empty list"
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            return f"supportedModelFormats: {bad[0]} is not one of {', '.join(FORMATS)}"
    if "isManagedByManagementAgent" in body and not isinstance(body["isManagedByManagementAgent"], bool):
        return "isManagedByManagementAgent: value should be True or False"
    return None


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        # --- plumbing --------------------------------------------------------------------------------------

        def _send(self, status: int, body: Any = None) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"message": message})

        def _base(self) -> str:
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            return f"{scheme}://{self.headers.get('Host')}"

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return {}
            try:
                return json.loads(raw)
            except ValueError:
                return None

        def _authorized(self) -> bool:
            scheme, token = ((self.headers.get("Authorization") or "").split(" ", 1) + [""])[:2]
            return scheme in ("Token", "Bearer") and secrets.compare_digest(token, state.token)

        def _fault(self) -> bool:
            with state.lock:
                fault = state.faults.pop(0) if state.faults else None
                if fault and fault.get("count", 1) > 1:
                    state.faults.insert(0, {**fault, "count": fault["count"] - 1})
            if not fault:
                return False
            if fault.get("delay"):
                time.sleep(fault["delay"])
                return False
            if fault.get("html"):
                page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                self.send_response(502)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return True
            self._error(fault.get("status", 503), "Service temporarily unavailable")
            return True

        def _route(self, method: str) -> None:
            url = urllib.parse.urlparse(self.path)
            if url.path.startswith("/_fake/"):
                return self._admin(method, url.path)
            if not url.path.startswith(API):
                return self._error(404, "Not found")
            if self._fault():
                return None
            if not self._authorized():
                return self._error(401, "Invalid Authorization header. No credentials provided or wrong token.")
            parts = url.path[len(API):].split("/")
            if parts[-1] != "":
                return self._error(404, "Not found")  # every path ends in /
            parts = parts[:-1]
            query = urllib.parse.parse_qs(url.query)
            if parts == ["version"] and method == "GET":
                return self._send(200, VERSION)
            if parts == ["account", "info"] and method == "GET":
                return self._send(200, state.user)
            if parts == ["predictionEnvironments"]:
                if method == "GET":
                    return self._list(query)
                if method == "POST":
                    return self._create()
            if len(parts) == 2 and parts[0] == "predictionEnvironments":
                return self._one(method, parts[1])
            return self._error(405 if parts and parts[0] == "predictionEnvironments" else 404,
                               "Method not allowed" if parts and parts[0] == "predictionEnvironments" else "Not found")

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def do_PATCH(self) -> None:  # noqa: N802
            self._route("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._route("DELETE")

        # --- endpoints -------------------------------------------------------------------------------------

        def _list(self, query: dict[str, list[str]]) -> None:
            try:
                offset = int(query.get("offset", ["0"])[0])
                limit = int(query.get("limit", ["100"])[0])
            except ValueError:
                return self._error(422, "offset and limit must be integers")
            if offset < 0 or not 0 <= limit <= MAX_LIMIT:
                return self._error(422, f"offset must be >= 0 and limit between 0 and {MAX_LIMIT}")
            search = query.get("search", [""])[0].lower()
            with state.lock:
                items = [e for e in state.environments.values() if not e["isDeleted"]
                         and (not search or search in e["name"].lower())]
            items.sort(key=lambda e: e["importMeta"]["dateCreated"], reverse=True)
            page = items[offset:offset + limit] if limit else items[offset:]
            path = urllib.parse.urlparse(self.path).path

            def link(at: int) -> str:
                params = {"offset": at, "limit": limit or MAX_LIMIT, **({"search": search} if search else {})}
                return f"{self._base()}{path}?{urllib.parse.urlencode(params)}"

            following = offset + len(page)
            self._send(200, {"count": len(page), "totalCount": len(items), "data": page,
                             "next": link(following) if following < len(items) else None,
                             "previous": link(max(0, offset - (limit or MAX_LIMIT))) if offset > 0 else None})

        def _create(self) -> None:
            body = self._body()
            problem = _validate(body, CREATE_FIELDS, creating=True)
            if problem:
                return self._error(422, problem)
            environment = {
                "id": secrets.token_hex(12), "name": body["name"], "platform": body["platform"],
                "description": body.get("description") or "", "isDeleted": False,
                "supportedModelFormats": body.get("supportedModelFormats") or list(FORMATS),
                "isManagedByManagementAgent": body.get("isManagedByManagementAgent", False),
                "plugin": body.get("plugin"), "datastoreId": body.get("datastoreId"),
                "credentialId": body.get("credentialId"),
                "importMeta": {"dateCreated": _now(), "creatorId": state.user["uid"],
                               "creatorUsername": state.user["username"]},
                "managementMeta": {"userId": state.user["uid"], "username": state.user["username"]},
                "health": {"status": "unknown", "message": "No data yet", "timestamp": _now()},
                "permissions": ["CAN_EDIT", "CAN_SHARE", "CAN_DELETE", "CAN_VIEW"],
            }
            with state.lock:
                state.environments[environment["id"]] = environment
                state.save()
            self._send(201, environment)

        def _one(self, method: str, environment_id: str) -> None:
            with state.lock:
                environment = state.environments.get(environment_id)
            if environment is None:
                return self._error(404, f"Prediction environment {environment_id} not found")
            if method == "GET":
                if environment["isDeleted"]:
                    return self._error(404, f"Prediction environment {environment_id} not found")
                return self._send(200, environment)
            if method == "DELETE":
                if environment["isDeleted"]:
                    return self._error(410, f"Prediction environment {environment_id} has been deleted")
                if environment_id in state.in_use:
                    return self._error(422, "Prediction environment is used by one or more deployments and "
                                            "cannot be deleted")
                with state.lock:
                    environment["isDeleted"] = True
                    state.save()
                return self._send(204)
            if method == "PATCH":
                if environment["isDeleted"]:
                    return self._error(410, f"Prediction environment {environment_id} has been deleted")
                body = self._body()
                problem = _validate(body, PATCH_FIELDS, creating=False)
                if problem:
                    return self._error(422, problem)
                with state.lock:
                    environment.update(body)
                    state.save()
                return self._send(200, environment)
            return self._error(405, "Method not allowed")

        def _admin(self, method: str, path: str) -> None:
            if method != "POST":
                return self._error(405, "Method not allowed")
            body = self._body() or {}
            if path == "/_fake/faults":
                with state.lock:
                    state.faults.append(body)
                return self._send(200, {"queued": len(state.faults)})
            if path.startswith("/_fake/in-use/"):
                state.in_use.add(path.rsplit("/", 1)[1])
                return self._send(200, {})
            if path == "/_fake/reset":
                with state.lock:
                    state.faults.clear()
                return self._send(200, {})
            return self._error(404, "Not found")

    return Handler


def serve(port: int, token: str, state_file: Path | None = None, cert: str | None = None,
          key: str | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(State(state_file, token)))
    server.daemon_threads = True
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    serve(args.port, args.token_file.read_text().strip(), args.state, args.cert, args.key).serve_forever()


if __name__ == "__main__":
    main()
