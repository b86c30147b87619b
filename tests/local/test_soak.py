"""A short soak of the stand-in (`feedbackloop bench soak` runs 10 minutes at 16 clients): concurrent clients
on kept-alive connections, then every accepted event curated exactly once and no connection reset."""

from __future__ import annotations

import pytest

from feedbackloop.local.soak import render, run_soak

pytestmark = pytest.mark.local


def test_a_short_soak_loses_doubles_and_resets_nothing(tmp_path):
    figures = run_soak(0.25, 8, baseline_seconds=5, state_dir=tmp_path)
    assert figures["soak"]["accepted"] > 0 and figures["baseline"]["accepted"] > 0, render(figures)
    assert (figures["lost"], figures["doubled"], figures["resets"]) == (0, 0, 0), render(figures)
    assert figures["ok"], render(figures)
    memory = figures["memory_mb"]
    assert memory["before_warm_up"] > 0 and 0 < memory["start"] <= memory["peak"], render(figures)
    assert memory["end"] <= memory["limit"] * memory["start"], render(figures)
