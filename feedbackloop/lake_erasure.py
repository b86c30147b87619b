"""The eraser's pass over the lake and the raw archive for a batch of users (see `feedbackloop.erasure`)."""

from __future__ import annotations

import functools
import gzip
import io
import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from feedbackloop.erasure import RAW_HOURS_AFTER_ARRIVAL, LakeErasure, NoncurrentVersions
from feedbackloop.lake import CLEANER_TABLES, TABLES, LakeTable
from feedbackloop.resources import RAW_ERROR_PREFIX, RAW_PREFIX


def erase_users(filesystem: fs.FileSystem, folder_of: Callable[[LakeTable], str], raw_root: str,
                user_ids: Iterable[str], tables: Iterable[LakeTable] = TABLES, *,
                versions: NoncurrentVersions | None = None,
                known_days: Callable[[str], set[str]] = lambda _: set(),
                remember_days: Callable[[str, set[str]], None] = lambda _u, _d: None) -> dict[str, LakeErasure]:
    """One pass for a batch of users; `raw_root` is the raw bucket ("<bucket>" or a directory)."""
    users = sorted(set(user_ids))
    tables = list(tables)
    results = {u: LakeErasure() for u in users}
    if not users:
        return results
    # 1. discovery: the arrival hours of the users' records, saved before anything is rewritten
    days = {u: set(known_days(u)) for u in users}
    for table in tables:
        if table.name not in {t.name for t in CLEANER_TABLES}:
            continue
        for info in _parquet_files(filesystem, folder_of(table)):
            for user, found in _arrival_days(filesystem, info.path, table, users).items():
                days[user] |= found
    for user in users:
        remember_days(user, days[user])
        results[user].raw_hours = sorted(days[user])
    scanned = rewritten = 0
    rewritten_raw: list[str] = []
    # 2. the lake tables
    for table in tables:
        for info in _parquet_files(filesystem, folder_of(table)):
            scanned += 1
            removed = _rewrite_parquet(filesystem, info.path, table, users)
            if any(removed.values()):
                rewritten += 1
            for user, count in removed.items():
                results[user].rows_removed[table.name] = results[user].rows_removed.get(table.name, 0) + count
        for user in users:
            results[user].rows_removed.setdefault(table.name, 0)
    # 3. the raw archive: the users' hours, and every failed delivery
    raw_folders = sorted({f"{raw_root}/{RAW_PREFIX}{h.replace('-', '/').replace('T', '/')}"
                          for hours in days.values() for h in hours})
    for folder, errors in [*((f, False) for f in raw_folders), (f"{raw_root}/{RAW_ERROR_PREFIX.rstrip('/')}", True)]:
        for info in _files(filesystem, folder):
            scanned += 1
            removed = _rewrite_raw(filesystem, info.path, users)
            if any(removed.values()):
                rewritten += 1
                rewritten_raw.append(info.path)
            for user, count in removed.items():
                if errors:
                    results[user].raw_error_records_removed += count
                else:
                    results[user].raw_records_removed += count
    # 4. the versioned raw bucket keeps what was overwritten: delete those versions
    purged = sum(versions.purge(path) for path in rewritten_raw) if versions is not None else 0
    for result in results.values():
        result.objects_scanned, result.objects_rewritten = scanned, rewritten
        result.noncurrent_versions_removed = purged
    return results


def erase_from_lake(filesystem: fs.FileSystem, folder_of: Callable[[LakeTable], str], raw_root: str,
                    user_id: str, tables: Iterable[LakeTable] = TABLES) -> LakeErasure:
    """One user's pass (`erase_users` with a batch of one)."""
    return erase_users(filesystem, folder_of, raw_root, [user_id], tables)[user_id]


def _arrival_days(filesystem: fs.FileSystem, path: str, table: LakeTable, users: list[str]) -> dict[str, set[str]]:
    with filesystem.open_input_file(path) as source:
        parquet = pq.ParquetFile(source)
        if not _may_hold(parquet.metadata, users):
            return {}
        names = parquet.schema_arrow.names
        columns = [c for c in ("user_id", "received_at", "payload") if c in names]
        rows = parquet.read(columns=columns)
    partition = _partition_value(path, table)
    found: dict[str, set[str]] = {}
    for user, mask in _masks(rows, users).items():
        if not pc.any(mask).as_py():
            continue
        arrived = ({t.replace(minute=0, second=0, microsecond=0) for t in rows["received_at"].filter(mask).to_pylist()
                    if t is not None} if "received_at" in columns else set())
        if not arrived and partition is not None:  # the whole day it was quarantined
            day = datetime.fromisoformat(partition)
            arrived = {day + timedelta(hours=h) for h in range(24)}
        found[user] = {(t + timedelta(hours=k)).strftime("%Y-%m-%dT%H") for t in arrived
                       for k in range(RAW_HOURS_AFTER_ARRIVAL + 1)}
    return found


