"""When things happen in a run, as pure functions of (kimg, batch, step): the loop, the job layer's
progress line and the tests share them, so "step 34 / 313" on the page is the loop's own count.

No torch here: engine.jobs (imported by the pages) uses it to report progress.
"""
from __future__ import annotations

import math

GRIDS_PER_RUN = 10  # at least this many sample grids after step 0, so a short run shows its progress


def total_steps(kimg: float, batch: int) -> int:
    """Steps of a run of `kimg` thousand images at `batch` images per step (the last one may overshoot)."""
    return max(1, math.ceil(float(kimg) * 1000 / int(batch)))


def crossed(step: int, batch: int, interval_kimg: float) -> bool:
    """Did `step` (1-based) cross a multiple of `interval_kimg` in images shown?"""
    n = max(1, round(float(interval_kimg) * 1000))
    return (step * batch) // n != ((step - 1) * batch) // n


def sample_interval_kimg(sample_kimg: float, kimg: float) -> float:
    """kimg between sample grids: `sample_kimg`, but at most a tenth of the run. With only sample_kimg,
    a 1-kimg run at the default sample_kimg=1 showed its step-0 noise until the very end."""
    return min(float(sample_kimg), float(kimg) / GRIDS_PER_RUN)


def grid_steps(kimg: float, batch: int, sample_kimg: float, start: int = 0) -> list[int]:
    """Steps at which the loop writes a grid: step 0 (a new run), every interval, and the last step."""
    total, every = total_steps(kimg, batch), sample_interval_kimg(sample_kimg, kimg)
    out = [0] if start == 0 else []
    return out + [s for s in range(start + 1, total + 1) if crossed(s, batch, every) or s == total]
