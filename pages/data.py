"""Data page: choose or prepare a data set; its domain classifier (state, training job); counts per class and
split, rejects, preview, stain stats."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.config import ConfigError, PrepareConfig, from_dict
from engine.data import catalog
from engine.jobs import core as bg
from engine.jobs import prepare as data_jobs
from engine.jobs import classifier as classifier_jobs
from engine.data.classes import class_descriptions
from engine.utils import data_root
from ui import figures, forms, frame

frame.require_frame()

st.title("Data")


# The form is generated from PrepareConfig (ui.forms: `label · name`, default/range/choices/help from the
# field); only `source`, `test_source` and `out` are drawn by hand: a radio + folder path make `source`,
# a bare folder becomes folder:PATH, and a name becomes a directory under the data root.
FORM = forms.ConfigForm(PrepareConfig, prefix="prepare_")
BY_HAND = ("source", "test_source", "out")
MAIN = ("size", "per_class", "seed", "quality_filter", "stain_norm", "stain_reference")
ADVANCED = tuple(n for n in FORM.fields if n not in BY_HAND + MAIN)


def _prepare_form() -> None:
    with st.expander("Prepare a data set", expanded=not catalog.list_prepared()):
        with st.form("prepare"):
            kind = st.radio(FORM.label("source"), ["histosynth", "folder"], horizontal=True,
                            help="histosynth: built-in synthetic demo set. folder: an NCT-CRC-HE-100K / "
                                 "CRC-VAL-HE-7K tree <root>/<CLASS>/*.tif or any ImageFolder tree.")
            folder = st.text_input("folder path", placeholder="/data/NCT-CRC-HE-100K")
            test_folder = st.text_input(FORM.label("test_source"), placeholder="/data/CRC-VAL-HE-7K (optional)",
                                        help="a second folder <root>/<CLASS>/*.tif whose patches make the test "
                                             "split instead of a share of the source (spec 1.1): classes "
                                             "matched by folder name, in the source's order; the same filter, "
                                             "stain normalisation and resize. Empty = the test split is carved "
                                             "out of the source.")
            values = FORM.grid(MAIN[:3], st, 3)
            values.update(FORM.grid(MAIN[3:5], st, 2))
            values["stain_reference"] = FORM.widget("stain_reference", st)
            name = st.text_input(FORM.label("out"), placeholder="name of the new data set (default: <source>-<size>)")
            with st.expander("advanced: splits, quality filter, workers"):
                values.update(FORM.grid(ADVANCED, st, 4))
            submitted = st.form_submit_button("Prepare", type="primary")
        if not submitted:
            return
        source = "histosynth" if kind == "histosynth" else f"folder:{folder.strip()}"
        t = test_folder.strip()
        test_source = "" if not t else t if t.startswith("folder:") else f"folder:{t}"
        default_name = (f"{'histosynth' if kind == 'histosynth' else Path(folder.strip()).name or 'folder'}"
                        f"-{values['size']}")
        out = data_root() / (name.strip() or default_name)
        values["stain_reference"] = values["stain_reference"].strip()
        try:
            # A background job (`python -m engine prepare` with one worker per core): 100k TIFFs take
            # minutes even so, and the page stays usable meanwhile.
            job = data_jobs.start_prepare(from_dict(PrepareConfig, dict(
                values, source=source, out=str(out), test_source=test_source)))
        except (ConfigError, ValueError) as e:
            st.error(str(e))
            return
        _watched().append(job)
        # Its domain classifier waits behind it (Evaluate's `domain` space and the GAN's domain head need it).
        classifier_jobs.ensure_classifier(out, after_job=job)
        st.toast(f"Preparing {out.name} in the background (job {job}); its domain classifier follows")


def _watched() -> list[str]:
    """Jobs this session has seen running: their end is reported once (truth stays on disk)."""
    return st.session_state.setdefault("prepare_jobs", [])


def _jobs(ticking: bool) -> None:
    """Running preparations with their progress and a Stop button; re-run every second by st.fragment
    while one is active. A job that ends selects its data set (finished) or leaves its error."""
    jobs = data_jobs.list_prepare_jobs()
    watched, ended = _watched(), False
    for j in jobs:
        if j.state in data_jobs.ACTIVE:
            if j.job_id not in watched:  # started elsewhere (another tab, the CLI): follow it too
                watched.append(j.job_id)
            frac = min(1.0, j.done / j.total) if j.total else 0.0
            c1, c2 = st.columns([5, 1], vertical_alignment="bottom")
            c1.progress(frac, text=f"Preparing `{Path(j.out).name}` from {j.source}: "
                                   + (f"{j.done}/{j.total} · {j.message}" if j.total else j.message))
            if c2.button("Stop", key=f"stop_{j.job_id}", help="no data set is written"):
                data_jobs.stop_prepare(j.job_id)
                ended = True
        elif j.job_id in watched:
            watched.remove(j.job_id)
            ended = True
            if j.state == "finished":
                st.session_state["data_dir"] = j.out
                st.toast(f"Prepared {Path(j.out).name}")
            else:
                st.session_state["prepare_ended"] = j.job_id
    if ticking and (ended or not any(j.state in data_jobs.ACTIVE for j in jobs)):
        st.rerun()  # redraw the picker with the new data set; stops this timer when nothing runs


def _ended_badly() -> None:
    """The error of this session's last job that failed (or was stopped), until the next one ends."""
    jid = st.session_state.get("prepare_ended")
    if not jid or not (data_jobs.job_dir(jid) / "status.json").is_file():
        return
    j = data_jobs.prepare_status(jid)
    if j.state == "failed":
        st.error(f"Preparation of `{Path(j.out).name}` failed: {j.message}")
        with st.expander("log"):
            st.code(j.log_tail or "(empty log)", language=None)
    elif j.state == "stopped":
        st.info(f"Preparation of `{Path(j.out).name}` stopped at {j.done}/{j.total}; no data set was written.")