def _partition_value(path: str, table: LakeTable) -> str | None:
    marker = f"/{table.partition.name}="
    if marker not in path:
        return None
    return path.split(marker, 1)[1].split("/", 1)[0]


def _parquet_files(filesystem: fs.FileSystem, folder: str) -> list[fs.FileInfo]:
    return [f for f in _files(filesystem, folder) if f.path.endswith(".parquet")]


def _files(filesystem: fs.FileSystem, folder: str) -> list[fs.FileInfo]:
    selector = fs.FileSelector(folder, recursive=True, allow_not_found=True)
    return [f for f in filesystem.get_file_info(selector)
            if f.type == fs.FileType.File and not f.base_name.startswith("_")]


def _may_hold(metadata: pq.FileMetaData, users: list[str]) -> bool:
    """False when the user_id statistics of every row group exclude every one of the users."""
    index = metadata.schema.to_arrow_schema().get_field_index("user_id")
    if index < 0:
        return True
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max or any(stats.min <= u <= stats.max for u in users):
            return True
    return False


def _masks(rows: pa.Table, users: list[str]) -> dict[str, pa.ChunkedArray]:
    names = rows.column_names
    masks = {}
    for user in users:
        mine = (pc.equal(rows["user_id"], user) if "user_id" in names
                else pa.chunked_array([pa.repeat(False, rows.num_rows)]))
        mine = pc.fill_null(mine, False)
        if "payload" in names:  # the quarantine keeps the record as received
            mine = pc.or_(mine, pc.fill_null(pc.match_substring(rows["payload"], json.dumps(user)), False))
        masks[user] = mine
    return masks


def _rewrite_parquet(filesystem: fs.FileSystem, path: str, table: LakeTable, users: list[str]) -> dict[str, int]:
    with filesystem.open_input_file(path) as source:
        parquet = pq.ParquetFile(source)
        if not _may_hold(parquet.metadata, users):
            return {}
        rows = parquet.read()
    masks = _masks(rows, users)
    removed = {user: pc.sum(mask).as_py() or 0 for user, mask in masks.items()}
    if any(removed.values()):
        anyone = functools.reduce(pc.or_, masks.values())
        kept = rows.filter(pc.invert(anyone))
        with filesystem.open_output_stream(path) as sink:
            sink.write(pa.py_buffer(table.parquet(kept.select([c.name for c in table.columns]))))
    return removed


def _rewrite_raw(filesystem: fs.FileSystem, path: str, users: list[str]) -> dict[str, int]:
    with filesystem.open_input_stream(path) as source:
        data = source.read()
    compressed = data[:2] == b"\x1f\x8b"  # gzip's magic number, as replay reads the archive
    lines = (gzip.decompress(data) if compressed else data).splitlines(keepends=True)
    removed: dict[str, int] = {}
    kept = []
    for line in lines:
        user = _named_user(line, users)
        if user is None:
            kept.append(line)
        else:
            removed[user] = removed.get(user, 0) + 1
    if removed:
        body = b"".join(kept)
        with filesystem.open_output_stream(path) as sink:
            sink.write(gzip.compress(body) if compressed else body)
    return removed


def _named_user(line: bytes, users: list[str]) -> str | None:
    candidates = [u for u in users if u.encode() in line]
    if not candidates:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return candidates[0]  # unreadable but naming the user: erase it too
    event = record.get("event") if isinstance(record, dict) else None
    if not isinstance(event, dict):
        return candidates[0]
    return event.get("user_id") if event.get("user_id") in candidates else None


def raw_record_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    """Gzip JSON lines as the archive holds them (for tests)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as out:
        for record in records:
            out.write(json.dumps(record).encode() + b"\n")
    return buffer.getvalue()
