import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """CI has 2 cores and tests start subprocesses (trainers, Streamlit): two torch threads per process
    oversubscribe them (a tiny training step went from 0.13 s to 6 s), so every test uses one."""
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
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared example data not found at {SHARED_DATA}")
    return SHARED_DATA
