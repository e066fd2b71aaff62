"""Compare page: several runs (any families, one data set) side by side on comparable evaluation reports:
one table and bar charts (overall and per class, with the reports' error bars), training cost, the grids'
rows of one class, one training signal overlaid; the runs that lack a comparable report are evaluated with
the same settings in the background. The comparison is engine.compare's; this page only draws it."""
from __future__ import annotations

import streamlit as st

from engine import compare as K
from engine import images, jobs
from engine import runs as run_files
from engine.config import ConfigError
from engine.jobs import eval as eval_jobs
from engine.utils import runs_root
from ui.figures import compare_bars, compare_class_bars, compare_curves
from ui import frame

frame.require_frame()

st.title("Compare")

# (value column, its error bar column or None, chart title): the table's columns the bars show
BARS = (("fid", None, "FID (biased at small N)"), ("kid", "kid_std", "KID (± std over subsets)"),
        ("precision", None, "precision"), ("recall", None, "recall"), ("cas", None, "CAS"),
        ("lpips_generated", "lpips_generated_std", "diversity: LPIPS (± std over pairs)"),
        ("diversity_generated", "diversity_generated_std", "diversity: feature space (± std over pairs)"),
        ("acc_synthetic", None, "downstream accuracy: synthetic"),
        ("acc_real+synthetic", None, "downstream accuracy: real+synthetic"),
        ("img_per_s", None, "training speed (img/s, median)"), ("time_s", None, "wall time (s)"),
        ("best_kimg", None, "kimg to the best checkpoint"))
CLASS_BARS = {"fid": None, "kid": "kid_std", "precision": None, "recall": None, "cas": None,
              "lpips_generated": "lpips_generated_std", "diversity_generated": "diversity_generated_std",
              "recall_synthetic": None, "recall_real+synthetic": None}


def _groups(cmp: K.Comparison, key: str) -> int | None:
    """The radio of the groups of comparable reports; returns the chosen group's index."""
    st.caption(K.COMPARABLE_HELP)
    if not cmp.groups:
        st.info("None of these runs has a finished evaluation report yet.")
        return None
    labels = [g.label(len(cmp.runs)) for g in cmp.groups]
    pick = st.radio("comparable reports", range(len(labels)), format_func=lambda i: labels[i], key=key,
                    help="each choice is one set of evaluation settings; only reports made with it fill the table")
    return int(pick)


def _missing(cmp: K.Comparison) -> None:
    """The runs with no report of the chosen settings, and the button that evaluates them with them."""
    if not cmp.missing:
        return
    st.warning(f"No report with these settings for {', '.join(cmp.missing)}: their row stays empty (a report "
               "made with other settings is not mixed into these columns).")
    for why in cmp.cannot_evaluate.values():
        st.caption(why)
    running = {r: j for r in cmp.missing if (j := eval_jobs.active_eval(r)) is not None}
    for r, j in running.items():  # not started twice: its report joins this comparison when it finishes
        st.caption(f"{r}: evaluation {j['job']} is {j['state']} ({j.get('message') or 'starting'})")
    todo = [r for r in cmp.missing if r not in cmp.cannot_evaluate and r not in running]
    shown = " ".join(f"{k}={v}" for k, v in cmp.settings.items() if v != "")
    if st.button("Evaluate the missing runs with these settings", type="primary", disabled=not todo,
                 key="compare_eval_missing", help=f"background evaluation jobs with: {shown}"):
        started = []
        for rid in todo:
            try:
                started.append(f"{rid} ({eval_jobs.start_eval(rid, dict(cmp.settings))})")
            except (ConfigError, FileNotFoundError, ValueError) as e:
                st.error(f"{rid}: {e}")
        if started:
            st.success(f"Evaluation started for {', '.join(started)}; its report joins this comparison when it "
                       "finishes (follow it on the Evaluate page).")


def _bars(cmp: K.Comparison) -> None:
    t = cmp.table
    shown = [(c, e, title) for c, e, title in BARS if c in t and t[c].notna().any()]
    cols = st.columns(3)
    for i, (c, e, title) in enumerate(shown):
        cols[i % 3].plotly_chart(compare_bars(t, c, e, title), key=f"compare_bar_{c}")


