"""engine.sampling on a tiny finished run: loading, determinism, truncation, style mixing, export, CLI."""
import csv
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from engine import sampling as S
from engine.config import ConfigError
from engine.utils import atomic_write_json, read_json, runs_root
from tests.fixtures_runs import CLASS_NAMES, STEPS, make_tiny_run


@pytest.fixture
def run():
    return make_tiny_run(runs_root())


@pytest.fixture(scope="module")
def G(tmp_path_factory):
    # read-only tests share one run (making it costs seconds on a busy 2-core CI machine)
    return S.load_generator(make_tiny_run(tmp_path_factory.mktemp("runs")))[0]


def test_list_and_load_choose_export_or_checkpoint(run):
    entries = S.list_checkpoints(run)
    assert [(e["step"], e["kind"]) for e in entries] == [(8, "export"), (8, "checkpoint"), (4, "checkpoint")]
    G, meta = S.load_generator(run)
    assert meta["kind"] == "export" and meta["step"] == 8 and meta["class_names"] == CLASS_NAMES
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    G4, meta4 = S.load_generator(run, step=4)
    assert meta4["kind"] == "checkpoint" and meta4["step"] == 4 and meta4["class_names"] == CLASS_NAMES
    a, _ = S.generate(G, [0], [0])
    b, _ = S.generate(G4, [0], [0])
    assert not np.array_equal(a, b)  # another step, other weights
    # a run still going samples from its newest checkpoint (same weights as the export here)
    st = read_json(run / "status.json")
    atomic_write_json(run / "status.json", dict(st, state="running"))
    Gc, metac = S.load_generator(run)
    assert metac["kind"] == "checkpoint" and metac["step"] == 8
    assert np.array_equal(S.generate(Gc, [0], [0])[0], a)
    # a checkpoint without an export (early in a run): kwargs from config.json, names from NCT order
    (run / "exports" / "generator.json").unlink()
    Gn, metan = S.load_generator(run, path=run / "checkpoints" / "step_00000004.pt")
    assert metan["class_names"] == CLASS_NAMES and np.array_equal(S.generate(Gn, [0], [0])[0], b)


def test_checkpoint_choices_list_each_step_once(run):
    """The pickers' list: a step with a checkpoint and an export (same G_ema) appears once."""
    fin = S.checkpoint_choices(run)
    assert [(e["step"], e["kind"], e["label"], e["default"]) for e in fin] == \
        [(8, "export", "step 8 · export", True), (4, "checkpoint", "step 4 · checkpoint", False)]
    going = S.checkpoint_choices(run, finished=False)  # a run still going: its newest checkpoint
    assert [(e["step"], e["kind"], e["default"]) for e in going] == [(8, "checkpoint", True), (4, "checkpoint", False)]
    for finished, entries in ((True, fin), (False, going)):  # the default is what load_generator picks
        st = read_json(run / "status.json")
        atomic_write_json(run / "status.json", dict(st, state="finished" if finished else "running"))
        assert S.load_generator(run)[1]["path"] == next(e["path"] for e in entries if e["default"])
    assert "exports/generator.safetensors" in S.KIND_HELP and "checkpoint" in S.KIND_HELP


def test_load_errors(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="available steps: 8, 4$"):
        S.load_generator(run, step=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint or export"):
        S.load_generator(tmp_path / "empty")


def test_same_class_seed_same_image(G):
    imgs, recs = S.generate(G, [0, 3], [5, 7], class_names=CLASS_NAMES)
    assert imgs.shape == (4, 16, 16, 3) and imgs.dtype == np.uint8
    assert [(r["class"], r["seed"]) for r in recs] == [("ADI", 5), ("ADI", 7), ("LYM", 5), ("LYM", 7)]
    again, _ = S.generate(G, [0, 3], [5, 7])
    assert np.array_equal(imgs, again)
    alone, _ = S.generate(G, [3], [7], batch=1)  # another batch: the seed alone fixes z
    assert np.abs(alone[0].astype(int) - imgs[3].astype(int)).max() <= 1
    assert not np.array_equal(imgs[0], imgs[1]) and not np.array_equal(imgs[0], imgs[2])
    calls = []
    S.generate(G, [0, 1, 2], [0, 1], batch=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 6), (6, 6)]


