"""Where a long local run spends its time: wall seconds and CPU seconds per phase, the CPU of the whole
process tree (this process, the moto server and every child it started: training processes too), so a
figure taken on a shared, busy machine still says how much work a phase is."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil


def tree_cpu_seconds(process: psutil.Process | None = None) -> float:
    """User + system CPU seconds of a process, its reaped children, and its live descendants."""
    process = process or psutil.Process()
    own = process.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:  # exited between the listing and the read: its parent reaps it later
            continue
        total += times.user + times.system
    return total


@dataclass
class Phase:
    name: str
    wall: float
    cpu: float


@dataclass
class PhaseClock:
    """`with clock.phase("tables"): ...` adds a phase; a name used again adds to the same phase."""

    phases: list[Phase] = field(default_factory=list)
    cpu: Callable[[], float] = tree_cpu_seconds

    def __post_init__(self) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), self.cpu()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), self.cpu()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - wall, self.cpu() - cpu)

    def add(self, name: str, wall: float, cpu: float) -> None:
        for phase in self.phases:
            if phase.name == name:
                phase.wall += wall
                phase.cpu += cpu
                return
        self.phases.append(Phase(name, wall, cpu))

    def total(self) -> Phase:
        return Phase("total", time.perf_counter() - self._wall0, self.cpu() - self._cpu0)

    def render(self) -> str:
        """A table of the phases, the rest of the run (start-up, waits between phases) and the total."""
        total = self.total()
        rows = [*self.phases]
        rest = Phase("other (start-up, stop, between phases)", total.wall - sum(p.wall for p in rows),
                     total.cpu - sum(p.cpu for p in rows))
        rows += [rest, total]
        width = max(len(p.name) for p in rows)
        lines = [f"{'phase':<{width}}  {'wall s':>8}  {'CPU s':>8}  {'CPU/wall':>8}"]
        for p in rows:
            lines.append(f"{p.name:<{width}}  {p.wall:>8.1f}  {p.cpu:>8.1f}  {p.cpu / max(p.wall, 1e-9):>8.2f}")
        return "\n".join(lines)
