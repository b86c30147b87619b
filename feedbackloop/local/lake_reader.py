"""Read the lake back with DuckDB: pyarrow datasets over the local S3 endpoint, registered as views
(DuckDB's httpfs extension cannot be downloaded here, and this path needs no extension at all)."""

from __future__ import annotations

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


def _partition(table: LakeTable) -> pa.Schema:
    return pa.schema([(table.partition.name, pa.string())])


def _schema(table: LakeTable) -> pa.Schema:
    return pa.unify_schemas([table.arrow_schema, _partition(table)])


def dataset(endpoint: str, table: LakeTable) -> ds.Dataset:
    bucket = next(b for b in resources.BUCKETS if b.key == table.bucket_key)
    return ds.dataset(
        f"{physical_name(bucket.key)}/{table.prefix}",
        filesystem=s3_filesystem(endpoint),
        format="parquet",
        schema=_schema(table),
        partitioning=ds.partitioning(_partition(table), flavor="hive"),
    )


def connect(endpoint: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per lake table, by its Glue table name."""
    con = duckdb.connect()
    for table in resources.LAKE_TABLES:
        try:
            data = dataset(endpoint, table)
        except FileNotFoundError:  # nothing written yet
            data = _schema(table).empty_table()
        con.register(table.name, data)
    return con
