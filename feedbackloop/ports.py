"""The small interfaces the core talks to; adapters for AWS and for memory implement them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from feedbackloop.cleaning.stats import CleanerState
from feedbackloop.online import UserProfile

if TYPE_CHECKING:  # Arrow is the cleaner's: the serving function, which uses these ports too, has no pyarrow
    import pyarrow as pa

    from feedbackloop.lake import LakeTable


class EventStream(Protocol):
    def put_records(self, records: list[tuple[str, bytes]]) -> list[str | None]:
        """Put (partition key, data) records; per record None when stored, else an error code."""


class DedupStore(Protocol):
    def lookup(self, event_ids: Iterable[str]) -> dict[str, str]:
        """The object key recorded for each id already seen (ids never seen are absent)."""

    def remember(self, keys: Mapping[str, str]) -> None:
        """Record, for each event id, the object that holds (or will hold) its row."""


class StateStore(Protocol):
    def load(self) -> CleanerState: ...

    def merge(self, learned: CleanerState) -> None:
        """Merge what a batch learned into the stored state, safe against concurrent writers."""


class LakeWriter(Protocol):
    def write(self, table: LakeTable, partition: str, name: str, rows: pa.Table) -> str:
        """Write one Parquet object into a partition (registering it); return its key. Idempotent
        for the same name."""

    def exists(self, key: str) -> bool: ...


class OnlineStore(Protocol):
    """Each user's online profile (feedback per item and preferences), with optimistic concurrency."""

    def load(self, user_ids: Iterable[str]) -> dict[str, UserProfile]:
        """Profiles by user id; a user never seen gets an empty profile (version 0)."""

    def save(self, profiles: Iterable[UserProfile]) -> list[str]:
        """Write profiles whose stored version is still theirs; return the users that lost a race."""

    def set_personalization(self, user_id: str, enabled: bool) -> None: ...

    def delete(self, user_id: str) -> None: ...

    def tombstone(self, user_id: str, erased_at: float) -> None:
        """Personalization off, and the erasure request's time (epoch seconds) kept for the cleaner."""

    def add_item_counts(self, counts: Mapping[str, int]) -> None:
        """Add clean events per item to the store's item counters (popularity before the first model)."""

    def item_counts(self) -> dict[str, int]:
        """Clean events per item so far, from the counters."""
