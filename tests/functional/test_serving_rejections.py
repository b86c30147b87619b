"""What the serving function answers to requests it cannot use (found by `feedbackloop fuzz`): a 422 that
names the field and says why, as the published document describes, and never an invocation error."""

from __future__ import annotations

import json

import fastjsonschema
import pytest

from feedbackloop.serving_api import openapi_document

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def validation_error_schema():
    document = json.loads(openapi_document())
    return fastjsonschema.compile({"$ref": "#/components/schemas/Error",
                                   "components": document["components"]})


def _put_preferences(serving_handler, api_event, body: bytes, content_type: str = "application/json",
                     base64_encoded: bool = False) -> tuple[int, dict]:
    event = api_event(body, method="PUT", path="/users/u1/preferences", base64_encoded=base64_encoded)
    event["headers"]["Content-Type"] = content_type
    response = serving_handler(event)
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize(("method", "path", "body", "where"), [
    ("GET", "/users/u1/recommendations?k=0", "", ["query", "k"]),
    ("GET", "/users/%20bad/config", "", ["path", "user_id"]),
    ("PUT", "/users/u1/preferences", '{"personalization": "no"}', ["body", "personalization"]),
    ("PUT", "/users/u1/preferences", '{"personalization": true, "extra": 1}', ["body", "extra"]),
    ("PUT", "/users/u1/preferences", '{"personalization": ', ["body", 20]),
])
def test_a_validation_error_names_the_field_and_says_why(account, serving_handler, api_event, validation_error_schema,
                                                         method, path, body, where):
    response = serving_handler(api_event(body, method=method, path=path))
    payload = json.loads(response["body"])
    assert response["statusCode"] == 422, payload
    validation_error_schema(payload)  # loc, msg and type, as the document says
    (error,) = payload["detail"]
    assert error["loc"] == where and error["msg"] and error["msg"] != error["type"]
    assert "input" not in error  # what the client sent is not echoed


def test_a_body_that_is_not_utf8_is_a_422_not_an_invocation_error(account, serving_handler, api_event,
                                                                   validation_error_schema):
    status, body = _put_preferences(serving_handler, api_event, b"\xff\xfe{}", base64_encoded=True)
    assert status == 422
    validation_error_schema(body)
    assert body["detail"][0]["type"] == "utf8_invalid" and "byte 0" in body["detail"][0]["msg"]


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=", "text/plain",
                                          "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_a_415_as_ingest_answers(account, serving_handler, api_event, content_type):
    """Serving answered 415 to text/plain, 422 to a form and an invocation error to multipart without a
    boundary, while ingest took any content type: both now answer 415 to anything but JSON."""
    status, body = _put_preferences(serving_handler, api_event, b'{"personalization": true}', content_type)
    assert status == 415
    assert body["error"] == "unsupported_media_type" and content_type.split(";")[0] in body["reason"]


def test_a_valid_change_still_goes_through(account, serving_handler, api_event):
    assert _put_preferences(serving_handler, api_event, b'{"personalization": false}') == (
        200, {"user_id": "u1", "personalization": False})


def test_an_unexpected_ingest_error_is_a_logged_500_that_names_the_request(account, ingest_handler, api_event,
                                                                          monkeypatch):
    """A body Python's parser could not handle (a 4,300+ digit integer) was a 502 with no log line; any
    error the function did not expect is now logged with its traceback and answered in the error shape."""
    import lambdas.ingest.handler as module

    def broken(*args, **kwargs):
        raise RuntimeError("the stream client is gone")

    logged = []
    real = module.logger.exception
    monkeypatch.setattr(module, "accept_batch", broken)
    monkeypatch.setattr(module.logger, "exception",
                        lambda message, *a, **k: (logged.append(k.get("extra")), real(message, *a, **k)))
    event = api_event('{"events": []}')
    response = ingest_handler(event)
    body = json.loads(response["body"])
    request_id = event["requestContext"]["requestId"]
    assert response["statusCode"] == 500 and body["error"] == "internal_error" and request_id in body["reason"]
    assert logged == [{"api_request_id": request_id}]


def test_a_huge_integer_is_a_400_on_ingest_not_an_invocation_error(account, ingest_handler, api_event):
    response = ingest_handler(api_event('{"events": [{"value": ' + "9" * 4400 + "}]}"))
    body = json.loads(response["body"])
    assert response["statusCode"] == 400 and body["error"] == "malformed_json" and "number too long" in body["reason"]


@pytest.mark.parametrize(("path", "user_id"), [("/users/a%40b.example/preferences", "a@b.example"),
                                               ("/users/tenant%3A42/preferences", "tenant:42"),
                                               ("/users/plain/preferences", "plain")])
def test_a_percent_encoded_id_is_decoded_once_as_api_gateway_passes_it(account, serving_handler, api_event, path,
                                                                       user_id):
    """API Gateway (REST) hands the function the path as the client encoded it; `a%40b` was a 422."""
    response = serving_handler(api_event(b'{"personalization": false}', method="PUT", path=path))
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["user_id"] == user_id


@pytest.mark.parametrize("path", ["/users/%3F/config", "/users/%23", "/users/%60s/recommendations?k=71",
                                  "/users/xm%3F/recommendations?k=1", "/users/a%2Fb/config", "/users/%22x%22/config",
                                  "/users/%5Cx/config", "/users/%C3%A9/config"])
def test_an_encoded_id_that_no_route_can_hold_is_a_422_not_a_404(account, serving_handler, api_event, path):
    """`feedbackloop fuzz` (status-code conformance): `?`, `#`, a backquote, decoded, made the route miss, and
    the documents declare no 404 for these routes. Left encoded, the route matches and the id is refused."""
    method = "DELETE" if path.count("/") == 2 else "GET"
    response = serving_handler(api_event("", method=method, path=path))
    body = json.loads(response["body"])
    assert response["statusCode"] == 422, body
    assert body["field"] == "path.user_id"
