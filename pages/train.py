"""Train page: the selected run first (status against its target, stop/resume, live curves, sample
grid, log tail, rename/delete), then all runs, then the form for a new run.

Every widget of the form is a TrainConfig field (ui.forms: `label · name`, default/range/choices/help
from its metadata); the engine validates the whole config, so the page holds no rule of its own.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from engine import config as C
from engine import jobs, runs
from engine.data import catalog
from engine.train import curves
from engine.utils import read_json, runs_root
from ui import figures, forms, frame

frame.require_frame()

# the form opens on this machine's preset (spec with a GPU, demo without: engine.config.default_preset)
FORM = forms.ConfigForm(C.TrainConfig, defaults=C.preset_values(C.default_preset()))
RUN_FIELDS = ("family", "data", "res", "batch", "kimg", "seed")
SECTIONS = {  # what a researcher changes; every other field is under "advanced"
    "optimisation": ("lr_g", "lr_d", "r1_gamma", "ada", "ada_target"),
    "domain head and alpha gate": ("domain_head", "domain_features", "alpha_on", "alpha_off", "alpha_max"),
    "loss weights": ("fm_weight", "perceptual_weight", "stats_weight", "saturation_weight", "diversity_weight"),
}
SHOWN = (set(RUN_FIELDS) | {n for names in SECTIONS.values() for n in names}
         | {"run_dir", "preset"} | set(C.FAMILY_SECTIONS))
ADVANCED = tuple(n for n in FORM.fields if n not in SHOWN)
# A family's own section (engine.config.FAMILY_SECTIONS: ddpm's DDPMConfig), one widget per field keyed
# cfg_<family>_<field>, opening on the family preset of the machine's preset.


def _section_preset(family: str, preset: str) -> dict:
    cls, presets, _ = C.FAMILY_SECTIONS[family]
    return C.to_dict(C.from_dict(cls, presets.get(preset, {})))


SECTION_FORMS = {fam: forms.ConfigForm(cls, prefix=f"cfg_{fam}_",
                                          defaults=_section_preset(fam, C.default_preset()))
                 for fam, (cls, _, _) in C.FAMILY_SECTIONS.items()}

st.title("Train")
if "train_flash" in st.session_state:  # said after the rerun that shows the new run
    st.toast(st.session_state.pop("train_flash"))


# ----------------------------------------------------------------------------------------------
# Form: one widget per config field

def _apply_preset() -> None:
    """on_change of the preset: the form shows that preset's values (the data set and run id stay)."""
    FORM.refill(C.preset_values(st.session_state["cfg_preset"]), st.session_state,
                skip=("preset", "data", "run_dir"))
    for fam, form in SECTION_FORMS.items():
        form.refill(_section_preset(fam, st.session_state["cfg_preset"]), st.session_state)


def _run_section(container) -> dict:
    """preset, then family, data, res, batch, kimg, seed: outside the st.form, so the time estimate
    below them follows every change and the preset can refill the form (widgets inside a form report
    their values only on submit and take no callbacks)."""
    values = {"preset": container.selectbox(
        FORM.label("preset"), list(C.PRESET_NAMES), index=list(C.PRESET_NAMES).index(FORM.defaults["preset"]),
        key="cfg_preset", help=FORM.fields["preset"].metadata["help"], on_change=_apply_preset)}
    cols = container.columns(len(RUN_FIELDS))
    for col, name in zip(cols, RUN_FIELDS):
        if name == "data":
            sets = [""] + [str(p) for p in catalog.list_prepared()]
            values[name] = col.selectbox(FORM.label(name), sets, key="cfg_data",
                                         help=FORM.fields[name].metadata["help"], format_func=lambda p: (
                                             catalog.describe(p) if p else
                                             "histosynth demo at res (built-in, prepared on demand)"))
        else:
            values[name] = FORM.widget(name, col)
    return values


def _estimate(values: dict, all_runs: list[jobs.RunStatus]) -> str:
    try:
        return jobs.estimate_text({k: values[k] for k in ("family", "res", "batch", "kimg")}, runs=all_runs)
    except (C.ConfigError, ValueError, TypeError, KeyError):
        return "no estimate for these values"


