"""Every route of the local API, fuzzed from its published OpenAPI document (a smaller run than
`feedbackloop fuzz`'s 10,000 requests), and the local API's answers to methods and bodies it does not take."""

from __future__ import annotations

import http.client
import json
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
