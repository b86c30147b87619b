"""The local runtime caps glibc's malloc arenas (runtime._limit_malloc_arenas): with glibc's default, each thread
that allocates gets an arena of its own, up to 8 per core, which the stand-in's many threads fragment and a
reset cannot return. Run in a fresh interpreter, since arenas already made stay for the process's life."""

from __future__ import annotations

import subprocess
import sys

import pytest

_COUNT_ARENAS = """
import ctypes, os, sys, tempfile, threading
if sys.argv[1] == "limited":
    from feedbackloop.local.runtime import _limit_malloc_arenas
    _limit_malloc_arenas()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
start, allocated, done = threading.Barrier(12), threading.Barrier(13), threading.Event()
def allocate():
    start.wait()  # all at once: a thread meeting a locked arena takes another
    blocks = [bytearray(50_000) for _ in range(200)]
    allocated.wait()
    done.wait()
threads = [threading.Thread(target=allocate) for _ in range(12)]
for thread in threads:
    thread.start()
allocated.wait()
path = tempfile.mktemp()
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
done.set()
for thread in threads:
    thread.join()
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""


def _arenas(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", _COUNT_ARENAS, mode], check=True, capture_output=True,
                              text=True, timeout=60).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_the_local_runtime_keeps_at_most_two_malloc_arenas_however_many_threads_allocate():
    from feedbackloop.local.runtime import MALLOC_ARENAS

    assert _arenas("limited") <= MALLOC_ARENAS
    assert _arenas("default") > MALLOC_ARENAS  # what the cap prevents: glibc's default, up to 8 per core
