"""Erasing a user: every row and record that names them, in every store, with an audit record.

`DELETE /users/{id}` records the request, removes the online profile and leaves a tombstone (their
later events are kept out of training and the online store, like an opt-out), then hands the lake to
the eraser: every Parquet object of the curated, quarantine and modelled tables that holds the user is
rewritten without their rows (objects are found by their user_id min/max statistics first), and every
raw archive object is rewritten without their records. The audit record says what was rewritten and
when the erasure completed.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from feedbackloop.lake import TABLES, LakeTable

PENDING, COMPLETE = "pending", "complete"


class ErasureLog(Protocol):
    def get(self, user_id: str) -> dict[str, Any] | None: ...

    def put(self, record: dict[str, Any]) -> None: ...


@dataclass
class LakeErasure:
    """What erasing one user rewrote."""

    objects_scanned: int = 0
    objects_rewritten: int = 0
    rows_removed: dict[str, int] = field(default_factory=dict)  # table -> rows
    raw_records_removed: int = 0


def request(log: ErasureLog, user_id: str, now: datetime | None = None) -> dict[str, Any]:
    record = {"user_id": user_id, "status": PENDING,
              "requested_at": (now or datetime.now(UTC)).isoformat(), "steps": {}}
    log.put(record)
    return record


def complete(log: ErasureLog, user_id: str, steps: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    record = (log.get(user_id) or {"user_id": user_id}) | {
        "status": COMPLETE, "completed_at": (now or datetime.now(UTC)).isoformat(), "steps": steps}
    log.put(record)
    return record


def erase_from_lake(filesystem: fs.FileSystem, folder_of: Callable[[LakeTable], str], raw_folder: str,
                    user_id: str, tables: Iterable[LakeTable] = TABLES) -> LakeErasure:
    """Rewrite every object of the lake tables and the raw archive that holds the user's rows."""
    result = LakeErasure()
    for table in tables:
        removed = 0
        for info in _files(filesystem, folder_of(table)):
            if not info.path.endswith(".parquet"):
                continue
            result.objects_scanned += 1
            removed_here = _rewrite_parquet(filesystem, info.path, table, user_id)
            if removed_here:
                result.objects_rewritten += 1
                removed += removed_here
        result.rows_removed[table.name] = removed
    for info in _files(filesystem, raw_folder):
        result.objects_scanned += 1
        removed_here = _rewrite_raw(filesystem, info.path, user_id)
        if removed_here:
            result.objects_rewritten += 1
            result.raw_records_removed += removed_here
    return result


def _files(filesystem: fs.FileSystem, folder: str) -> list[fs.FileInfo]:
    selector = fs.FileSelector(folder, recursive=True, allow_not_found=True)
    return [f for f in filesystem.get_file_info(selector)
            if f.type == fs.FileType.File and not f.base_name.startswith("_")]


def _may_hold(metadata: pq.FileMetaData, user_id: str) -> bool:
    """False when the user_id statistics of every row group exclude the user."""
    index = metadata.schema.to_arrow_schema().get_field_index("user_id")
    if index < 0:
        return True
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max or stats.min <= user_id <= stats.max:
            return True
    return False


def _rewrite_parquet(filesystem: fs.FileSystem, path: str, table: LakeTable, user_id: str) -> int:
    with filesystem.open_input_file(path) as source:
        parquet = pq.ParquetFile(source)
        if not _may_hold(parquet.metadata, user_id):
            return 0
        rows = parquet.read()
    names = rows.column_names
    mine = pc.equal(rows["user_id"], user_id) if "user_id" in names else pa.repeat(False, rows.num_rows)
    if "payload" in names:  # the quarantine keeps the record as received
        mine = pc.or_(pc.fill_null(mine, False), pc.fill_null(pc.match_substring(rows["payload"],
                                                                                 json.dumps(user_id)), False))
    mine = pc.fill_null(mine, False)
    removed = pc.sum(mine).as_py() or 0
    if removed:
        kept = rows.filter(pc.invert(mine))
        with filesystem.open_output_stream(path) as sink:
            sink.write(pa.py_buffer(table.parquet(kept.select([c.name for c in table.columns]))))
    return removed


def _rewrite_raw(filesystem: fs.FileSystem, path: str, user_id: str) -> int:
    with filesystem.open_input_stream(path) as source:
        data = source.read()
    compressed = data[:2] == b"\x1f\x8b"  # gzip's magic number, as replay reads the archive
    lines = (gzip.decompress(data) if compressed else data).splitlines(keepends=True)
    kept = [line for line in lines if not _names_user(line, user_id)]
    removed = len(lines) - len(kept)
    if removed:
        body = b"".join(kept)
        with filesystem.open_output_stream(path) as sink:
            sink.write(gzip.compress(body) if compressed else body)
    return removed


def _names_user(line: bytes, user_id: str) -> bool:
    if user_id.encode() not in line:
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return True  # unreadable but naming the user: erase it too
    event = record.get("event") if isinstance(record, dict) else None
    return not isinstance(event, dict) or event.get("user_id") == user_id


def raw_record_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    """Gzip JSON lines as the archive holds them (for tests)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as out:
        for record in records:
            out.write(json.dumps(record).encode() + b"\n")
    return buffer.getvalue()
