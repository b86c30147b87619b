"""CleanerService over the in-memory adapters: conservation, de-duplication, partial failures."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedbackloop.adapters.memory import MemoryDedupStore, MemoryLake, MemoryOnlineStore, MemoryStateStore
from feedbackloop.cleaning.clean import CleaningRules
from feedbackloop.cleaning.decode import SourceRecord
from feedbackloop.cleaning.service import BatchOutcome, CleanerService
from feedbackloop.cleaning.stats import CleanerState, StreamStats
from feedbackloop.ingest import envelope
from feedbackloop.lake import CURATED_EVENTS, QUARANTINE, LakeTable
from feedbackloop.names import QuarantineReason
from feedbackloop.online import ProfileMerge

pytestmark = pytest.mark.unit

RECEIVED_AT = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
NOW = RECEIVED_AT + timedelta(seconds=30)
TODAY = NOW.strftime("%Y-%m-%d")
COLD = CleaningRules(min_samples=10**9)  # no outlier filter: verdicts depend on the record alone
SETTLED = {QuarantineReason.TOO_OLD.value, QuarantineReason.FUTURE.value, QuarantineReason.OUTLIER.value}


class Lake:
    """The in-memory adapters of one cleaner, and what they hold."""

    def __init__(self, rules: CleaningRules = COLD) -> None:
        self.dedup = MemoryDedupStore()
        self.state = MemoryStateStore()
        self.lake = MemoryLake()
        self.service = CleanerService(self.dedup, self.state, self.lake, rules, clock=lambda: NOW)

    def clean(self, records: list[SourceRecord]) -> BatchOutcome:
        outcome = self.service.clean(records)
        assert (outcome.clean + outcome.quarantined_total + outcome.duplicates + len(outcome.failed_sources)
                == outcome.records_in == len(records))
        return outcome

    def curated(self) -> pa.Table:
        return self.lake.read(CURATED_EVENTS)

    def quarantine(self) -> pa.Table:
        return self.lake.read(QUARANTINE)

    def curated_ids(self) -> Counter:
        return Counter(self.curated()["event_id"].to_pylist())

    def verdicts(self) -> dict[str, list[str]]:
        """source -> every row the lake holds for it: "curated" or the quarantine reason."""
        out: dict[str, list[str]] = {}
        for source in self.curated()["source"].to_pylist():
            out.setdefault(source, []).append("curated")
        quarantine = self.quarantine()
        for source, reason in zip(quarantine["source"].to_pylist(), quarantine["reason"].to_pylist(), strict=True):
            out.setdefault(source, []).append(reason)
        return out


@pytest.fixture
def lake() -> Lake:
    return Lake()


def _day(days_ago: int, hour: int = 11) -> str:
    return (RECEIVED_AT - timedelta(days=days_ago)).replace(hour=hour).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(days_ago: int) -> str:
    return (RECEIVED_AT - timedelta(days=days_ago)).strftime("%Y-%m-%d")


# --- conservation and de-duplication on random batches -----------------------------------------

IDS = [f"evt-{i}" for i in range(10)]
KINDS = ["valid"] * 6 + ["too_old", "future", "schema", "malformed", "not_utf8", "bare"]


@st.composite
def random_batches(draw):
    """A few batches of records over a small pool of event ids, and partitions whose first write fails."""
    batches = []
    for _ in range(draw(st.integers(1, 3))):
        specs = draw(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(IDS), st.integers(0, 3),
                                        st.sampled_from(["click", "view", "rating", "purchase"])),
                              min_size=1, max_size=15))
        failing = draw(st.sets(st.sampled_from([_date(d) for d in range(4)])))
        batches.append((specs, failing))
    return batches


def _record(kind: str, event_id: str, days_ago: int, event_type: str, sequence: int, make_event, make_record):
    value = {"rating": 3, "click": 1, "view": 2, "purchase": 25.0}[event_type]
    event = make_event(event_id=event_id, event_type=event_type, value=value, timestamp=_day(days_ago))
    if kind == "too_old":
        event["timestamp"] = _day(45)
    elif kind == "future":
        event["timestamp"] = (RECEIVED_AT + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif kind == "schema":
        event["event_type"] = "like"
    data = envelope(event, RECEIVED_AT)
    if kind == "malformed":
        data = data[: len(data) // 2]
    elif kind == "not_utf8":
        data = b"\xff" + data
    elif kind == "bare":
        data = json.dumps(event).encode()
    return make_record(data, sequence), event


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=random_batches())
def test_every_record_is_accounted_for_and_no_event_is_curated_twice(make_event, make_record, batches):
    lake = Lake()
    occurrences: dict[str, list[str]] = {}  # schema-valid ids -> the kinds of their records
    sequence = 0
    for specs, failing in batches:
        records = []
        for kind, event_id, days_ago, event_type in specs:
            record, _ = _record(kind, event_id, days_ago, event_type, sequence, make_event, make_record)
            sequence += 1
            records.append(record)
            if kind in ("valid", "bare", "too_old", "future"):
                occurrences.setdefault(event_id, []).append(kind)
        # Kinesis with ReportBatchItemFailures: the failing partitions fail once, and Lambda then
        # redelivers from the lowest failed sequence number onwards
        lake.lake.fail_partitions = set(failing)
        pending = records
        while True:
            curated_before = lake.curated().num_rows
            outcome = lake.clean(pending)
            assert lake.curated().num_rows - curated_before == outcome.clean
            lake.lake.fail_partitions = set()
            if not outcome.failed_sources:
                break
            first = min(i for i, r in enumerate(pending) if r.source in set(outcome.failed_sources))
            pending = pending[first:]

    ids = lake.curated_ids()
    assert all(count == 1 for count in ids.values()), ids
    verdicts = lake.verdicts()
    quarantine = lake.quarantine()
    quarantined_ids = set(quarantine["event_id"].to_pylist())
    for event_id, kinds in occurrences.items():
        if set(kinds) <= {"valid", "bare"}:
            assert event_id in ids, f"{event_id} lost"
        if not set(kinds) & {"valid", "bare"}:
            assert event_id not in ids
        assert event_id in ids or event_id in quarantined_ids
    # every record the stream delivered left at least one row in the lake
    assert set(verdicts) == {make_record(b"", i).source for i in range(sequence)}


def test_a_duplicate_within_a_batch_is_written_once(lake, make_event, make_record):
    records = [make_record(make_event(event_id="a", value=2), 0), make_record(make_event(event_id="a", value=5), 1),
               make_record(make_event(event_id="b"), 2)]
    outcome = lake.clean(records)
    assert (outcome.clean, outcome.duplicates) == (2, 1)
    assert lake.curated_ids() == {"a": 1, "b": 1}
    (row,) = [r for r in lake.curated().to_pylist() if r["event_id"] == "a"]
    assert row["value"] == 2  # the first one wins
    assert lake.verdicts()[records[1].source] == ["duplicate"]
    # said as what it is: the id was not committed before, it came twice in this batch
    (detail,) = [r["detail"] for r in lake.quarantine().to_pylist() if r["reason"] == "duplicate"]
    assert detail == "event_id repeated earlier in this batch"


def test_a_duplicate_across_batches_is_written_once(lake, make_event, make_record):
    lake.clean([make_record(make_event(event_id="a"), 0)])
    outcome = lake.clean([make_record(make_event(event_id="a"), 1), make_record(make_event(event_id="b"), 2)])
    assert (outcome.clean, outcome.duplicates) == (1, 1)
    assert lake.curated_ids() == {"a": 1, "b": 1}
    (detail,) = [r["detail"] for r in lake.quarantine().to_pylist() if r["reason"] == "duplicate"]
    assert detail == "event_id already committed"


def test_a_replayed_batch_adds_nothing_to_the_curated_table(lake, make_event, make_record):
    records = [make_record(make_event(event_id=f"e{i}"), i) for i in range(5)]
    records.append(make_record(make_event(event_id="bad", event_type="like"), 5))
    first = lake.clean(records)
    again = lake.clean(records)
    assert (first.clean, first.quarantined_total) == (5, 1)
    assert (again.clean, again.duplicates) == (0, 5)
    assert again.quarantined == {"schema_violation": 1}  # not settled: judged again
    assert lake.curated_ids() == {f"e{i}": 1 for i in range(5)}


def test_a_settled_quarantine_verdict_makes_a_resend_a_duplicate(lake, make_event, make_record):
    lake.clean([make_record(make_event(event_id="old", timestamp=_day(60)), 0)])
    outcome = lake.clean([make_record(make_event(event_id="old"), 1)])  # same id, now in the window
    assert outcome.duplicates == 1
    assert lake.curated_ids() == {}


def test_a_fixed_resend_of_a_schema_violation_is_accepted(lake, make_event, make_record):
    first = lake.clean([make_record(make_event(event_id="fixme", value=9), 0)])  # rating 9: out of range
    second = lake.clean([make_record(make_event(event_id="fixme", value=4), 1)])
    assert first.quarantined == {"schema_violation": 1}
    assert (second.clean, second.duplicates) == (1, 0)


def test_an_intent_whose_object_was_never_written_is_not_a_duplicate(lake, make_event, make_record):
    lake.dedup.remember({"a": CURATED_EVENTS.object_key(_date(0), "crashed-before-writing.parquet")})
    outcome = lake.clean([make_record(make_event(event_id="a"), 0)])
    assert (outcome.clean, outcome.duplicates) == (1, 0)


class IntentCheckingLake(MemoryLake):
    """Records, at each write, whether every curated row's intent was already in the dedup store."""

    def __init__(self, dedup: MemoryDedupStore) -> None:
        super().__init__()
        self.dedup = dedup
        self.checked: list[bool] = []

    def write(self, table: LakeTable, partition: str, name: str, rows: pa.Table) -> str:
        key = table.object_key(partition, name)
        if table is CURATED_EVENTS:
            known = self.dedup.lookup(rows["event_id"].to_pylist())
            self.checked.append(all(known.get(i) == key for i in rows["event_id"].to_pylist()))
        return super().write(table, partition, name, rows)