def _classifier(data_dir: str, ticking: bool) -> None:
    """The data set's domain classifier: missing / queued / training (progress) / ready (held-out
    accuracy) / failed (message); "Train classifier" or "Stop". Re-run every 2 s while a job runs."""
    s = classifier_jobs.classifier_status(data_dir)
    busy = s.state in ("queued", "training")
    if ticking and not busy:
        st.rerun()  # it ended: redraw the page (and stop this timer)
    c1, c2 = st.columns([5, 1], vertical_alignment="bottom")
    if s.state == "training":
        c1.progress(s.fraction, text=f"Domain classifier: training · step {s.done} / {s.total} · "
                                     + bg.progress_text(s.fraction, s.started_at, s.message))
    elif s.state == "queued":
        c1.progress(0.0, text=f"Domain classifier: queued · {s.message}")
    elif s.state == "ready":
        acc = "n/a (empty val split)" if s.val_acc is None else f"{s.val_acc:.1%}"
        c1.success(f"Domain classifier: ready · held-out accuracy {acc} on {s.val_n} `val` patches "
                   f"({s.arch}) · `{s.path}`")
    elif s.state in ("failed", "stopped"):
        (c1.error if s.state == "failed" else c1.warning)(f"Domain classifier: {s.state} · {s.message}")
        if s.log_tail:
            with c1.expander("log"):
                st.code(s.log_tail, language=None)
    else:
        c1.info("Domain classifier: missing · Evaluate's `domain` feature space and the GAN's domain head "
                "need it (a few minutes on a CPU, in the background)")
    if busy:
        if c2.button("Stop", key="clf_stop", help="no classifier file is written"):
            classifier_jobs.stop_classifier(s.job_id)
            st.rerun()
    elif c2.button("Train classifier", key="clf_train", type="primary" if s.state != "ready" else "secondary",
                   help="python -m engine train-classifier --data " + data_dir
                        + (" (replaces the current one)" if s.state == "ready" else "")):
        try:
            classifier_jobs.start_classifier(data_dir)
        except (ConfigError, FileNotFoundError) as e:
            st.error(str(e))
            return
        st.rerun()


