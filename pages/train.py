"""Train page: configure and launch background runs, stop/resume them, live curves, sample grid, log tail.

Every widget of the form is a TrainConfig field (label = field name, default/range/help from its
metadata); the engine validates the whole config, so the page holds no rule of its own.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import ui_cache
from engine import config as C
from engine import jobs
from engine.data import catalog
from engine.train import curves
from engine.utils import read_json, runs_root

ui_cache.require_frame()

FIELDS = {f.name: f for f in dataclasses.fields(C.TrainConfig)}
DEFAULTS = C.to_dict(C.TrainConfig())
SECTIONS = {  # what a researcher changes; every other field is under "advanced"
    "run": ("family", "data", "res", "batch", "kimg", "seed"),
    "optimisation": ("lr_g", "lr_d", "r1_gamma", "ada", "ada_target"),
    "domain head and alpha gate": ("domain_head", "domain_features", "alpha_on", "alpha_off", "alpha_max"),
    "loss weights": ("fm_weight", "perceptual_weight", "stats_weight", "saturation_weight", "diversity_weight"),
}
SHOWN = {n for names in SECTIONS.values() for n in names} | {"run_dir"}
ADVANCED = tuple(n for n in FIELDS if n not in SHOWN)
RES_CHOICES = [2 ** k for k in range(3, 11)]
CURVES = ("losses", "acc", "ada_p", "alpha", "lr", "speed", "ranges")

st.title("Train")


# ----------------------------------------------------------------------------------------------
# Form: one widget per config field

def _number(name: str, container) -> float | int:
    f, default = FIELDS[name], DEFAULTS[name]
    lo, hi = f.metadata.get("range") or (None, None)
    help_ = f.metadata.get("help", "")
    if isinstance(default, int):
        return container.number_input(name, min_value=lo, max_value=hi, value=int(default), step=1,
                                      key=f"cfg_{name}", help=help_)
    # a step of a tenth of the default's magnitude: 4e-4 moves by 1e-5, 0.6 by 0.01, 5 kimg by 0.1
    step = 10.0 ** (math.floor(math.log10(abs(default))) - 1) if default else 0.01
    return container.number_input(name, min_value=None if lo is None else float(lo),
                                  max_value=None if hi is None else float(hi), value=float(default),
                                  step=step, format="%g", key=f"cfg_{name}", help=help_)


def _widget(name: str, container):
    f, default = FIELDS[name], DEFAULTS[name]
    help_ = f.metadata.get("help", "")
    if name == "data":
        sets = [""] + [str(p) for p in catalog.list_prepared()]
        return container.selectbox(name, sets, key="cfg_data", help=help_, format_func=lambda p: (
            catalog.describe(p) if p else "histosynth demo at res (built-in, prepared on demand)"))
    if name == "res":
        return container.selectbox(name, RES_CHOICES, index=RES_CHOICES.index(default), key="cfg_res",
                                   help=help_)
    if name == "family":
        return container.selectbox(name, C.FAMILIES, key="cfg_family", help=help_, format_func=lambda v: (
            v if v in C.IMPLEMENTED_FAMILIES else f"{v} (not implemented yet)"))
    if f.metadata.get("choices"):
        choices = list(f.metadata["choices"])
        return container.selectbox(name, choices, index=choices.index(default), key=f"cfg_{name}",
                                   help=help_)
    if isinstance(default, bool):
        return container.checkbox(name, value=default, key=f"cfg_{name}", help=help_)
    if isinstance(default, (int, float)):
        return _number(name, container)
    return container.text_input(name, value=str(default), key=f"cfg_{name}", help=help_)


def _form() -> None:
    with st.expander("New run", expanded=not jobs.list_runs()):
        with st.form("train_form"):
            values: dict = {}
            for title, names in SECTIONS.items():
                st.markdown(f"**{title}**")
                cols = st.columns(min(len(names), 6 if title == "run" else 5))
                for i, name in enumerate(names):
                    values[name] = _widget(name, cols[i % len(cols)])
            with st.expander("advanced"):
                cols = st.columns(4)
                for i, name in enumerate(ADVANCED):
                    values[name] = _widget(name, cols[i % 4])
            run_id = st.text_input("run_id", key="cfg_run_id", placeholder="<date>-<time>-<family>-<res>px",
                                   help="name of the run directory (letters, digits, '.', '_', '-')")
            submitted = st.form_submit_button("Start", type="primary")
        if submitted:
            try:
                rid = jobs.start(values, run_id=run_id.strip() or None)
            except (C.ConfigError, ValueError) as e:
                st.error(str(e))
                return
            except FileExistsError:
                st.error(f"run_id {run_id.strip()!r} already exists in {runs_root()}; choose another name")
                return
            st.session_state["train_run"] = rid
            st.toast(f"Started {rid}")


# ----------------------------------------------------------------------------------------------
# Runs table and the selected run

def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _runs_table(ticking: bool) -> None:
    """All runs; re-drawn every 5 s by st.fragment while any of them is alive."""
    runs = jobs.list_runs()
    rows = [{"run": s.run_id, "state": s.state, "step": s.step, "kimg": round(s.kimg, 3),
             "started": time.strftime("%Y-%m-%d %H:%M", time.localtime((s.raw or {}).get("started_at") or 0)),
             "heartbeat": _age(s.heartbeat_age_s) if s.alive else "", "message": s.message} for s in runs]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="runs_table")
    if ticking and not any(s.alive for s in runs):
        st.rerun()  # every run has ended: stop this timer


def _class_names(d: Path, cfg: dict) -> list[str]:
    meta = read_json(d / "exports" / "generator.json") or {}
    if meta.get("class_names"):
        return list(meta["class_names"])
    return list((read_json(Path(cfg.get("data") or "-") / "dataset.json") or {}).get("class_names", []))


def _status_line(s: jobs.RunStatus) -> None:
    state = "stopping" if s.stop_requested else s.state
    icon = {"running": ":green[:material/play_circle:]", "queued": ":orange[:material/hourglass_top:]",
            "stopping": ":orange[:material/pause_circle:]", "stopped": ":gray[:material/pause_circle:]",
            "finished": ":green[:material/check_circle:]", "failed": ":red[:material/error:]"}.get(state, "")
    hb = f" · heartbeat {_age(s.heartbeat_age_s)}" if s.alive and s.heartbeat_age_s is not None else ""
    st.markdown(f"{icon} **{state}** · step {s.step} · {s.kimg:.3f} kimg{hb}"
                + (f"  \n{s.message}" if s.message and s.state != "failed" else ""))
    if s.stale:
        st.warning(f"No heartbeat for {_age(s.heartbeat_age_s)[:-4]}: the process exists but may be hung. "
                   "Stop kills it after the grace period.")
    if s.state == "failed":
        st.error(s.message)


@st.cache_data(max_entries=8, show_spinner=False)
def _grid_image(path: Path, res: int, mtime_ns: int = 0):
    """The grid PNG, enlarged by an integer factor (nearest neighbour) so small patches stay sharp."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    k = max(1, -(-96 // res))  # at least ~96 px per patch on screen
    return np.asarray(img.resize((img.width * k, img.height * k), Image.NEAREST) if k > 1 else img)


