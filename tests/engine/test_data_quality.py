"""Quality filter: defaults keep normal patches (BACK included) and drop constant, blurred, JPEG-ruined ones."""
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from engine.config import PrepareConfig
from engine.data import histosynth as hs
from engine.data import quality as Q
from engine.data.sources import read_image

CFG = PrepareConfig()


def jpeg(a, q):
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(b).convert("RGB"))


@pytest.fixture
def tile(shared_data):
    return read_image(shared_data / "nct_examples" / "NORM" / "NORM-TCGA-YLVCMEHK.tif")


def test_real_tiles_pass(shared_data):
    paths = sorted((shared_data / "nct_figure_crops").glob("*/*.png"))
    assert len(paths) == 18  # 2 per class, 9 classes (tests/data/README.md)
    for p in paths:
        assert Q.check(read_image(p), CFG) is None, p.name
    assert Q.check(read_image(shared_data / "nct_examples/NORM/NORM-TCGA-YLVCMEHK.tif"), CFG) is None


@pytest.mark.parametrize("size", [32, 64])
def test_histosynth_passes_every_class(size):
    for c, name in enumerate(hs.CLASSES):
        for i in range(4):
            assert Q.check(hs.render(c, size, hs.patch_seed(1, c, i)), CFG) is None, (name, i)


def test_back_is_flat_but_kept(shared_data):
    real = [read_image(p) for p in sorted((shared_data / "nct_figure_crops" / "BACK").glob("*.png"))]
    # Real background tiles are nearly flat (< 2 bits, Laplacian variance < 10 at 208 px) ...
    assert min(Q.entropy(b) for b in real) < 2.0 and min(Q.laplacian_var(b) for b in real) < 10
    assert all(Q.check(b, CFG) is None for b in real)  # ... and still kept by the defaults
    synth = [hs.render(hs.CLASSES.index("BACK"), 64, hs.patch_seed(0, 1, i)) for i in range(20)]
    assert all(Q.check(b, CFG) is None for b in synth)


def test_constant_and_clipped_rejected():
    assert Q.check(np.full((64, 64, 3), 200, np.uint8), CFG) == "low_entropy"
    assert Q.check(np.full((64, 64, 3), 255, np.uint8), CFG) == "saturated"
    assert Q.entropy(np.full((8, 8, 3), 7, np.uint8)) == 0.0
    assert Q.saturation(np.zeros((4, 4, 3), np.uint8)) == 1.0


def test_heavy_blur_rejected(tile):
    blurred = np.asarray(Image.fromarray(tile).filter(ImageFilter.GaussianBlur(5)))
    assert Q.laplacian_var(blurred) < Q.laplacian_var(tile) / 50
    assert Q.check(blurred, CFG) == "blur"


def test_jpeg_measures_grow_with_compression(tile):
    b = [Q.blockiness(jpeg(tile, q)) for q in (95, 50, 10)]
    d = [Q.dct_blockiness(jpeg(tile, q)) for q in (95, 50, 10)]
    assert Q.blockiness(tile) < b[0] < b[1] < b[2]
    assert Q.dct_blockiness(tile) < 0.05 and d[0] < 0.1 < d[1] < d[2]
    assert Q.check(jpeg(tile, 90), CFG) is None  # a mild JPEG is fine
    # A very flat tile shows JPEG blocks most: it is rejected by one of the two JPEG measures.
    flat = np.asarray(Image.fromarray(tile).filter(ImageFilter.GaussianBlur(1.5)))
    flat = (flat.astype(np.float32) * 0.3 + 160).astype(np.uint8)
    assert Q.check(jpeg(flat, 5), PrepareConfig(min_laplacian_var=0)) in ("blocky", "dct_blocky")


def test_thresholds_come_from_config(tile):
    assert Q.check(tile, PrepareConfig(min_entropy=7.9)) == "low_entropy"
    assert Q.check(tile, PrepareConfig(min_laplacian_var=1e6)) == "blur"
    assert Q.check(tile, PrepareConfig(min_tissue_ratio=0.99)) == "low_tissue"
    assert Q.check(tile, PrepareConfig(max_blockiness=1.0, max_dct_blockiness=1.0)) in (None, "blocky")
    white = np.full((64, 64, 3), 250, np.uint8)
    white[::2] = 235
    assert Q.tissue_ratio(white) == 0.0 and Q.tissue_ratio(tile) > 0.5


def test_measure_keys_match_reasons():
    m = Q.measure(hs.render(0, 32, 0))
    assert set(m) == {"laplacian_var", "entropy", "tissue_ratio", "saturation", "blockiness", "dct_blockiness"}
    assert set(Q.REASONS.values()) <= set(PrepareConfig.__dataclass_fields__)
