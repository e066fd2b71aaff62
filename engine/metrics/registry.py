"""Metric registry: one small module per metric, each registering functions with `@register_metric`.

A metric is `fn(ctx) -> dict` (JSON-able). `ctx` is the evaluation context built by
engine.metrics.evaluate.EvalContext; the attributes a metric may use:

    ctx.class_names        list[str]
    ctx.features           the frozen feature space (nn.Module with num_features; see features.py)
    ctx.gen_images         uint8 (N,H,W,3) generated patches, class-major; ctx.gen_labels (N,) int64
    ctx.gen_feats          (N, d) float64 features of gen_images
    ctx.gen_seeds          (N,) seeds; ctx.space_desc: describe_space(ctx.features)
    ctx.data               the PreparedData compared against
    ctx.gen_logits         (N, k) logits of the space's classifier head, or None when it has none
    ctx.real(split, cap=None)  a RealSet of a real split (at most `cap` per class; None = the
                           evaluation's cap, 0 = all) at the generator's resolution:
                           .images (uint8), .labels, .feats (float64, cached on disk per data set, split,
                           feature space and size), .index (rows of the prepared data set)
    ctx.per_class, ctx.device, ctx.seed, ctx.cfg (the EvalConfig)
    ctx.progress(msg)      free-text progress for the job's status file
    ctx.save_array(name, array)  store a uint8 side file next to the report (e.g. memorisation pairs)

Like stylegan2-ada's metric_main, metric modules are imported on first use, so importing the
registry is cheap and a metric needing an optional package fails alone.
"""
from __future__ import annotations

import importlib
import time
import traceback
from typing import Any, Callable

Metric = Callable[[Any], dict]
_METRICS: dict[str, Metric] = {}
MODULES = ("engine.metrics.fid", "engine.metrics.lpips", "engine.metrics.downstream",
           "engine.metrics.memorisation", "engine.metrics.stain", "engine.metrics.cas")


def register_metric(name: str | Metric | None = None):
    """Decorator: `@register_metric` (name = function name) or `@register_metric("pr")`."""
    def wrap(fn: Metric, key: str | None = None) -> Metric:
        _METRICS[key or fn.__name__] = fn
        return fn

    if callable(name):
        return wrap(name)
    return lambda fn: wrap(fn, name)


def _load_all() -> None:
    for mod in MODULES:
        importlib.import_module(mod)


def list_metrics() -> list[str]:
    """Names of every registered metric, in registration order."""
    _load_all()
    return list(_METRICS)


def check_metrics(names: list[str]) -> list[str]:
    """`names` unchanged when all are known; ValueError naming the unknown ones and the allowed ones."""
    known = list_metrics()
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"unknown metric(s) {', '.join(bad)}; choose from: {', '.join(known)}")
    return names


def calc_metric(name: str, ctx) -> dict:
    """Run one metric. A missing weights file or other failure is returned as {"error": message}
    rather than raised, so one unavailable metric never loses the others in the same report."""
    _load_all()
    if name not in _METRICS:
        check_metrics([name])
    t0 = time.time()
    try:
        out = dict(_METRICS[name](ctx))
    except Exception as e:  # noqa: BLE001 -- recorded in the report; the other metrics still run
        out = {"error": str(e) if isinstance(e, (FileNotFoundError, ValueError)) else f"{type(e).__name__}: {e}"}
        if not isinstance(e, FileNotFoundError):
            out["traceback"] = traceback.format_exc(limit=6)
    out["time_s"] = round(time.time() - t0, 3)
    return out
