"""Evaluate page: start an evaluation of a run's checkpoint (a background job), watch its progress, read
its report: per-class table and bars with error bars, history over training steps, memorisation pairs,
confusion matrices, colour check. All numbers come from engine.metrics; this page only draws them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from engine.jobs import core as bg
from engine import images, jobs
from engine import runs as run_files
from engine import config as C
from engine.config import ConfigError, EvalConfig
from engine.jobs import classifier as classifier_jobs
from engine.jobs import eval as eval_jobs
from engine.metrics import report as R
from engine.metrics.registry import list_metrics
from engine.utils import read_json, runs_root
from ui.figures import bars, confusion_figure, history_figure, stain_figure
from ui import forms, frame

frame.require_frame()


# The form is generated from EvalConfig (ui.forms: `label · name`, default/range/choices/help from the
# field). Drawn by hand: the feature space and its weights file (outside the form: they decide what the
# evaluation needs), the checkpoint (the run's entries) and the metrics (a multiselect of the registry).
FORM = forms.ConfigForm(EvalConfig, prefix="eval_cfg_", defaults={"by_class": True})
BY_HAND = ("run_dir", "step", "metrics", "features", "data", "domain_weights", "inception_weights",
           "timm_weights", "job", "n", "by_class")
ADVANCED = tuple(n for n in FORM.fields if n not in BY_HAND)


def _L(name: str) -> str:  # `generated patches · n`: a phrase, and the one name of the field
    return FORM.label(name)


SPACES = ("domain", "inception", "timm:<name>")
METRIC_HELP = ("fid/kid/pr: distribution distances in the feature space; is: Inception Score (means little "
               "for H&E); lpips: intra-class diversity (LPIPS needs local AlexNet weights; the feature-space "
               "diversity is always computed); downstream: classifiers trained on real / synthetic / both, "
               "tested on real; memorisation: nearest training patch per sample; stain: H&E colour histograms; "
               "cas: share of samples the real-trained classifier assigns to their class, beside its accuracy "
               "on real test patches")

st.title("Evaluate")


# ----------------------------------------------------------------------------------------------
# Start, progress

def _needs(needs: eval_jobs.EvalNeeds) -> None:
    """What is missing before an evaluation can start, and the one click that fixes it."""
    for msg in needs.missing:
        st.warning(f"Cannot start an evaluation yet: {msg}.")
    if not needs.checkpoint:
        st.page_link("pages/train.py", label="Train this run on the Train page", icon=":material/model_training:")
    elif not needs.data_ready:
        st.page_link("pages/data.py", label="Prepare the data set on the Data page", icon=":material/dataset:")
    elif needs.features == "domain" and not needs.ready:
        c = needs.classifier
        if c.state in ("queued", "training"):
            st.fragment(_classifier_progress, run_every=2)(needs.data_dir)
        elif needs.classifier_file == c.path:  # the data set's own file: train it here, in the background
            if c.state in ("failed", "stopped"):
                st.error(f"The last training of this classifier {c.state}: {c.message}")
            if st.button("Train classifier", type="primary", key="eval_train_classifier",
                         help=f"python -m engine train-classifier --data {needs.data_dir} (a background job; "
                              "a few minutes on a CPU)"):
                try:
                    classifier_jobs.start_classifier(needs.data_dir)
                except (ConfigError, FileNotFoundError) as e:
                    st.error(str(e))
                    return
                st.rerun()


def _classifier_progress(data_dir: str) -> None:
    """The classifier job's progress, every 2 s; a full rerun once it has ended (the form then opens)."""
    c = classifier_jobs.classifier_status(data_dir)
    if c.state not in ("queued", "training"):
        st.rerun()
    text = (f"Domain classifier: training · step {c.done} / {c.total} · "
            + bg.progress_text(c.fraction, c.started_at, c.message)) if c.state == "training" else \
        f"Domain classifier: queued · {c.message}"
    st.progress(c.fraction, text=text)


def _eval_note(data_dir: str) -> str:
    """Whether the data set holds `eval` out of train (sets prepared before that do not)."""
    info = read_json(Path(data_dir) / "dataset.json") or {}
    if not info:
        return ""
    return ("this data set holds it out of train" if info.get("eval_disjoint") else
            "this data set was prepared before eval was held out: its eval is a subset of train")