def _form(all_runs: list[jobs.RunStatus]) -> None:
    with st.expander("New run", expanded=not all_runs):
        values = _run_section(st)
        st.caption(f":material/schedule: Estimated time: {_estimate(values, all_runs)}")
        fam = values.get("family")
        with st.form("train_form"):
            shared: tuple = ()
            if fam in SECTION_FORMS:  # the family's own fields; the GAN sections do not apply to it
                form, shared = SECTION_FORMS[fam], C.FAMILY_SECTIONS[fam][2]
                st.markdown(f"**{fam} model, schedule, optimiser and sampler**")
                values[fam] = form.grid(list(form.fields), st, 5)
            else:
                for title, names in SECTIONS.items():
                    st.markdown(f"**{title}**")
                    values.update(FORM.grid(names, st, 5))
            with st.expander("advanced"):
                # a field the section shares (grad_clip, ema_kimg ...) is set once, in the section
                values.update(FORM.grid([n for n in ADVANCED if n not in shared], st, 4))
            run_id = st.text_input("run id · run_id", key="cfg_run_id",
                                   placeholder="<date>-<time>-<family>-<res>px",
                                   help="name of the run directory (letters, digits, '.', '_', '-'); "
                                        "a display name can be given later (rename)")
            submitted = st.form_submit_button("Start", type="primary", key="start")
        if submitted:
            try:
                rid = jobs.start(values, run_id=run_id.strip() or None)
            except (C.ConfigError, ValueError) as e:
                st.error(str(e))
                return
            except FileExistsError:
                st.error(f"run_id {run_id.strip()!r} already exists in {runs_root()}; choose another name")
                return
            # the new run becomes the selected one, shown at the top; the form folds away below
            st.session_state["train_run"] = rid
            st.session_state["train_flash"] = f"Started {rid}"
            st.rerun()


# ----------------------------------------------------------------------------------------------
# Runs table and the selected run

def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _runs_table(ticking: bool) -> None:
    """All runs; re-drawn every 5 s by st.fragment while any of them is alive. `progress` is the same
    engine text as the selected run's status line (jobs.progress)."""
    all_runs = jobs.list_runs()
    rows = [{"run": s.run_id, "name": s.name, "state": s.state, "progress": jobs.progress(s).text(),
             "started": time.strftime("%Y-%m-%d %H:%M", time.localtime((s.raw or {}).get("started_at") or 0)),
             "heartbeat": _age(s.heartbeat_age_s) if s.alive else "", "message": s.message} for s in all_runs]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="runs_table")
    if ticking and not any(s.alive for s in all_runs):
        st.rerun()  # every run has ended: stop this timer


ACTIVE_OR_DONE = ("running", "stopping", "stopped", "finished")


