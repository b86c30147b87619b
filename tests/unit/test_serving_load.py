"""A published model loads in one pass over its archive, model.npz's arrays read as it is decompressed (or,
for an npz `np.savez` did not write to a seekable file, from a temporary file): the same arrays and the same
rankings as `np.load` of the npz read in memory, whatever the members' order, for compressed members too,
and a damaged or incomplete archive is refused with a clear error."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import zipfile

import numpy as np
import pytest

from feedbackloop.bench.capacity import _from_archive_in_memory, model_archive
from feedbackloop.models.contract import METRICS_FILE, MODEL_FILE
from feedbackloop.online import ProfileItems, UserProfile
from feedbackloop.serving import ServingModel, _NotStreamable, read_npz, recommend, stream_npz

pytestmark = pytest.mark.unit


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def _archive(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _assert_same(loaded: ServingModel, expected: ServingModel) -> None:
    assert (loaded.version, loaded.item_index) == (expected.version, expected.item_index)
    assert set(loaded.ranker.arrays) == set(expected.ranker.arrays)
    for name, values in loaded.ranker.arrays.items():
        assert values.dtype == expected.ranker.arrays[name].dtype, name
        np.testing.assert_array_equal(values, expected.ranker.arrays[name], err_msg=name)
    now = time.time()
    items = list(expected.item_index)
    for start in range(0, 200, 20):  # ten users, each with twenty items of feedback
        chosen = items[start:start + 20]
        n = len(chosen)
        profile = UserProfile("u", ProfileItems(chosen, [1.0 + i % 3 for i in range(n)], [1.0] * n,
                                                [now - 3600 * (i + 1) for i in range(n)], [None] * n,
                                                ["purchase"] * n, [now - 3600] * n), now)
        assert recommend(loaded, "u", profile, now, k=20) == recommend(expected, "u", profile, now, k=20)
    assert recommend(loaded, "new", None, now) == recommend(expected, "new", None, now)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> bytes:
    archive = tmp_path_factory.mktemp("model") / "model.tar.gz"
    model_archive(300, archive, seed=3)
    return archive.read_bytes()


def test_a_one_pass_load_holds_the_arrays_and_ranks_as_an_in_memory_one(published):
    stream_npz(io.BytesIO(_members(published)[MODEL_FILE]))  # np.savez's npz, as training writes it: streamed
    _assert_same(ServingModel.from_archive(published), _from_archive_in_memory(published))


def test_the_members_load_in_either_order_and_compressed_members_through_np_load(published):
    members = _members(published)
    expected = _from_archive_in_memory(published)
    assert list(members) == [MODEL_FILE, METRICS_FILE]  # the capacity model's order (SageMaker's may differ)
    _assert_same(ServingModel.from_archive(_archive([(f"./{METRICS_FILE}", members[METRICS_FILE]),
                                                     (f"./{MODEL_FILE}", members[MODEL_FILE])])), expected)
    with np.load(io.BytesIO(members[MODEL_FILE])) as npz:
        arrays = {name: npz[name] for name in npz.files}
    compressed = io.BytesIO()
    np.savez_compressed(compressed, **arrays)
    _assert_same(ServingModel.from_archive(_archive([(MODEL_FILE, compressed.getvalue()),
                                                     (METRICS_FILE, members[METRICS_FILE])])), expected)


def test_both_npz_readers_read_every_array_np_load_reads(tmp_path):
    arrays = {"ints": np.arange(7, dtype=np.int32),
              "matrix": np.asfortranarray(np.random.default_rng(1).random((5, 3))),
              "text": np.array(["a", "bcd"]), "scalar": np.array(2.5), "empty": np.array([], dtype=np.int64),
              "flag": np.array(True)}
    path = tmp_path / "model.npz"
    np.savez(path, **arrays)
    with open(path, "rb") as file:
        from_file = read_npz(file)
        file.seek(0)
        streamed = stream_npz(file)
    for read in (from_file, streamed):
        assert list(read) == list(arrays)
        for name, values in arrays.items():
            assert read[name].dtype == values.dtype and read[name].shape == values.shape, name
            np.testing.assert_array_equal(read[name], values, err_msg=name)


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += b
        return len(b)


def test_an_npz_written_without_seeking_is_read_from_a_file(published):
    """np.savez to a stream it cannot seek puts each member's size after its data: not streamed, read from
    the spooled file (the archive decompressed again), the same model."""
    members = _members(published)
    with np.load(io.BytesIO(members[MODEL_FILE])) as npz:
        arrays = {name: npz[name] for name in npz.files}
    unseekable = _Unseekable()
    np.savez(unseekable, **arrays)
    with pytest.raises(_NotStreamable):
        stream_npz(io.BytesIO(bytes(unseekable.data)))
    _assert_same(ServingModel.from_archive(_archive([(MODEL_FILE, bytes(unseekable.data)),
                                                     (METRICS_FILE, members[METRICS_FILE])])),
                 _from_archive_in_memory(published))


def test_an_incomplete_or_damaged_archive_is_refused(published):
    members = _members(published)
    with pytest.raises(ValueError, match=METRICS_FILE):
        ServingModel.from_archive(_archive([(MODEL_FILE, members[MODEL_FILE])]))
    with pytest.raises(ValueError, match=MODEL_FILE):
        ServingModel.from_archive(_archive([(METRICS_FILE, json.dumps({"version": "v"}).encode())]))
    damaged = bytearray(published)
    damaged[len(damaged) // 2] ^= 0xFF  # one byte inside model.npz's deflate stream
    with pytest.raises((OSError, EOFError, ValueError, tarfile.TarError, zipfile.BadZipFile)):
        ServingModel.from_archive(bytes(damaged))
    # every member intact but the gzip trailer's CRC-32 (the check the arrays' bytes rely on) wrong
    damaged = bytearray(published)
    damaged[-8] ^= 0xFF
    with pytest.raises(gzip.BadGzipFile, match="CRC"):
        ServingModel.from_archive(bytes(damaged))


def test_int32_neighbour_indices_rank_as_the_int64_ones_older_models_carry(published):
    members = _members(published)
    with np.load(io.BytesIO(members[MODEL_FILE])) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert arrays["ranker_neighbors_indices"].dtype == np.int32  # as the training job now publishes them
    older = io.BytesIO()
    np.savez(older, **arrays | {"ranker_neighbors_indices": arrays["ranker_neighbors_indices"].astype(np.int64)})
    model = ServingModel.from_archive(_archive([(MODEL_FILE, older.getvalue()), (METRICS_FILE, members[METRICS_FILE])]))
    assert model.ranker.neighbors[1].dtype == np.int64
    now = time.time()
    items = list(model.item_index)
    expected = ServingModel.from_archive(published)
    for start in range(0, 200, 20):
        profile = UserProfile("u", ProfileItems(items[start:start + 20], [2.0] * 20, [1.0] * 20, [now - 60] * 20,
                                                [None] * 20, ["click"] * 20, [now - 60] * 20), now)
        assert recommend(model, "u", profile, now, k=30) == recommend(expected, "u", profile, now, k=30)