def _per_class(cmp: K.Comparison) -> None:
    pc = cmp.per_class
    st.subheader("Per class")
    options = [c for c in CLASS_BARS if c in pc]
    if not options:
        st.caption("No per-class numbers in these reports (evaluate with `by_class`).")
        return
    col = st.selectbox("metric per class", options, key="compare_class_metric")
    err = CLASS_BARS[col]
    st.plotly_chart(compare_class_bars(pc, col, err if err in pc else None, f"{col} per class"),
                    key="compare_class_bars")
    wide = pc.pivot(index="class", columns="run", values=col)  # classes x runs, in the report's class order
    st.dataframe(wide.reindex(index=list(dict.fromkeys(pc["class"])), columns=list(dict.fromkeys(pc["run"]))),
                 width="stretch")


def _grids(cmp: K.Comparison) -> None:
    st.subheader("Samples of one class")
    names = list(cmp.per_class["class"].unique()) if "class" in cmp.per_class else []
    names = names or run_files.class_names(cmp.runs[0].run_dir)
    cls = st.selectbox("class", names, key="compare_class")
    cols = st.columns(len(cmp.runs))
    for col, r in zip(cols, cmp.runs):
        found = K.class_strip(r.run_dir, cls)
        if found is None:
            col.caption(f"{r.title}: no sample grid with {cls}")
            continue
        step, strip = found
        col.image(images.upscale(strip, 96), caption=f"{r.title} · {r.family} · step {step}", output_format="PNG")


def _curves(cmp: K.Comparison) -> None:
    st.subheader("Training curves")
    frames = K.read_curves([r.run_dir for r in cmp.runs])
    signals = K.common_signals(frames)
    if not signals:
        st.caption("These runs' metrics CSVs have no column in common yet.")
        return
    default = next((s for s in ("acc", "d_loss", "loss", "img_per_s") if s in signals), signals[0])
    sig = st.selectbox("signal", signals, index=signals.index(default), key="compare_signal",
                       help="columns every selected run's metrics CSV holds (GAN and diffusion CSVs share few)")
    st.plotly_chart(compare_curves(frames, sig), key="compare_curves")


# ----------------------------------------------------------------------------------------------

all_runs = jobs.list_runs()
if not all_runs:
    st.info(f"No run under `{runs_root()}` yet. Train runs of several families on the **Train** page, evaluate "
            "them on the **Evaluate** page, then compare them here (from a shell: `python -m engine compare "
            "RUN RUN ...`).")
    frame.next_step("pages/train.py", "train a run")
    st.stop()
titles = {r.run_id: r.title for r in all_runs}
picked = st.multiselect("runs", list(titles), default=K.default_selection([r.run_dir for r in all_runs]),
                        format_func=titles.get, key="compare_runs",
                        help="any families, trained on one data set")
if not picked:
    st.info("Pick the runs to compare (trained on one data set).")
    frame.next_step("pages/evaluate.py", "evaluate the runs to compare")
    st.stop()
dirs = [r.run_dir for r in all_runs if r.run_id in picked]
try:
    first = K.compare(dirs)
except (ConfigError, FileNotFoundError) as e:
    st.error(str(e))
    frame.next_step("pages/evaluate.py", "evaluate the runs to compare")
    st.stop()
st.caption(f"data set: `{first.data}`")
choice = _groups(first, key="compare_group_" + "|".join(sorted(picked)))
cmp = first if choice in (None, first.chosen) else K.compare(dirs, key=choice)
if cmp.excluded:  # the refusal to mix, said: which reports are left out, and what differs
    st.info("Reports made with other settings, so not in this table:\n" + "\n".join(f"- {e}" for e in cmp.excluded))
for n in cmp.notes:
    st.warning(n)
st.dataframe(cmp.table, width="stretch", hide_index=True)
_missing(cmp)
_bars(cmp)  # the cost columns are there without a report
if cmp.group is not None:
    _per_class(cmp)
_grids(cmp)
_curves(cmp)
frame.next_step("pages/evaluate.py", "evaluate more checkpoints, then compare again")
