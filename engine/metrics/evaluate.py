"""`python -m engine evaluate`: score a run's generator and write runs/<id>/eval/<timestamp>.json.

    python -m engine evaluate --run-dir runs/ID --metrics fid,kid,pr,lpips,downstream,memorisation \
        --by-class --n 2000 --features domain

Flow: load G (a checkpoint step or the export) -> generate n patches, evenly per class, from fixed
seeds -> embed them in the feature space -> each requested metric from the registry (real features come
from the on-disk cache) -> one JSON report (atomic) that states N real, N generated, the feature space
and its weights' hash, the resize path and the checkpoint step. A metric that cannot run (missing
weights, no test split ...) is recorded with its error; the others still run, and a report whose every
metric failed has "state": "failed" (else "finished"). With `features` domain and no classifier file,
the classifier is trained first (auto_classifier), or awaited when a background job is training it.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from engine import runs
from engine.config import ConfigError, EvalConfig, add_arguments, from_args, validate
from engine.metrics.registry import calc_metric
from engine.utils import atomic_write_bytes, atomic_write_json, pick_device, runs_root

SMALL_N = 10_000  # below this many generated patches FID's bias is large; KID is unbiased
NO_FEATURES = ("stain", "downstream")  # metrics that never embed in the feature space
CLASSIFIER_SHARE = 0.5  # of the progress bar, when the classifier is trained first (~ its share of the time)


# ----------------------------------------------------------------------------------------------
# The context every metric reads (see engine.metrics.registry for the attributes)

class EvalContext:
    def __init__(self, cfg: EvalConfig, G, meta: dict, data, device: str,
                 progress: Callable[..., None] | None = None):
        self.cfg, self.G, self.meta, self.data, self.device = cfg, G, meta, data, device
        # sampler options of a diffusion family (EvalConfig's sampler / sample_steps / eta / guidance when
        # it has them; None = the run's defaults)
        self.options = {"sampler": getattr(cfg, "sampler", None) or None,
                        "steps": getattr(cfg, "sample_steps", None), "eta": getattr(cfg, "eta", None),
                        "guidance": getattr(cfg, "guidance", None)}
        self.class_names = list(meta.get("class_names") or data.class_names)
        # ctx.per_class (the metrics' name for it, engine.metrics.registry) is the config's bool by_class
        self.res, self.per_class, self.seed = int(G.res), cfg.by_class, cfg.seed
        K = len(self.class_names)
        self.per_class_n = math.ceil(cfg.n / K)
        self.real_cap = math.ceil((cfg.n_real or cfg.n) / K)
        self._real, self.arrays, self.space_used = {}, {}, False
        # progress(message, done=None, total=None): stage message, optionally with a count within it
        self.progress = progress or (lambda msg, done=None, total=None: None)

    @cached_property
    def features(self):
        from engine.metrics.features import open_feature_space

        c = self.cfg
        self.space_used = True
        weights = {"domain": c.domain_weights or str(Path(self.data.root) / "classifier.pt"),
                   "inception": c.inception_weights or None}.get(c.features, c.timm_weights or None)
        return open_feature_space(c.features, weights, self.device)

    @cached_property
    def space_desc(self) -> dict:
        from engine.metrics.features import describe_space

        return describe_space(self.features)

    @property
    def sampler_options(self) -> dict | None:
        """The sampler options of a family that has them (ddpm: sampler, steps, eta, guidance), else None."""
        return self.G.sample_options(**self.options) if callable(getattr(self.G, "sample_options", None)) \
            else None

    @cached_property
    def _generated(self):
        from engine.sampling import generate

        seeds = list(range(self.cfg.seed, self.cfg.seed + self.per_class_n))
        self.progress(f"generating {self.per_class_n * len(self.class_names)} patches")
        images, records = generate(self.G, list(range(len(self.class_names))), seeds, self.cfg.truncation,
                                   device=self.device, batch=self.cfg.batch, class_names=self.class_names,
                                   progress=lambda d, t: self.progress("generating", d, t),
                                   **(self.options if self.sampler_options is not None else {}))
        return images, np.array([r["class_index"] for r in records], np.int64), [r["seed"] for r in records]

    gen_images = property(lambda self: self._generated[0])
    gen_labels = property(lambda self: self._generated[1])
    gen_seeds = property(lambda self: self._generated[2])

    @cached_property
    def _embedded(self):
        from engine.metrics.fid import embed

        self.progress(f"embedding generated patches in `{self.cfg.features}`")
        want = "is" in self.cfg.metric_list  # logits only for IS: the domain head costs a second pass
        out = embed(self.features, self.gen_images, self.cfg.batch, self.device, logits=want,
                    progress=lambda d, t: self.progress("embedding generated patches", d, t))
        return out if want else (out, None)

    gen_feats = property(lambda self: self._embedded[0])
    gen_logits = property(lambda self: self._embedded[1])

    def real(self, split: str, cap: int | None = None):
        """Real patches of `split`, at most `cap` per class (None = the evaluation's cap, 0 = all)."""
        key = (split, self.real_cap if cap is None else cap)
        if key not in self._real:
            from engine.metrics.fid import real_set

            self.progress(f"real `{split}` patches (features cached on disk after the first time)")
            self._real[key] = real_set(self.data, split, self.res, key[1], lambda: (self.features, self.space_desc),
                                       batch=self.cfg.batch, device=self.device,
                                       progress=lambda d, t: self.progress(f"embedding real `{split}`", d, t))
        return self._real[key]

    def real_sets(self) -> dict:
        """{split: RealSet} of the splits used at the evaluation's own cap (what the report counts)."""
        return {s: r for (s, cap), r in self._real.items() if cap == self.real_cap}

    def save_array(self, name: str, array: np.ndarray) -> None:
        self.arrays[name] = np.ascontiguousarray(array)


# ----------------------------------------------------------------------------------------------
# The trainer's quick held-out FID (the best model, spec 4.3)

class HeldOutFID:
    """FID of a generator's patches against the held-out `eval` split in the `domain` feature space:
    how the trainer picks its best model at each checkpoint (TrainConfig.best_metric = fid_domain).

    Cheap by construction: the feature space is loaded and the real side embedded once per run (at
    most REAL_CAP eval patches, evenly per class, kept in memory); each call generates `n` patches
    (min(best_n, size of the eval split), evenly per class, seeds 0.. so every checkpoint is scored on
    the same latents, constant noise) and embeds them. The patches go through uint8 as in `evaluate`,
    so the score is the one `evaluate --features domain --real-split eval` gives at equal N.
    `open()` raises FileNotFoundError / ValueError / OSError when the space or the split is unusable.
    """

    metric = "fid_domain"
    REAL_CAP = 2000

    def __init__(self, data, n: int, res: int, device="cpu", batch: int = 64, classifier: str | Path = ""):
        self.data, self.res, self.device, self.batch = data, int(res), str(device), int(batch)
        from engine.metrics.classifier import FILE_NAME

        self.path = Path(classifier) if classifier else Path(data.root) / FILE_NAME
        self.n_wanted, self.space, self.real_feats, self.desc = int(n), None, None, {}

    def open(self) -> None:
        if self.real_feats is not None:
            return
        from engine.metrics.features import describe_space, open_feature_space
        from engine.images import resize_uint8
        from engine.metrics.fid import embed, subset_per_class

        labels, idx = np.asarray(self.data.labels), np.asarray(self.data.splits["eval"])
        if len(idx) < 2:
            raise ValueError(f"the data set {self.data.root} has {len(idx)} patch(es) in its `eval` split "
                             "(prepare it with eval_frac > 0)")
        k = len(self.data.class_names)
        self.n = max(2, min(self.n_wanted, len(idx)))
        self.per_class = math.ceil(self.n / k)
        space = open_feature_space("domain", str(self.path), self.device)
        rows = subset_per_class(labels, idx, math.ceil(self.REAL_CAP / k))
        self.real_feats = embed(space, resize_uint8(np.asarray(self.data.images[rows]), self.res), self.batch,
                                self.device)
        self.space, self.desc = space, describe_space(space)

    def __call__(self, G) -> dict:
        """{"score", "n", "n_real"} of generator G (it is left as it was: no grad, its own RNG untouched)."""
        import torch

        from engine.metrics.fid import embed, fid_from_features
        from engine.sampling import generate

        self.open()
        k = len(self.data.class_names)
        with torch.random.fork_rng(devices=[self.device] if self.device.startswith("cuda") else []):
            # a diffusion family samples with its run's defaults (the grids' fast sampler)
            images, _ = generate(G, list(range(k)), list(range(self.per_class)), batch=self.batch)
            feats = embed(self.space, images, self.batch, self.device)
        return {"score": float(fid_from_features(feats, self.real_feats)), "n": int(len(feats)),
                "n_real": int(len(self.real_feats))}


# ----------------------------------------------------------------------------------------------
# Orchestration

def new_report_id(eval_dir: Path) -> str:
    base, k = time.strftime("%Y%m%d-%H%M%S"), 1
    rid = base
    while (eval_dir / f"{rid}.json").exists():
        k += 1
        rid = f"{base}-{k}"
    return rid


def resolve_data(cfg: EvalConfig, run_dir: Path, res: int):
    """The prepared data set to compare against: --data, else the run's config `data`, else the demo."""
    from engine.data.dataset import load_prepared

    path = cfg.data or str(runs.data_dir(run_dir))
    return load_prepared(path)


def notes_for(ctx: EvalContext, report: dict) -> list[str]:
    notes = []
    n, d = report["n_generated"], report["features"].get("num_features") or 0
    if n and (n < SMALL_N or ctx.per_class_n < 2 * d):
        notes.append(f"Small N ({n} generated, {ctx.per_class_n} per class, {d}-d features): FID is biased "
                     "upward at small N and per-class FID more so; prefer KID (unbiased) and compare FIDs "
                     "only at equal N and feature space.")
    used = set(report.get("n_real") or {}) | {ctx.cfg.real_split}
    if "eval" in used and not getattr(ctx.data, "eval_disjoint", True):
        notes.append("This data set's `eval` split is a subset of train (it was prepared before eval was held "
                     "out), so the generator is compared with patches it trained on; prepare the data set "
                     "again for a held-out eval.")
    if getattr(ctx.data, "synthetic", False):
        notes.append("The real side is the synthetic histosynth demo set, not real tissue.")
    if ctx.cfg.features == "domain" and "num_features" in report["features"]:
        notes.append("Feature space `domain` is this lab's own classifier: values are comparable between runs "
                     "on the same data set and classifier file (see weights_sha256), not with papers.")
    return notes


def domain_classifier_path(cfg: EvalConfig, data) -> Path:
    return Path(cfg.domain_weights) if cfg.domain_weights else Path(data.root) / "classifier.pt"


def _ensure_domain_classifier(cfg: EvalConfig, data, say: Callable[[float, str], None]) -> bool:
    """Make sure the `domain` classifier file exists: wait for a background job training it, else train
    it here (tqdm on stderr, progress in the first CLASSIFIER_SHARE of the bar). Without auto_classifier
    nothing happens and the metrics report the missing file. Returns True when it took part of the bar."""
    from engine.jobs import classifier as classifier_jobs

    path = domain_classifier_path(cfg, data)
    if path.is_file() or not cfg.auto_classifier:
        return False
    if not cfg.domain_weights:  # the app may be training this very file: wait rather than train it twice
        while (s := classifier_jobs.classifier_status(data.root)).state in ("queued", "training"):
            say(CLASSIFIER_SHARE * s.fraction, f"waiting for the domain classifier (job {s.job_id}): {s.message}")
            time.sleep(1.0)
        if path.is_file():
            return True
    from engine.config import ClassifierConfig
    from engine.metrics.classifier import train_with_bar

    print(f"No domain classifier at {path}: training it first (`python -m engine train-classifier --data "
          f"{data.root}`; --no-auto-classifier skips this).", flush=True)
    ccfg = ClassifierConfig(data=str(data.root), out=str(path), device=cfg.device)
    train_with_bar(ccfg, lambda d, t, m: say(CLASSIFIER_SHARE * d / max(t, 1),
                                             f"training the domain classifier: step {d}/{t} · {m}"))
    return True


def evaluate(cfg: EvalConfig, progress: Callable[[float, str], None] | None = None) -> tuple[dict, Path]:
    """Run the requested metrics and write the report. Returns (report, path of the JSON written).

    progress(fraction, message) is called between stages. Raises FileNotFoundError / ConfigError
    when the run, its generator or the data set is missing.
    """
    from engine.metrics.report import report_state
    from engine.sampling import load_generator

    cfg = validate(cfg)
    t0 = time.time()
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    if not run_dir.is_dir() and (runs_root() / Path(cfg.run_dir).name).is_dir():
        run_dir = runs_root() / Path(cfg.run_dir).name  # `runs/ID` given from outside the repo
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    eval_dir = run_dir / "eval"
    rid = cfg.job or new_report_id(eval_dir)
    device = pick_device(cfg.device)
    say = progress or (lambda f, m: None)
    state = {"frac": 0.0}
    say(0.0, "loading the generator")
    G, meta = load_generator(run_dir, cfg.step_arg, device)
    data = resolve_data(cfg, run_dir, G.res)
    if len(data.class_names) != G.num_classes:
        raise ConfigError(f"config field 'data': {data.root} has {len(data.class_names)} classes but the "
                          f"generator has {G.num_classes}; pass the data set the run trained on")
    names = cfg.metric_list
    if cfg.features == "domain" and any(n not in NO_FEATURES for n in names):
        if _ensure_domain_classifier(cfg, data, say):  # it took the first part of the bar
            outer = say
            say = lambda f, m: outer(CLASSIFIER_SHARE + (1 - CLASSIFIER_SHARE) * f, m)  # noqa: E731
    step = 1.0 / len(names)

    def within(msg: str, done: int | None = None, total: int | None = None) -> None:
        say(state["frac"] + (step * done / total if total else 0.0), msg)

    ctx = EvalContext(cfg, G, meta, data, device, progress=within)
    results = {}
    for i, name in enumerate(names):
        state["frac"] = i * step
        say(state["frac"], f"{name} ({i + 1}/{len(names)})")
        results[name] = calc_metric(name, ctx)
    try:  # describe the space only if a metric used it (loading it just for the report is wasted time)
        space = ctx.space_desc if ctx.space_used else {"space": cfg.features, "used": False}
    except (FileNotFoundError, ValueError) as e:
        space = {"space": cfg.features, "error": str(e)}
    gen_counts = np.bincount(ctx.gen_labels, minlength=len(ctx.class_names)) if "_generated" in ctx.__dict__ \
        else np.zeros(len(ctx.class_names), np.int64)
    report = {
        "id": rid, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": run_dir.name,
        "checkpoint": {k: meta.get(k) for k in ("step", "kimg", "kind", "path")},
        "data": str(data.root), "class_names": ctx.class_names, "features": space,
        "resize": {"generated": f"{G.res} px, as generated",
                   "real": "none" if data.size == G.res else f"{data.size} -> {G.res} px, bilinear with antialias",
                   "feature_space": space.get("resize_mode", "")},
        "n_generated": int(gen_counts.sum()),
        "n_generated_per_class": dict(zip(ctx.class_names, map(int, gen_counts))),
        "n_real": {s: int(len(r.labels)) for s, r in ctx.real_sets().items()},
        "n_real_per_class": {s: dict(zip(ctx.class_names, map(int, np.bincount(r.labels, minlength=len(
            ctx.class_names))))) for s, r in ctx.real_sets().items()},
        "real_split": cfg.real_split, "truncation": cfg.truncation, "noise_mode": "const",
        # a family with its own sampler (ddpm) records the options its patches were drawn with
        "family": meta.get("family", "stylegan2"), "sampler": ctx.sampler_options,
        "seeds": [cfg.seed, cfg.seed + ctx.per_class_n - 1], "device": device,
        "preferred": "kid" if int(gen_counts.sum()) < SMALL_N else "fid",
        "metrics": results, "config": asdict(cfg), "state": report_state({"metrics": results})}
    report["notes"] = notes_for(ctx, report)
    if ctx.arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **ctx.arrays)
        atomic_write_bytes(eval_dir / f"{rid}.arrays.npz", buf.getvalue())
        report["arrays"] = {"file": f"{rid}.arrays.npz", "keys": sorted(ctx.arrays)}
    report["time_s"] = round(time.time() - t0, 2)
    path = eval_dir / f"{rid}.json"
    atomic_write_json(path, report)
    say(1.0, "done")
    return report, path


