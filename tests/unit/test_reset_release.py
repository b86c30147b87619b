"""A reset gives free memory back to the system (runtime._release_free_memory, which LocalRuntime.reset and so
`feedbackloop local reset` call): glibc keeps the pages of freed small blocks below the heap's top in the
process, resident, until malloc_trim returns them. Run in a fresh interpreter, whose heap holds nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest

_FREE_THEN_READ = """
import ctypes, sys
from pathlib import Path
from feedbackloop.local.runtime import _release_free_memory  # imported first: its imports take memory too
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def anonymous_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
blocks = [libc.malloc(2048) for _ in range(60_000)]  # about 120 MB of small blocks on the heap
for block in blocks:
    ctypes.memset(block, 1, 2048)  # resident
pin = libc.malloc(2048)  # the heap's top stays in use: free() alone cannot shrink the heap
for block in blocks:
    libc.free(block)
before = anonymous_mb()
if sys.argv[1] == "release":
    _release_free_memory()
print(before - anonymous_mb())
"""


def _returned_mb(mode: str) -> float:
    return float(subprocess.run([sys.executable, "-c", _FREE_THEN_READ, mode], check=True, capture_output=True,
                                text=True, timeout=120).stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap and /proc")
def test_a_reset_returns_the_heaps_free_pages_to_the_system():
    assert _returned_mb("release") > 100  # of the about 120 MB freed
    assert _returned_mb("keep") < 20  # what it prevents: without it the freed pages stay resident


def test_a_reset_gives_arrows_free_pages_back(monkeypatch):
    import pyarrow as pa

    from feedbackloop.local import runtime

    released = []

    class Pool:
        def release_unused(self) -> None:
            released.append(True)

    monkeypatch.setattr(pa, "default_memory_pool", lambda: Pool())
    runtime._release_free_memory()
    assert released == [True]
