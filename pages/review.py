"""Review page: blinded clinician review, in two views.

- The reviewer's (`/review?token=...`; app.py runs this page alone for a token URL: no navigation, no
  sidebar, no access key): one patch at a time, large, in the reviewer's own order; the study's
  questions, each answer one click or one key; progress; resumable (the engine keeps the answers, and
  the next unanswered patch is where the link opens); a thank-you at the end. Nothing here shows the
  truth: the engine's reviewer side never reads it.
- The researcher's (a lab page): create a study from runs, the reviewer links (shown once), live
  progress per reviewer, the statistics with plots, CSV export, close and archive.

All review logic is in engine.review (studies, reviewer, stats); this page draws and calls it.
"""
from __future__ import annotations

import urllib.parse

import pandas as pd
import streamlit as st

from engine import access
from engine import runs as run_files
from engine.config import ConfigError
from engine.data.classes import class_descriptions
from engine.review import studies as S
from engine.review.store import ReviewError
from ui import figures as F, forms, frame, widgets

frame.require_frame()


# ----------------------------------------------------------------------------------------------
# Reviewer view

# Keys (st.button(shortcut=...)). Streamlit reserves C and R, and ignores plain keys while the focus is
# in a text box (the comment), so typing a comment never answers a question; Ctrl/Cmd+Enter still submits.
KEY_REAL, KEY_SYNTHETIC = "Left", "Right"
KEY_SUBMIT, KEY_PREV, KEY_NEXT = "Ctrl+Enter", "PageUp", "PageDown"
RESERVED_KEYS = set("CR")
LIKERT_HELP = {"confidence": "1 = a guess, 5 = certain", "realism": "1 = clearly artificial, 5 = fully realistic"}
QUESTION_TITLES = {"real_or_synthetic": "Real or synthetic?", "confidence": "How sure are you?",
                   "realism": "How realistic does the tissue look?", "class": "Tissue class",
                   "comment": "Comment (optional)"}


def class_keys(classes: list[str]) -> dict[str, str]:
    """A letter per class: the first letter of its name not taken yet (ADI -> A, MUC -> M, MUS -> U ...),
    else any free letter; C and R are Streamlit's. Classes beyond the alphabet get no key."""
    taken: set[str] = set(RESERVED_KEYS)
    out: dict[str, str] = {}
    for c in classes:
        letters = [ch for ch in c.upper() if "A" <= ch <= "Z"] + [chr(i) for i in range(ord("A"), ord("Z") + 1)]
        key = next((ch for ch in letters if ch not in taken), None)
        if key:
            taken.add(key)
            out[c] = key
    return out


def _pending(pid: str, saved: dict | None) -> dict:
    """The answer being filled in for one patch (session state), started from the saved one if any."""
    store = st.session_state.setdefault("review_pending", {})
    if pid not in store:
        store[pid] = {k: v for k, v in (saved or {}).items() if v not in (None, "") and k != "comment"}
        st.session_state[f"review_comment_{pid}"] = (saved or {}).get("comment") or ""
    return store[pid]


def _choose(pid: str, question: str, value) -> None:
    st.session_state["review_pending"][pid][question] = value


def _go(index: int | None) -> None:
    st.session_state["review_index"] = index


def _submit(token: str, pid: str, revision: int, questions: list[str]) -> None:
    answer = {q: v for q, v in st.session_state["review_pending"].get(pid, {}).items() if q in questions}
    if "comment" in questions:
        answer["comment"] = st.session_state.get(f"review_comment_{pid}", "")
    try:
        res = S.submit(token, pid, answer, revision=revision)
    except ReviewError as e:
        st.session_state["review_flash"] = ("error", str(e))
        return
    st.session_state["review_flash"] = ("success", res["message"])
    st.session_state["review_pending"].pop(pid, None)
    st.session_state["review_index"] = None  # on to the next unanswered patch


def _buttons(pid: str, question: str, options: list[tuple], current) -> None:
    """One button per option ((value, label, key, help)); the chosen one is highlighted."""
    cols = st.columns(len(options))
    for col, (value, label, key, help_) in zip(cols, options):
        col.button(label, key=f"review_{question}_{value}", type="primary" if current == value else "secondary",
                   shortcut=key, help=help_, width="stretch", wrap=True,  # the label beside "Shift + 3"
                   on_click=_choose, args=(pid, question, value))