def test_intents_are_recorded_before_objects_are_written(make_event, make_record):
    dedup = MemoryDedupStore()
    lake = IntentCheckingLake(dedup)
    service = CleanerService(dedup, MemoryStateStore(), lake, COLD, clock=lambda: NOW)
    service.clean([make_record(make_event(event_id=f"e{i}", timestamp=_day(i % 3)), i) for i in range(6)])
    assert lake.checked == [True, True, True]


class MeetingLake(MemoryLake):
    """A lake whose writes wait, at a barrier, for `parties` writes to be under way at once."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    def write(self, table: LakeTable, partition: str, name: str, rows: pa.Table) -> str:
        self.barrier.wait()
        return super().write(table, partition, name, rows)


def test_a_batch_writes_its_objects_at_once(make_event, make_record):
    """Three days and the quarantine: four objects, each written while the other three are too (one at a
    time, the first would wait at the barrier until it broke)."""
    lake = MeetingLake(parties=4)
    service = CleanerService(MemoryDedupStore(), MemoryStateStore(), lake, COLD, clock=lambda: NOW, write_threads=4)
    records = [make_record(make_event(event_id=f"e{i}", timestamp=_day(i % 3)), i) for i in range(6)]
    outcome = service.clean([*records, make_record(make_event(event_id="bad", event_type="like"), 6)])
    assert (outcome.clean, outcome.quarantined_total, outcome.write_errors) == (6, 1, [])
    assert len(lake.objects) == 4


class ProcessKilled(BaseException):
    """What a crash looks like to the code under it: nothing catches it."""


class DyingLake(MemoryLake):
    """The first write kills the process; the others take their time."""

    def write(self, table: LakeTable, partition: str, name: str, rows: pa.Table) -> str:
        if partition == _date(2):
            raise ProcessKilled
        time.sleep(0.2)
        return super().write(table, partition, name, rows)


def test_a_crash_in_one_write_ends_the_batch_once_the_other_writes_have_ended(make_event, make_record):
    """Not a write error that is reported and retried: the batch stops as a crash, and its redelivery
    decides. No write of the batch lands later, while the redelivery looks for its rows."""
    lake = DyingLake()
    service = CleanerService(MemoryDedupStore(), MemoryStateStore(), lake, COLD, clock=lambda: NOW, write_threads=4)
    records = [make_record(make_event(event_id=f"e{i}", timestamp=_day(i % 3)), i) for i in range(6)]
    with pytest.raises(ProcessKilled):
        service.clean([*records, make_record(make_event(event_id="bad", event_type="like"), 6)])
    assert len(lake.objects) == 3  # two days and the quarantine, all there when the crash surfaced


def test_a_batch_is_named_by_its_records(make_event, make_record):
    """The same records, the same objects; records split differently between batches, other objects."""
    def names(records: list[SourceRecord]) -> set[str]:
        lake = MemoryLake()
        CleanerService(MemoryDedupStore(), MemoryStateStore(), lake, COLD, clock=lambda: NOW).clean(records)
        return {key.rsplit("/", 1)[1] for key in lake.objects}

    records = [make_record(make_event(event_id=f"e{i}"), i) for i in range(4)]
    assert names(records) == names(list(records))
    assert names(records) != names(records[:3])
    moved = [SourceRecord(r.data, r.source[:-1], r.arrival) for r in records[:1]] + [
        SourceRecord(records[1].data, records[0].source[-1] + records[1].source, records[1].arrival)] + records[2:]
    assert "".join(r.source for r in moved) == "".join(r.source for r in records)
    assert names(moved) != names(records)


def test_curated_objects_compress_what_snappy_can_and_keep_statistics_where_queries_filter(
        lake, make_event, make_record):
    lake.clean([make_record(make_event(event_id=f"{i:08x}-4c1e-9a7b-{i:012x}", user_id=f"u{i % 3}"), i)
                for i in range(50)])
    (data,) = [v for k, v in lake.lake.objects.items() if k.startswith("curated/")]
    row_group = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0)
    column = {row_group.column(i).path_in_schema: row_group.column(i) for i in range(row_group.num_columns)}
    assert column["event_id"].compression == "UNCOMPRESSED"  # random ids: nothing for snappy to find
    assert {column[name].compression for name in ("user_id", "value", "event_time", "source")} == {"SNAPPY"}
    assert column["user_id"].is_stats_set and column["event_time"].is_stats_set
    assert not column["event_id"].is_stats_set
    assert "RLE_DICTIONARY" in column["event_type"].encodings


# --- partial failures -------------------------------------------------------------------------

def _three_day_batch(make_event, make_record) -> list[SourceRecord]:
    records = [make_record(make_event(event_id=f"e{i}", timestamp=_day(i % 3)), i) for i in range(9)]
    records.append(make_record(make_event(event_id="e9", event_type="like"), 9))
    records.append(make_record(make_event(event_id="e10", timestamp=_day(90)), 10))
    return records


def test_a_failed_partition_reports_exactly_its_records(lake, make_event, make_record):
    records = _three_day_batch(make_event, make_record)
    lake.lake.fail_partitions = {_date(1)}
    outcome = lake.clean(records)
    expected = [records[i].source for i in (1, 4, 7)]
    assert outcome.failed_sources == expected
    assert outcome.partial_failure_response() == {
        "batchItemFailures": [{"itemIdentifier": s.split(":", 1)[1]} for s in expected]
    }
    assert outcome.clean == 6
    assert outcome.quarantined == {"schema_violation": 1, "too_old": 1}
    assert any(_date(1) in error for error in outcome.write_errors)
    assert lake.state.state.values == {}  # nothing learned from a batch that will be redelivered


def test_redelivering_the_whole_batch_after_a_failure_loses_and_duplicates_nothing(lake, make_event, make_record):
    records = _three_day_batch(make_event, make_record)
    lake.lake.fail_partitions = {_date(1)}
    lake.clean(records)
    lake.lake.fail_partitions = set()
    outcome = lake.clean(records)
    assert outcome.failed_sources == []
    assert outcome.clean == 3
    assert lake.curated_ids() == {f"e{i}": 1 for i in range(9)}
    assert sorted(lake.curated()["source"].to_pylist()) == sorted(r.source for r in records[:9])
    assert lake.state.state.values["rating"].n == 3  # learned once, from what the retry wrote


def test_redelivering_from_the_first_failed_record_loses_and_duplicates_nothing(lake, make_event, make_record):
    records = _three_day_batch(make_event, make_record)
    lake.lake.fail_partitions = {_date(1)}
    outcome = lake.clean(records)
    lake.lake.fail_partitions = set()
    first = [r.source for r in records].index(outcome.failed_sources[0])
    retry = lake.clean(records[first:])
    assert retry.failed_sources == []
    assert lake.curated_ids() == {f"e{i}": 1 for i in range(9)}


def test_redelivering_a_batch_keeps_the_first_quarantine_verdicts(lake, make_event, make_record):
    """The redelivery's 'duplicate' rows go beside the first verdicts, not over them."""
    records = _three_day_batch(make_event, make_record)
    lake.lake.fail_partitions = {_date(1)}
    lake.clean(records)
    lake.lake.fail_partitions = set()
    lake.clean(records)
    verdicts = lake.verdicts()
    assert sorted(verdicts[records[10].source]) == ["duplicate", "too_old"]
    assert verdicts[records[9].source] == ["schema_violation", "schema_violation"]  # judged on each delivery
    assert sorted(verdicts[records[0].source]) == ["curated", "duplicate"]


