"""Stain normalisation moves a tile toward the reference's colours; blank tiles pass through; stats."""
import numpy as np
import pytest

from engine.config import ConfigError, PrepareConfig
from engine.data.dataset import load_prepared
from engine.data.prepare import prepare
from engine.data.quality import optical_density
from engine.data.sources import read_image
from engine.data.stain import StainNormalizer, stain_stats, stain_stats_by_class, stain_stats_table


@pytest.fixture
def ref(shared_data):
    return read_image(shared_data / "nct_examples" / "NORM" / "NORM-TCGA-YLVCMEHK.tif")


def restain(img, scale):
    """The same tissue under another stain: scale optical density per channel (e.g. a bluer, darker slide)."""
    od = optical_density(img) * np.asarray(scale, np.float32)
    return np.clip(240 * np.exp(-od) - 1, 0, 255).round().astype(np.uint8)


def mean_od(img):
    return np.asarray(stain_stats(img)["mean_od"])


def he_angles(a, b):
    va, vb = stain_stats(a)["he_vectors"], stain_stats(b)["he_vectors"]
    return [np.degrees(np.arccos(np.clip(np.dot(va[k], vb[k]), -1, 1))) for k in "HE"]


@pytest.mark.parametrize("method", ["macenko", "vahadane"])
def test_normalisation_moves_toward_reference(method, ref, shared_data):
    norm = StainNormalizer(method, ref)
    small = ref[::2, ::2]
    tum = read_image(shared_data / "nct_figure_crops" / "TUM" / "TUM-figure-crop-0.png")[::2, ::2]
    for scale in ([1.6, 0.8, 1.0], [0.7, 1.0, 1.5]):
        # The reference tissue under another stain comes back close to the reference itself ...
        odd = restain(small, scale)
        out = norm(odd)
        assert out.shape == odd.shape and out.dtype == np.uint8
        err_before = np.abs(odd.astype(int) - small).mean()
        assert np.abs(out.astype(int) - small).mean() < 0.5 * err_before
        assert np.abs(mean_od(out) - mean_od(ref)).sum() < 0.5 * np.abs(mean_od(odd) - mean_od(ref)).sum()
        # ... and other tissue takes on the reference's stain vectors.
        odd = restain(tum, scale)
        assert max(he_angles(norm(odd), ref)) < 0.5 * min(he_angles(odd, ref))
    assert norm.passed == 0


@pytest.mark.parametrize("method", ["macenko", "vahadane"])
def test_blank_tile_passes_through(method, ref):
    norm = StainNormalizer(method, ref)
    blank = np.full((32, 32, 3), 245, np.uint8)
    blank[::3] = 238
    assert norm(blank) is blank and norm.passed == 1


def test_reference_without_tissue_is_config_error():
    with pytest.raises(ConfigError, match="stain_reference"):
        StainNormalizer("macenko", np.full((32, 32, 3), 250, np.uint8))
    with pytest.raises(ConfigError, match="stain_norm"):
        StainNormalizer("reinhard", np.zeros((8, 8, 3), np.uint8))


def test_stain_stats(ref):
    s = stain_stats(ref[None])
    h, e = np.asarray(s["he_vectors"]["H"]), np.asarray(s["he_vectors"]["E"])
    assert np.isclose(np.linalg.norm(h), 1, atol=1e-3) and (h > 0).all() and (e > 0).all()
    assert h[0] > e[0] and e[1] > e[0]  # haematoxylin absorbs red more than eosin; eosin mostly green
    assert s["H"]["p99"] > s["H"]["p50"] > 0 and 0.5 < s["tissue_ratio"] <= 1
    empty = stain_stats(np.full((2, 16, 16, 3), 255, np.uint8))
    assert empty["he_vectors"] is None and empty["tissue_ratio"] == 0 and empty["mean_od"] == [0, 0, 0]
    by = stain_stats_by_class(np.stack([ref, ref[::-1], ref]), np.array([0, 1, 1]), ["A", "B"], indices=[0, 1])
    assert set(by) == {"A", "B"} and by["A"]["n"] == 1 and by["B"]["n"] == 1


def test_stain_stats_table(tmp_path):
    data = load_prepared(prepare(PrepareConfig(source="histosynth", size=32, per_class=8, out=str(tmp_path / "t"))))
    df = stain_stats_table(data, per_class=2)
    assert list(df.index) == data.class_names and (df["n"] == 2).all()
    assert {"od_r", "od_g", "od_b", "H_r", "E_g", "H_p99", "tissue_ratio"} <= set(df.columns)
    lym, back = df.loc["LYM"], df.loc["BACK"]
    assert lym[["od_r", "od_g", "od_b"]].sum() > back[["od_r", "od_g", "od_b"]].sum()  # dense nuclei vs glass


def test_prepare_with_stain_norm(ref, shared_data, tmp_path):
    refp = shared_data / "nct_examples" / "NORM" / "NORM-TCGA-YLVCMEHK.tif"
    out = prepare(PrepareConfig(source="histosynth", size=32, per_class=3, stain_norm="vahadane",
                                stain_reference=str(refp), out=str(tmp_path / "s")))
    plain = prepare(PrepareConfig(source="histosynth", size=32, per_class=3, out=str(tmp_path / "p")))
    a, b = load_prepared(out), load_prepared(plain)
    sn = a.info["stain_norm"]
    assert sn["method"] == "vahadane" and sn["reference"] == str(refp)
    changed = [not np.array_equal(x, y) for x, y in zip(a.images, b.images)]
    assert sum(changed) + sn["passed_through"] == len(changed) and sum(changed) > 0
    with pytest.raises(ConfigError, match="stain_reference"):
        prepare(PrepareConfig(source="histosynth", size=32, per_class=3, stain_norm="macenko",
                              stain_reference=str(tmp_path / "missing.png"), out=str(tmp_path / "m")))
