"""Loading the EMA generator an entry of a run points at (engine.runs decides which entries exist and
which one "latest" / "best" / a step means)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from engine import runs
from engine.train.checkpoint import load_generator_export
from engine.utils import pick_device, read_json


def _from_checkpoint(run_dir: Path, path: Path, device: str) -> tuple[nn.Module, dict]:
    from engine.models.stylegan2 import Generator, generator_kwargs

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}); pick another step") from None
    from engine import families

    if ck.get("family") in families.MODULES:  # a family module's checkpoint (engine.train.family_loop)
        fam = families.get(ck["family"]).from_state(ck["family_state"], device=device)
        G = families.FamilyGenerator(fam).eval().requires_grad_(False)
        cfg = json.loads(ck["config"]) if isinstance(ck.get("config"), str) else runs.read_config(run_dir)
        step = int(ck["step"])
        meta = {"family": fam.name, "config": ck["family_state"]["config"], "num_classes": G.num_classes,
                "class_names": runs.class_names(run_dir, G.num_classes), "res": G.res, "step": step,
                "kimg": float(ck.get("kimg", step * cfg.get("batch", 0) / 1000))}
        return G, meta
    sd = ck["G_ema"]
    export = read_json(run_dir / runs.EXPORTS / "generator.json") or {}
    cfg = json.loads(ck["config"]) if isinstance(ck.get("config"), str) else runs.read_config(run_dir)
    family = export.get("family") or cfg.get("family", "stylegan2")
    if family != "stylegan2":
        raise ValueError(f"run {run_dir.name}: family {family!r} is not supported for sampling yet "
                         "(supported: stylegan2)")
    # The constructor kwargs do not change during a run, so the export's (if any) fit every checkpoint.
    kwargs = export.get("kwargs") or generator_kwargs(cfg, int(sd["w_avg"].shape[0]))
    G = Generator(**kwargs)
    G.load_state_dict(sd)
    step = int(ck["step"])
    meta = {"family": family, "kwargs": kwargs, "class_names": runs.class_names(run_dir, G.num_classes),
            "res": G.res, "step": step, "kimg": float(ck.get("kimg", step * cfg.get("batch", 0) / 1000))}
    return G.to(device).eval().requires_grad_(False), meta


def load_generator(run_dir: str | os.PathLike, step: int | str | None = None, device: str = "cpu",
                   path: str | os.PathLike | None = None) -> tuple[nn.Module, dict]:
    """The EMA generator of a run, in eval mode without gradients, on `device`.

    Args:
        step: None / "latest" -> the run's default entry (the export if the run finished, else G_ema of
            the newest checkpoint); an int -> that step's checkpoint (or the export at that step);
            "best" -> exports/best (the best model by the trainer's held-out FID).
        path: an entry's "path" from `engine.runs.entries` (a step_*.pt file or an exports dir); wins
            over `step`.
    Returns (G, meta) with meta {"family", "kwargs", "class_names", "res", "step", "kimg", "path", "kind"}.
    A family with a family module (ddpm) gives an engine.families.FamilyGenerator (meta "config" instead
    of "kwargs"): `engine.sampling.generate` samples it with its sampler options.
    Weights load with weights_only=True / safetensors: nothing is unpickled.
    """
    d = Path(run_dir)
    device = pick_device(device)
    chosen = runs.find_entry(d, step, path)
    if chosen["kind"] in ("export", "best"):
        G, meta = load_generator_export(chosen["path"], device=device)
        meta = dict(meta)
        meta.setdefault("class_names", runs.class_names(d, G.num_classes))
        if chosen["kind"] == "best":
            meta["best"] = chosen["best"]
    else:
        G, meta = _from_checkpoint(d, Path(chosen["path"]), device)
    meta.update(path=chosen["path"], kind=chosen["kind"], res=G.res)
    return G, meta
