"""A tiny trained `ddpm` run for page tests: histosynth 32 px (4 patches per class) and 6 steps of a
16 px U-Net through engine.train.loop, made once per session and copied into each test's runs root."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

TINY_DDPM = ["--family", "ddpm", "--res", "16", "--batch", "8", "--kimg", "0.048", "--channels", "8",
             "--channel-mult", "1,2", "--layers-per-block", "1", "--attention-res", "8",
             "--attention-head-dim", "8", "--dropout", "0", "--timesteps", "50", "--warmup-steps", "2",
             "--sample-steps", "2", "--ema-kimg", "0.01", "--grid-per-class", "2", "--log-kimg", "0.016",
             "--sample-kimg", "0.032", "--snap-kimg", "0.032", "--best-metric", "off", "--tensorboard", "false",
             "--device", "cpu"]
_CACHE: dict[str, Path] = {}


def _made() -> Path:
    if "run" not in _CACHE:
        from engine.config import PrepareConfig
        from engine.data.prepare import prepare
        from engine.train import loop

        base = Path(tempfile.mkdtemp(prefix="histogen-ddpm-"))
        data = prepare(PrepareConfig(source="histosynth", size=32, per_class=4, seed=0, out=str(base / "hs32"),
                                     quality_filter=False))
        run = base / "ddpm"
        assert loop.main(["--data", str(data), "--run-dir", str(run), *TINY_DDPM]) == 0
        _CACHE["run"], _CACHE["data"] = run, Path(data)
    return _CACHE["run"]


def make_ddpm_run(root: str | Path, run_id: str = "ddpm") -> Path:
    """Copy the session's tiny finished ddpm run to <root>/<run_id> and return its path."""
    d = Path(root) / run_id
    shutil.copytree(_made(), d)
    return d


def ddpm_data_dir() -> Path:
    _made()
    return _CACHE["data"]


TINY_MLP_GAN = ["--family", "mlp_gan", "--res", "16", "--batch", "8", "--kimg", "0.048", "--z-dim", "16",
                "--g-hidden", "32", "--d-hidden", "32", "--embed-dim", "8", "--grid-per-class", "2",
                "--log-kimg", "0.016", "--sample-kimg", "0.032", "--snap-kimg", "0.032", "--best-metric", "off",
                "--tensorboard", "false", "--device", "cpu"]


def make_mlp_gan_run(root: str | Path, run_id: str = "mlp") -> Path:
    """A tiny finished mlp_gan run (6 steps) at <root>/<run_id>, trained now (about a second)."""
    from engine.train import loop

    d = Path(root) / run_id
    assert loop.main(["--data", str(ddpm_data_dir()), "--run-dir", str(d), *TINY_MLP_GAN]) == 0
    return d
