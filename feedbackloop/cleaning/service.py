"""The cleaner as a service over its ports: what the Lambda handler and the local poller call."""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedbackloop.cleaning.clean import CleaningRules, clean_events
from feedbackloop.cleaning.decode import DecodedBatch, SourceRecord, SourceRecords, decode_batch, one_array
from feedbackloop.examination import preference_rows
from feedbackloop.item_counters import ItemCounterStore, batch_additions
from feedbackloop.lake import CURATED_EVENTS, QUARANTINE, LakeTable
from feedbackloop.names import QuarantineReason
from feedbackloop.online import ProfileMerge, UserProfile
from feedbackloop.ports import DedupStore, LakeWriter, OnlineStore, StateStore

_REDELIVERY_IS_DUPLICATE = frozenset(
    {QuarantineReason.OUTLIER.value, QuarantineReason.TOO_OLD.value, QuarantineReason.FUTURE.value,
     QuarantineReason.ERASED_USER.value}
)


_T = TypeVar("_T")


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """CPython's cycle collector held off for a batch. A batch allocates tens of thousands of short-lived
    containers (decoded values, profile columns) and makes next to no reference cycles; reference counting
    frees them as it goes. Left on, the collector would run dozens of young collections per batch, and
    every so often a full one over the whole heap of a warm process (tens of milliseconds). It resumes
    after the batch, which its next collection covers."""
    if not gc.isenabled():  # the caller holds it off already
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@functools.cache
def _lake_writers(threads: int) -> ThreadPoolExecutor:
    """One pool per size for the process, as a warm Lambda container keeps it: no threads per batch."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lake-writer")


@dataclass(frozen=True, slots=True)
class _Write:
    """One Parquet object of a batch."""

    table: LakeTable
    partition: str
    name: str
    rows: pa.Table


class ConservationError(AssertionError):
    """records in != clean + quarantined + duplicates + to retry: a bug, never shipped silently. It carries
    the batch's outcome, so that the handler reports the gap (the ConservationGap alarm's metric) before
    the batch fails and is retried."""

    def __init__(self, outcome: BatchOutcome) -> None:
        self.outcome = outcome
        self.gap = outcome.conservation_gap
        super().__init__(
            f"in {outcome.records_in} != clean {outcome.clean} + quarantined {outcome.quarantined_total}"
            f" + duplicates {outcome.duplicates} + to retry {len(outcome.failed_sources)} (gap {self.gap})"
        )


@dataclass
class BatchOutcome:
    records_in: int = 0
    clean: int = 0
    duplicates: int = 0
    imputed: int = 0
    quarantined: Counter = field(default_factory=Counter)  # reason -> count, duplicates excluded
    # "<shard>:<seq>" of records whose rows could not be written: not counted above, to be retried
    failed_sources: list[str] = field(default_factory=list)
    write_errors: list[str] = field(default_factory=list)
    fast_path: int = 0
    not_personalized: int = 0  # clean rows of users who turned personalization off
    profiles_updated: int = 0  # online profiles the batch's clean rows were merged into
    item_counters_updated: int = 0  # items whose recent counts the batch added to

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def conservation_gap(self) -> int:
        """Records in that are neither clean, quarantined, duplicates nor to be retried: 0 unless a bug
        lost (negative: invented) some."""
        return self.records_in - self.clean - self.quarantined_total - self.duplicates - len(self.failed_sources)

    def partial_failure_response(self) -> dict:
        """Lambda's ReportBatchItemFailures shape."""
        return {"batchItemFailures": [{"itemIdentifier": s.split(":", 1)[1]} for s in self.failed_sources]}


