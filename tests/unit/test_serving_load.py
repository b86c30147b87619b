"""A published model loads through a temporary file (model.npz is not held in memory next to its arrays):
the same arrays and the same ranking as reading it in memory, and the capacity measurement's model loads."""

from __future__ import annotations

import time

import numpy as np
import pytest

from feedbackloop.bench.capacity import _from_archive_in_memory, model_archive
from feedbackloop.online import ProfileItems, UserProfile
from feedbackloop.serving import ServingModel, recommend

pytestmark = pytest.mark.unit


def test_a_spooled_load_holds_the_arrays_and_ranks_as_an_in_memory_one(tmp_path):
    archive = tmp_path / "model.tar.gz"
    model_archive(300, archive, seed=3)
    data = archive.read_bytes()
    spooled, in_memory = ServingModel.from_archive(data), _from_archive_in_memory(data)
    assert (spooled.version, spooled.item_index) == (in_memory.version, in_memory.item_index)
    assert set(spooled.ranker.arrays) == set(in_memory.ranker.arrays)
    for name, values in spooled.ranker.arrays.items():
        np.testing.assert_array_equal(values, in_memory.ranker.arrays[name], err_msg=name)
    now = time.time()
    items = list(spooled.item_index)[:20]
    n = len(items)
    profile = UserProfile("u", ProfileItems(items, [1.0] * n, [1.0] * n, [now - 3600] * n, [None] * n,
                                            ["purchase"] * n, [now - 3600] * n), now)
    assert recommend(spooled, "u", profile, now) == recommend(in_memory, "u", profile, now)
