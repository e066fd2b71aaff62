"""Sampling from trained generators: load from a run, per-class samples and grids, export, style mixing.

A sample is named by (class, seed): the seed alone fixes z (`torch.Generator().manual_seed(seed)`), so
the same pair gives the same patch in the Samples page, the Style-mixing page, the CLI and evaluation,
whatever the batch it was drawn in. Noise is the generator's constant maps by default for the same reason.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from engine.config import ConfigError
from engine.data.dataset import run_data_dir
from engine.train.checkpoint import load_generator_export
from engine.train.checkpoint import list_checkpoints as _ckpt_files
from engine.images import png_bytes, tile, to_uint8
from engine.utils import atomic_write_bytes, atomic_write_text, pick_device, read_json

NCT_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
MAX_SEEDS = 10_000          # a typo like "0-99999999" must not hang the page
MANIFEST_COLUMNS = ("file", "class", "seed", "psi", "checkpoint_step")


# ----------------------------------------------------------------------------------------------
# Parsing user input (CLI flags and page text boxes share these, so both give the same errors)

def parse_seeds(text: str, max_count: int = MAX_SEEDS) -> list[int]:
    """"0-7", "1,5,9" or "0-3, 10" -> [0, 1, ...] in the order given, duplicates dropped."""
    def num(part: str, v: str) -> int:
        if not (v.isascii() and v.isdigit()):
            raise ConfigError(f"seeds: cannot read {part!r}; use ranges and lists of non-negative integers "
                              "like 0-7 or 1,5,9")
        return int(v)

    seeds: list[int] = []
    for part in (p for p in str(text).replace(" ", "").split(",") if p):
        lo, _, hi = part.partition("-")
        lo, hi = num(part, lo), (num(part, hi) if "-" in part else None)
        if hi is None:
            seeds.append(lo)
        elif hi < lo:
            raise ConfigError(f"seeds: range {part!r} ends before it starts; write low-high, e.g. 0-7")
        elif hi - lo + 1 > max_count:
            raise ConfigError(f"seeds: range {part!r} has more than {max_count} seeds")
        else:
            seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ConfigError("seeds: no seed given; use ranges and lists of integers like 0-7 or 1,5,9")
    if (big := max(seeds)) >= 2**32:
        raise ConfigError(f"seeds: {big} is out of range; seeds lie in 0..{2**32 - 1}")
    out = list(dict.fromkeys(seeds))
    if len(out) > max_count:
        raise ConfigError(f"seeds: {len(out)} seeds given, at most {max_count} allowed")
    return out


def take_seeds(seeds: list[int], n: int) -> list[int]:
    """The first n seeds, continued with the next unused integers when fewer are given."""
    if n < 1:
        raise ConfigError(f"per_class must be at least 1, got {n}")
    out, nxt = list(seeds[:n]), (max(seeds) + 1 if seeds else 0)
    while len(out) < n:
        out.append(nxt)
        nxt += 1
    return out


def parse_classes(spec: str | list, class_names: list[str]) -> list[int]:
    """Class names (any case) or indices, as "ADI,TUM" or a list -> class indices; "" or "all" = all."""
    items = spec if isinstance(spec, (list, tuple)) else [s for s in str(spec).replace(" ", "").split(",") if s]
    if not items or items == ["all"]:
        return list(range(len(class_names)))
    upper = [n.upper() for n in class_names]
    out = []
    for it in items:
        s = str(it)
        if s.upper() in upper:
            out.append(upper.index(s.upper()))
        elif s.isdigit() and int(s) < len(class_names):
            out.append(int(s))
        else:
            raise ConfigError(f"classes: unknown class {s!r}; choose from {', '.join(class_names)} "
                              f"(or indices 0..{len(class_names) - 1})")
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------------------------
# Loading a generator from a run directory

def best_info(run_dir: str | os.PathLike) -> dict | None:
    """exports/best/best.json of a run ({"step", "kimg", "metric", "score", "n", ...}) when the best
    model is there whole (its weights and generator.json too), else None."""
    b = Path(run_dir) / "exports" / "best"
    info = read_json(b / "best.json")
    if not isinstance(info, dict) or not (b / "generator.safetensors").is_file() or \
            not (b / "generator.json").is_file():
        return None
    return info


def best_label(info: dict) -> str:
    """"best (step 800, FID 12.3)": how the pickers name the best model."""
    metric = {"fid_domain": "FID"}.get(str(info.get("metric")), str(info.get("metric", "score")))
    score = info.get("score")
    return f"best (step {info.get('step')}, {metric} {score:.4g})" if isinstance(score, (int, float)) \
        else f"best (step {info.get('step')})"


def list_checkpoints(run_dir: str | os.PathLike) -> list[dict]:
    """What a run can sample from, newest first: its step_*.pt checkpoints and its export, then its
    best model (exports/best, when the trainer kept one).

    Returns [{"label": "step 1200 (checkpoint)", "step", "path", "kind": "checkpoint"|"export"|"best"}];
    at equal steps the export comes first (it is what a finished run samples from by default). The best
    entry also has "best" (its best.json).
    """
    d = Path(run_dir)
    out = [{"label": f"step {s} (checkpoint)", "step": s, "path": str(p), "kind": "checkpoint"}
           for s, p in _ckpt_files(d / "checkpoints")]
    meta = read_json(d / "exports" / "generator.json")
    if meta and (d / "exports" / "generator.safetensors").is_file():
        s = int(meta.get("step", 0))
        out.append({"label": f"step {s} (export)", "step": s, "path": str(d / "exports"), "kind": "export"})
    out = sorted(out, key=lambda e: (e["step"], e["kind"] == "export"), reverse=True)
    if (info := best_info(d)) is not None:
        out.append({"label": best_label(info), "step": int(info.get("step", 0)), "path": str(d / "exports" / "best"),
                    "kind": "best", "best": info})
    return out


# What the two kinds of file are, in the words the pickers show (Samples, Style mixing).
KIND_HELP = ("**export**: the EMA generator's weights alone, `exports/generator.safetensors` (+ "
             "`generator.json`): the file to share or to use for inference, rewritten at every snapshot "
             "and when the run ends. **checkpoint**: a full training snapshot, `checkpoints/step_*.pt` "
             "(both networks, optimisers, EMA, data position) from which a run resumes; its EMA generator is "
             "what is sampled. At the same step both hold the same EMA weights, so each step is listed once. "
             "**latest** follows the newest step while a run is going (the export once it finished). "
             "**best**: `exports/best/`, the EMA generator of the checkpoint with the lowest quick FID "
             "(`domain` features, held-out `eval` split) so far, with its step and score (the spec's "
             "`cgan_best_model.pt`).")


def checkpoint_choices(run_dir: str | os.PathLike, finished: bool | None = None) -> list[dict]:
    """`list_checkpoints`, one entry per step (newest first): what a picker offers.

    A step with both a checkpoint and an export appears once, as the file `load_generator(step=None)`
    prefers (the export when the run finished, else the checkpoint): both hold the same G_ema, so two
    entries would be the same step twice. Each entry gets "label" ("step 8 · export") and "default"
    (True for the one `load_generator(step=None)` loads). `finished` defaults to the run's status.json.
    The best model, when the run has one, comes first: {"kind": "best", "label": "best (step N, FID x)"},
    never the default (a picker offers it beside latest).
    """
    d = Path(run_dir)
    if finished is None:
        finished = (read_json(d / "status.json") or {}).get("state") == "finished"
    prefer = "export" if finished else "checkpoint"
    by_step: dict[int, dict] = {}
    entries = list_checkpoints(d)
    for e in entries:
        if e["kind"] != "best" and (e["step"] not in by_step or e["kind"] == prefer):
            by_step[e["step"]] = e
    out = [dict(e, label=f"step {s} · {e['kind']}", default=False)
           for s, e in sorted(by_step.items(), reverse=True)]
    if out:
        kinds = ["export", "checkpoint"] if finished else ["checkpoint", "export"]
        next(e for k in kinds for e in out if e["kind"] == k)["default"] = True
    best = [dict(e, default=False) for e in entries if e["kind"] == "best"]
    return best + out


def _class_names(run_dir: Path, cfg: dict, num_classes: int) -> list[str]:
    """Class names of a run without an export: its data set's dataset.json, else NCT order, else c0..."""
    from engine.utils import data_root

    data = cfg.get("data") or str(data_root() / f"histosynth-{cfg.get('res', 64)}")
    names = (read_json(Path(data) / "dataset.json") or {}).get("class_names")
    if names and len(names) == num_classes:
        return list(names)
    return list(NCT_CLASSES) if num_classes == 9 else [f"class{i}" for i in range(num_classes)]


