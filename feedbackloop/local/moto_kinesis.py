"""Two fixes to moto's in-memory Kinesis shard, for the local stand-in only.

moto's `Shard.put_record` copies every sequence number to find the last one, and `Shard.get_records`
scans the shard from its first record; both are O(records in the shard) per call, so a demo of half a
million events slows down quadratically. Neither is safe when a consumer reads while the API writes
("OrderedDict mutated during iteration"). moto numbers a shard's records 1, 2, 3, ..., so both calls
can go straight to the records they need, under one lock.
"""

from __future__ import annotations

import threading

from moto.kinesis.models import Record, Shard

_LOCK = threading.Lock()
_ORIGINAL_GET = Shard.get_records


def _last(shard: Shard) -> int:
    return shard.__dict__.get("_feedbackloop_last", 0)


def _put_record(self: Shard, partition_key: str, data: str, explicit_hash_key: str) -> str:
    with _LOCK:
        sequence_number = _get_max_sequence_number(self) + 1
        self.records[sequence_number] = Record(partition_key, data, sequence_number, explicit_hash_key)
        self.__dict__["_feedbackloop_last"] = sequence_number
        return str(sequence_number)


def _get_records(self: Shard, last_sequence_id: str, limit: int | None) -> tuple[list[Record], int, int]:
    with _LOCK:
        last = _last(self)
        if len(self.records) != last:  # records this patch did not number: moto's own scan
            return _ORIGINAL_GET(self, last_sequence_id, limit)
        start = int(last_sequence_id) + 1
        end = last if limit is None else min(last, start + limit - 1)
        results = [self.records[n] for n in range(start, end + 1)]
        if not results:
            return [], int(last_sequence_id), 0
        behind = self.records[last].created_at - results[-1].created_at
        return results, results[-1].sequence_number, int(behind * 1000)


def _get_max_sequence_number(self: Shard) -> int:
    return _last(self) if len(self.records) == _last(self) else max(self.records, default=0)


def install() -> None:
    Shard.put_record = _put_record
    Shard.get_records = _get_records
    Shard.get_max_sequence_number = _get_max_sequence_number