def reviewer_view(token: str) -> None:
    index = st.session_state.get("review_index")
    try:
        view = S.reviewer_view(token, index=index)
    except ReviewError as e:
        if index is not None:  # a stale position (e.g. from an older page): back to the next unanswered
            st.session_state["review_index"] = None
            st.rerun()
        st.error(str(e))  # one sentence, and nothing else: no study, no patch, no lab
        st.stop()
    study, total, answered = view["study"], view["total"], view["answered"]
    st.subheader(study["name"])
    st.progress(answered / max(total, 1), text=f"{answered} / {total}")
    flash = st.session_state.pop("review_flash", None)
    if flash:
        (st.success if flash[0] == "success" else st.warning)(flash[1])
    if view["patch"] is None:  # every patch answered
        st.success(f"Thank you! You have answered all {total} patches; your answers are saved. "
                   "You can close this page.")
        st.button("Look over my answers", key="review_look_over", type="tertiary", on_click=_go, args=(0,))
        st.stop()

    pid, i = view["patch"]["id"], view["index"]
    questions = study["questions"]
    pending = _pending(pid, view["answer"])
    if study["instructions"]:
        st.info(study["instructions"])
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.image(view["patch"]["png"], width=int(study["display_size"]))
        st.caption(f"Patch {i + 1} of {total}" + (" · answered before; submit to change the answer"
                                                   if view["answer"] else ""))
        nav = st.columns(2)
        nav[0].button("Previous", key="review_prev", shortcut=KEY_PREV, disabled=i == 0, width="stretch",
                      on_click=_go, args=(i - 1,))
        # forward only over answered patches; past them, the next unanswered one
        nav[1].button("Next", key="review_next", shortcut=KEY_NEXT, disabled=view["answer"] is None,
                      width="stretch", on_click=_go, args=(i + 1 if i + 1 < answered else None,))
    with right:
        if "real_or_synthetic" in questions:
            st.markdown(f"**{QUESTION_TITLES['real_or_synthetic']}**")
            _buttons(pid, "real_or_synthetic", [("real", "Real", KEY_REAL, "a patch of a real slide"),
                                                ("synthetic", "Synthetic", KEY_SYNTHETIC, "made by a generator")],
                     pending.get("real_or_synthetic"))
        for q, shift in (("confidence", ""), ("realism", "Shift+")):
            if q in questions:
                st.markdown(f"**{QUESTION_TITLES[q]}** ({LIKERT_HELP[q]})")
                _buttons(pid, q, [(v, str(v), f"{shift}{v}", None) for v in range(1, 6)], pending.get(q))
        if "class" in questions:
            st.markdown(f"**{QUESTION_TITLES['class']}**")
            desc = class_descriptions()
            keys = class_keys(study["classes"])
            names = study["classes"]
            for row in range(0, len(names), 3):
                _buttons(pid, "class", [(c, c, keys.get(c), desc.get(c)) for c in names[row:row + 3]],
                         pending.get("class"))
            with st.expander("What the classes look like"):
                st.markdown("\n".join(f"- **{c}**: {desc.get(c, '')}" for c in names))
        if "comment" in questions:
            st.text_area(QUESTION_TITLES["comment"], key=f"review_comment_{pid}", height=80, max_chars=2000)
        st.button("Submit", key="review_submit", type="primary", shortcut=KEY_SUBMIT, width="stretch",
                  on_click=_submit, args=(token, pid, int(view["revision"]), questions))
    st.caption("Keys: ← real · → synthetic · 1-5 confidence · Shift+1-5 realism · the letter on each class · "
               "Ctrl+Enter (⌘+Enter) submit · PageUp / PageDown previous / next. Plain keys do nothing while "
               "you type a comment.")


# ----------------------------------------------------------------------------------------------
# Researcher view: links

def _links_base() -> tuple[str, str | None]:
    """(what goes before `?token=`, a warning or None). The address the researcher's browser uses;
    without one (no request headers), a relative link to prefix with the lab's address."""
    url = getattr(st.context, "url", None) or ""
    parts = urllib.parse.urlsplit(url) if url else None
    host = (parts.netloc if parts and parts.netloc else "") or (st.context.headers or {}).get("Host", "")
    scheme = (parts.scheme if parts and parts.scheme else "") or \
        (st.context.headers or {}).get("X-Forwarded-Proto", "http")
    prefix = "/".join(p for p in (st.get_option("server.baseUrlPath") or "").split("/") if p)
    path = f"/{prefix}/review" if prefix else "/review"
    if not host:
        return "review", ("These links are relative: put the address reviewers reach the lab at in front "
                          "(e.g. http://<this machine>:8501/).")
    warn = None
    if access.is_loopback(st.get_option("server.address")):
        warn = ("The lab listens on 127.0.0.1 only, so reviewers on other machines cannot open these links. "
                "Restart it with `streamlit run app.py --server.address 0.0.0.0` (the lab pages then ask for "
                "the access key; the links open only their review).")
    elif access.is_loopback(host.rsplit(":", 1)[0]):
        warn = ("These links use the address you opened the lab with (this machine only); give reviewers "
                "the address they reach it at instead.")
    return f"{scheme}://{host}{path}", warn


