"""Folder source: real NCT files, odd and corrupt files, class order, clear errors."""
import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from engine.config import ConfigError, PrepareConfig
from engine.data.dataset import load_prepared
from engine.data.prepare import prepare
from engine.data.classes import NCT_CLASSES
from engine.data.sources import Reject, class_order, folder_source, open_source, read_image, to_rgb8


def texture(h, w, seed=0):
    """A noisy tissue-like RGB image that passes the quality filter."""
    rng = np.random.default_rng(seed)
    base = rng.integers(90, 200, (h // 4 + 1, w // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:h, :w]
    return np.clip(base + rng.integers(-25, 25, (h, w, 3)), 0, 255).astype(np.uint8)


def png_bytes(a, **kw):
    b = io.BytesIO()
    Image.fromarray(a, **kw).save(b, "PNG")
    return b.getvalue()


def make_odd_tree(root):
    """ADI: 4 usable (PNG, RGB TIFF, RGBA PNG, 16-bit grey TIFF) + truncated, garbage, empty, .txt, too small.
    BACK: 2 PNG + 1 palette PNG. EMPTY: no images. One stray file at the root."""
    adi, back = root / "ADI", root / "BACK"
    for d in (adi, back, root / "EMPTY"):
        d.mkdir(parents=True)
    (adi / "good.png").write_bytes(png_bytes(texture(40, 48, 1)))
    tifffile.imwrite(adi / "good.tif", texture(36, 36, 2))
    rgba = np.dstack([texture(40, 40, 3), np.full((40, 40), 255, np.uint8)])
    rgba[:10, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(adi / "rgba.png")
    g16 = (texture(40, 40, 4)[..., 0].astype(np.uint16) * 257)
    tifffile.imwrite(adi / "grey16.tif", g16)
    data = png_bytes(texture(64, 64, 5))
    (adi / "truncated.png").write_bytes(data[: len(data) // 2])
    (adi / "garbage.tif").write_bytes(np.random.default_rng(0).bytes(3000))
    (adi / "empty.png").write_bytes(b"")
    (adi / "notes.txt").write_text("not an image")
    (adi / "small.png").write_bytes(png_bytes(texture(16, 16, 6)))
    for i in range(2):
        (back / f"b{i}.png").write_bytes(png_bytes(texture(32, 32, 10 + i)))
    Image.fromarray(texture(32, 32, 12)).convert("P", palette=Image.Palette.ADAPTIVE).save(back / "pal.png")
    (root / "README.md").write_text("stray")
    return root


def test_to_rgb8_conversions():
    assert to_rgb8(np.full((2, 2), 65535, np.uint16)).tolist() == [[[255] * 3] * 2] * 2
    assert to_rgb8(np.full((2, 2), 257 * 10, np.uint16))[0, 0].tolist() == [10, 10, 10]
    rgba = np.zeros((2, 2, 4), np.uint8)  # transparent black -> background white
    assert (to_rgb8(rgba) == 255).all()
    assert to_rgb8(np.full((3, 5, 6), 0.5, np.float32))[0, 0].tolist() == [128] * 3  # planar float
    assert to_rgb8(np.ones((2, 2), bool))[0, 0].tolist() == [255] * 3


def test_nct_example_tiff(shared_data):
    src = folder_source(shared_data / "nct_examples")
    assert src.class_names == ["NORM"] and len(src.items) == 1 and not src.skipped
    img = read_image(src.items[0][1])
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8 and 100 < img.mean() < 220


def test_nct_figure_crops_prepared(shared_data, tmp_path):
    src = f"folder:{shared_data / 'nct_figure_crops'}"
    out = prepare(PrepareConfig(source=src, size=32, out=str(tmp_path / "f")))
    data = load_prepared(out)
    assert data.class_names == list(NCT_CLASSES)
    assert data.info["rejected"] == {}  # the default quality filter keeps every real tile, BACK included
    assert np.bincount(data.labels).tolist() == [2] * 9
    assert data.images.shape == (18, 32, 32, 3)
    assert data.info["synthetic"] is False


def test_class_order():
    assert class_order(["TUM", "ADI", "NORM"]) == ["ADI", "NORM", "TUM"]
    assert class_order(["TUM", "ADI", "other"]) == ["ADI", "TUM", "other"]  # not all NCT: sorted
    assert class_order(["b", "a"]) == ["a", "b"]


def test_odd_tree_rejects_by_reason(tmp_path):
    root = make_odd_tree(tmp_path / "tree")
    out = prepare(PrepareConfig(source=f"folder:{root}", size=32, out=str(tmp_path / "prep")))
    data = load_prepared(out)
    info = data.info
    assert info["rejected"] == {"unreadable": 2, "empty": 1, "not_image": 1, "too_small": 1,
                                "outside_class_folder": 1}
    assert info["empty_classes"] == ["EMPTY"]
    assert data.class_names == ["ADI", "BACK"]
    assert np.bincount(data.labels).tolist() == [4, 3]
    assert any("truncated.png" in e for e in info["rejected_examples"]["unreadable"])
    assert any("small.png" in e for e in info["rejected_examples"]["too_small"])
    names = [line.split(",")[3] for line in (out / "files.csv").read_text().splitlines()[1:]]
    assert {n.rsplit("/", 1)[1] for n in names} == {"good.png", "good.tif", "rgba.png", "grey16.tif",
                                                  "b0.png", "b1.png", "pal.png"}
    i = next(k for k, n in enumerate(names) if n.endswith("rgba.png"))
    assert (data.images[i][:4] == 255).all()  # the transparent top became white, after resize and crop
    j = next(k for k, n in enumerate(names) if n.endswith("grey16.tif"))
    g = data.images[j].astype(int)
    assert (g[..., 0] == g[..., 1]).all() and 60 < g.mean() < 230  # 16-bit grey scaled, not clipped


def test_min_size_lets_small_images_in(tmp_path):
    root = make_odd_tree(tmp_path / "tree")
    out = prepare(PrepareConfig(source=f"folder:{root}", size=32, min_size=16, out=str(tmp_path / "p")))
    assert "too_small" not in load_prepared(out).info["rejected"]


def test_nothing_usable_fails_with_one_sentence(tmp_path):
    root = tmp_path / "bad"
    (root / "ADI").mkdir(parents=True)
    (root / "ADI" / "x.tif").write_bytes(b"garbage")
    (root / "ADI" / "y.png").write_bytes(b"")
    with pytest.raises(ConfigError) as e:
        prepare(PrepareConfig(source=f"folder:{root}", size=32, out=str(tmp_path / "out")))
    msg = str(e.value)
    assert str(root) in msg and "unreadable 1" in msg and "empty 1" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no half-written temp dir left


@pytest.mark.parametrize("source, words", [
    ("folder:/no/such/dir", ["'source'", "/no/such/dir", "does not exist"]),
    ("imagenet", ["'source'", "histosynth", "folder:PATH"]),
    ("folder:", ["'source'", "folder:"]),
])
def test_bad_source_is_config_error(source, words, tmp_path):
    with pytest.raises(ConfigError) as e:
        prepare(PrepareConfig(source=source, out=str(tmp_path / "o")))
    assert all(w in str(e.value) for w in words)


def test_folder_without_class_subfolders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(png_bytes(texture(32, 32)))
    with pytest.raises(ConfigError, match="no class sub-folders"):
        open_source(f"folder:{tmp_path / 'flat'}")


def test_per_class_cap_is_a_seeded_subset(tmp_path):
    root = tmp_path / "t"
    (root / "A").mkdir(parents=True)
    for i in range(10):
        (root / "A" / f"{i:02d}.png").write_bytes(png_bytes(texture(32, 32, i)))
    a = folder_source(root, per_class=4, seed=0).items
    assert len(a) == 4 and a == folder_source(root, per_class=4, seed=0).items
    assert a != folder_source(root, per_class=4, seed=1).items


def test_read_image_reasons(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(Reject) as e:
        read_image(tmp_path / "a.txt")
    assert e.value.reason == "not_image"


def test_tiff_pil_cannot_read_goes_to_tifffile(tmp_path):
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, np.full((20, 30, 3), 0.5, np.float32))  # float RGB: PIL cannot identify it
    with pytest.raises(Exception):
        Image.open(p).load()
    img = read_image(p)
    assert img.shape == (20, 30, 3) and (img == 128).all()


def test_too_large_image_rejected_before_decoding(tmp_path, monkeypatch):
    import engine.data.sources as S

    monkeypatch.setattr(S, "MAX_PIXELS", 1000)
    (tmp_path / "big.png").write_bytes(png_bytes(texture(40, 40)))
    with pytest.raises(Reject) as e:
        read_image(tmp_path / "big.png")
    assert e.value.reason == "too_large"


def test_file_names_not_utf8_are_read_and_recorded(tmp_path):
    """Shared drives hold names in Latin-1 & co.: Python sees them as str with lone surrogates, which
    must not crash `prepare` with UnicodeEncodeError while writing files.csv, after all the work."""
    import csv
    import json
    import os

    from engine.data.prepare import summary_table

    root = os.fsencode(tmp_path / "tree")
    adi, odd_class = os.path.join(root, b"ADI"), os.path.join(root, b"ST\xd8R")  # 'STØR' in Latin-1
    try:
        os.makedirs(adi)
        os.makedirs(odd_class)
    except OSError:
        pytest.skip("this file system refuses names that are not valid UTF-8")
    for d, names in ((adi, [b"caf\xe9.png", b"ok.png"]), (odd_class, [b"\xff1.png", b"\xff2.png", b"3.png", b"4.png"])):
        for i, n in enumerate(names):
            with open(os.path.join(d, n), "wb") as f:
                f.write(png_bytes(texture(40, 40, i)))
    with open(os.path.join(adi, b"bad\xe9.png"), "wb") as f:
        f.write(b"not a png")  # rejected: its name lands in rejected_examples, the summary and the CLI output
    with open(os.path.join(adi, b"note\xe9.txt"), "wb") as f:
        f.write(b"x")
    out = prepare(PrepareConfig(source=f"folder:{os.fsdecode(root)}", size=32, per_class=3,
                                out=str(tmp_path / "p")))  # per_class: the seeded subset of ST\xd8R
    data = load_prepared(out)
    assert np.bincount(data.labels).tolist() == [2, 3]  # every readable file was read, odd names included
    rows = list(csv.DictReader(open(out / "files.csv", encoding="utf-8")))  # valid UTF-8 throughout
    names = {r["source"].rsplit("/", 1)[1] for r in rows}
    assert "caf\\xe9.png" in names and "ok.png" in names  # the undecodable byte is shown, not lost
    assert data.class_names == ["ADI", "ST\\xd8R"]
    info = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    json.dumps(info, ensure_ascii=False).encode("utf-8")  # no lone surrogates (they break UTF-8 writers)
    assert info["rejected"] == {"unreadable": 1, "not_image": 1}
    assert any("bad\\xe9.png" in e for e in info["rejected_examples"]["unreadable"])
    summary_table(info).encode("utf-8")
