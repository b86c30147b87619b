"""Read the lake back with DuckDB: pyarrow datasets registered as views, over the local S3 endpoint (or a
directory, for benchmarks). DuckDB's httpfs extension cannot be downloaded here, and this path needs no
extension at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from pyarrow import fs

from feedbackloop import resources
from feedbackloop.lake import LakeTable
from feedbackloop.local.environment import REGION, physical_name


def s3_filesystem(endpoint: str) -> fs.S3FileSystem:
    url = urlsplit(endpoint)
    return fs.S3FileSystem(endpoint_override=url.netloc, scheme=url.scheme, region=REGION,
                           access_key="local", secret_key="local", session_token="local")


@dataclass(frozen=True)
class LakeLocation:
    """Where the lake's tables are: a pyarrow filesystem and the folder of each bucket zone in it."""

    filesystem: fs.FileSystem
    zones: dict[str, str]  # bucket key -> folder (an S3 bucket name, or a directory)

    @classmethod
    def local_s3(cls, endpoint: str) -> LakeLocation:
        return cls(s3_filesystem(endpoint), {b.key: physical_name(b.key) for b in resources.BUCKETS})

    @classmethod
    def directory(cls, root: Path) -> LakeLocation:
        return cls(fs.LocalFileSystem(), {b.key: str(root / b.key) for b in resources.BUCKETS})

    def folder(self, table: LakeTable) -> str:
        return f"{self.zones[table.bucket_key]}/{table.prefix.rstrip('/')}"


def _partition(table: LakeTable) -> pa.Schema:
    return pa.schema([(table.partition.name, pa.string())])


def schema(table: LakeTable) -> pa.Schema:
    """The table as readers see it: its columns, then its partition column."""
    return pa.unify_schemas([table.arrow_schema, _partition(table)])


def dataset(location: LakeLocation | str, table: LakeTable) -> ds.Dataset | pa.Table:
    """The table's rows (lazily); an empty table when nothing has been written yet."""
    if isinstance(location, str):
        location = LakeLocation.local_s3(location)
    try:
        return ds.dataset(location.folder(table), filesystem=location.filesystem, format="parquet",
                          schema=schema(table), partitioning=ds.partitioning(_partition(table), flavor="hive"))
    except FileNotFoundError:
        return schema(table).empty_table()


def connect(location: LakeLocation | str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (UTC) with one view per lake table, by its Glue table name."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in resources.LAKE_TABLES:
        con.register(table.name, dataset(location, table))
    return con
