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