def test_a_retried_quarantine_write_with_the_same_verdicts_rewrites_the_same_object(lake, make_event,
                                                                                    make_record):
    records = [make_record(b"{broken", 0), make_record(make_event(event_id="late", timestamp=_day(40)), 1)]
    lake.clean(records)
    objects = set(lake.lake.objects)
    lake.dedup.keys.clear()  # as if the first attempt had crashed before its intents were durable
    lake.clean(records)
    assert set(lake.lake.objects) == objects
    assert lake.quarantine().num_rows == 2


def test_a_failed_quarantine_write_reports_the_quarantined_records(lake, make_event, make_record):
    records = [make_record(make_event(event_id="ok", timestamp=_day(2)), 0),
               make_record(b"{broken", 1), make_record(make_event(event_id="late", timestamp=_day(40)), 2)]
    lake.lake.fail_partitions = {TODAY}  # the quarantine partition is the processing date
    outcome = lake.clean(records)
    assert outcome.failed_sources == [records[1].source, records[2].source]
    assert outcome.clean == 1
    lake.lake.fail_partitions = set()
    retry = lake.clean(records[1:])
    assert retry.quarantined == {"malformed_json": 1, "too_old": 1}


def test_no_failure_means_an_empty_failure_list():
    assert BatchOutcome().partial_failure_response() == {"batchItemFailures": []}


