"""parse_instant's fast path (datetime.fromisoformat on the plain RFC 3339 shape) reads every instant as
pandas, the reference, does: the same UTC microsecond, or None for the same texts."""

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
    return parsed.floor("us").to_pydatetime()


EDGES = ["2026-12-07T10:00:00Z", "2026-12-07T10:00:00.123456789Z", "2026-12-07T10:00:00.1+05:30",
         "2026-02-30T00:00:00Z", "2026-12-07T24:00:00Z", "2026-12-07T23:59:60Z", "0000-01-01T00:00:00Z",
         "1700-01-01T00:30:00+01:00", "2199-12-31T23:30:00-01:00", "2026-12-07t10:00:00z", "2026-13-01T00:00:00Z",
         "2026-12-07T10:00:00.000001-00:00", "2026-12-07T10:00:00+23:59", "9999-12-31T23:59:59Z"]


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


@pytest.mark.parametrize("text", EDGES + _random_instants(300))
def test_the_fast_path_reads_an_instant_as_pandas_does(text):
    assert parse_instant(text) == _pandas(text)
