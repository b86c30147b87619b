"""Item counters in the online store: clean events per item, kept by the cleaner, so the serving function
has a popularity ranking before the first model is published (and nothing to read from the lake).

They live in ITEM_COUNT_SHARDS items of the online table under keys no user id can take (a user id starts
with a letter or digit), one numeric attribute per item, so DynamoDB's ADD keeps them exact under
concurrent cleaner batches. They hold no personal data: counts per item, summed over every user.
"""

from __future__ import annotations

import zlib

ITEM_COUNT_SHARDS = 16  # items of the table; each stays far below DynamoDB's 400 KB item limit
ITEM_COUNT_CHUNK = 100  # items per UpdateItem: its expression stays below 4 KB
ITEM_COUNT_PREFIX = "i:"  # attribute name = prefix + item id, apart from the key attribute
_KEY = "#item-counts#{:02d}"


def item_count_key(item_id: str) -> str:
    return _KEY.format(zlib.crc32(item_id.encode("utf-8")) % ITEM_COUNT_SHARDS)


def item_count_keys() -> list[str]:
    return [_KEY.format(n) for n in range(ITEM_COUNT_SHARDS)]