def _start_form(run, entries: list[dict]) -> None:
    cfg = run_files.read_config(run.run_dir)
    space_now = st.session_state.get("eval_features", SPACES[0])
    weights_now = (st.session_state.get("eval_weights") or "").strip()
    needs = eval_jobs.eval_needs(run.run_id, "timm" if space_now.startswith("timm") else space_now,
                                 classifier=weights_now if space_now == "domain" else "")
    with st.expander("New evaluation", expanded=not R.list_reports(run.run_dir) or not needs.ready):
        # Outside the form: the feature space decides what the evaluation needs (a form reruns only on submit).
        c1, c2 = st.columns(2)
        space = c1.selectbox(_L("features"), SPACES, key="eval_features",
                             help="domain: the lab's own classifier (offline); inception: the standard FID "
                                  "network (local weights file); timm:<name>: a local backbone")
        weights = c2.text_input("feature weights", "", key="eval_weights",
                                help="domain: classifier file (empty = <data>/classifier.pt); inception: the "
                                     "weights file (empty = torch hub cache); timm: the local checkpoint")
        _needs(needs)
        with st.form("eval_start"):
            labels = ["latest (export of a finished run, else the newest checkpoint)"] + [e["label"] for e in entries]
            ck = st.selectbox(_L("step"), labels, help=FORM.fields["step"].metadata["help"])
            metrics = st.multiselect(_L("metrics"), list_metrics(), default=C.DEFAULT_METRICS.split(","),
                                     help=METRIC_HELP)
            c3, c4, c5 = st.columns(3)
            values = {"n": FORM.widget("n", c3), "by_class": FORM.widget("by_class", c4)}
            timm_name = c5.text_input("timm model", "", help="for timm:<name>, e.g. vit_small_patch16_224")
            with st.expander("advanced"):
                values.update(FORM.grid(ADVANCED, st, 3, helps={"real_split": (
                    "eval: the held-out split kept for the metrics (the default); " + _eval_note(needs.data_dir))}))
            go_ = st.form_submit_button("Start evaluation", type="primary", disabled=not needs.ready,
                                        help=None if needs.ready else "see above for what is missing")
    if not go_:
        return
    feat = f"timm:{timm_name.strip()}" if space.startswith("timm") else space
    opts = dict(values, metrics=",".join(metrics), features=feat, data=cfg.get("data") or "")
    opts = {k: v.strip() if isinstance(v, str) else v for k, v in opts.items()}
    if ck != labels[0]:
        chosen = entries[labels.index(ck) - 1]
        opts["step"] = "best" if chosen["kind"] == "best" else chosen["step"]
    key = {"domain": "domain_weights", "inception": "inception_weights"}.get(feat, "timm_weights")
    opts[key] = weights.strip()
    try:
        job = eval_jobs.start_eval(run.run_id, opts)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        st.error(str(e))
        return
    st.toast(f"Evaluation {job} started")  # its progress bar follows below (the job is active by now)


def _progress(run_id: str, ticking: bool) -> None:
    """The running job's progress; re-run every 2 s by st.fragment while one is alive."""
    job = eval_jobs.active_eval(run_id)
    if ticking and job is None:
        st.rerun()  # it ended: a full rerun shows the new report and stops this timer
    if job is None:
        return
    frac = min(1.0, float(job.get("progress") or 0.0))
    st.progress(frac, text=f"Evaluation {job['job']}: "
                           + bg.progress_text(frac, job.get("started_at"), job.get("message", "")))
    if st.button("Stop evaluation", key="eval_stop"):
        eval_jobs.stop_eval(run_id, job["job"])
        st.rerun()


# ----------------------------------------------------------------------------------------------
# Results

def _headline(rep: dict) -> None:
    h = R.headline(rep)
    cols = st.columns(6)
    fmt = lambda v, f="{:.4g}": "—" if v is None else f.format(v)  # noqa: E731
    cols[0].metric("FID", fmt(h["fid"]), help="Frechet distance in the feature space; biased at small N")
    cols[1].metric("KID", fmt(h["kid"]), help=f"mean over subsets; std {fmt(h['kid_std'], '{:.2g}')}")
    cols[2].metric("precision", fmt(h["precision"], "{:.3f}"), help="fraction of samples inside the real manifold")
    cols[3].metric("recall", fmt(h["recall"], "{:.3f}"), help="fraction of real patches the samples cover")
    cols[4].metric("IS", fmt(h["is"], "{:.3f}"), help=(rep["metrics"].get("is") or {}).get("note", "not run"))
    cols[5].metric("CAS", fmt(h["cas"], "{:.3f}"), help="share of samples the real-trained classifier assigns to "
                   f"their class; the classifier on real test patches: {fmt(h['cas_real_accuracy'], '{:.3f}')}")


