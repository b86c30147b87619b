"""Every route of the local API, fuzzed from its published OpenAPI document (a smaller run than
`feedbackloop fuzz`'s 10,000 requests); the local API's answers to methods and bodies it does not take,
and its two functions under concurrent requests."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from feedbackloop.local.api import API_KEY_HEADER
from feedbackloop.local.fuzz import run_fuzz
from feedbackloop.local.runtime import LocalRuntime

pytestmark = pytest.mark.local

REQUESTS = 1_000  # about a minute on a quiet two-core machine; `feedbackloop fuzz` sends 10,000


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    with LocalRuntime(state_dir=tmp_path_factory.mktemp("local")) as runtime:
        yield runtime


def test_no_route_fails_on_anything_the_fuzzer_sends(runtime):
    report = run_fuzz(runtime, REQUESTS, seed=1)
    assert report.requests >= REQUESTS
    assert not report.problems, report.render()
    assert report.function_errors == 0 and report.healthy_after
    # the run reached every route, with input it took and input it refused
    assert report.declared <= set(report.by_route)
    for route in report.declared:
        statuses = report.by_route[route]
        assert any(400 <= s < 500 for s in statuses if isinstance(s, int)), (route, statuses)
        if not route.endswith("/erasure"):  # only an erased user has an erasure to read
            assert any(200 <= s < 300 for s in statuses if isinstance(s, int)), (route, statuses)


def test_the_local_api_answers_every_method_and_keeps_the_connection_usable(runtime):
    """An early answer (405, 403) used to leave the body unread on a kept-alive connection, and
    methods without a handler got http.server's 501 HTML page."""
    url = urlsplit(runtime.api.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    key = {API_KEY_HEADER: runtime.api_key, "Content-Type": "application/json"}
    try:
        for method, path, headers, status in [
            ("PATCH", "/events", key, 405), ("DELETE", "/users/u1/preferences", key, 405),
            ("POST", "/events", {API_KEY_HEADER: "wrong"}, 403), ("OPTIONS", "/nowhere", key, 404),
        ]:
            connection.request(method, path, body=b'{"events": []}', headers=headers)
            response = connection.getresponse()
            body = json.loads(response.read())
            assert response.status == status and body["message"], (method, path, body)
            if status == 405:
                assert method not in response.getheader("Allow") and response.getheader("Allow")
        connection.request("HEAD", "/events", headers=key)
        response = connection.getresponse()
        assert response.status == 405 and response.read() == b""
        connection.request("GET", "/users/u1/config", headers=key)  # the same connection, still in step
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["user_id"] == "u1"
    finally:
        connection.close()


def test_the_two_api_functions_take_turns(runtime, monkeypatch):
    """Powertools keeps the request it resolves on a class attribute that every resolver in a process
    shares. In AWS each function has its own process; here, `feedbackloop bench load` saw a POST /events
    read a concurrent GET's empty body (400 malformed_json) until ingest and serving took turns."""
    import lambdas.serving.handler as serving

    reader = serving._ui_config()  # the container's reader: the config route calls it mid-request
    inside, release = threading.Event(), threading.Event()
    read = reader.get

    def slow_get():
        inside.set()
        release.wait(30)
        return read()

    monkeypatch.setattr(reader, "get", slow_get)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {"event_id": "turns-1", "user_id": "u1", "item_id": "i1", "event_type": "click", "value": 1,
             "timestamp": now, "schema_version": "1.1"}
    statuses: dict[str, int] = {}

    def call(name: str, method: str, path: str, body: bytes | None = None) -> None:
        request = urllib.request.Request(f"{runtime.api.url}{path}", data=body, method=method,
                                         headers={API_KEY_HEADER: runtime.api_key,
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            statuses[name] = response.status

    get = threading.Thread(target=call, args=("get", "GET", "/users/u1/config"))
    post = threading.Thread(target=call, args=("post", "POST", "/events", json.dumps({"events": [event]}).encode()))
    get.start()
    try:
        assert inside.wait(30)
        post.start()
        post.join(1.0)
        assert post.is_alive(), "ingest ran while serving was resolving a request"
    finally:
        release.set()
    get.join(60)
    post.join(60)
    assert statuses == {"get": 200, "post": 200}