def _remember_links(study_id: str, tokens: list[dict]) -> None:
    base, warn = _links_base()
    st.session_state["review_new_links"] = {
        "study": study_id, "warn": warn,
        "links": [(t["label"], f"{base}?token={urllib.parse.quote(t['token'])}", t["expires_at"]) for t in tokens]}


def _show_new_links() -> None:
    new = st.session_state.get("review_new_links")
    if not new:
        return
    with st.container(border=True):
        st.markdown(f"**Reviewer links of study `{new['study']}`**: shown this once (the lab keeps only "
                    "their hashes). Send each reviewer their own link.")
        if new["warn"]:
            st.warning(new["warn"])
        st.code("\n".join(f"{label}\t{link}" + (f"\t(expires {exp})" if exp else "")
                          for label, link, exp in new["links"]), language=None)
        if st.button("I have copied the links", key="review_links_done"):
            st.session_state.pop("review_new_links", None)
            st.rerun()


# ----------------------------------------------------------------------------------------------
# Researcher view: a new study

FORM = forms.ConfigForm(S.StudyConfig, prefix="review_cfg_", defaults={"reviewers": 3, "name": "pilot"})


def _new_study(expanded: bool) -> None:
    from engine import jobs

    ready = [r for r in jobs.list_runs() if run_files.has_entry(r.run_dir)]
    with st.expander("New study", expanded=expanded):
        if not ready:
            st.info(f"No run with a checkpoint yet. {widgets.EMPTY_HELP}")
            return
        names = list(dict.fromkeys(c for r in ready for c in run_files.class_names(r.run_dir)))
        with st.form("review_new"):
            c1, c2, c3 = st.columns([2, 3, 1])
            name = FORM.widget("name", c1)
            picked = c2.multiselect(FORM.label("runs"), [r.run_id for r in ready], default=[ready[0].run_id],
                                    help=FORM.fields["runs"].metadata["help"],
                                    format_func=lambda i: next(f"{r.title} ({r.state}, step {r.step})"
                                                               for r in ready if r.run_id == i))
            step = FORM.widget("step", c3, help="latest, best or a step number, for every run picked")
            classes = st.multiselect(FORM.label("classes"), names, default=names,
                                     help="the tissue classes shown; every run picked must have them")
            values = FORM.grid(["synthetic_per_class", "real_per_class", "seed", "truncation"], st, 4)
            values |= FORM.grid(["display_size", "reviewers", "expires_days", "device"], st, 4)
            values["questions"] = FORM.widget("questions", st)
            values["instructions"] = st.text_area(FORM.label("instructions"), key="review_cfg_instructions",
                                                  help=FORM.fields["instructions"].metadata["help"], height=68)
            go = st.form_submit_button("Create study", type="primary")
        if go:
            cfg = {**values, "name": name, "runs": picked, "step": step, "classes": classes or ["all"]}
            _create(cfg)


def _create(cfg: dict) -> None:
    todo = 2 * max(1, len(cfg["runs"])) + 1  # a load and a generate per run, then writing the patches
    bar = st.progress(0.0, text="Creating the study...")
    done = [0]

    def step(msg: str) -> None:
        done[0] += 1
        bar.progress(min(0.95, done[0] / todo), text=msg)

    try:
        res = S.create_study(cfg, progress=step)
    except (ConfigError, ReviewError) as e:
        bar.empty()
        st.error(str(e))
        return
    bar.progress(1.0, text=f"{res['patches']} patches written")
    st.session_state["review_study"] = res["id"]
    st.session_state["review_created"] = (f"Study `{res['id']}`: {res['patches']} patches ({res['synthetic']} "
                                          f"synthetic, {res['real']} real).", res["warnings"])
    if res["tokens"]:
        _remember_links(res["id"], res["tokens"])
    st.rerun()


# ----------------------------------------------------------------------------------------------
# Researcher view: one study

def _progress(study_id: str) -> None:
    """Answers per reviewer; re-run every 5 s by st.fragment while the study is open."""
    rows = S.progress(study_id)
    if not rows:
        st.info("No reviewers yet: invite some below.")
        return
    total = rows[0]["total"] * len(rows)
    got = sum(r["answered"] for r in rows)
    st.progress(got / max(total, 1), text=f"{got} / {total} answers from {len(rows)} reviewers")
    st.dataframe(pd.DataFrame(rows)[["label", "answered", "total", "state", "last_answered_at", "expires_at"]],
                 hide_index=True, width="stretch")


