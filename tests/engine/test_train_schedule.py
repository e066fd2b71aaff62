"""The run schedule shared by the loop and the progress line: total steps, grid steps."""
from engine.train import schedule


def test_total_steps_matches_the_issue_example():
    assert schedule.total_steps(5.0, 16) == 313  # "step 34 / 313 · 0.54 / 5 kimg"
    assert schedule.total_steps(0.001, 16) == 1


def test_a_short_run_gets_a_grid_every_tenth():
    # 1 kimg at the default sample_kimg=1 must not write grids at step 0 and the last step only: a short
    # run's progress would be invisible
    steps = schedule.grid_steps(1.0, 16, 1.0)
    total = schedule.total_steps(1.0, 16)
    assert steps[0] == 0 and steps[-1] == total and len(steps) >= 11
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert max(gaps) <= total / 10 + 1
    # a long run keeps its own sample_kimg (fewer grids than every tenth would give is not allowed)
    long = schedule.grid_steps(100.0, 16, 1.0)
    assert len(long) == 101 and long[1] == 63  # 1 kimg = 62.5 steps at batch 16


def test_resume_writes_no_step_zero_grid():
    assert schedule.grid_steps(0.064, 8, 0.032, start=3)[0] == 4
