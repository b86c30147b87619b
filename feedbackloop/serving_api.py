"""The serving routes' contract: identifiers, limits and JSON bodies, shared by the Lambda handler, the
local API and the benchmarks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from feedbackloop.schemas.registry import event_schema
from feedbackloop.serving import Recommendations

# A user id as the event schema defines it: one pattern for events and for the routes.
USER_ID_PATTERN = event_schema()["properties"]["user_id"]["pattern"]
USER_ID_MAX_LENGTH = event_schema()["properties"]["user_id"]["maxLength"]
DEFAULT_K, MAX_K = 10, 100
# A recommendations request id as the event schema's context.request_id (1.2) takes it back
REQUEST_ID_PATTERN = event_schema()["properties"]["context"]["properties"]["request_id"]["pattern"]
REQUEST_ID_MAX_LENGTH = event_schema()["properties"]["context"]["properties"]["request_id"]["maxLength"]


class PreferencesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "no" is not a boolean

    personalization: bool = Field(description="false: rankings stop using this user's feedback, and their new "
                                              "events stop feeding training and the online store")


def recommendations_body(ranked: Recommendations) -> dict[str, Any]:
    return {
        "user_id": ranked.user_id,
        "model_version": ranked.model_version,
        "segment": ranked.segment,
        "personalized": ranked.personalized,
        "strategy": ranked.strategy,
        "ranker": ranked.ranker,
        "items": [{"item_id": r.item_id, "score": round(r.score, 6), "reason": r.reason,
                   "propensity": round(r.propensity, 9)} for r in ranked.items],
    }


OPENAPI_FILE = "docs/openapi.json"  # the published copy; a test keeps it equal to the handler's


def openapi_document() -> str:
    """The serving API as the Powertools resolver describes it (routes, parameters, validation), with the
    API key every route needs, under the same scheme as the ingest API's document."""
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

    from feedbackloop.ingest_api import SECURITY_SCHEME
    from feedbackloop.local.api import API_KEY_HEADER
    from lambdas.serving.handler import app

    return app.get_openapi_json_schema(title="feedbackloop serving API", version="1",
                                       description="Recommendations, UI preferences and erasure per user. "
                                                   f"Every route needs the {API_KEY_HEADER} header.",
                                       security_schemes={SECURITY_SCHEME: APIKey(name=API_KEY_HEADER,
                                                                                 in_=APIKeyIn.header)},
                                       security=[{SECURITY_SCHEME: []}])