def _from_checkpoint(run_dir: Path, path: Path, device: str) -> tuple[nn.Module, dict]:
    from engine.models.stylegan2 import Generator, generator_kwargs

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}); pick another step") from None
    sd = ck["G_ema"]
    export = read_json(run_dir / "exports" / "generator.json") or {}
    cfg = json.loads(ck["config"]) if isinstance(ck.get("config"), str) else \
        (read_json(run_dir / "config.json") or {})
    family = export.get("family") or cfg.get("family", "stylegan2")
    if family != "stylegan2":
        raise ValueError(f"run {run_dir.name}: family {family!r} is not supported for sampling yet "
                         "(supported: stylegan2)")
    # The constructor kwargs do not change during a run, so the export's (if any) fit every checkpoint.
    kwargs = export.get("kwargs") or generator_kwargs(cfg, int(sd["w_avg"].shape[0]))
    G = Generator(**kwargs)
    G.load_state_dict(sd)
    names = export.get("class_names") or _class_names(run_dir, cfg, G.num_classes)
    step = int(ck["step"])
    meta = {"family": family, "kwargs": kwargs, "class_names": list(names), "res": G.res, "step": step,
            "kimg": float(ck.get("kimg", step * cfg.get("batch", 0) / 1000))}
    return G.to(device).eval().requires_grad_(False), meta


