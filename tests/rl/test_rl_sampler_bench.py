"""benchmarks/bench_rl_sampler.py (issue 16): the grid is parsed and refused as train_rl refuses, and a
tiny run prints one row per sampler, the evaluation's Euler first, scored on the same test images."""

from __future__ import annotations

import pytest

from benchmarks.bench_rl_sampler import main, parse_grid

from .conftest import RES


def test_grid_parsing_and_refusals():
    assert parse_grid("10:1.0,50:0.5") == [(10, 1.0), (50, 0.5)]
    for bad, why in (("10:0", "eta 0 has no density"), ("0:1", "steps >= 1"), ("10", "expected STEPS:ETA")):
        with pytest.raises(SystemExit, match=why):
            parse_grid(bad)


def test_a_tiny_run_prints_the_euler_row_then_each_rl_sampler(rl_model, rl_data, capsys):
    assert main(["--model", str(rl_model), "--test", str(rl_data / "test"), "--images", "4", "--grid", "2:1.0,3:0.5",
                 "--resolution", str(RES)]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| Euler 50 steps (evaluate)", "| RL DDIM 2 steps, eta 1",
                                                 "| RL DDIM 3 steps, eta 0.5"]
    assert all(r.split(" | ")[1] == "4" for r in rows)
