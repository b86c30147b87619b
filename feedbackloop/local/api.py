"""The local API: the same routes, auth rule and handler as API Gateway, on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from feedbackloop.local.environment import LOOPBACK, REGION
from feedbackloop.local.functions import LocalFunction
from feedbackloop.local.http import LoopbackServer

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # API Gateway's own payload limit, before any Lambda runs
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

            def _route(self, method: str) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0:
                    self.close_connection = True
                    self._reply(400, {"message": "Invalid Content-Length"}, {"Connection": "close"})
                    return
                # the body is read before any answer, so an early one (404, 405, 403) leaves none on a kept-alive
                # connection; one over the limit stays unread, and the connection closes after the answer
                body = self.rfile.read(length) if length <= API_GATEWAY_MAX_BODY else b""
                if length > API_GATEWAY_MAX_BODY:
                    self.close_connection = True
                path = self.path.split("?")[0]
                matches = [(m, f) for m, pattern, f in ROUTES if pattern.fullmatch(path)]
                function = next((f for m, f in matches if m == method), None)
                if function is None:
                    self._reply(405 if matches else 404, {"message": "Missing Authentication Token"
                                                          if not matches else "Method Not Allowed"},
                                {"Allow": ", ".join(m for m, _ in matches)} if matches else None)
                    return
                # API Gateway checks the key before the integration runs: 403 with its own message
                if self.headers.get(API_KEY_HEADER) != api.api_key:
                    self._reply(403, {"message": "Forbidden"})
                    return
                if length > API_GATEWAY_MAX_BODY:
                    self._reply(413, {"message": "Request Too Long"}, {"Connection": "close"})
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    response = api._functions[function].invoke(proxy_event(method, self.path, headers, body))
                except Exception:  # as API Gateway does when the integration fails
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