class CleanerService:
    def __init__(
        self,
        dedup: DedupStore,
        state: StateStore,
        lake: LakeWriter,
        rules: CleaningRules,
        clock: Callable[[], datetime],
        online: OnlineStore | None = None,
        write_threads: int = 1,
        item_counters: ItemCounterStore | None = None,
    ) -> None:
        """`write_threads`: how many of a batch's objects (its event days and the quarantine) are written
        at once."""
        self._dedup = dedup
        self._state = state
        self._lake = lake
        self._rules = rules
        self._clock = clock
        self._online = online
        self._write_threads = write_threads
        self._item_counters = item_counters

    def clean(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        with _cyclic_gc_paused():
            return self._clean(records)

    def _clean(self, records: Sequence[SourceRecord]) -> BatchOutcome:
        now = self._clock()
        records = SourceRecords.of(records)
        outcome = BatchOutcome(records_in=len(records))
        if not records:
            return outcome
        sources = pa.array(records.sources, type=pa.string())
        batch_name = _batch_name(sources)
        decoded = decode_batch(records)
        outcome.fast_path = decoded.fast_rows
        duplicate, event_ids, committed = self._duplicates(decoded.valid)
        valid_rows = decoded.valid["record_index"].to_numpy()  # the record of each valid row, ascending
        duplicate_rows = valid_rows[duplicate]
        duplicate_detail = ["event_id already committed" if c else "event_id repeated earlier in this batch"
                            for c in committed[duplicate]]

        result = clean_events(decoded.valid, self._state.load(), now, self._rules, settled=duplicate)
        curated = result.curated.set_column(
            result.curated.schema.get_field_index("source"), "source",
            sources.take(result.curated["record_index"]),
        )
        profiles: dict[str, UserProfile] = {}
        erased = _Erased.none()
        if self._online is not None and curated.num_rows:
            # preferences decide before anything is written: an erased user's rows from before the
            # request are quarantined (one lookup: the profiles, tombstones included), an opted-out
            # user's rows say so
            profiles = self._online.load(pc.unique(curated["user_id"]).to_pylist())
            erased = _Erased.of(curated, profiles)
            if len(erased.rows):
                curated = curated.filter(pc.invert(pa.array(erased.mask)))
            opted_out = [u for u, p in profiles.items() if not p.personalization]
            if opted_out:
                consenting = pc.invert(pc.is_in(curated["user_id"], pa.array(opted_out, pa.string())))
                curated = curated.set_column(curated.schema.get_field_index("personalized"), "personalized",
                                             consenting)
                outcome.not_personalized = curated.num_rows - pc.sum(consenting).as_py()

        quarantine = self._quarantine_rows(records, sources, decoded, result.quarantined, duplicate_rows,
                                           duplicate_detail, now, erased)

        # Intent first: each id points at the object that will hold it. A crash before that object
        # exists makes a redelivery write it again; a crash after makes the redelivery a duplicate.
        partitions = _by_partition(curated, CURATED_EVENTS.partition.name)
        intents: dict[str, str] = {}
        for day, rows in partitions.items():
            ids = event_ids[np.searchsorted(valid_rows, rows["record_index"].to_numpy())]
            intents.update(zip(ids.tolist(), repeat(CURATED_EVENTS.object_key(day, batch_name))))
        # Named by its verdicts too: a redelivery that finds the rows settled writes its 'duplicate'
        # rows beside the first verdicts instead of over them.
        quarantine_name = _verdict_name(batch_name, quarantine)
        quarantine_key = QUARANTINE.object_key(now.strftime("%Y-%m-%d"), quarantine_name)
        # rows the cleaning rules quarantined are settled too; a schema violation is not: the
        # producer may fix it and resend the same id
        for event_id, reason in zip(quarantine["event_id"].to_pylist(), quarantine["reason"].to_pylist(),
                                    strict=True):
            if event_id and reason in _REDELIVERY_IS_DUPLICATE:
                intents.setdefault(event_id, quarantine_key)
        self._dedup.remember(intents)

        writes = [_Write(CURATED_EVENTS, day, batch_name, rows) for day, rows in partitions.items()]
        if quarantine.num_rows:
            writes.append(_Write(QUARANTINE, now.strftime("%Y-%m-%d"), quarantine_name, quarantine))
        curated_rows = [write.rows for write in writes if write.table is CURATED_EVENTS]

        def merge_profiles() -> ProfileMerge | Exception | None:
            """The profiles with every curated row merged in, computed while the objects are written
            (the S3 PUTs wait on the network, Parquet encodes outside the GIL); saved only once the rows
            are committed."""
            if not (profiles and curated_rows):
                return None
            try:
                return ProfileMerge.of(profiles, preference_rows(pa.concat_tables(curated_rows)), now.timestamp())
            except Exception as error:  # noqa: BLE001 - reported below, as a failed save
                return error

        errors, merge = self._write_all(writes, meanwhile=merge_profiles)
        failed: list[np.ndarray] = []
        written: list[pa.Table] = []
        for write, error in zip(writes, errors, strict=True):
            if error is not None:
                outcome.write_errors.append(f"{write.table.name}/{write.partition}: {error!r}")
                failed.append(write.rows["record_index"].to_numpy())
            elif write.table is CURATED_EVENTS:
                outcome.clean += write.rows.num_rows
                written.append(write.rows)
            else:
                reasons = Counter(write.rows["reason"].to_pylist())
                outcome.duplicates = reasons.pop(QuarantineReason.DUPLICATE.value, 0)
                outcome.quarantined = reasons
        if profiles and written:
            # after the rows are committed: a retried record is a duplicate then, never merged twice
            # (a failure here loses only the online update; training still sees the rows)
            try:
                if len(written) < len(curated_rows):  # an event day failed: merge only the committed rows
                    merge = ProfileMerge.of(profiles, preference_rows(pa.concat_tables(written)), now.timestamp())
                if isinstance(merge, Exception):
                    raise merge
                outcome.profiles_updated = merge.save(self._online)
            except Exception as error:  # noqa: BLE001 - the online store is a cache of the lake
                outcome.write_errors.append(f"online store: {error!r}")
        if self._item_counters is not None and written:
            # after the rows are committed, as the profiles: a retried record is a duplicate then
            try:
                additions = batch_additions(pa.concat_tables(written), self._rules.examination)
                self._item_counters.add(additions, now.timestamp())
                outcome.item_counters_updated = len(additions)
            except Exception as error:  # noqa: BLE001 - recent counts are a cache of the lake too
                outcome.write_errors.append(f"item counters: {error!r}")
        if self._online is not None and written:
            # popularity before the first model: clean events per item (lost counts only blur a fallback)
            try:
                items = pa.concat_tables(written)["item_id"].value_counts()
                self._online.add_item_counts(dict(zip(items.field("values").to_pylist(),
                                                      items.field("counts").to_pylist(), strict=True)))
            except Exception as error:  # noqa: BLE001 - the online store is a cache of the lake
                outcome.write_errors.append(f"item counts: {error!r}")
        if failed:
            indexes = np.unique(np.concatenate(failed))
            outcome.failed_sources = [records.sources[i] for i in indexes]
        else:
            self._state.merge(result.learned)
        outcome.imputed = result.imputed

        if outcome.conservation_gap:
            raise ConservationError(outcome)
        return outcome

    def _write_all(self, writes: list[_Write], meanwhile: Callable[[], _T]) -> tuple[list[Exception | None], _T]:
        """Each object's write error, None where it was written, and what `meanwhile` returns, called while
        they are written. A batch's objects (its event days and the quarantine) are written at once: an S3
        PUT waits on the network, and Parquet encodes outside the GIL."""
        if not writes or self._write_threads <= 1:
            return list(map(self._write, writes)), meanwhile()
        futures = [_lake_writers(self._write_threads).submit(self._write, write) for write in writes]
        try:
            during = meanwhile()
        finally:
            # a crash in one write (a BaseException: nothing catches it), or in `meanwhile`, is raised once
            # every write has ended: no object of the batch lands after its redelivery has looked for it
            wait(futures)
        return [future.result() for future in futures], during

    def _write(self, write: _Write) -> Exception | None:
        try:
            self._lake.write(write.table, write.partition, write.name,
                             write.rows.select([c.name for c in write.table.columns]))
        except Exception as error:  # noqa: BLE001 - any storage failure means: retry these records
            return error
        return None

    def _duplicates(self, valid: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows whose id is already committed (its object exists) or repeated earlier in this
        batch; each row's id, as the strings the lookup hashed already; and the rows whose id is committed."""
        # each distinct id once (hashing the strings once), and per row the index of its id
        encoded = one_array(pc.dictionary_encode(valid["event_id"]))
        ids = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        duplicate = np.ones(len(codes), dtype=bool)  # every occurrence of an id after its first
        duplicate[np.unique(codes, return_index=True)[1]] = False
        seen = self._dedup.lookup(ids)
        committed = {key for key in set(seen.values()) if self._lake.exists(key)}
        committed_rows = np.zeros(len(codes), dtype=bool)
        if committed:
            committed_rows = np.array([seen.get(i) in committed for i in ids], dtype=bool)[codes]
            duplicate |= committed_rows
        return duplicate, np.array(ids, dtype=object)[codes], committed_rows

    def _quarantine_rows(self, records: SourceRecords, sources: pa.StringArray, decoded: DecodedBatch, cleaned,
                         duplicate_rows, duplicate_detail: list[str], now: datetime, erased: _Erased) -> pa.Table:
        """Quarantine rows: what the decoder refused, what the rules refused, duplicates, and erased users'
        events (without their payload: the quarantine keeps no more of an erased user than the row's identity)."""
        identity = ["event_id", "user_id", "event_type", "schema_version", "received_at"]
        # rows that passed decoding: their identity comes from the decoded columns, by position
        from_valid = np.concatenate([cleaned.record_index, duplicate_rows, erased.rows]).astype(np.int64)
        positions = np.searchsorted(decoded.valid["record_index"].to_numpy(), from_valid)
        parts = [decoded.valid.select(identity).take(positions)]
        # rows the decoder refused: what could be read of them
        rejected = decoded.rejected
        parts.append(pa.Table.from_pylist(
            [{name: _text_or_none((r.event or {}).get(name)) for name in identity[:-1]}
             | {"received_at": records.arrival(r.record_index)}
             for r in rejected],
            schema=parts[0].schema,
        ))
        index = np.concatenate([from_valid, np.array([r.record_index for r in rejected], dtype=np.int64)])
        reason = (cleaned.reason + [QuarantineReason.DUPLICATE.value] * len(duplicate_rows)
                  + [QuarantineReason.ERASED_USER.value] * len(erased.rows) + [r.reason.value for r in rejected])
        detail = (cleaned.detail + duplicate_detail + erased.detail
                  + [r.detail for r in rejected])
        table = pa.concat_tables(parts)
        withheld = set(erased.rows.tolist())
        columns = {name: table[name] for name in identity} | {
            "reason": pa.array(reason, type=pa.string()),
            "detail": pa.array(detail, type=pa.string()),
            "payload": pa.array([None if i in withheld else _payload_text(records.data[i]) for i in index.tolist()],
                                type=pa.string()),
            "source": sources.take(index),
            "quarantined_at": pa.array([now] * len(index), type=pa.timestamp("us", tz="UTC")),
            "record_index": pa.array(index),
        }
        return pa.table({f.name: columns[f.name] for f in _QUARANTINE_WITH_INDEX}, schema=_QUARANTINE_WITH_INDEX)


@dataclass(frozen=True)
class _Erased:
    """The curated rows of users whose erasure was requested after the event happened (a record read from
    the stream after the request): a mask over the rows, their records and each one's quarantine detail."""

    mask: np.ndarray
    rows: np.ndarray  # record_index of each, ascending with the mask
    detail: list[str]

    @classmethod
    def none(cls) -> _Erased:
        return cls(np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64), [])

    @classmethod
    def of(cls, curated: pa.Table, profiles: dict[str, UserProfile]) -> _Erased:
        """Events at or after the request are a new relationship's (ADR 0013): kept, as an opted-out user's
        until the user turns personalization on again."""
        tombstones = {u: p.erased_at for u, p in profiles.items() if p.erased_at is not None}
        if not tombstones:
            return cls(np.zeros(curated.num_rows, dtype=bool), np.zeros(0, dtype=np.int64), [])
        requested = pa.array([int(at * 1e6) for at in tombstones.values()], pa.int64()).cast(_UTC_MICROS)
        position = pc.index_in(curated["user_id"], value_set=pa.array(list(tombstones), pa.string()))
        before = pc.less(curated["event_time"], requested.take(position))
        mask = pc.fill_null(before, False).to_numpy(zero_copy_only=False)
        if not mask.any():
            return cls(mask, np.zeros(0, dtype=np.int64), [])
        rows = curated["record_index"].to_numpy()[mask]
        at = requested.take(position).filter(pa.array(mask)).to_pylist()
        return cls(mask, rows.astype(np.int64),
                   [f"the user's erasure was requested at {t.isoformat()}, after this event" for t in at])


_UTC_MICROS = pa.timestamp("us", tz="UTC")


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


_QUARANTINE_WITH_INDEX = pa.schema(list(QUARANTINE.arrow_schema) + [pa.field("record_index", pa.int64())])


def _by_partition(table: pa.Table, column: str) -> dict[str, pa.Table]:
    """The table's rows grouped by a low-cardinality column: one sort by code, then zero-copy slices."""
    encoded = one_array(pc.dictionary_encode(table[column]))
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    # a stream is mostly in time order: then the rows are grouped already and need no copy
    in_order = bool(np.all(np.diff(codes) >= 0))
    ordered = table if in_order else table.take(pa.array(np.argsort(codes, kind="stable")))
    counts = np.bincount(codes, minlength=len(encoded.dictionary))
    starts = np.cumsum(counts) - counts
    return {value: ordered.slice(start, count)
            for value, start, count in zip(encoded.dictionary.to_pylist(), starts.tolist(), counts.tolist(),
                                           strict=True) if count}


def _payload_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode("ascii")


def _verdict_name(batch_name: str, quarantine: pa.Table) -> str:
    verdicts = "\n".join(f"{i}:{r}" for i, r in zip(quarantine["record_index"].to_pylist(),
                                                     quarantine["reason"].to_pylist(), strict=True))
    return batch_name.replace(".parquet", f"-q{hashlib.sha256(verdicts.encode()).hexdigest()[:12]}.parquet")


def _batch_name(sources: pa.StringArray) -> str:
    """A name fixed by the records themselves (their "<shard>:<sequence number>"s), so a retried batch
    rewrites the same objects."""
    _, offsets, characters = sources.buffers()  # built here, so starting at 0; hashed as far as they are used
    ends = np.frombuffer(offsets, dtype=np.int32, count=len(sources) + 1)
    digest = hashlib.sha256(ends.tobytes())  # where each ends, so that "ab", "c" differs from "a", "bc"
    digest.update(memoryview(characters)[: ends[-1]])
    shard = sources[0].as_py().split(":", 1)[0]
    return f"{shard}-{digest.hexdigest()[:20]}.parquet"
