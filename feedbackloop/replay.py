"""Re-run cleaning from the raw archive. The archive holds every accepted record unchanged, and the
cleaner's de-duplication makes a replay safe: what was already committed comes back as duplicates."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterator

from feedbackloop.cleaning.decode import SourceRecord
from feedbackloop.cleaning.service import BatchOutcome, CleanerService
from feedbackloop.resources import RAW_PREFIX

REPLAY_BATCH = 1000
REPLAY_RETRIES = 3


def raw_records(s3, bucket: str, since: str | None = None) -> Iterator[SourceRecord]:
    """Records of the raw zone in key order (yyyy/MM/dd/HH), optionally from a day on (yyyy-mm-dd)."""
    start_after = f"{RAW_PREFIX}{since.replace('-', '/')}" if since else ""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=RAW_PREFIX, StartAfter=start_after):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            data = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body  # gzip's magic number
            for n, line in enumerate(data.splitlines(keepends=True)):
                if line.strip():
                    yield SourceRecord(data=line, source=f"replay-{item['Key']}:{n}",
                                       arrival=item["LastModified"])


def replay(service: CleanerService, records: Iterator[SourceRecord]) -> BatchOutcome:
    total = BatchOutcome(quarantined=Counter())
    batch: list[SourceRecord] = []

    def run(batch: list[SourceRecord]) -> None:
        for _ in range(REPLAY_RETRIES + 1):
            outcome = service.clean(batch)
            total.records_in += outcome.records_in
            total.clean += outcome.clean
            total.duplicates += outcome.duplicates
            total.imputed += outcome.imputed
            total.quarantined.update(outcome.quarantined)
            failed = set(outcome.failed_sources)
            batch = [r for r in batch if r.source in failed]
            if not batch:
                return
        total.failed_sources.extend(r.source for r in batch)

    for record in records:
        batch.append(record)
        if len(batch) == REPLAY_BATCH:
            run(batch)
            batch = []
    if batch:
        run(batch)
    return total