def _results(run, rep: dict) -> None:
    f = rep.get("features", {})
    ck = rep.get("checkpoint", {})
    st.caption(f"step {ck.get('step')} ({ck.get('kind')}) · {rep.get('n_generated')} generated vs "
               f"{rep.get('n_real', {}).get(rep.get('real_split'))} real `{rep.get('real_split')}` · features "
               f"`{f.get('space')}` ({f.get('num_features')}-d, weights {f.get('weights_sha256')}) · resize: real "
               f"{rep.get('resize', {}).get('real')}, then {rep.get('resize', {}).get('feature_space')} · "
               f"preferred: {rep.get('preferred', '').upper()}")
    for note in rep.get("notes", []):
        st.info(note)
    errors: dict[str, list[str]] = {}  # one warning per distinct error, naming every metric it stopped
    for name, m in rep["metrics"].items():
        if "error" in m:
            errors.setdefault(m["error"], []).append(name)
        elif "error" in (m.get("lpips") or {}):
            errors.setdefault(m["lpips"]["error"], []).append("LPIPS")
    for err, names_ in errors.items():
        st.warning(f"{', '.join(names_)}: {err}")
    _headline(rep)
    m, names = rep["metrics"], rep.get("class_names", [])
    table = R.per_class_table(rep)
    st.subheader("Per class")
    st.dataframe(table, width="stretch")
    c1, c2 = st.columns(2)
    if "kid" in table:
        c1.plotly_chart(bars(table, [("kid", "kid_std", "KID")], "KID per class (± std over subsets)", "KID"),
                        key="bar_kid")
    if "fid" in table:
        c2.plotly_chart(bars(table, [("fid", None, "FID")], "FID per class (biased at small N)", "FID"), key="bar_fid")
    div = (m.get("lpips") or {})
    if "feature_diversity" in div:
        cols = [("diversity_generated", "diversity_generated_std", "generated"),
                ("diversity_real", "diversity_real_std", "real")]
        c1.plotly_chart(bars(table, cols, f"Diversity: {div['feature_diversity']['label']}", "distance"),
                        key="bar_div")
        if "lpips_generated" in table:
            cols = [("lpips_generated", "lpips_generated_std", "generated"), ("lpips_real", "lpips_real_std", "real")]
            c2.plotly_chart(bars(table, cols, "Diversity: mean pairwise LPIPS", "LPIPS"), key="bar_lpips")
    ds = m.get("downstream") or {}
    if "sets" in ds:
        st.subheader("Downstream classifier")
        st.caption(f"{ds['arch']}, {ds['epochs']} epochs, tested on {ds['n_test']} real `{ds['test_split']}` patches")
        st.dataframe(pd.DataFrame({k: {"n_train": v["n_train"], "accuracy": v["accuracy"]}
                                   for k, v in ds["sets"].items()}).T, width="stretch")
        cols = [(f"recall_{k}", None, k) for k in ds["sets"]]
        st.plotly_chart(bars(table, cols, "Per-class recall on real test patches", "recall"), key="bar_recall")
        for col, (k, v) in zip(st.columns(len(ds["sets"])), ds["sets"].items()):
            col.plotly_chart(confusion_figure(v["confusion"], names, f"trained on {k}"), key=f"conf_{k}")
    cas = m.get("cas") or {}
    if "per_class" in cas:
        st.subheader("Classification accuracy score (CAS)")
        real = "n/a" if cas["real_accuracy"] is None else f"{cas['real_accuracy']:.3f}"
        st.caption(f"CAS {cas['cas']:.3f}: share of the {cas['n_generated']} samples the real-trained classifier "
                   f"assigns to their conditioned class (mean over classes); the same classifier on "
                   f"{cas['n_test']} real `{cas['test_split']}` patches: {real} (the ceiling); chance "
                   f"{cas['chance']:.3f}")
        st.plotly_chart(bars(table, [("cas", None, "generated (CAS)"),
                                     ("cas_real_accuracy", None, "real test (ceiling)")],
                             "CAS per class", "share assigned to the class"), key="bar_cas")
    mem = m.get("memorisation") or {}
    if "pairs" in mem:
        st.subheader("Memorisation audit")
        st.caption(f"distance ratio = distance to the nearest of {mem['n_train_searched']} training patches / "
                   f"{mem['reference']}; {mem['flagged']} of {rep.get('n_generated')} below {mem['threshold']} "
                   f"(min {mem['min_ratio']:.3f}, median {mem['median_ratio']:.3f})")
        arrays = R.load_arrays(run.run_dir, rep)
        gen, real = arrays.get("memorisation_generated"), arrays.get("memorisation_real")
        if gen is not None and real is not None:
            for row in range(0, len(mem["pairs"]), 3):
                cols = st.columns(6)
                for j, p in enumerate(mem["pairs"][row:row + 3]):
                    cols[2 * j].image(images.upscale(gen[p["rank"]], 96), caption=f"{p['class']} seed {p['seed']}")
                    cols[2 * j + 1].image(images.upscale(real[p["rank"]], 96),
                                          caption=f"train #{p['train_row']} · ratio {p['ratio']:.2f}")
    if "H" in (m.get("stain") or {}):
        st.subheader("Colour check")
        s = m["stain"]
        tf = s["tissue_fraction"]
        gap = lambda k: "n/a" if s[k]["wasserstein"] is None else f"{s[k]['wasserstein']:.4f}"  # noqa: E731
        st.caption(f"Wasserstein gap (OD): H {gap('H')}, E {gap('E')}; tissue fraction real {tf['real']:.2f}, "
                   f"generated {tf['generated']:.2f}")
        st.plotly_chart(stain_figure(s), key="stain")