# --- state and bookkeeping --------------------------------------------------------------------

def test_a_successful_batch_merges_what_it_learned(lake, make_event, make_record):
    records = [make_record(make_event(event_id=f"c{i}", event_type="click", value=i + 1,
                                      context={"device": "tv"}), i) for i in range(4)]
    records.append(make_record(make_event(event_id="c9", event_type="click", value=None, context={}), 4))
    outcome = lake.clean(records)
    assert outcome.imputed == 1
    assert lake.state.state.values["click"].n == 4  # the imputed value is not evidence
    assert lake.state.state.devices["click"] == {"tv": 4}
    lake.clean([make_record(make_event(event_id="c10", event_type="click", value=7), 5)])
    assert lake.state.state.values["click"].n == 5


def test_warm_statistics_from_the_state_store_drive_the_outlier_filter(make_event, make_record):
    lake = Lake(CleaningRules(min_samples=50))
    raw = np.arange(1.0, 101.0)
    lake.state.state = CleanerState(values={"purchase": StreamStats.of(raw, np.log1p(raw))})
    outcome = lake.clean([make_record(make_event(event_id="p1", event_type="purchase", value=20), 0),
                          make_record(make_event(event_id="p2", event_type="purchase", value=900_000), 1)])
    assert (outcome.clean, outcome.quarantined) == (1, {"outlier": 1})
    assert lake.state.state.values["purchase"].n == 101


