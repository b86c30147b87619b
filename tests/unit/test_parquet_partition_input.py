"""The cleaner registers a partition with boto3 (its function ships no awswrangler): the definition must be
the one awswrangler's add_parquet_partitions wrote before, which the catalog and the tests read."""

from __future__ import annotations

import pytest
from awswrangler.catalog._definitions import _parquet_partition_definition

from feedbackloop.adapters.aws import parquet_partition_input

pytestmark = pytest.mark.unit


def test_a_partition_is_defined_as_awswrangler_defines_a_snappy_parquet_one():
    location = "s3://curated/feedback_events/event_date=2026-12-07/"
    assert parquet_partition_input(location, "2026-12-07") == _parquet_partition_definition(
        location=location, values=["2026-12-07"], bucketing_info=None, compression="snappy",
        columns_types=None, partitions_parameters=None)
