"""The table jobs' engine on the embedded stand-in: the jobs' Trino SQL, transpiled by sqlglot, runs in
DuckDB over the lake's Parquet; results are written back as Parquet partitions (and, on the local S3
endpoint, registered in the local Glue catalog). `glue_jobs.build_tables` drives it exactly as it
drives Athena in AWS."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from pyarrow import fs
from sqlglot import exp

from feedbackloop import resources
from feedbackloop.lake import LakeTable
from feedbackloop.local.lake_reader import LakeLocation, dataset
from glue_jobs.build_tables import bookmark_key

_BY_NAME = {t.name: t for t in resources.LAKE_TABLES}
PART_NAME = "part-00000.parquet"  # one object per partition, so a rebuild overwrites rather than adds


class PartitionCatalog(Protocol):
    def add(self, table: LakeTable, values: Sequence[str]) -> None: ...

    def remove(self, table: LakeTable, values: Sequence[str]) -> None: ...


@lru_cache(maxsize=256)
def to_duckdb(sql: str) -> tuple[str, frozenset[str]]:
    """The SQL in DuckDB's dialect, and the tables it reads."""
    (tree,) = sqlglot.parse(sql, read="trino")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    tables = frozenset(t.name for t in tree.find_all(exp.Table) if t.name not in ctes)
    return tree.sql(dialect="duckdb"), tables


class DuckDBEngine:
    def __init__(self, location: LakeLocation, catalog: PartitionCatalog | None = None) -> None:
        self._location = location
        self._catalog = catalog
        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")

    def close(self) -> None:
        self._con.close()

    def _run(self, sql: str) -> duckdb.DuckDBPyRelation:
        query, tables = to_duckdb(sql)
        for name in tables:
            if name not in _BY_NAME:
                raise ValueError(f"the SQL reads {name!r}, which is not a lake table")
            self._con.register(name, dataset(self._location, _BY_NAME[name]))  # fresh: files change between queries
        return self._con.sql(query)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self._run(sql).fetchall()

    def replace(self, table: str, partitions: Sequence[str], select: str) -> None:
        spec = _BY_NAME[table]
        result = self._run(select).to_arrow_table()
        column = spec.partition.name
        values = result[column]
        unexpected = set(pc.unique(values).to_pylist()) - set(partitions)
        if unexpected:
            raise ValueError(f"{table}: the SQL wrote partitions {sorted(unexpected)} outside {list(partitions)}")
        self.drop(table, partitions)
        written = []
        for value in partitions:
            rows = result.filter(pc.equal(values, value)).drop_columns([column])
            if rows.num_rows:
                self._write(f"{self._partition_folder(spec, value)}/{PART_NAME}", spec.parquet(rows))
                written.append(value)
        if self._catalog and written:
            self._catalog.add(spec, written)

    def drop(self, table: str, partitions: Sequence[str]) -> None:
        spec = _BY_NAME[table]
        existing = set(self.partitions(table))
        for value in partitions:
            if value in existing:
                self._location.filesystem.delete_dir(self._partition_folder(spec, value))
        if self._catalog:
            self._catalog.remove(spec, [v for v in partitions if v in existing])

    def partitions(self, table: str) -> list[str]:
        spec = _BY_NAME[table]
        prefix = f"{spec.partition.name}="
        found = self._location.filesystem.get_file_info(
            fs.FileSelector(self._location.folder(spec), allow_not_found=True))
        return sorted(f.base_name[len(prefix):] for f in found
                      if f.type == fs.FileType.Directory and f.base_name.startswith(prefix))

    def read_bookmark(self, table: str) -> dict[str, Any] | None:
        path = bookmark_key(self._location.folder(_BY_NAME[table]), table)
        if self._location.filesystem.get_file_info(path).type == fs.FileType.NotFound:
            return None
        with self._location.filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read())

    def write_bookmark(self, table: str, bookmark: dict[str, Any]) -> None:
        self._write(bookmark_key(self._location.folder(_BY_NAME[table]), table), json.dumps(bookmark).encode())

    def _partition_folder(self, spec: LakeTable, value: str) -> str:
        return f"{self._location.folder(spec)}/{spec.partition.name}={value}"

    def _write(self, path: str, data: bytes) -> None:
        self._location.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self._location.filesystem.open_output_stream(path) as stream:
            stream.write(pa.py_buffer(data))


def write_rows(location: LakeLocation, table: LakeTable, rows: pa.Table, name: str) -> list[str]:
    """Write rows (with their partition column) as one object `name` per partition, as the cleaner lays
    them out; return the partitions written. For fixtures and benchmarks over a directory."""
    column = rows[table.partition.name]
    written = []
    for value in pc.unique(column).to_pylist():
        part = rows.filter(pc.equal(column, value)).drop_columns([table.partition.name])
        path = f"{location.folder(table)}/{table.partition.name}={value}/{name}"
        location.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with location.filesystem.open_output_stream(path) as stream:
            stream.write(pa.py_buffer(table.parquet(part)))
        written.append(value)
    return written


class GlueCatalog:
    """Partitions of the local Glue catalog (moto), through the same awswrangler calls as the cleaner."""

    def __init__(self, session, database: str = resources.GLUE_DATABASE, zones: dict[str, str] | None = None) -> None:
        self._session = session
        self._database = database
        self._zones = zones or {}

    def add(self, table: LakeTable, values: Sequence[str]) -> None:
        import awswrangler as wr

        bucket = self._zones[table.bucket_key]
        wr.catalog.add_parquet_partitions(
            database=self._database, table=table.name, compression="snappy", boto3_session=self._session,
            partitions_values={f"s3://{bucket}/{table.partition_prefix(v)}": [v] for v in values})

    def remove(self, table: LakeTable, values: Sequence[str]) -> None:
        import awswrangler as wr

        if values:
            wr.catalog.delete_partitions(table=table.name, database=self._database, boto3_session=self._session,
                                         partitions_values=[[v] for v in values])


def local_engine(endpoint: str, session) -> DuckDBEngine:
    """The engine over the local S3 endpoint, registering partitions in the local Glue catalog."""
    location = LakeLocation.local_s3(endpoint)
    return DuckDBEngine(location, GlueCatalog(session, zones=location.zones))
