"""What the arrow layer leaves out of pyarrow's wheel: what no function loads, so that the cleaner and the
eraser (pyarrow and numpy, about 210 MiB as installed) fit the 200 MiB budget with our code and layer.

Left out: Arrow Flight (RPC; its library alone is about 29 MiB), the C++ headers, Cython sources and the
test suite, and the link-time copies of libarrow_python (the extensions load the `.so.<major>` soname only).
Every library an extension that stays needs stays (`tests/infra/test_infra_function_size.py` reads each
one's needed names, and imports the handlers and runs their work with exactly what is left).

`make lambda-layer` runs `python -m cdk.layer_trim <layer>/python` after installing the `lambda-arrow` group.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# globs inside pyarrow/ (matched against the wheel's file names for any Python version)
TRIMMED = (
    "include", "src", "tests", "_pyarrow_cpp_tests.*",
    "flight.py", "_flight.*", "libarrow_flight.so*", "libarrow_python_flight.so*",
    "libarrow_python.so", "libarrow_python.so.*.*.*",
    "libarrow_python_parquet_encryption.so", "libarrow_python_parquet_encryption.so.*.*.*",
    "*.pyx", "*.pxd", "*.pxi",
)


def trimmed(package: Path) -> list[Path]:
    """The entries of pyarrow's folder `package` the layer leaves out."""
    return sorted({path for pattern in TRIMMED for path in package.glob(pattern)})


def trim(site: Path) -> int:
    """Remove the trimmed entries of `site`/pyarrow; the bytes removed."""
    removed = 0
    for path in trimmed(site / "pyarrow"):
        if path.is_dir():
            removed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
        else:
            removed += path.stat().st_size
            path.unlink()
    return removed


if __name__ == "__main__":
    (target,) = sys.argv[1:]
    print(f"{target}: {trim(Path(target)) / 2**20:.1f} MiB of pyarrow left out (cdk/layer_trim.py)")