@st.cache_data(max_entries=8, show_spinner="Computing the statistics...")
def _stats(study_id: str, answers: int, last: str, classes: tuple[str, ...]) -> dict:
    """Every statistic of a study, keyed by its number of answers and last answer time (an edit
    changes it), so the page recomputes only when an answer arrived."""
    from engine.review import stats

    df = S.answers_frame(study_id)
    return {"summary": stats.summarize(df, list(classes)), "detection": stats.detection_table(df),
            "kappa": stats.kappa_table(df, "real_or_synthetic"), "kappa_class": stats.kappa_table(df, "class")}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _num(x, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def _statistics(study: dict) -> None:
    st.subheader("Statistics")
    rows = S.progress(study["id"])
    answers = sum(r["answered"] for r in rows)
    if not answers:
        st.info("No answers yet: the statistics appear with the first one.")
        return
    last = max((r["last_answered_at"] or "") for r in rows)
    res = _stats(study["id"], answers, last, tuple(study["spec"]["classes"]))
    s, questions = res["summary"], study["spec"]["config"]["questions"]
    st.caption(f"{s['n_answers']} answers from {len(s['reviewers'])} reviewers. Positive = synthetic: sensitivity "
               "is synthetic patches called synthetic, specificity real ones called real. 95 % exact (Clopper-"
               "Pearson) intervals, binomial test against 50 %; per-reviewer rows are the ones to test on "
               "(answers to one patch by several reviewers are not independent).")
    if "real_or_synthetic" in questions:
        d = s["detection"]["pooled"]
        m = st.columns(4)
        m[0].metric("accuracy (pooled)", _pct(d["accuracy"]), help=f"95 % CI {_pct(d['ci_low'])} - {_pct(d['ci_high'])}")
        m[1].metric("p (vs 50 %)", _num(d["p_value"]))
        m[2].metric("sensitivity", _pct(d["sensitivity"]))
        m[3].metric("specificity", _pct(d["specificity"]))
        st.plotly_chart(F.review_accuracy_figure(s["detection"]["per_reviewer"], d), key="review_fig_accuracy")
        cols = ["reviewer", "n", "accuracy", "ci_low", "ci_high", "p_value", "sensitivity", "specificity",
                "tp", "fn", "tn", "fp"]
        st.dataframe(res["detection"][cols], hide_index=True, width="stretch")
    if "realism" in questions:
        r = s["realism"]
        st.plotly_chart(F.review_realism_figure(r), key="review_fig_realism")
        st.caption(f"Realism: real mean {_num(r['real']['mean'], '.2f')}, synthetic mean "
                   f"{_num(r['synthetic']['mean'], '.2f')}; Mann-Whitney U {_num(r['mann_whitney_u'])}, "
                   f"p = {_num(r['p_value'])}; AUC {_num(r['auc'], '.2f')} (0.5 = rated alike).")
    if "class" in questions:
        ca = s["class_agreement"]
        tabs = st.tabs(["all patches", "real", "synthetic"])
        for tab, part, key in zip(tabs, (ca, ca["by_source"]["real"], ca["by_source"]["synthetic"]),
                                  ("all", "real", "synthetic")):
            tab.plotly_chart(F.review_confusion_figure(part), key=f"review_fig_confusion_{key}")
            tab.caption(f"Cohen's kappa against the true class: {_num(part['kappa'], '.2f')} on {part['n']} answers.")
    if len(s["reviewers"]) > 1:
        st.markdown("**Agreement between reviewers**")
        for q, kappa in (("real_or_synthetic", res["kappa"]), ("class", res["kappa_class"])):
            if q not in questions:
                continue
            fleiss = s["agreement"][q]["fleiss"]
            st.plotly_chart(F.review_kappa_figure(kappa, f"Cohen's kappa between reviewers: {q}"),
                            key=f"review_fig_kappa_{q}")
            st.caption(f"Fleiss' kappa ({q}): {_num(fleiss['kappa'], '.2f')} over the {fleiss['n_patches']} "
                       f"patches all {fleiss['n_reviewers']} reviewers answered.")
            st.dataframe(kappa.round(3), width="stretch")
    if s["by_class"] and "real_or_synthetic" in questions:
        with st.expander("Per class" + (" and per run" if s["by_run"] else "")):
            st.dataframe(pd.DataFrame([{"class": c, "n": v["detection"]["n"], "accuracy": v["detection"]["accuracy"],
                                        "ci_low": v["detection"]["ci_low"], "ci_high": v["detection"]["ci_high"],
                                        "realism real": v["realism"]["real"]["mean"],
                                        "realism synthetic": v["realism"]["synthetic"]["mean"]}
                                       for c, v in s["by_class"].items()]), hide_index=True, width="stretch")
            if s["by_run"]:
                st.dataframe(pd.DataFrame([{"run": r, "n": v["detection"]["n"], "accuracy": v["detection"]["accuracy"],
                                            "ci_low": v["detection"]["ci_low"], "ci_high": v["detection"]["ci_high"],
                                            "class agreement": v["class_agreement"]["accuracy"]}
                                           for r, v in s["by_run"].items()]), hide_index=True, width="stretch")


def _confirm(action: str, study_id: str) -> None:
    st.session_state["review_confirm"] = (action, study_id)


def _lifecycle(study: dict) -> None:
    """Invite, export, close and archive (the last two after a confirmation)."""
    sid, state = study["id"], study["state"]
    c1, c2, c3, c4 = st.columns([2, 2, 2, 2], vertical_alignment="bottom")
    if state == "open":
        n = c1.number_input("more reviewers", 1, 1000, 1, key="review_invite_n")
        if c2.button("Invite", key="review_invite", help=f"python -m engine review invite {sid} --reviewers N"):
            try:
                _remember_links(sid, S.invite(sid, int(n)))
            except ReviewError as e:
                st.error(str(e))
            else:
                st.rerun()
        c3.button("Close study...", key="review_close", on_click=_confirm, args=("close", sid),
                  help="no more answers (cannot be undone)")
    if state in ("open", "closed"):
        c4.button("Archive study...", key="review_archive", on_click=_confirm, args=("archive", sid),
                  help="close, write answers.csv and stats.json into the study folder, hide it from the list")
    st.download_button("Export CSV", S.export_csv(sid), file_name=f"{sid}-answers.csv", mime="text/csv",
                       key="review_export", help=f"the answers joined with the truth (python -m engine review "
                                                 f"export {sid} --out answers.csv)")
    ask = st.session_state.get("review_confirm")
    if ask and ask[1] == sid:
        what = {"close": "Close this study? Reviewers can no longer answer. This cannot be undone.",
                "archive": "Archive this study? It is closed (no more answers), answers.csv and stats.json are "
                           "written into its folder, and it leaves the list (tick 'show archived' to see it)."}
        st.warning(what[ask[0]])
        y, n_ = st.columns(2)
        if y.button(f"Yes, {ask[0]} it", key="review_confirm_yes", type="primary"):
            st.session_state.pop("review_confirm", None)
            try:
                (S.close_study if ask[0] == "close" else S.archive_study)(sid)
            except ReviewError as e:
                st.error(str(e))
                return
            st.rerun()
        if n_.button("Cancel", key="review_confirm_no"):
            st.session_state.pop("review_confirm", None)
            st.rerun()


def researcher_view() -> None:
    st.title("Review")
    st.caption("Blinded clinician review: patches from runs and the held-out real split, opaque ids, the truth "
               "kept apart; each reviewer answers through a personal link. CLI: `python -m engine review ...`.")
    created = st.session_state.pop("review_created", None)
    if created:
        st.success(created[0])
        for w in created[1]:
            st.warning(w)
    _show_new_links()
    show_archived = st.toggle("show archived", key="review_show_archived")
    studies = S.list_studies(include_archived=show_archived)
    _new_study(expanded=not studies)
    if not studies:
        st.info("No study yet: create one above from a run with a checkpoint.")
        return
    ids = [s["id"] for s in studies]
    if st.session_state.get("review_study") not in ids:
        st.session_state.pop("review_study", None)
    sid = st.selectbox("study", ids, key="review_study",
                       format_func=lambda i: next(f"{s['name']} · {s['id']} ({s['state']}, {s['answers']} answers)"
                                                  for s in studies if s["id"] == i))
    study = S.get_study(sid)
    row = next(s for s in studies if s["id"] == sid)
    cfg = study["spec"]["config"]
    st.caption(f"{row['patches']} patches · runs {', '.join(row['runs'])} · classes "
               f"{', '.join(study['spec']['classes'])} · questions {', '.join(cfg['questions'])} · "
               f"{cfg['display_size']} px · created {study['created_at'][:19]} · state **{study['state']}**")
    for w in study["spec"].get("warnings", []):
        st.warning(w)
    st.subheader("Progress")
    st.fragment(_progress, run_every=5 if study["state"] == "open" else None)(sid)
    _lifecycle(study)
    _statistics(study)


token = st.query_params.get("token")
if token:
    reviewer_view(token)
else:
    researcher_view()