def _live(run_id: str, ticking: bool) -> None:
    """Status, curves, latest grid and log of one run; re-run every 2 s by st.fragment while it is alive."""
    s = jobs.status(run_id)
    if ticking and not s.alive:
        st.rerun()  # the run ended: a full rerun redraws the buttons and stops this timer
    d = s.run_dir
    cfg = read_json(d / "config.json") or read_json(d / "launch.json") or {}
    _status_line(s)
    # read only what the trainer appended since the last tick (offset kept per run in session_state)
    tail = st.session_state.setdefault(f"metrics_{run_id}", {})
    df = curves.follow_metrics(d / "metrics_gan.csv", tail)
    figs = curves.figures(df, cfg)
    cols = st.columns(3)
    for i, name in enumerate(CURVES):
        cols[i % 3].plotly_chart(figs[name], width="stretch", key=f"curve_{name}")
    grids = sorted((d / "samples").glob("step_*.png"))
    left, right = st.columns([3, 2])
    if grids:
        names = _class_names(d, cfg)
        rows = " · ".join(f"row {i + 1}: {c}" for i, c in enumerate(names))
        img = _grid_image(grids[-1], int(cfg.get("res") or 64), grids[-1].stat().st_mtime_ns)
        left.image(img, width=int(img.shape[1]) if img.shape[1] <= 640 else "stretch", output_format="PNG",
                   caption=f"{grids[-1].stem.replace('_', ' ')} (G_ema, fixed seeds) · {rows}")
    else:
        left.caption("No sample grid yet.")
    right.code(jobs.log_tail(d / "log.txt", lines=30) or "(empty log)", language=None)


def _selected(runs: list[jobs.RunStatus]) -> None:
    ids = [s.run_id for s in runs]
    current = st.session_state.get("train_run")
    rid = st.selectbox("run", ids, index=ids.index(current) if current in ids else 0)
    st.session_state["train_run"] = rid
    s = next(x for x in runs if x.run_id == rid)
    c1, c2, c3, _ = st.columns([1, 1, 1, 3])
    if c1.button("Stop", key="stop", disabled=not s.alive, help="checkpoint, then stop"):
        jobs.stop(rid, wait=False)
        st.rerun()
    cfg = read_json(s.run_dir / "config.json") or {}
    can_resume = not s.alive and bool(cfg)
    kimg = None
    if can_resume:  # keyed by the run's kimg: a widget made before config.json existed cannot linger
        kimg = c3.number_input("kimg", min_value=0.001, value=float(cfg["kimg"]), format="%g",
                               key=f"resume_kimg_{rid}_{cfg['kimg']}",
                               help="training length on resume (raise it to extend a finished run)")
    if c2.button("Resume", key="resume", disabled=not can_resume, help="continue from the latest checkpoint"):
        try:
            jobs.resume(rid, kimg=kimg if kimg != cfg.get("kimg") else None)
        except (RuntimeError, FileNotFoundError) as e:
            st.error(str(e))
        else:
            st.rerun()
    st.fragment(_live, run_every=2 if s.alive else None)(rid, s.alive)


_form()
runs = jobs.list_runs()
if not runs:
    st.info(f"No runs yet in `{runs_root()}`. Start one with the form above, or from a shell: "
            "`python -m engine jobs start --res 32 --kimg 2`.")
else:
    st.subheader("Runs")
    alive = any(s.alive for s in runs)
    st.fragment(_runs_table, run_every=5 if alive else None)(alive)
    _selected(runs)
