"""Home page (the app's default): what the lab does in four steps, where it stands (the demo data, its
domain classifier, the runs) and a link to the next step. It only reads state from disk."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine import jobs
from engine.data import catalog
from engine.jobs import prepare as data_jobs
from engine.data.dataset import default_demo_dir
from engine.metrics import report as R
from engine import runs as run_files
from engine.utils import data_root, read_json, runs_root
from ui import frame

frame.require_frame()

st.title("HistoGen Lab")
st.markdown("Class-conditional synthesis of H&E histopathology patches (the nine tissue classes of "
            "NCT-CRC-HE-100K: ADI, BACK, DEB, LYM, MUC, MUS, NORM, STR, TUM). Everything runs on this "
            "machine with no download, and every action here is also a `python -m engine` command.")

STEPS = (  # (title, what it does, its pages)
    ("1 · Data", "Prepare a data set: the built-in synthetic demo set, or a folder of real H&E patches. "
                 "Its domain classifier (for the metrics) trains in the background.", ("pages/data.py",)),
    ("2 · Train", "Start a class-conditional StyleGAN2 run; watch its losses and per-class sample grids; "
                  "stop and resume it.", ("pages/train.py",)),
    ("3 · Samples and style mixing", "Generate patches per class from any checkpoint; mix the coarse and "
                                     "fine styles of two samples.", ("pages/samples.py", "pages/style_mixing.py")),
    ("4 · Evaluate and review", "FID / KID / precision-recall per class, a downstream classifier, a "
                                "memorisation audit and the history over training.", ("pages/evaluate.py",)),
)
for col, (title, text, paths) in zip(st.columns(len(STEPS)), STEPS):
    with col.container(border=True):
        st.markdown(f"**{title}**")
        st.caption(text)
        for p in paths:
            info = frame.BY_PATH[p]
            st.page_link(p, label=info.title, icon=info.icon)


# ----------------------------------------------------------------------------------------------
# State, read from disk (the same files the other pages and the CLI use)

def _classifier(data_dir: Path) -> tuple[str, str]:
    """(state, one line) of a data set's domain classifier: missing | queued | training | ready | failed
    | stopped, from engine.jobs.classifier (its background job and its file)."""
    try:
        from engine.jobs.classifier import classifier_status
    except ImportError:  # an engine without classifier jobs: the file alone says whether it exists
        ready = (data_dir / "classifier.pt").is_file()
        return ("ready", "ready") if ready else ("missing", "not trained yet")
    c = classifier_status(data_dir)
    if c.state == "ready":
        acc = f" · validation accuracy {c.val_acc:.1%} on {c.val_n} patches" if c.val_acc is not None else ""
        return c.state, f"ready{acc}"
    if c.state == "training":
        return c.state, f"training in the background: {c.done} / {c.total} · {c.message}"
    if c.state == "queued":
        return c.state, f"queued ({c.message or 'waits for its data set'})"
    if c.state in ("failed", "stopped"):
        return c.state, f"{c.state}: {c.message}"
    return c.state, "not trained yet (the Data page has a button; Evaluate trains it when missing)"


def _data_line(d: Path) -> str:
    info = read_json(d / "dataset.json", {}) or {}
    names = info.get("class_names") or []
    return f"{catalog.describe(d)}  \n{len(names)} classes: {', '.join(names)}"


def _run_line(s: jobs.RunStatus) -> str:
    p = jobs.progress(s).text() if hasattr(jobs, "progress") else f"step {s.step} · {s.kimg:.3f} kimg"
    name = f" ({s.name})" if getattr(s, "name", "") else ""
    return f"`{s.run_id}`{name} · **{s.state}** · {p}"


demo = frame.demo_settings()
demo_dir = default_demo_dir(demo.size)
prepared = catalog.list_prepared()
preparing = [j for j in data_jobs.list_prepare_jobs() if j.state in data_jobs.ACTIVE
             and getattr(j, "kind", "prepare") == "prepare"]
runs = jobs.list_runs()
with_ckpt = [s for s in runs if run_files.has_entry(s.run_dir)]
_state = getattr(R, "report_state", lambda rep: "finished")  # a report whose every metric failed
evaluated = [s for s in with_ckpt if any(_state(r) != "failed" for r in R.list_reports(s.run_dir))]

st.subheader("Where the lab stands")
c_data, c_clf, c_runs = st.columns(3)
with c_data.container(border=True):
    st.markdown("**Demo data**")
    if demo_dir in prepared:
        st.markdown(f":green[:material/check_circle:] prepared: {_data_line(demo_dir)}")
        st.caption("Procedural patches, labelled synthetic: for demos and tests, not for biological "
                   "conclusions.")
    elif any(Path(j.out).resolve() == demo_dir.resolve() for j in preparing):
        st.markdown(f":orange[:material/hourglass_top:] being prepared: `{demo_dir.name}`")
    else:
        st.markdown(f":gray[:material/radio_button_unchecked:] not prepared (`{demo_dir.name}` in "
                    f"`{data_root()}`)")
    others = [p for p in prepared if p != demo_dir]
    if others:
        st.caption(f"{len(others)} other prepared data set(s): " + ", ".join(f"`{p.name}`" for p in others))
    elif not prepared:
        st.caption("No prepared data set yet.")

# the classifier of the demo set, else of the newest prepared set (the one the Data page shows first)
clf_dir = demo_dir if demo_dir in prepared else (prepared[0] if prepared else None)
with c_clf.container(border=True):
    st.markdown("**Domain classifier**")
    if clf_dir is None:
        clf_state = "missing"
        st.markdown(":gray[:material/radio_button_unchecked:] needs a prepared data set first")
    else:
        clf_state, line = _classifier(clf_dir)
        icon = {"ready": ":green[:material/check_circle:]", "training": ":orange[:material/hourglass_top:]",
                "queued": ":orange[:material/hourglass_top:]", "failed": ":red[:material/error:]"}.get(
            clf_state, ":gray[:material/radio_button_unchecked:]")
        st.markdown(f"{icon} of `{clf_dir.name}`: {line}")
    st.caption("The `domain` feature space of the metrics: an in-domain classifier trained on the "
               "data set's training split.")

with c_runs.container(border=True):
    st.markdown("**Runs**")
    alive = [s for s in runs if s.alive]
    if not runs:
        st.markdown(f":gray[:material/radio_button_unchecked:] no runs yet in `{runs_root()}`")
    else:
        st.markdown(f"{len(runs)} run(s) · {len(alive)} running · {len(evaluated)} evaluated")
        for s in alive:
            st.markdown(f":green[:material/play_circle:] {_run_line(s)}")
        if not runs[0].alive:
            st.markdown(f"latest: {_run_line(runs[0])}")


# ----------------------------------------------------------------------------------------------
# The next step: the first thing the lab still lacks, in the order of the four steps

def _next() -> tuple[str, str]:
    if not prepared:
        if preparing:
            return "pages/data.py", "follow the preparation of the data set"
        return "pages/data.py", "prepare a data set (the built-in demo set takes seconds)"
    if alive:
        return "pages/train.py", f"watch run {alive[0].run_id} train"
    if not runs:
        return "pages/train.py", "start a first training run (the defaults train on the demo set)"
    if not with_ckpt:
        return "pages/train.py", f"run {runs[0].run_id} has no checkpoint yet: resume it or start another"
    if not evaluated:
        return "pages/samples.py", f"look at the samples of run {with_ckpt[0].run_id}, then evaluate it"
    return "pages/evaluate.py", f"review the evaluation of run {evaluated[0].run_id}"


page, text = _next()
st.subheader("Next step")
st.page_link(page, label=f"{frame.BY_PATH[page].title}: {text}", icon=":material/arrow_forward:")
if clf_state not in ("ready", "training", "queued") and prepared:
    st.caption("Evaluate's default `domain` feature space needs the domain classifier: train it from the "
               "**Data** page (a few minutes on a CPU), or let the first evaluation train it.")
