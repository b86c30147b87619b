"""What `feedbackloop report` reads on the stand-in: the lake through DuckDB, the registry and the
decisions from DynamoDB (the same tables the AWS stacks create)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import boto3
import pandas as pd
from boto3.dynamodb.types import TypeDeserializer

from feedbackloop.local.environment import physical_name
from feedbackloop.local.lake_reader import connect
from feedbackloop.report import ReportData, models_frame
from feedbackloop.resources import DECISIONS_TABLE, REGISTRY_TABLE
from feedbackloop.uiconfig import RANKING_EXPERIMENT

_ENGAGEMENT = f"""
SELECT period_start, variant, sum(impressions) AS impressions, sum(clicks) AS clicks,
       sum(clicks) / nullif(sum(impressions), 0) AS ctr, sum(sessions) AS sessions
FROM engagement
WHERE grain = 'hour' AND scope = 'variant' AND experiment = '{RANKING_EXPERIMENT}' AND impressions > 0
GROUP BY 1, 2 ORDER BY 1, 2
"""


def _scan(session: boto3.Session, table: str) -> list[dict]:
    client = session.client("dynamodb")
    deserialize = TypeDeserializer().deserialize
    items, kwargs = [], {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        items += [{k: deserialize(v) for k, v in item.items()} for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _plain(value):
    from decimal import Decimal

    return float(value) if isinstance(value, Decimal) else value


def collect_local(endpoint: str, session: boto3.Session, title: str = "feedbackloop: the loop",
                  notes: Sequence[tuple[str, str]] = ()) -> ReportData:
    con = connect(endpoint)
    engagement = con.execute(_ENGAGEMENT).df()
    quarantine = con.execute("SELECT reason, count(*) AS records FROM feedback_quarantine GROUP BY 1").df()
    registry = [{k: _plain(v) for k, v in item.items()} for item in _scan(session, physical_name(REGISTRY_TABLE.key))
                if str(item["key"]).startswith("version#")]
    records = [{k: _plain(v) for k, v in item.items()} for item in _scan(session, physical_name(DECISIONS_TABLE.key))]
    rules = pd.DataFrame([r for r in records if r.get("kind") == "rule"],
                         columns=["decided_at", "rule", "scope", "metric", "value", "samples", "threshold", "outcome",
                                  "result"])
    drift = pd.DataFrame([r for r in records if r.get("kind") == "drift"],
                         columns=["detected_at", "stream", "mean_before", "mean_after", "values_seen", "retraining"])
    for frame, column in ((rules, "decided_at"), (drift, "detected_at")):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        frame.sort_values(column, inplace=True)
    return ReportData(title, datetime.now(UTC), engagement, quarantine, models_frame(registry), rules, drift,
                      list(notes))