def _history(reports: list[dict], space: str) -> None:
    hist = R.history_table([r for r in reports if (r.get("features") or {}).get("space") == space])
    st.subheader(f"History (`{space}` features)")
    if len(hist) < 1:
        st.caption("No evaluation in this feature space yet.")
        return
    st.plotly_chart(history_figure(hist), key="history")
    st.dataframe(hist.dropna(axis=1, how="all"), width="stretch", hide_index=True)


# ----------------------------------------------------------------------------------------------

all_runs = [(r, run_files.entries(r.run_dir)) for r in jobs.list_runs()]
runs = [(r, e) for r, e in all_runs if e]
if not runs:
    waiting = f" ({len(all_runs)} run(s) have no checkpoint yet)" if all_runs else ""
    st.info(f"No run with a checkpoint under `{runs_root()}` yet{waiting}. Train one on the **Train** page; from "
            "a shell: `python -m engine train --kimg 2`, then `python -m engine evaluate --run-dir runs/ID`.")
    st.page_link("pages/train.py", label="Train a run", icon=":material/model_training:")
    st.stop()
ids = [r.run_id for r, _ in runs]
rid = st.selectbox("run", ids, key="eval_run", format_func={r.run_id: r.title for r, _ in runs}.get)
run, entries = next((r, e) for r, e in runs if r.run_id == rid)
_start_form(run, entries)
active = eval_jobs.active_eval(rid) is not None
st.fragment(_progress, run_every=2 if active else None)(rid, active)
last = eval_jobs.list_eval_jobs(rid)[:1]
if last and last[0]["state"] == "failed" and not last[0].get("report"):  # with a report, the report says why
    st.error(f"Evaluation {last[0]['job']} failed: {last[0].get('message', '')}")
    st.code(last[0].get("log_tail", ""), language=None)

reports = R.list_reports(run.run_dir)[::-1]
if not reports:
    if not active:  # under a running job's bar its report is on the way: nothing to say
        st.info("No evaluation of this run yet: start one above, or from a shell: "
                f"`python -m engine evaluate --run-dir {run.run_dir} --metrics fid,kid,pr --by-class`.")
    st.stop()
pick_key, newest = f"eval_report_{rid}", reports[0]["id"]
if st.session_state.get(f"eval_newest_{rid}") != newest:  # a report appeared (a job ended): show it
    st.session_state[pick_key] = newest
    st.session_state[f"eval_newest_{rid}"] = newest
by_id = {r["id"]: r for r in reports}
pick = st.selectbox("report", list(by_id), key=pick_key,
                    format_func=lambda i: f"{i} · step {by_id[i]['checkpoint'].get('step')} · "
                                          f"{(by_id[i].get('features') or {}).get('space')} · "
                                          f"N={by_id[i].get('n_generated')}"
                                          + (" · failed" if R.report_state(by_id[i]) == "failed" else ""))
rep = by_id[pick]
if R.report_state(rep) == "failed":
    st.error(f"Evaluation {rep['id']} failed: every metric failed, so it holds no result and is left out of "
             f"the history. {R.failed_reason(rep)}")
else:
    _results(run, rep)
_history(reports, (rep.get("features") or {}).get("space", "domain"))
frame.next_step("pages/train.py", "train longer or with other settings, then compare the reports here")
