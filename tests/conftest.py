"""Builders shared by the unit and functional tests: a valid feedback event and its stream record.

They are fixtures (factories) rather than an importable helper module, so the tests need neither
`__init__.py` files nor path edits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from feedbackloop.cleaning.decode import SourceRecord
from feedbackloop.ingest import envelope

#: when the API received the events of most tests
RECEIVED_AT = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
SHARD = "shardId-000000000000"
_SEQUENCE_BASE = 49_660_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000

_EVENT: dict[str, Any] = {
    "event_id": "evt-0001",
    "user_id": "user-1",
    "item_id": "item-1",
    "event_type": "rating",
    "value": 4,
    "timestamp": "2025-06-10T11:59:00Z",
    "schema_version": "1.1",
    "context": {
        "session_id": "sess-1",
        "device": "mobile",
        "page": "/home",
        "experiment": "exp-1",
        "variant": "B",
        "segment": "new",
        "country": "DE",
        "category": "books",
        "price": 9.5,
    },
}


def feedback_event(*, drop: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    """A schema-valid event; `overrides` replace fields, `drop` removes them ("context.page" works)."""
    event = copy.deepcopy(_EVENT) | overrides
    for name in drop:
        parent, _, leaf = name.rpartition(".")
        (event[parent] if parent else event).pop(leaf, None)
    return event


def sequence_number(index: int) -> str:
    return str(_SEQUENCE_BASE + index)


def stream_record(
    event: dict[str, Any] | bytes,
    index: int = 0,
    *,
    received_at: datetime = RECEIVED_AT,
    arrival: datetime | None = None,
    shard: str = SHARD,
) -> SourceRecord:
    """The stream record the ingest API would have put for `event` (raw bytes are taken as they are)."""
    data = event if isinstance(event, bytes) else envelope(event, received_at)
    return SourceRecord(data=data, source=f"{shard}:{sequence_number(index)}", arrival=arrival or received_at)


@pytest.fixture(scope="session")
def make_event() -> Callable[..., dict[str, Any]]:
    return feedback_event


@pytest.fixture(scope="session")
def make_record() -> Callable[..., SourceRecord]:
    return stream_record


@pytest.fixture(scope="session")
def received_at() -> datetime:
    return RECEIVED_AT
