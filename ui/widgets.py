"""Widgets shared by pages: the cached generator loader, the run / checkpoint picker, real tiles beside
generated ones. Streamlit-side only; the work is done by engine.sampling and engine.runs."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from engine import jobs, runs, sampling
from engine.utils import pick_device, read_json, runs_root

EMPTY_HELP = ("Start a run on the **Train** page: the defaults train a small demo generator on the "
              "built-in histosynth data (labelled synthetic) in minutes on a CPU. Its checkpoints "
              "appear here as soon as they are written, and the page picks the latest one. From a "
              "shell: `python -m engine train --kimg 2`.")


@st.cache_resource(max_entries=2, show_spinner="Loading the generator...")
def cached_generator(run_dir: str, path: str, mtime: float, device: str):
    """(G, meta) for one checkpoint or export. Keyed by (path, mtime, device): a rewritten export
    reloads, and max_entries=2 keeps at most two generators in (GPU) memory; shared by all sessions,
    which is safe because G is only read (eval, no grad)."""
    return sampling.load_generator(run_dir, device=device, path=path)


def _mtime(entry: dict) -> float:
    p = Path(entry["path"])
    return (p / "generator.safetensors" if p.is_dir() else p).stat().st_mtime


def pick_generator(key: str):
    """Run and checkpoint selectors; returns (G, meta, run status) or None after explaining why."""
    choices = [(r, runs.choices(r.run_dir, r.state == "finished")) for r in jobs.list_runs()]
    choices = [(r, e) for r, e in choices if e]
    if not choices:
        st.info(f"No run with a checkpoint under `{runs_root()}` yet. {EMPTY_HELP}")
        return None
    c1, c2 = st.columns([3, 2])
    ids = [r.run_id for r, _ in choices]
    rid = c1.selectbox("run", ids, key=f"{key}_run",
                       format_func=lambda i: next(f"{r.title}  ({r.state}, step {r.step})" for r, _ in choices
                                                  if r.run_id == i))
    run, entries = next((r, e) for r, e in choices if r.run_id == rid)
    # Each step once: the default entry is offered as "latest · ..." at the top, then the best model
    # ("best (step N, FID x)", when the run kept one), then every step. When a newer step appears the
    # latest label changes and the picker falls back to the top (it keeps following the newest); a step
    # picked by hand keeps its label and stays picked (a new best renames its entry: back to the top).
    latest = next(e for e in entries if e["default"])
    rest = [e for e in entries if e is not latest]
    labels = [f"latest · {latest['label']}"] + [e["label"] for e in rest]
    choice = c2.selectbox("checkpoint", labels, key=f"{key}_ckpt_{rid}", help=runs.KIND_HELP)
    entry = latest if choice == labels[0] else rest[labels.index(choice) - 1]
    device = pick_device("auto")
    try:
        mtime = _mtime(entry)
        G, meta = cached_generator(str(run.run_dir), entry["path"], mtime, device)
    except (FileNotFoundError, ValueError, KeyError) as e:
        st.error(f"Could not load {entry['label']} of run {rid}: {e}")
        return None
    return G, dict(meta, mtime=mtime), run


@st.cache_data(max_entries=8, show_spinner=False)
def _real_tiles(data_dir: str, mtime: float, classes: tuple[str, ...], n: int, size: int) -> dict:
    from engine.data.dataset import load_prepared, real_tiles

    data = load_prepared(data_dir)
    return {c: real_tiles(data, c, n, seed=0, size=size) for c in classes if c in data.class_names}


def real_tiles_of_run(run_dir, classes: list[str], n: int, size: int) -> tuple[dict, str]:
    """({class: uint8 tiles} from the eval split of the run's data set, note for the user). Cached by
    the data set's dataset.json mtime (a re-prepared set is read again); the note says which data set
    was used, or why there are no real tiles (missing data set, classes it lacks)."""
    from engine.config import ConfigError

    d = runs.data_dir(run_dir)
    try:
        tiles = _real_tiles(str(d), (d / "dataset.json").stat().st_mtime, tuple(classes), int(n), int(size))
    except (FileNotFoundError, ConfigError) as e:
        return {}, f"No real tiles: the run's data set `{d}` cannot be read ({e})."
    missing = [c for c in classes if c not in tiles]
    note = f"Real tiles: the `eval` split of `{d}`, resized to {size} px as in training."
    if not (read_json(d / "dataset.json") or {}).get("eval_disjoint"):
        note += (" This data set was prepared before `eval` was held out: its eval patches are a subset of "
                 "train (prepare it again for a held-out eval).")
    if missing:
        note += f" Not in that data set: {', '.join(missing)}."
    return tiles, note


def device_caption(G) -> str:
    return f"on {next(G.parameters()).device.type}" + (f" ({os.cpu_count()} cores)" if
                                                       next(G.parameters()).device.type == "cpu" else "")
