"""parse_instant (datetime.fromisoformat on the plain RFC 3339 shape, integer arithmetic for the rest) reads
every instant of the schema's RFC 3339 shape as pandas, the reference, does: the same UTC microsecond, or
None for the same texts. pandas is a test dependency only: no function ships it."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from feedbackloop.schemas.registry import parse_instant

pytestmark = pytest.mark.unit


def _pandas(text: str):
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if pd.isna(parsed) or not 1 <= parsed.year <= 9999:
        return None
    try:
        return parsed.floor("us").to_pydatetime()
    except pd.errors.OutOfBoundsDatetime:  # pandas' least nanoseconds: floor overflows, dropping them does not
        return parsed.to_pydatetime(warn=False)


EDGES = ["2026-12-07T10:00:00Z", "2026-12-07T10:00:00.123456789Z", "2026-12-07T10:00:00.1+05:30",
         "2026-02-30T00:00:00Z", "2026-12-07T24:00:00Z", "2026-12-07T23:59:60Z", "0000-01-01T00:00:00Z",
         "1700-01-01T00:30:00+01:00", "2199-12-31T23:30:00-01:00", "2026-12-07t10:00:00z", "2026-13-01T00:00:00Z",
         "2026-12-07T10:00:00.000001-00:00", "2026-12-07T10:00:00+23:59", "9999-12-31T23:59:59Z",
         # the exact path: years pandas holds in microseconds only, its nanosecond bounds, the calendar
         "0001-01-01T00:30:00+01:00", "0000-12-31T23:59:59-01:00", "9999-12-31T23:59:59-01:00",
         "9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59.999999Z", "1500-06-01T12:00:00.123456Z",
         "1500-06-01T12:00:00.1234567Z", "1677-09-21T00:12:43.145224193Z", "1677-09-21T00:12:43.145224192Z",
         "1677-09-21T00:12:43.1452242Z", "1677-09-21T00:12:43.145224Z", "2262-04-11T23:47:16.854775807Z",
         "2262-04-11T23:47:16.854775808Z", "2262-04-11T23:47:16.8547758Z", "0000-02-29T12:00:00Z",
         "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "1600-02-29T00:00:00.5+00:00", "2026-04-31T00:00:00Z",
         "2026-12-07T10:00:00+24:00", "2026-12-07T10:00:00+00:60", "2026-12-07T10:00:00-23:59",
         "2026-12-07T10:60:00Z", "1650-12-07T23:59:60Z", "٢٠٢٦-12-07T10:00:00Z",
         "1000-01-01T00:00:00.000000001Z", "2300-01-01T00:00:00.1234567-05:00"]


def _random_instants(n: int) -> list[str]:
    rng = random.Random(0)
    texts = []
    for _ in range(n):
        fraction = "." + str(rng.randrange(10 ** 9)).zfill(9)[:rng.randint(1, 9)] if rng.random() < 0.5 else ""
        offset = rng.choice(["Z", "+00:00", f"+{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
                             f"-{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"])
        texts.append(f"{rng.randint(1690, 2210):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 31):02d}T"
                     f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{fraction}{offset}")
    return texts


def _random_fields(n: int) -> list[str]:
    """Every field over and past its range, any number of fraction digits, any offset: the exact path."""
    rng = random.Random(1)
    texts = []
    for _ in range(n):
        digits = rng.randint(0, 9)
        fraction = "." + "".join(rng.choice("0123456789") for _ in range(digits)) if digits else ""
        offset = rng.choice(["Z", f"{rng.choice('+-')}{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}"])
        texts.append(f"{rng.choice([rng.randint(0, 9999), rng.randint(1600, 2300)]):04d}-{rng.randint(0, 13):02d}-"
                     f"{rng.randint(0, 32):02d}T{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}:"
                     f"{rng.randint(0, 60):02d}{fraction}{offset}")
    return texts


@pytest.mark.parametrize("text", EDGES + _random_instants(300) + _random_fields(600))
def test_an_instant_is_read_as_pandas_reads_it(text):
    assert parse_instant(text) == _pandas(text)


@pytest.mark.parametrize("text", ["2026-12-07 10:00:00Z", "2026-12-07", " 2026-12-07T10:00:00Z",
                                  "2026-12-07T10:00:00Z\n", "2026-12-07T10:00Z", "2026-12-07T10:00:00+0530",
                                  "2026-12-07T10:00:00", "20261207", "2026-12-07T10:00:00.Z"])
def test_only_the_rfc_3339_shape_is_read(text):
    """pandas reads these too; the event schema's pattern refuses them, and the ingest API stamps
    `received_at` in the RFC 3339 shape, so a record holding one came past the API (its arrival time is used)."""
    assert _pandas(text) is not None
    assert parse_instant(text) is None