def load_generator(run_dir: str | os.PathLike, step: int | None = None, device: str = "cpu",
                   path: str | os.PathLike | None = None) -> tuple[nn.Module, dict]:
    """The EMA generator of a run, in eval mode without gradients, on `device`.

    Args:
        step: None -> the export if the run finished, else G_ema of the newest checkpoint (the export
            when there is no checkpoint); an int -> that step's checkpoint (or the export at that step);
            "best" -> exports/best (the best model by the trainer's held-out FID).
        path: an entry's "path" from `list_checkpoints` (a step_*.pt file or the exports/ dir); wins
            over `step`.
    Returns (G, meta) with meta {"family", "kwargs", "class_names", "res", "step", "kimg", "path", "kind"}.
    Weights load with weights_only=True / safetensors: nothing is unpickled.
    """
    d = Path(run_dir)
    device = pick_device(device)
    entries = list_checkpoints(d)
    if not entries:
        raise FileNotFoundError(f"run {d} has no checkpoint or export yet; wait for its first snapshot "
                                "or start a run on the Train page")
    if path is not None:
        chosen = next((e for e in entries if Path(e["path"]) == Path(path)), None)
        if chosen is None:
            raise FileNotFoundError(f"{path} is not a checkpoint or export of run {d}")
    elif step == "best":
        chosen = next((e for e in entries if e["kind"] == "best"), None)
        if chosen is None:
            raise FileNotFoundError(f"step: run {d.name} has no best model (exports/best/) yet: the trainer "
                                    "keeps one at its checkpoints when best_metric is fid_domain and the data "
                                    "set's domain classifier exists (see events.jsonl)")
    elif step is None:
        finished = (read_json(d / "status.json") or {}).get("state") == "finished"
        kinds = ["export", "checkpoint"] if finished else ["checkpoint", "export"]
        chosen = next((e for k in kinds for e in entries if e["kind"] == k), entries[0])
    else:
        found = [e for e in entries if e["step"] == int(step)]
        if not found:
            raise FileNotFoundError(f"step: run {d.name} has no checkpoint at step {step}; available steps: "
                                    f"{', '.join(str(s) for s in sorted({e['step'] for e in entries}, reverse=True))}")
        chosen = min(found, key=lambda e: (e["kind"] != "checkpoint", e["kind"] == "best"))
    if chosen["kind"] in ("export", "best"):
        G, meta = load_generator_export(chosen["path"], device=device)
        meta = dict(meta)
        meta.setdefault("class_names", _class_names(d, read_json(d / "config.json") or {}, G.num_classes))
        if chosen["kind"] == "best":
            meta["best"] = chosen["best"]
    else:
        G, meta = _from_checkpoint(d, Path(chosen["path"]), device)
    meta.update(path=chosen["path"], kind=chosen["kind"], res=G.res)
    return G, meta