def summary(report: dict) -> str:
    """A few lines for the terminal: headline numbers and any metric errors."""
    m, lines = report["metrics"], []
    lines.append(f"run {report['run_id']} step {report['checkpoint'].get('step')} | {report['features'].get('space')} "
                 f"| {report['n_generated']} generated vs {report['n_real'].get(report['real_split'], 0)} real")
    for name, r in m.items():
        if "error" in r:
            lines.append(f"  {name}: unavailable - {r['error']}")
        elif name == "fid":
            lines.append(f"  FID {r['value']:.4g}")
        elif name == "kid":
            lines.append(f"  KID {r['mean']:.4g} +- {r['std']:.2g} (subsets of {r['subset_size']})")
        elif name == "pr":
            lines.append(f"  precision {r['precision']:.3f} recall {r['recall']:.3f}")
        elif name == "is":
            lines.append(f"  IS {r['mean']:.3f} +- {r['std']:.2g} ({r['note']})")
        elif name == "downstream":
            accs = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in r["sets"].items())
            lines.append(f"  downstream accuracy on real {r['test_split']}: {accs}")
        elif name == "cas":
            real = "n/a" if r["real_accuracy"] is None else f"{r['real_accuracy']:.3f}"
            lines.append(f"  CAS {r['cas']:.3f} (classifier on real {r['test_split']}: {real}; chance "
                         f"{r['chance']:.3f}); per class: " + ", ".join(
                             f"{k} {v['cas']:.2f}" for k, v in r["per_class"].items() if v["cas"] is not None))
        elif name == "memorisation":
            lines.append(f"  memorisation: {r['flagged']} flagged (ratio < {r['threshold']}), min ratio "
                         f"{r['min_ratio']:.3f}")
        elif name == "lpips":
            fd = r["feature_diversity"]
            lines.append(f"  diversity ({fd['label']}): generated {fd['generated']['mean']:.4g}, "
                         f"real {fd['real']['mean']:.4g}")
            if "error" not in r["lpips"]:
                lines.append(f"  LPIPS diversity: generated {r['lpips']['generated']['mean']:.4g}, "
                             f"real {r['lpips']['real']['mean']:.4g}")
            else:
                lines.append(f"  LPIPS unavailable - {r['lpips']['error']}")
        elif name == "stain":
            lines.append(f"  colour gap (Wasserstein, OD): H {r['H']['wasserstein']}, E {r['E']['wasserstein']}")
    lines.extend(f"  note: {n}" for n in report.get("notes", []))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# CLI

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine evaluate",
                                     description="Evaluate a run's generator; writes runs/<id>/eval/<id>.json.")
    add_arguments(parser, EvalConfig)  # --by-class, --no-auto-classifier ...: from the fields
    cfg = from_args(EvalConfig, parser.parse_args(argv))
    status = None
    if cfg.job:
        from engine.jobs.core import StatusWriter  # the writer only: engine.jobs.eval is the launcher

        status = StatusWriter(runs.eval_jobs_dir(cfg.run_dir) / f"{cfg.job}.json")
        status.set("running")

    last = {"msg": None, "t": 0.0}

    def progress(frac: float, msg: str) -> None:
        if msg != last["msg"] or time.time() - last["t"] > 5:  # the log gets stages, not every batch
            print(f"[{frac * 100:5.1f}%] {msg}", flush=True)
            last.update(msg=msg, t=time.time())
        if status:
            status.set("running", progress=frac, message=msg)

    try:
        report, path = evaluate(cfg, progress)
    except (FileNotFoundError, ConfigError, ValueError) as e:
        if status:
            status.set("failed", message=str(e), force=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:
        if status:
            status.set("failed", message=f"{type(e).__name__}: {e}", force=True)
        raise
    errors = [n for n, r in report["metrics"].items() if "error" in r]
    failed = report["state"] == "failed"
    if status:
        if failed:  # a report with no result in it: the job failed, saying why (once, not per metric)
            first = next(iter(report["metrics"].values()), {}).get("error", "no metric was requested")
            msg = f"every metric failed ({', '.join(errors)}): {first}"
        else:
            msg = f"report {path.name}" + (f"; unavailable: {', '.join(errors)}" if errors else "")
        status.set("failed" if failed else "finished", progress=1.0, message=msg, report=path.name, force=True)
    print(summary(report))
    print(f"saved {path}" + (" (failed: every metric failed)" if failed else ""))
    return 1 if failed else 0