def _status_line(s: jobs.RunStatus) -> None:
    state = "stopping" if s.stop_requested else s.state
    icon = {"running": ":green[:material/play_circle:]", "queued": ":orange[:material/hourglass_top:]",
            "stopping": ":orange[:material/pause_circle:]", "stopped": ":gray[:material/pause_circle:]",
            "finished": ":green[:material/check_circle:]", "failed": ":red[:material/error:]"}.get(state, "")
    hb = f" · heartbeat {_age(s.heartbeat_age_s)}" if s.alive and s.heartbeat_age_s is not None else ""
    p = jobs.progress(s)
    if p.fraction is not None and s.state in ACTIVE_OR_DONE:
        st.progress(p.fraction)
    st.markdown(f"{icon} **{state}** · {p.text()}{hb}"
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
    cfg = runs.read_config(d)
    _status_line(s)
    # read only what the trainer appended since the last tick (offset kept per run in session_state)
    tail = st.session_state.setdefault(f"metrics_{run_id}", {})
    df = curves.follow_metrics(runs.metrics_path(d), tail)  # metrics_diffusion.csv for ddpm
    figs = figures.run_figures(df, cfg)  # only the curves this run uses: no empty slots
    cols = st.columns(3)
    for i, (name, fig) in enumerate(figs.items()):
        cols[i % 3].plotly_chart(fig, width="stretch", key=f"curve_{name}")
    if cfg.get("family") == "mlp_gan" and len(df) and "d_loss" in df and "g_loss" in df:
        from engine.train.balance import balance_note  # the tutorial's reading of the two losses

        note = balance_note(df["d_loss"].tolist(), df["g_loss"].tolist())
        if note:
            st.warning(note, icon=":material/balance:")
    grids = [g for _, g in runs.grids(d)]
    left, right = st.columns([3, 2])
    if grids:
        names = runs.class_names(d)
        rows = " · ".join(f"row {i + 1}: {c}" for i, c in enumerate(names))
        img = _grid_image(grids[-1], int(cfg.get("res") or 64), grids[-1].stat().st_mtime_ns)
        left.image(img, width=int(img.shape[1]) if img.shape[1] <= 640 else "stretch", output_format="PNG",
                   caption=f"{grids[-1].stem.replace('_', ' ')} (G_ema, fixed seeds) · {rows}")
    else:
        left.caption("No sample grid yet.")
    # wrapped: trainer lines (config dumps, tracebacks) are longer than the column and were cut
    right.code(jobs.log_tail(d / "log.txt", lines=30) or "(empty log)", language=None, wrap_lines=True)


def _selected(all_runs: list[jobs.RunStatus]) -> None:
    ids = [s.run_id for s in all_runs]
    titles = {s.run_id: s.title for s in all_runs}
    current = st.session_state.get("train_run")
    rid = st.selectbox("run", ids, index=ids.index(current) if current in ids else 0,
                       format_func=titles.get)
    st.session_state["train_run"] = rid
    s = next(x for x in all_runs if x.run_id == rid)
    c1, c2, c3, _ = st.columns([1, 1, 2, 2], vertical_alignment="bottom")
    if c1.button("Stop", key="stop", disabled=not s.alive, help="checkpoint, then stop"):
        jobs.stop(rid, wait=False)
        st.rerun()
    cfg = read_json(s.run_dir / runs.CONFIG) or {}
    can_resume = not s.alive and bool(cfg)
    kimg = None
    if can_resume:  # keyed by the run's kimg: a widget made before config.json existed cannot linger
        kimg = c3.number_input(FORM.label("kimg"), min_value=0.001, value=float(cfg["kimg"]), format="%g",
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
    _manage(s)


def _manage(s: jobs.RunStatus) -> None:
    """Rename (a display name; the id stays) and delete (two clicks; not while the run is alive)."""
    rid = s.run_id
    confirming = st.session_state.get("train_confirm_delete") == rid
    with st.expander("Rename or delete this run", expanded=confirming):
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        name = c1.text_input("display name", value=s.name, key=f"rename_{rid}", max_chars=jobs.NAME_MAX,
                             help=f"shown with the run id {rid}, which stays the run's directory name")
        if c2.button("Rename", key="rename"):
            try:
                jobs.rename(rid, name)
            except (ValueError, FileNotFoundError) as e:
                st.error(str(e))
            else:
                st.rerun()
        if not confirming:
            if st.button("Delete run", key="delete", disabled=s.alive, icon=":material/delete:",
                         help="stop the run first" if s.alive else "asks for confirmation"):
                st.session_state["train_confirm_delete"] = rid
                st.rerun()
            if s.alive:
                st.caption(f"A {s.state} run cannot be deleted: stop it first.")
            return
        st.warning(f"Delete run **{s.title}** with its checkpoints, sample grids, curves and evaluation "
                   f"reports ({s.run_dir})? This cannot be undone.")
        y, n, _ = st.columns([1, 1, 4])
        if y.button("Yes, delete", key="delete_yes", type="primary"):
            st.session_state.pop("train_confirm_delete", None)
            try:
                jobs.delete(rid)
            except (RuntimeError, FileNotFoundError) as e:  # e.g. resumed from another tab meanwhile
                st.error(str(e))
                return
            st.session_state.pop("train_run", None)
            st.session_state["train_flash"] = f"Deleted {rid}"
            st.rerun()
        if n.button("Cancel", key="delete_no"):
            st.session_state.pop("train_confirm_delete", None)
            st.rerun()


all_runs = jobs.list_runs()
if all_runs:
    # the selected run (after Start: the new one) is the first thing on screen; the form below it
    _selected(all_runs)
    st.subheader("Runs")
    alive = any(s.alive for s in all_runs)
    st.fragment(_runs_table, run_every=5 if alive else None)(alive)
else:
    st.info(f"No runs yet in `{runs_root()}`. Start one with the form below (the defaults train a small "
            "demo generator on the built-in histosynth data), or from a shell: "
            "`python -m engine jobs start --res 32 --kimg 2`.")
_form(all_runs)
frame.next_step("pages/samples.py", "generate patches per class from a checkpoint")