def parse_step(text: str | int | None) -> int | str | None:
    """A --step value: None / "" / "latest" -> None, "best" -> "best", else a step number."""
    if text is None or str(text).strip() in ("", "latest"):
        return None
    t = str(text).strip()
    if t == "best":
        return t
    if not t.isdigit():
        raise ConfigError(f"step must be latest, best or a step number (got {text!r})")
    return int(t)


# ----------------------------------------------------------------------------------------------
# Sampling

def seed_z(seed: int, z_dim: int) -> torch.Tensor:
    """(1, z_dim) latent of a seed; drawn alone so it does not depend on the batch it joins."""
    return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(int(seed)))


def _device(G: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(G.parameters()).device


@torch.no_grad()
def generate(G: nn.Module, classes: list[int], seeds: list[int], truncation: float = 1.0,
             noise_mode: str = "const", device: str | None = None, batch: int = 64,
             progress: Callable[[int, int], None] | None = None,
             class_names: list[str] | None = None) -> tuple[np.ndarray, list[dict]]:
    """One image per (class, seed) pair, class-major (all seeds of classes[0] first).

    Args:
        truncation: psi toward the class's average w (1 = none, 0 = the class average).
        device: where G lives (None = G's own device).
        progress: called as progress(done, total) after each batch.
        class_names: names for the records (default: G's class indices as strings).
    Returns (uint8 NHWC images, records [{"class_index", "class", "seed", "psi"}]).
    """
    dev = _device(G, device)
    pairs = [(c, s) for c in classes for s in seeds]
    records = [{"class_index": int(c), "class": class_names[c] if class_names else str(c), "seed": int(s),
                "psi": float(truncation)} for c, s in pairs]
    out = []
    for i in range(0, len(pairs), batch):
        part = pairs[i:i + batch]
        z = torch.cat([seed_z(s, G.z_dim) for _, s in part]).to(dev)
        y = torch.tensor([c for c, _ in part], dtype=torch.long, device=dev)
        out.append(to_uint8(G(z, y, truncation=truncation, noise_mode=noise_mode)))
        if progress is not None:
            progress(min(i + batch, len(pairs)), len(pairs))
    images = np.concatenate(out) if out else np.zeros((0, G.res, G.res, 3), np.uint8)
    return images, records


def class_grid(G: nn.Module, classes: list[int], seeds: list[int], truncation: float = 1.0,
               **kw: Any) -> np.ndarray:
    """uint8 HWC grid, one row per class, one column per seed (`generate` kwargs pass through)."""
    images, _ = generate(G, classes, seeds, truncation, **kw)
    return tile(images, rows=len(classes))


def real_grid(run_dir: str | os.PathLike, classes: list[str], per_class: int, seed: int = 0,
              size: int | None = None) -> np.ndarray:
    """One row per class of real eval-split patches of the run's data set, resized to `size` (e.g. the
    generator's res); a class with fewer patches leaves its row's end blank. ConfigError when the data
    set is missing or lacks a class."""
    from engine.data.dataset import load_prepared, real_tiles

    d = run_data_dir(run_dir)
    try:
        data = load_prepared(d)
    except FileNotFoundError as e:
        raise ConfigError(f"real_per_class: {e}") from None
    rows, px = [], size or data.size
    for c in classes:
        t = real_tiles(data, c, per_class, seed, size=px)
        pad = np.full((per_class - len(t), px, px, 3), 255, np.uint8)
        rows.append(np.concatenate([t, pad]))
    return tile(np.concatenate(rows), rows=len(classes))


def sample_filename(i: int, record: dict) -> str:
    return f"{i:05d}_{record['class']}_seed{record['seed']}.png"


def manifest_csv(records: list[dict], checkpoint_step: int | None) -> str:
    """manifest.csv text: file, class, seed, psi, checkpoint_step (one row per image)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for i, r in enumerate(records):
        w.writerow([sample_filename(i, r), r["class"], r["seed"], r["psi"],
                    "" if checkpoint_step is None else int(checkpoint_step)])
    return buf.getvalue()


def export_zip(images: np.ndarray, records: list[dict], checkpoint_step: int | None) -> bytes:
    """A zip of one PNG per image plus manifest.csv (file, class, seed, psi, checkpoint_step)."""
    if len(images) != len(records):
        raise ValueError(f"export_zip: {len(images)} images but {len(records)} records")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for i, (img, r) in enumerate(zip(images, records)):
            zf.writestr(sample_filename(i, r), png_bytes(img))
        zf.writestr("manifest.csv", manifest_csv(records, checkpoint_step))
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Style mixing

def layer_groups(G: nn.Module) -> list[dict]:
    """One entry per w input of G: [{"index", "name", "res", "group": "coarse"|"middle"|"fine"}].

    Groups split the resolution levels 4..res in thirds (log scale), which gives Karras et al.'s
    coarse 4-8 / middle 16-32 / fine 64+ at 128 and 256 px and still three groups for small models.
    """
    top = int(np.log2(G.res)) - 2
    out = []
    for i, name in enumerate(G.layer_names):
        r = int(name.split("x", 1)[0])
        k = int(np.log2(r)) - 2
        group = "coarse" if 3 * k < top else "middle" if 3 * k < 2 * top else "fine"
        out.append({"index": i, "name": name, "res": r, "group": group})
    return out


def mix_weights(G: nn.Module, mix: list[float] | int) -> torch.Tensor:
    """Per-layer donor weights (num_ws,) from a list of weights or a crossover index."""
    n = G.num_ws
    if isinstance(mix, (int, np.integer)) and not isinstance(mix, bool):
        if not 0 <= mix <= n:
            raise ValueError(f"mix: crossover layer must lie in 0..{n} (0 = all from the donor, "
                             f"{n} = none), got {mix}")
        return (torch.arange(n) >= int(mix)).float()
    m = torch.tensor([float(v) for v in mix])
    if m.shape != (n,):
        raise ValueError(f"mix: expected {n} per-layer weights (one per w input), got {len(m)}")
    if (m < 0).any() or (m > 1).any():
        raise ValueError("mix: per-layer weights lie in [0, 1] (0 = source, 1 = donor)")
    return m


@torch.no_grad()
def style_mix_batch(G: nn.Module, src: tuple[int, int], dst: tuple[int, int], mix: list[float] | int,
                    truncation: float = 1.0, noise_strength: float = 1.0, with_sources: bool = False
                    ) -> np.ndarray:
    """uint8 NHWC: [mixed] or, with_sources, [source, donor, mixed] from one batched forward pass."""
    dev = next(G.parameters()).device
    m = mix_weights(G, mix).to(dev)
    z = torch.cat([seed_z(src[1], G.z_dim), seed_z(dst[1], G.z_dim)]).to(dev)
    y = torch.tensor([src[0], dst[0]], dtype=torch.long, device=dev)
    w = G.mapping(z, y, truncation)                                          # (2, w_dim)
    mixed = torch.lerp(w[0:1, None], w[1:2, None], m[None, :, None])         # (1, num_ws, w_dim)
    ws = mixed if not with_sources else torch.cat([w[:, None].expand(-1, G.num_ws, -1), mixed])
    img = G.synthesis(ws, noise_mode="const", noise_strength=noise_strength)
    return to_uint8(img)


def style_mix(G: nn.Module, src: tuple[int, int], dst: tuple[int, int], mix: list[float] | int,
              truncation: float = 1.0, noise_strength: float = 1.0) -> np.ndarray:
    """Mix the styles of two samples, each given as (class_index, seed).

    mix: per-layer weight of the donor `dst` (0 = source, 1 = donor; see `layer_groups` for the
    layers), or a crossover index k (layers >= k come from the donor). Noise is the constant maps
    scaled by `noise_strength`, so all-0 weights reproduce the source and all-1 the donor.
    Returns uint8 HWC.
    """
    return style_mix_batch(G, src, dst, mix, truncation, noise_strength)[0]


# ----------------------------------------------------------------------------------------------
# CLI: python -m engine sample

def _pair(text: str, class_names: list[str]) -> tuple[int, int]:
    if ":" not in text:
        raise ConfigError(f"donor: expected CLASS:SEED like TUM:3, got {text!r}")
    c, s = text.rsplit(":", 1)
    return parse_classes([c], class_names)[0], parse_seeds(s)[0]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m engine sample",
                                description="Per-class samples (PNGs + manifest.csv + grid.png) from a run.")
    p.add_argument("--run-dir", required=True, help="run directory (runs/<id>)")
    p.add_argument("--step", default=None, help="checkpoint step, latest (the default: the newest checkpoint, "
                                                  "the export of a finished run) or best (exports/best)")
    p.add_argument("--classes", default="all", help="class names or indices, e.g. ADI,TUM (default: all)")
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7 or 1,5,9")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi in [0, 1]")
    p.add_argument("--noise-mode", default="const", choices=("const", "random", "none"))
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--real-per-class", type=int, default=0,
                   help="also write real_grid.png: this many real patches per class from the eval split of "
                        "the run's data set (config.json `data`), to compare with grid.png by eye")
    p.add_argument("--donor", default=None, help="style mixing: donor CLASS:SEED; every sample becomes a mix")
    p.add_argument("--crossover", type=int, default=None, help="style mixing: layers >= this from the donor")
    p.add_argument("--mix", default=None, help="style mixing: per-layer donor weights, comma separated")
    a = p.parse_args(argv)
    if not 0.0 <= a.truncation <= 1.0:
        raise ConfigError(f"truncation must lie in [0, 1], got {a.truncation}")
    if not Path(a.run_dir).is_dir():
        raise ConfigError(f"run_dir: {a.run_dir} is not a directory")
    if not 0 <= a.real_per_class <= MAX_SEEDS:
        raise ConfigError(f"real_per_class must lie in 0..{MAX_SEEDS}, got {a.real_per_class}")
    try:
        G, meta = load_generator(a.run_dir, parse_step(a.step), device=a.device)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    names = meta["class_names"]
    classes, seeds = parse_classes(a.classes, names), parse_seeds(a.seeds)
    out = Path(a.out)
    if a.donor:
        if (a.crossover is None) == (a.mix is None):
            raise ConfigError("style mixing: give exactly one of --crossover K or --mix w1,w2,...")
        mix = a.crossover if a.crossover is not None else [float(v) for v in a.mix.split(",")]
        dst = _pair(a.donor, names)
        try:
            images = np.stack([style_mix(G, (c, s), dst, mix, a.truncation) for c in classes for s in seeds])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        records = [{"class_index": c, "class": names[c], "seed": s, "psi": a.truncation}
                   for c in classes for s in seeds]
    else:
        images, records = generate(G, classes, seeds, a.truncation, noise_mode=a.noise_mode,
                                   class_names=names,
                                   progress=lambda d, t: print(f"{d}/{t} images", flush=True))
    for i, (img, r) in enumerate(zip(images, records)):
        atomic_write_bytes(out / sample_filename(i, r), png_bytes(img))
    atomic_write_text(out / "manifest.csv", manifest_csv(records, meta["step"]))
    atomic_write_bytes(out / "grid.png", png_bytes(tile(images, rows=len(classes))))
    if a.real_per_class:
        real = real_grid(a.run_dir, [names[c] for c in classes], a.real_per_class, size=meta["res"])
        atomic_write_bytes(out / "real_grid.png", png_bytes(real))
        print(f"wrote real_grid.png: {a.real_per_class} real patches per class from the eval split of "
              f"{run_data_dir(a.run_dir)}")
    print(f"wrote {len(images)} images, manifest.csv and grid.png to {out} "
          f"(run {Path(a.run_dir).name}, step {meta['step']}, {meta['kind']})")
    return 0


__all__ = ["list_checkpoints", "checkpoint_choices", "load_generator", "generate", "class_grid", "export_zip", "layer_groups",
           "style_mix", "style_mix_batch", "parse_seeds", "parse_classes", "manifest_csv", "png_bytes",
           "seed_z", "take_seeds", "tile"]
