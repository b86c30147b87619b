"""In-memory adapters: for unit tests and for the benchmark (Parquet is still really encoded)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from feedbackloop.cleaning.stats import CleanerState
from feedbackloop.lake import LakeTable


class MemoryStream:
    def __init__(self, fail_codes: list[str | None] | None = None) -> None:
        self.records: list[tuple[str, bytes]] = []
        self.fail_codes = fail_codes  # per record of the next call, to simulate throttling

    def put_records(self, records: list[tuple[str, bytes]]) -> list[str | None]:
        codes = self.fail_codes or [None] * len(records)
        self.fail_codes = None
        self.records.extend(r for r, code in zip(records, codes, strict=False) if code is None)
        return list(codes[: len(records)])


class MemoryDedupStore:
    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    def lookup(self, event_ids: Iterable[str]) -> dict[str, str]:
        return {i: self.keys[i] for i in self.keys.keys() & event_ids}

    def remember(self, keys: Mapping[str, str]) -> None:
        self.keys.update(keys)


class MemoryStateStore:
    def __init__(self) -> None:
        self.state = CleanerState()

    def load(self) -> CleanerState:
        return CleanerState.from_json(self.state.to_json())

    def merge(self, learned: CleanerState) -> None:
        self.state = self.state.merge(learned)


class MemoryLake:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail_partitions: set[str] = set()

    def write(self, table: LakeTable, partition: str, name: str, rows: pa.Table) -> str:
        if partition in self.fail_partitions:
            raise OSError(f"injected write failure for {partition}")
        key = table.object_key(partition, name)
        self.objects[key] = table.parquet(rows)
        return key

    def exists(self, key: str) -> bool:
        return key in self.objects

    def read(self, table: LakeTable) -> pa.Table:
        prefix = f"{table.bucket_key}/{table.prefix}"
        parts = [pq.read_table(io.BytesIO(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]
        return pa.concat_tables(parts) if parts else table.arrow_schema.empty_table()


class MemoryModelRegistry:
    def __init__(self) -> None:
        self.records: dict[str, dict] = {}
        self.pointer: dict | None = None

    def current(self) -> dict | None:
        return None if self.pointer is None else dict(self.pointer)

    def publish(self, record: dict, replaces: str | None) -> None:
        from feedbackloop.registry import StaleRegistryError

        if (self.pointer or {}).get("version") != replaces:
            raise StaleRegistryError(f"the current model is no longer {replaces!r}")
        self.records[record["version"]] = dict(record)
        self.pointer = dict(record)


class MemoryArtifacts:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def read(self, url: str) -> bytes:
        return self.objects[url]

    def copy(self, source_url: str, target_url: str) -> None:
        self.objects[target_url] = self.objects[source_url]


class MemoryOnlineStore:
    def __init__(self) -> None:
        self.items: dict[str, dict] = {}
        self.counts: dict[str, int] = {}

    def load(self, user_ids) -> dict:
        from feedbackloop.online import UserProfile

        out = {}
        for user in dict.fromkeys(user_ids):
            item = self.items.get(user)
            out[user] = (UserProfile(user) if item is None else
                         UserProfile.from_document(user, item.get("doc"), item.get("personalization", True),
                                                   item.get("version", 0), item.get("erased_at")))
        return out

    def save(self, profiles) -> list[str]:
        lost = []
        for profile in profiles:
            item = self.items.setdefault(profile.user_id, {"version": 0})
            if item["version"] != profile.version:
                lost.append(profile.user_id)
                continue
            item |= {"doc": profile.to_document(), "version": profile.version + 1}
            profile.version += 1
        return lost

    def add_item_counts(self, counts) -> None:
        for item, count in counts.items():
            self.counts[item] = self.counts.get(item, 0) + int(count)

    def item_counts(self) -> dict[str, int]:
        return dict(self.counts)

    def set_personalization(self, user_id: str, enabled: bool) -> None:
        item = self.items.setdefault(user_id, {"version": 0})
        item["personalization"] = enabled
        item["version"] += 1

    def delete(self, user_id: str) -> None:
        self.items.pop(user_id, None)

    def tombstone(self, user_id: str, erased_at: float) -> None:
        item = self.items.setdefault(user_id, {"version": 0})
        item |= {"personalization": False, "erased_at": erased_at, "version": item["version"] + 1}


class MemoryErasureLog:
    def __init__(self) -> None:
        self.records: dict[str, dict] = {}

    def get(self, user_id: str) -> dict | None:
        return self.records.get(user_id)

    def put(self, record: dict) -> None:
        self.records[record["user_id"]] = dict(record)


class MemoryItemCounterStore:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, float]] = {}

    def add(self, additions, now: float) -> None:
        from feedbackloop.item_counters import stale_fields, writable

        for item, fields in writable(additions, now).items():
            stored = self.items.setdefault(item, {})
            for name in stale_fields(now):
                stored.pop(name, None)
            for name, value in fields.items():
                stored[name] = stored.get(name, 0.0) + value

    def load(self, item_ids, now: float) -> dict:
        from feedbackloop.item_counters import counts_at

        return {i: counts_at(self.items[i], now) for i in dict.fromkeys(item_ids) if i in self.items}
