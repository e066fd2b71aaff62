import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Histosynth at 32 px, 4 patches per class, prepared once for the trainer and jobs tests (read only;
    runs at 16 px use it too: the loader resizes)."""
    from engine.config import PrepareConfig
    from engine.data.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "hs32"
    return prepare(PrepareConfig(source="histosynth", size=32, per_class=4, seed=0, out=str(out),
                                 quality_filter=False))