def test_quarantine_rows_keep_what_could_be_read(lake, make_event, make_record, received_at):
    records = [make_record(make_event(event_id="v1", schema_version="2.0"), 0),
               make_record(b"\xffnot utf-8", 1, arrival=received_at + timedelta(seconds=2))]
    lake.clean(records)
    rows = {r["source"]: r for r in lake.quarantine().to_pylist()}
    unknown = rows[records[0].source]
    assert (unknown["reason"], unknown["event_id"], unknown["schema_version"]) == ("unknown_version", "v1", "2.0")
    assert unknown["payload"] == records[0].data.decode()
    binary = rows[records[1].source]
    assert binary["reason"] == "not_utf8"
    assert binary["payload"].startswith("base64:")
    assert binary["received_at"] == received_at + timedelta(seconds=2)  # the stream's arrival time
    assert binary["quarantined_at"] == NOW
    assert all(r["detail"] for r in rows.values())


def test_curated_rows_name_their_source_record(lake, make_event, make_record):
    records = [make_record(make_event(event_id=f"e{i}"), i) for i in range(3)]
    lake.clean(records)
    by_id = {r["event_id"]: r["source"] for r in lake.curated().to_pylist()}
    assert by_id == {f"e{i}": records[i].source for i in range(3)}


def test_an_empty_batch_is_a_no_op(lake):
    outcome = lake.clean([])
    assert outcome == BatchOutcome()
    assert lake.lake.objects == {}


