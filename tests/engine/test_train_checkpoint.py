import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from engine.train import checkpoint as ck
from engine.train.ema import ema_decay, ema_half_life_img, make_ema, update_ema
from engine.train.grid import generate_grid, grid_latents


def _state(step):
    return {"step": step, "w": torch.full((3,), float(step)), "nested": {"a": [1, 2.5, "x", True, None]}}


def test_save_load_roundtrip_and_retention(tmp_path):
    for s in (1, 2, 3, 4, 5):
        ck.save_checkpoint(tmp_path, _state(s), s, keep_last=2)
    files = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert files == ["step_00000004.pt", "step_00000005.pt"]
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest == {"step": 5, "file": "step_00000005.pt"}
    state, path = ck.load_checkpoint(tmp_path)
    assert state["step"] == 5 and torch.equal(state["w"], torch.full((3,), 5.0))
    assert state["nested"] == {"a": [1, 2.5, "x", True, None]}


def test_retention_never_deletes_the_file_latest_names(tmp_path):
    ck.save_checkpoint(tmp_path, _state(9), 9, keep_last=1)
    # an older-numbered checkpoint written later (e.g. a resumed run that went back) is the latest
    ck.save_checkpoint(tmp_path, _state(3), 3, keep_last=1)
    names = {p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")}
    assert "step_00000003.pt" in names


def test_corrupt_newest_falls_back_to_previous_whole_one(tmp_path, capsys):
    ck.save_checkpoint(tmp_path, _state(1), 1)
    p2 = ck.save_checkpoint(tmp_path, _state(2), 2)
    data = p2.read_bytes()
    p2.write_bytes(data[: len(data) // 2])  # truncated (disk full, torn copy ...)
    (tmp_path / "checkpoints" / ".step_00000003.pt.abc.tmp").write_bytes(b"partial")
    state, path = ck.load_checkpoint(tmp_path)
    assert state["step"] == 1 and path.name == "step_00000001.pt"
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))  # leftovers of a killed write removed
    assert "unreadable" in capsys.readouterr().out


def test_no_checkpoint_returns_none(tmp_path):
    assert ck.load_checkpoint(tmp_path) is None


def test_rng_state_survives_weights_only_roundtrip(tmp_path):
    torch.manual_seed(1); np.random.seed(2); random.seed(3)
    np.random.randn()  # leave a cached gaussian around
    ck.save_checkpoint(tmp_path, {"step": 0, "rng": ck.rng_state()}, 0)
    expect = (torch.rand(3), np.random.rand(3), random.random())
    state, _ = ck.load_checkpoint(tmp_path)  # weights_only=True inside
    ck.set_rng_state(state["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    class Evil:
        pass

    with pytest.raises(Exception):
        ck.save_checkpoint(tmp_path, {"step": 0, "obj": Evil()}, 0)  # local class: not even picklable
    torch.save({"step": 1, "obj": np.float64(1.0)}, tmp_path / "x.pt")
    with pytest.raises(Exception):
        torch.load(tmp_path / "x.pt", weights_only=True)


# ---------------------------------------------------------------------------------------------- EMA

def test_ema_half_life_means_half_after_half_life_images():
    batch, hl_kimg = 8, 0.4
    beta = ema_decay(batch, nimg=10**9, ema_kimg=hl_kimg, rampup=0.0)
    assert beta ** (hl_kimg * 1000 / batch) == pytest.approx(0.5)
    # ema_beta per step when ema_kimg is 0; ramp-up caps the half-life at rampup * images seen
    assert ema_decay(batch, nimg=10**9, ema_kimg=0, ema_beta=0.9995, rampup=0.0) == pytest.approx(0.9995)
    assert ema_half_life_img(batch, 0, 0.9995) == pytest.approx(batch * np.log(0.5) / np.log(0.9995))
    capped = ema_decay(batch, nimg=1000, ema_kimg=0, ema_beta=0.9995, rampup=0.05)
    assert capped == pytest.approx(0.5 ** (8 / 50))
    assert ema_decay(batch, nimg=0, rampup=0.05) == 0.0  # first step: plain copy


def test_update_ema_lerps_params_and_copies_buffers():
    m = nn.BatchNorm1d(2)
    e = make_ema(m)
    assert not any(p.requires_grad for p in e.parameters()) and not e.training
    with torch.no_grad():
        m.weight.fill_(3.0)
        m.running_mean.fill_(7.0)
    update_ema(e, m, beta=0.75)
    assert torch.allclose(e.weight, torch.full((2,), 0.75 * 1 + 0.25 * 3))
    assert torch.equal(e.running_mean, torch.full((2,), 7.0))


# ---------------------------------------------------------------------------------------------- grid

def test_grid_has_one_row_per_class_fixed_seeds_and_leaves_rng_alone():
    from engine.models.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(8, 3, z_dim=8, w_dim=8, n_mlp=1, channel_base=64, channel_max=16).eval()
    z, y = grid_latents(3, 2, 8, seed=5)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    state = torch.get_rng_state()
    a = generate_grid(G, 3, 2, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    b = generate_grid(G, 3, 2, seed=5)
    assert a.shape == (3 * (8 + 2) + 2, 2 * (8 + 2) + 2, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, generate_grid(G, 3, 2, seed=6))
