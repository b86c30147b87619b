"""The local API: the same routes, auth rule and handler as API Gateway, on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from feedbackloop.local.environment import LOOPBACK, REGION
from feedbackloop.local.functions import LocalFunction
from feedbackloop.local.http import LoopbackServer

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # API Gateway's own payload limit, before any Lambda runs
READ_DEADLINE_SECONDS = 10  # a client that stops sending mid-body is answered 408 and nothing is stored
SERVER_NAME = "feedbackloop-local"  # the Server header: no Python or library version
LOG = logging.getLogger("feedbackloop.local.api")


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
# (method, path pattern, function): the routes the REST API defines, and the function behind each
ROUTES = (
    ("POST", re.compile(r"/events"), "ingest"),
    ("GET", re.compile(r"/users/[^/]+/recommendations"), "serving"),
    ("GET", re.compile(r"/users/[^/]+/config"), "serving"),
    ("PUT", re.compile(r"/users/[^/]+/preferences"), "serving"),
    ("DELETE", re.compile(r"/users/[^/]+"), "serving"),
    ("GET", re.compile(r"/users/[^/]+/erasure"), "serving"),
)
API_KEY_HEADER = "x-api-key"


def proxy_event(method: str, path: str, headers: dict[str, str], body: bytes, *, base64_encoded: bool | None = None,
                stage: str = "local", source_ip: str = LOOPBACK, account_id: str = "000000000000",
                api_id: str = "local") -> dict:
    """An API Gateway REST (v1) proxy event, as the Lambda integration receives it. The body goes
    base64-encoded when it is not UTF-8 (or when asked), as API Gateway sends binary bodies."""
    if base64_encoded is None:
        try:
            body.decode("utf-8")
            base64_encoded = False
        except UnicodeDecodeError:
            base64_encoded = True
    text = base64.b64encode(body).decode("ascii") if base64_encoded else body.decode("utf-8")
    url = urlsplit(path)
    path = url.path
    query = parse_qs(url.query, keep_blank_values=True)
    now = time.time()
    domain = f"{api_id}.execute-api.{REGION}.amazonaws.com"
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local", "resourcePath": path, "httpMethod": method, "path": f"/{stage}{path}",
            "stage": stage, "requestId": str(uuid.uuid4()), "extendedRequestId": "local",
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000), "accountId": account_id, "apiId": api_id,
            "protocol": "HTTP/1.1", "domainName": domain, "domainPrefix": api_id,
            "identity": {
                "sourceIp": source_ip, "apiKey": headers.get(API_KEY_HEADER), "userAgent": headers.get("user-agent"),
                "accessKey": None, "accountId": None, "caller": None, "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None, "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                "principalOrgId": None, "user": None, "userArn": None,
            },
        },
        "body": text,
        "isBase64Encoded": base64_encoded,
    }


class LocalApi(LoopbackServer):
    def __init__(self, functions: dict[str, LocalFunction], api_key: str, port: int = 0) -> None:
        self.api_key = api_key
        self._functions = functions
        super().__init__("local-api", port)

    def _handler_class(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version, sys_version = SERVER_NAME, ""

            def version_string(self) -> str:
                return SERVER_NAME

            def log_message(self, *args) -> None:  # access logs would drown the demo's output
                pass

            def _reply(self, status: int, body: dict | str, headers: dict[str, str] | None = None) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer has the headers of a GET's, without its body
                    self.wfile.write(data)

            def _read_body(self) -> tuple[bytes, bool]:
                """The whole body (Content-Length or chunked), and whether it is over the gateway's limit (then
                unread). A body shorter than its declared length, or one that stalls past the deadline, is a
                _BodyError: nothing of it reaches a function."""
                # the deadline holds for the body only: a kept-alive connection may idle between requests
                # (closing it then made a client's next request on it fail with no answer)
                self.connection.settimeout(READ_DEADLINE_SECONDS)
                try:
                    return self._read_body_within_deadline()
                finally:
                    self.connection.settimeout(None)

            def _read_body_within_deadline(self) -> tuple[bytes, bool]:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    return self._read_chunked()
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0:
                    raise _BodyError(400, "Invalid Content-Length")
                if length > API_GATEWAY_MAX_BODY:
                    return b"", True
                body = self._read_exactly(length)
                return body, False

            def _read_exactly(self, length: int) -> bytes:
                try:
                    body = self.rfile.read(length)
                except TimeoutError:
                    raise _BodyError(408, f"the body did not arrive within {READ_DEADLINE_SECONDS} s") from None
                if len(body) != length:
                    raise _BodyError(400, f"the body ended after {len(body)} of its {length} declared bytes")
                return body

            def _read_chunked(self) -> tuple[bytes, bool]:
                chunks, size = [], 0
                while True:
                    try:
                        line = self.rfile.readline(1024)
                    except TimeoutError:
                        raise _BodyError(408, f"the body did not arrive within {READ_DEADLINE_SECONDS} s") from None
                    try:
                        chunk = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise _BodyError(400, "Invalid chunked body") from None
                    if chunk < 0:
                        raise _BodyError(400, "Invalid chunked body")
                    size += chunk
                    if size > API_GATEWAY_MAX_BODY:
                        return b"", True
                    if chunk == 0:
                        while self.rfile.readline(1024).strip():  # trailers, up to the empty line
                            pass
                        return b"".join(chunks), False
                    chunks.append(self._read_exactly(chunk))
                    if self._read_exactly(2) != b"\r\n":
                        raise _BodyError(400, "Invalid chunked body")

            def _route(self, method: str) -> None:
                # the body is read before any answer, so an early one (404, 405, 403) leaves none on a kept-alive
                # connection; one over the limit stays unread, and the connection closes after the answer
                try:
                    body, too_long = self._read_body()
                except _BodyError as error:
                    self.close_connection = True
                    self._reply(error.status, {"message": error.message}, {"Connection": "close"})
                    return
                if too_long:
                    self.close_connection = True
                path = self.path.split("?")[0]
                matches = [(m, f) for m, pattern, f in ROUTES if pattern.fullmatch(path)]
                function = next((f for m, f in matches if m == method), None)
                if function is None:
                    self._reply(405 if matches else 404, {"message": f"no such route: {method} {path[:200]}"
                                                          if not matches else "Method Not Allowed"},
                                {"Allow": ", ".join(m for m, _ in matches)} if matches else None)
                    return
                # API Gateway checks the key before the integration runs: 403 with its own message
                if self.headers.get(API_KEY_HEADER) != api.api_key:
                    self._reply(403, {"message": "Forbidden"})
                    return
                if too_long:
                    self._reply(413, {"message": "Request Too Long"}, {"Connection": "close"})
                    return
                headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    headers["content-length"] = str(len(body))  # API Gateway hands the function the whole body
                event = proxy_event(method, self.path, headers, body)
                try:
                    response = api._functions[function].invoke(event)
                except Exception:  # as API Gateway does when the integration fails; logged, as Lambda logs it
                    LOG.exception("%s failed on %s %s (request id %s)", function, method, path[:200],
                                  event["requestContext"]["requestId"])
                    self._reply(502, {"message": "Internal server error"})
                    return
                self._reply(response["statusCode"], response.get("body") or "", response.get("headers"))

            def do_POST(self) -> None:
                self._route("POST")

            def do_GET(self) -> None:
                self._route("GET")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def __getattr__(self, name: str):
                # any other method (PATCH, HEAD, OPTIONS, TRACE, ...) gets the gateway's 404 or 405, not
                # http.server's 501 and HTML page
                if name.startswith("do_"):
                    return lambda: self._route(name.removeprefix("do_"))
                raise AttributeError(name)

        return Handler