# --- the online merge, computed while the batch's objects are written ----------------------------------

def _profiled(records: list[SourceRecord], write_threads: int, fail: set[str] | None = None,
              lake: MemoryLake | None = None) -> tuple[BatchOutcome, MemoryOnlineStore, MemoryLake]:
    online, lake = MemoryOnlineStore(), lake or MemoryLake()
    lake.fail_partitions = fail or set()
    service = CleanerService(MemoryDedupStore(), MemoryStateStore(), lake, COLD, clock=lambda: NOW, online=online,
                             write_threads=write_threads)
    return service.clean(records), online, lake


@pytest.mark.parametrize("write_threads", [1, 4])
def test_the_profiles_take_only_the_rows_of_the_event_days_that_were_written(write_threads, make_event, make_record):
    events = [make_event(event_id=f"e{i}", user_id=f"u{i % 2}", item_id=f"i{i}", timestamp=_day(i % 3))
              for i in range(9)]
    outcome, online, _ = _profiled([make_record(e, i) for i, e in enumerate(events)], write_threads, {_date(1)})
    assert outcome.clean == 6 and outcome.profiles_updated == 2
    assert sorted(chain.from_iterable(online.items[u]["doc"]["items"] for u in ("u0", "u1"))) == [
        f"i{i}" for i in (0, 2, 3, 5, 6, 8)]
    # as if the failed day's records had not been in the batch
    kept = [i for i in range(9) if i % 3 != 1]
    _, alone, _ = _profiled([make_record(events[i], i) for i in kept], write_threads)
    assert {u: item["doc"] for u, item in online.items.items()} == {u: item["doc"] for u, item in alone.items.items()}


def test_a_merge_that_fails_is_reported_and_the_rows_are_still_committed(make_event, make_record, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("no merge")

    monkeypatch.setattr(ProfileMerge, "of", broken)
    outcome, online, lake = _profiled([make_record(make_event(event_id=f"e{i}", timestamp=_day(i % 2)), i)
                                       for i in range(4)], write_threads=4)
    assert outcome.clean == 4 and outcome.profiles_updated == 0 and not outcome.failed_sources
    assert outcome.write_errors == ["online store: ValueError('no merge')"]
    assert len([k for k in lake.objects if k.startswith("curated/")]) == 2 and online.items == {}


class _SlowLake(MemoryLake):
    """Writes that take a while, noting whether the cycle collector ran meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.collector: list[bool] = []

    def write(self, table, partition, name, rows):
        time.sleep(0.05)
        self.collector.append(gc.isenabled())
        return super().write(table, partition, name, rows)


def test_a_crash_while_merging_is_raised_only_once_every_object_is_written(make_event, make_record, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ProfileMerge, "of", crash)
    lake = _SlowLake()
    with pytest.raises(KeyboardInterrupt):
        _profiled([make_record(make_event(event_id=f"e{i}", timestamp=_day(i % 3)), i) for i in range(6)],
                  write_threads=4, lake=lake)
    assert len([k for k in lake.objects if k.startswith("curated/")]) == 3


def test_the_cycle_collector_is_held_off_during_a_batch_and_left_as_it_was_found(make_event, make_record):
    records = [make_record(make_event(event_id=f"e{i}", timestamp=_day(i % 2)), i) for i in range(4)]
    assert gc.isenabled()
    _, _, lake = _profiled(records, write_threads=4, lake=_SlowLake())
    assert lake.collector == [False, False] and gc.isenabled()
    gc.disable()
    try:
        _profiled(records, write_threads=1, lake=_SlowLake())
        assert not gc.isenabled()
    finally:
        gc.enable()