def _show(path: Path) -> None:
    from engine.data.dataset import load_prepared

    try:
        data = load_prepared(path)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        st.error(str(e))
        return
    info = data.info
    if info.get("synthetic"):
        st.info(info.get("synthetic_label") or "histosynth: synthetic demo data, not real tissue")
    m = st.columns(4)
    m[0].metric("classes", len(data.class_names))
    m[1].metric("size", f"{data.size} px")
    m[2].metric("patches", int(len(data.labels)))
    m[3].metric("rejected", int(sum((info.get("rejected") or {}).values())))
    st.caption(f"source `{info.get('source')}` · seed {info.get('seed')} · stain normalisation "
               f"{(info.get('stain_norm') or {}).get('method', 'none') if isinstance(info.get('stain_norm'), dict) else info.get('stain_norm', 'none')}"
               f" · `{path}`")
    training = classifier_jobs.classifier_status(path).state in ("queued", "training")
    st.fragment(_classifier, run_every=2 if training else None)(str(path), training)

    counts = catalog.counts_table(info)
    disjoint = data.eval_disjoint
    left, right = st.columns([2, 3])
    left.subheader("Patches per class and split")
    left.dataframe(counts, width="stretch")
    # A held-out eval is a 4th part of the stack; an old eval inside train would count its patches twice.
    stacked = [s for s in counts.columns if disjoint or s != "eval"]
    right.plotly_chart(figures.counts_figure(counts, stacked), width="stretch", key="counts_chart")
    if disjoint:
        left.caption("`eval` is held out for the metrics (FID/KID/LPIPS, the trainer's best model): the four "
                     "splits are disjoint.")
    else:
        left.warning("`eval` is a subset of train here: this data set was prepared before eval was held out, so "
                     "the metrics compare generated patches with training patches. Prepare it again for a "
                     "held-out eval.")
    if info.get("test_source"):
        missing = info.get("test_missing_classes") or []
        left.caption(f"test split from `{info['test_source']}` (test_frac not used); "
                     f"{int(sum((info.get('test_rejected') or {}).values()))} of its files rejected"
                     + (f"; no test patch of: {', '.join(missing)}" if missing else ""))

    st.subheader("Rejected files")
    rej = catalog.rejects_table(info)
    if rej.empty:
        st.caption("No file was rejected.")
    else:
        st.dataframe(rej, width="stretch", hide_index=True)

    st.subheader("Preview (one row per class)")
    c1, c2 = st.columns([1, 4])
    per_class = c1.slider("per class", 4, 16, 8)
    seed = c1.number_input("preview seed", 0, 10_000, 0)
    grid = catalog.preview_grid(data.images, data.labels, data.splits["train"], len(data.class_names),
                                per_class=per_class, seed=int(seed))
    c2.image(grid, caption=" · ".join(f"row {i + 1}: {c}" for i, c in enumerate(data.class_names)),
             width="stretch" if data.size < 128 else "content")
    desc = class_descriptions()
    with c1.popover("What the classes are"):
        for c in data.class_names:
            st.markdown(f"**{c}** — {desc.get(c, '')}")

    st.subheader("Stain statistics")
    _stain(data)


def _stain(data) -> None:
    from engine.data.stain import stain_stats_table

    df = stain_stats_table(data, per_class=64)
    st.dataframe(df, width="stretch")
    fig = figures.optical_density_figure(df)
    if fig is not None:
        st.plotly_chart(fig, width="stretch", key="stain_chart")


_prepare_form()
active = any(j.state in data_jobs.ACTIVE for j in data_jobs.list_prepare_jobs())
st.fragment(_jobs, run_every=1 if active else None)(active)
_ended_badly()
sets = catalog.list_prepared()
if not sets:
    st.info(f"No prepared data set in `{data_root()}` yet. Prepare the built-in `histosynth` demo set "
            "above (a few seconds), or point it at a folder of H&E patches, or run "
            "`python -m engine prepare --source histosynth --size 64`.")
else:
    names = [str(p) for p in sets]
    current = st.session_state.get("data_dir")
    index = names.index(current) if current in names else 0
    chosen = st.selectbox("data set", names, index=index, format_func=catalog.describe)
    st.session_state["data_dir"] = chosen
    _show(Path(chosen))
frame.next_step("pages/train.py", "train a generator on this data set")
