import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Real H&E tiles (Kather et al. 2018, CC-BY 4.0; see tests/data/README.md) ship with the repository, so
# no test depends on a folder outside the checkout.
TEST_DATA = ROOT / "tests" / "data"
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """CI has 2 cores and tests start subprocesses (trainers, Streamlit): two torch threads per process
    oversubscribe them (a tiny training step went from 0.13 s to 6 s), so every test uses one. Set before
    each test, since code under test may change it (a trainer's `threads`, a bench)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path, monkeypatch):
    """No test writes into the repo's runs/ or data/: both roots point into the test's tmp dir."""
    monkeypatch.setenv("HISTOGEN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HISTOGEN_DATA", str(tmp_path / "data"))
    yield


@pytest.fixture
def shared_data() -> Path:
    """The real example tiles: nct_examples/NORM/*.tif (1 original tile) and nct_figure_crops/<CLASS>/*.png
    (2 per class, 9 classes). They are part of the repository, so a missing folder is an error, not a skip."""
    assert TEST_DATA.is_dir(), f"real example tiles missing at {TEST_DATA} (they ship with the repository)"
    return TEST_DATA


@pytest.fixture
def csv_path(tmp_path):
    """(the open MetricsCSV, its path) after three rows, steps 1-3."""
    from engine.train.logging import MetricsCSV
    from tests.fixtures_runs import metrics_row

    m = MetricsCSV(tmp_path / "metrics_gan.csv")
    for s in (1, 2, 3):
        m.write(metrics_row(s))
    return m, tmp_path / "metrics_gan.csv"


@pytest.fixture(scope="module")
def review_data(tmp_path_factory):
    """Histosynth at 32 px, 20 per class: its held-out eval split has 2 patches per class."""
    from engine.config import PrepareConfig
    from engine.data.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "hs32"
    return prepare(PrepareConfig(source="histosynth", size=32, per_class=20, seed=0, out=str(out),
                                 quality_filter=False, workers=1))
