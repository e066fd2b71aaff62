"""Checkpoints (full training state) and exports (G_ema for everyone else), both crash-safe.

A checkpoint holds only tensors, dicts, lists, str, int, float and bool, so it loads with
`torch.load(weights_only=True)` and never unpickles code. It is written to a temp file, fsync'ed,
renamed into place, and only then named in `latest.json`: a reader sees the old checkpoint or the
whole new one. Exports are safetensors + JSON, enough to rebuild the generator without the trainer.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine import runs
from engine.utils import atomic_write_json, fsync_dir, read_json

# Test hook: seconds to sleep between writing the temp file and renaming it (kill-during-write test).
SLEEP_ENV = "HISTOGEN_TEST_CKPT_SLEEP"


# ----------------------------------------------------------------------------------------------
# RNG state as tensors / primitives (weights_only-safe)

def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------------
# Checkpoints

def save_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any], step: int, *,
                    keep_last: int = 3) -> Path:
    """Write checkpoints/step_XXXXXXXX.pt atomically, point latest.json at it, prune old ones.

    Args:
        state: tensors / dicts / lists / primitives only (checked by the weights_only load on resume).
        keep_last: how many of the newest checkpoints to keep; the one latest.json names always stays.
    Returns the path written.
    """
    path = runs.checkpoint_path(run_dir, step)
    ckdir = path.parent
    ckdir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ckdir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get(SLEEP_ENV):
            time.sleep(float(os.environ[SLEEP_ENV]))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(ckdir)
    atomic_write_json(ckdir / "latest.json", {"step": int(step), "file": path.name})
    prune_checkpoints(ckdir, keep_last)
    return path


def prune_checkpoints(ckdir: Path, keep_last: int) -> None:
    latest = (read_json(ckdir / "latest.json") or {}).get("file")
    for _, p in runs.checkpoint_files(ckdir.parent)[max(1, keep_last):]:
        if p.name != latest:
            p.unlink(missing_ok=True)


def load_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, Any], Path] | None:
    """The newest whole checkpoint of a run, or None when there is none.

    Tries the file latest.json names first, then every step_*.pt newest first, so a corrupt or
    truncated newest file falls back to the previous whole one. Leftover temp files of a write that
    was killed are removed.
    """
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return None
    for p in ckdir.glob(".step_*.tmp"):
        p.unlink(missing_ok=True)
    candidates = [p for _, p in runs.checkpoint_files(ckdir.parent)]
    latest = (read_json(ckdir / "latest.json") or {}).get("file")
    if latest and (ckdir / latest) in candidates:
        candidates.remove(ckdir / latest)
        candidates.insert(0, ckdir / latest)
    for p in candidates:
        try:
            state = torch.load(p, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated zip, bad pickle opcode, ...: use the previous one
            print(f"warning: checkpoint {p} is unreadable ({type(e).__name__}: {e}); trying an older "
                  "one", flush=True)
            continue
        if isinstance(state, dict) and "step" in state:
            return state, p
    return None


# ----------------------------------------------------------------------------------------------
# Exports: G_ema as safetensors + the JSON needed to rebuild it

def export_generator(run_dir: str | os.PathLike, G_ema: nn.Module | dict[str, torch.Tensor],
                     meta: dict[str, Any], *, out: str | os.PathLike | None = None) -> Path:
    """Write exports/generator.safetensors (parameters and buffers, e.g. w_avg) + generator.json.

    `G_ema`: the module, or its tensors (a family's export()). `meta` must hold "family" and what
    rebuilds the model: "kwargs" (the StyleGAN2 Generator's constructor arguments) or, for a family
    module, what its `from_export` reads; class names, res, step and kimg are useful extras. `out` writes
    the same two files to another directory instead (export_best). Returns the export directory.
    """
    from safetensors.torch import save_file

    out = Path(out) if out is not None else Path(run_dir) / "exports"
    out.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage
    sd = G_ema if isinstance(G_ema, dict) else G_ema.state_dict()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".generator.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "family": str(meta.get("family", ""))})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out / "generator.safetensors")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_json(out / "generator.json", meta)
    return out


BEST_DIR = "best"  # exports/best/: the best G_ema by the periodic held-out FID (spec 4.3 cgan_best_model.pt)


def export_best(run_dir: str | os.PathLike, G_ema: nn.Module | dict[str, torch.Tensor], meta: dict[str, Any], best: dict[str, Any]) -> Path:
    """Write exports/best/ = the export's two files + best.json ({"step", "kimg", "metric", "score", "n"
    ...}), whole or not at all: built in a temp directory beside it, then renamed into place (the old
    one steps aside first, since rename cannot replace a non-empty directory). Returns exports/best."""
    import shutil

    exports = Path(run_dir) / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    final = exports / BEST_DIR
    for junk in exports.glob(f".{BEST_DIR}.*"):  # debris of a write that was killed
        shutil.rmtree(junk, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=exports, prefix=f".{BEST_DIR}.tmp-"))
    try:
        export_generator(run_dir, G_ema, meta, out=tmp)
        atomic_write_json(tmp / "best.json", best)
        fsync_dir(tmp)
        old = exports / f".{BEST_DIR}.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(exports)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_generator_export(path: str | os.PathLike, device: str | torch.device = "cpu"
                          ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild G_ema from an export directory (or a run directory holding exports/).

    Returns (generator in eval mode on `device`, meta dict from generator.json). A family with a
    family module (engine.families.MODULES, e.g. ddpm) comes back as an engine.families.FamilyGenerator
    (.res, .num_classes, .sample(classes, seeds, **sampler options)).
    """
    from safetensors.torch import load_file

    d = Path(path)
    if (d / "exports" / "generator.json").is_file():
        d = d / "exports"
    meta_path = d / "generator.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no generator export at {d}: expected generator.json and "
                                "generator.safetensors (written when a run finishes)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    family = meta.get("family", "stylegan2")
    from engine import families

    if family in families.MODULES:
        fam = families.get(family).from_export(load_file(str(d / "generator.safetensors"), device="cpu"),
                                               meta, device=device)
        return families.FamilyGenerator(fam).eval().requires_grad_(False), meta
    if family != "stylegan2":
        raise ValueError(f"export family {family!r} is not supported yet (supported: stylegan2, "
                         f"{', '.join(families.MODULES)})")
    from engine.models.stylegan2 import Generator

    G = Generator(**meta["kwargs"])
    G.load_state_dict(load_file(str(d / "generator.safetensors"), device="cpu"))
    return G.to(device).eval().requires_grad_(False), meta