def test_truncation_zero_gives_the_class_average(G):
    imgs, _ = S.generate(G, [1, 2], [0, 1, 2], truncation=0.0)
    assert all(np.array_equal(imgs[0], imgs[i]) for i in (1, 2))
    assert all(np.array_equal(imgs[3], imgs[i]) for i in (4, 5))
    assert not np.array_equal(imgs[0], imgs[3])
    half, _ = S.generate(G, [1], [0, 1], truncation=0.5)
    assert not np.array_equal(half[0], half[1])


def test_class_grid_rows(G):
    grid = S.class_grid(G, [0, 4, 8], [0, 1])
    assert grid.shape == (3 * 18 + 2, 2 * 18 + 2, 3)
    imgs, _ = S.generate(G, [0, 4, 8], [0, 1])
    assert np.array_equal(grid[2 + 18:2 + 18 + 16, 2 + 18:2 + 18 + 16], imgs[3])  # row 1 (class 4), seed 1


def test_style_mix_endpoints_and_crossover(G):
    src, dst = (0, 3), (5, 11)
    n = G.num_ws
    s_img, d_img, m0 = S.style_mix_batch(G, src, dst, [0.0] * n, with_sources=True)
    assert np.array_equal(m0, s_img)
    assert np.array_equal(S.style_mix(G, src, dst, [1.0] * n), S.style_mix_batch(G, src, dst, n, with_sources=True)[1])
    assert np.array_equal(S.style_mix(G, src, dst, [1.0] * n), d_img)
    # the mixed image's endpoints are the samples `generate` makes for the same (class, seed)
    gen_src, _ = S.generate(G, [src[0]], [src[1]])
    gen_dst, _ = S.generate(G, [dst[0]], [dst[1]])
    assert np.abs(gen_src[0].astype(int) - s_img.astype(int)).max() <= 1
    assert np.abs(gen_dst[0].astype(int) - d_img.astype(int)).max() <= 1
    # crossover k: layers >= k from the donor; 0 = donor, n = source
    assert np.array_equal(S.style_mix(G, src, dst, 0), d_img)
    assert np.array_equal(S.style_mix(G, src, dst, n), s_img)
    k = 3
    cross = S.style_mix(G, src, dst, k)
    assert np.array_equal(cross, S.style_mix(G, src, dst, [0.0] * k + [1.0] * (n - k)))
    assert not np.array_equal(cross, s_img) and not np.array_equal(cross, d_img)
    assert not np.array_equal(S.style_mix(G, src, dst, k, noise_strength=0.0), cross)
    for bad in (n + 1, -1, [0.5] * (n - 1), [2.0] * n):
        with pytest.raises(ValueError, match="mix"):
            S.style_mix(G, src, dst, bad)


def test_layer_groups(G):
    groups = S.layer_groups(G)
    assert [g["index"] for g in groups] == list(range(G.num_ws))
    assert [g["res"] for g in groups] == [4, 8, 8, 16, 16, 16]
    assert [g["group"] for g in groups] == ["coarse", "middle", "middle", "fine", "fine", "fine"]

    class Fake:  # a 256 px layer list gives Karras et al.'s coarse 4-8 / middle 16-32 / fine 64+
        res = 256
        layer_names = ["4x4 conv"] + [f"{r}x{r} {k}" for r in (8, 16, 32, 64, 128, 256) for k in ("up", "conv")] \
            + ["256x256 rgb"]
    by_res = {g["res"]: g["group"] for g in S.layer_groups(Fake)}
    assert by_res == {4: "coarse", 8: "coarse", 16: "middle", 32: "middle", 64: "fine", 128: "fine", 256: "fine"}


def test_export_zip_manifest(G):
    imgs, recs = S.generate(G, [2, 6], [0, 9], truncation=0.7, class_names=CLASS_NAMES)
    zf = zipfile.ZipFile(io.BytesIO(S.export_zip(imgs, recs, checkpoint_step=8)))
    rows = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    assert list(rows[0]) == ["file", "class", "seed", "psi", "checkpoint_step"]
    assert [(r["class"], int(r["seed"]), float(r["psi"]), int(r["checkpoint_step"])) for r in rows] == \
        [("DEB", 0, 0.7, 8), ("DEB", 9, 0.7, 8), ("NORM", 0, 0.7, 8), ("NORM", 9, 0.7, 8)]
    assert sorted(zf.namelist()) == sorted([r["file"] for r in rows] + ["manifest.csv"])
    for r, img in zip(rows, imgs):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(zf.read(r["file"])))), img)
    with pytest.raises(ValueError):
        S.export_zip(imgs[:1], recs, 8)


