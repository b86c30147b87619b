"""The demo's phase clock: wall and CPU seconds per phase, the CPU of the whole process tree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from feedbackloop.local.phases import PhaseClock, tree_cpu_seconds

pytestmark = pytest.mark.unit


def test_a_phase_named_again_adds_to_itself_and_the_table_accounts_for_the_rest():
    ticks = iter([0.0, 1.0, 3.0, 3.0, 7.0, 8.0, 10.0])  # the CPU clock at each read
    clock = PhaseClock(cpu=lambda: next(ticks))
    with clock.phase("tables"):
        pass
    with clock.phase("tables"):
        pass
    (tables,) = clock.phases
    assert tables.name == "tables" and tables.cpu == pytest.approx(2.0 + 4.0)
    table = clock.render()
    lines = table.splitlines()
    assert lines[0].split()[:1] == ["phase"] and lines[1].startswith("tables")
    assert lines[-2].startswith("other") and lines[-1].startswith("total")
    # the total's CPU is what the clock read since it started; "other" is the total less the phases
    assert float(lines[-1].split()[-2]) == pytest.approx(8.0) and float(lines[-2].split()[-2]) == pytest.approx(2.0)


def test_the_cpu_of_a_child_process_counts_while_it_runs_and_after_it_ends():
    burn = ("import sys, time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
            "print('burnt', flush=True)\nsys.stdin.read()")
    before = tree_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"burnt\n"  # blocks: this process spends next to nothing meanwhile
        assert tree_cpu_seconds() - before >= 0.45  # the live child's CPU
    finally:
        child.communicate(b"")
    assert tree_cpu_seconds() - before >= 0.45  # and, once reaped, its parent's children's CPU