def test_parse_seeds_and_classes():
    assert S.parse_seeds("0-3") == [0, 1, 2, 3]
    assert S.parse_seeds("1, 5,9,5") == [1, 5, 9]
    assert S.parse_seeds("7,0-2") == [7, 0, 1, 2]
    for bad, msg in (("", "no seed"), ("a", "cannot read 'a'"), ("7-3", "ends before"), ("-1", "cannot read"),
                     ("0-99999999", "more than"), (str(2**32), "out of range")):
        with pytest.raises(ConfigError, match=msg):
            S.parse_seeds(bad)
    assert S.take_seeds([4, 9], 4) == [4, 9, 10, 11] and S.take_seeds([0, 1, 2], 2) == [0, 1]
    assert S.parse_classes("adi,TUM", CLASS_NAMES) == [0, 8]
    assert S.parse_classes("all", CLASS_NAMES) == list(range(9)) and S.parse_classes("3", CLASS_NAMES) == [3]
    with pytest.raises(ConfigError, match="unknown class 'FOO'.*ADI, BACK"):
        S.parse_classes("ADI,FOO", CLASS_NAMES)


def test_cli_sample_and_style_mix(run, tmp_path, capsys):
    from engine.__main__ import main

    out = tmp_path / "out"
    rc = main(["sample", "--run-dir", str(run), "--classes", "ADI,TUM", "--seeds", "0-2", "--truncation", "0.7",
               "--out", str(out), "--device", "cpu"])
    assert rc == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert [(r["class"], r["seed"], r["checkpoint_step"]) for r in rows] == \
        [(c, str(s), str(STEPS[-1])) for c in ("ADI", "TUM") for s in range(3)]
    G = S.load_generator(run)[0]
    imgs, _ = S.generate(G, [0, 8], [0, 1, 2], truncation=0.7)
    for r, img in zip(rows, imgs):
        assert np.array_equal(np.asarray(Image.open(out / r["file"])), img)
    assert np.asarray(Image.open(out / "grid.png")).shape == (2 * 18 + 2, 3 * 18 + 2, 3)

    out2 = tmp_path / "mix"
    assert main(["sample", "--run-dir", str(run), "--step", "4", "--classes", "MUS", "--seeds", "1",
                 "--donor", "TUM:2", "--crossover", "2", "--out", str(out2), "--device", "cpu"]) == 0
    G4 = S.load_generator(run, step=4)[0]
    mixed = np.asarray(Image.open(out2 / next(csv.DictReader((out2 / "manifest.csv").open()))["file"]))
    assert np.array_equal(mixed, S.style_mix(G4, (5, 1), (8, 2), 2))

    # real tiles to compare with: the eval split of the run's data set, at the generator's res
    from engine.config import PrepareConfig
    from engine.data.dataset import real_tiles
    from engine.data.prepare import prepare

    data = prepare(PrepareConfig(source="histosynth", size=32, per_class=20, eval_frac=0.2,
                                 out=str(tmp_path / "data")))
    cfg = read_json(run / "config.json")
    atomic_write_json(run / "config.json", dict(cfg, data=str(data)))
    out3 = tmp_path / "real"
    assert main(["sample", "--run-dir", str(run), "--classes", "ADI,TUM", "--seeds", "0-2", "--real-per-class",
                 "2", "--out", str(out3), "--device", "cpu"]) == 0
    real = np.asarray(Image.open(out3 / "real_grid.png"))
    assert real.shape == np.asarray(Image.open(out3 / "grid.png")).shape[:1] + (2 * 18 + 2, 3)
    assert np.array_equal(real[2:18, 2:18], real_tiles(data, "ADI", 2, size=16)[0])
    assert "real_grid.png" in capsys.readouterr().out

    assert main(["sample", "--run-dir", str(run), "--classes", "XYZ", "--out", str(out)]) == 2
    assert "unknown class 'XYZ'" in capsys.readouterr().err
    assert main(["sample", "--run-dir", str(run), "--step", "5", "--out", str(out)]) == 2
