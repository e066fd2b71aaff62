"""The reviewer's side of a study: a token in, the next patch and the questions out, an answer back.

Everything here is reachable from a reviewer's browser, so it is kept apart from the researcher's side
(engine.review.studies) for one audit: nothing in this file reads the truth table (the store's
`reviewer_by_token_hash` and `submit` read studies, patches, reviewers and answers only), and nothing it
returns names a patch's source, run, step or seed. A bad, expired or revoked token, a closed study, a
patch of another study and a malformed answer each get one sentence (ReviewError) and change nothing.

Tokens: `secrets.token_urlsafe(32)`, shown once; the store keeps sha256(token). A salted slow hash
protects low-entropy passwords; a 256-bit random token cannot be guessed, and a plain hash keeps the
lookup one indexed query.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from engine.review.store import ANSWER_FIELDS, ReviewError, Store, is_past, open_store

QUESTIONS = ANSWER_FIELDS  # real_or_synthetic, confidence, realism, class, comment
SOURCES = ("real", "synthetic")
LIKERT = (1, 2, 3, 4, 5)
COMMENT_MAX = 2000
TOKEN_MAX = 200

BAD_TOKEN = "This review link is not valid; check that the whole link was copied, or ask the researcher for a new one."
EXPIRED = "This review link has expired; ask the researcher for a new one."
CLOSED = "This study is closed and takes no more answers; thank you for your help."


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def display_order(patch_ids: list[str], seed: int) -> list[str]:
    """A reviewer's order: the ids sorted, then permuted by the reviewer's seed (nothing else enters)."""
    ids = sorted(patch_ids)
    return [ids[i] for i in np.random.default_rng(int(seed)).permutation(len(ids))]


def _reviewer(token: Any, store: Store, with_patches: bool = False) -> dict:
    if not isinstance(token, str) or not token or len(token) > TOKEN_MAX:
        raise ReviewError(BAD_TOKEN)
    r = store.reviewer_by_token_hash(token_hash(token.strip()), with_patches=with_patches)
    if r is None or r["revoked_at"]:
        raise ReviewError(BAD_TOKEN)
    if is_past(r["expires_at"]):
        raise ReviewError(EXPIRED)
    if r["study_state"] != "open":
        raise ReviewError(CLOSED)
    return r


def reviewer_view(token: str, index: int | None = None, store: Store | None = None) -> dict:
    """What a reviewer sees: their next unanswered patch in their own order (or patch number `index`,
    0-based, to go back), and nothing about the truth or anyone else.

    Returns {"study": {"id", "name", "questions", "classes", "display_size", "instructions"},
    "reviewer": label, "total", "answered", "done", "index", "patch": {"id", "png" (bytes)} | None,
    "answer": this reviewer's answer to it | None, "revision" (0 = none yet; pass it to `submit`)}.
    "done" is True once every patch has an answer (the page thanks them); ReviewError for a bad, expired
    or revoked token or a closed study.
    """
    store = store or open_store()
    r = _reviewer(token, store, with_patches=True)
    spec = json.loads(r["study_spec"])
    cfg = spec["config"]
    patches = {p["id"]: p["file"] for p in r["patches"]}
    order = display_order(list(patches), r["seed"])
    answers = r["answers"]
    base = {"study": {"id": r["study_id"], "name": r["study_name"], "questions": list(cfg["questions"]),
                      "classes": list(spec["classes"]), "display_size": int(cfg["display_size"]),
                      "instructions": cfg.get("instructions", "")},
            "reviewer": r["label"], "total": len(order), "answered": len(answers)}
    if index is None:
        index = next((i for i, pid in enumerate(order) if pid not in answers), None)
        if index is None:
            return {**base, "done": True, "index": None, "patch": None, "answer": None, "revision": 0}
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(order):
        raise ReviewError(f"There is no patch number {index}; this review has patches 0 to {len(order) - 1}.")
    pid = order[index]
    try:
        png = (Path(r["study_dir"]) / patches[pid]).read_bytes()
    except OSError:
        raise ReviewError("This patch's image is missing from the study folder; please tell the researcher.") \
            from None
    ans = answers.get(pid)
    return {**base, "done": len(answers) >= len(order), "index": index, "patch": {"id": pid, "png": png},
            "answer": {k: ans[k] for k in ANSWER_FIELDS} if ans else None,
            "revision": int(ans["revision"]) if ans else 0}


def _clean_answer(answer: Any, questions: list[str], classes: list[str]) -> dict:
    if not isinstance(answer, dict):
        raise ReviewError("The answer could not be read; fill in the questions and submit again.")
    unknown = sorted(str(k) for k in set(answer) - set(QUESTIONS))
    if unknown:
        raise ReviewError(f"The answer has fields this study does not ask ({', '.join(unknown)}).")
    out: dict[str, Any] = {k: None for k in QUESTIONS}
    for q in QUESTIONS:
        v = answer.get(q)
        if isinstance(v, str):
            v = v.strip()
        if v in (None, ""):
            if q in questions and q != "comment":
                raise ReviewError(f"Please answer every question before submitting ({q.replace('_', ' ')} is "
                                  "missing).")
            continue
        if q not in questions:
            raise ReviewError(f"This study does not ask {q.replace('_', ' ')}; leave it out.")
        if q == "real_or_synthetic":
            if v not in SOURCES:
                raise ReviewError("Real or synthetic must be 'real' or 'synthetic'.")
        elif q in ("confidence", "realism"):
            if isinstance(v, str) and v.isdigit():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) not in LIKERT:
                raise ReviewError(f"{q.capitalize()} must be a whole number from 1 to 5.")
            v = int(v)
        elif q == "class":
            match = [c for c in classes if c.upper() == str(v).upper()]
            if not match:
                raise ReviewError(f"Tissue class must be one of {', '.join(classes)}.")
            v = match[0]
        elif q == "comment":
            if not isinstance(v, str):
                raise ReviewError("The comment must be text.")
            if len(v) > COMMENT_MAX:
                raise ReviewError(f"The comment is longer than {COMMENT_MAX} characters; shorten it.")
        out[q] = v
    return out


def submit(token: str, patch_id: str, answer: dict, revision: int | None = None,
           store: Store | None = None) -> dict:
    """Record a reviewer's answer to one patch. Written once per (reviewer, patch): the same answer again
    is a no-op that says so; a different one replaces it and keeps the old one in the history.

    Args:
        answer: {"real_or_synthetic": "real"|"synthetic", "confidence": 1-5, "realism": 1-5,
            "class": a class name, "comment": text} - the study's questions (comment optional).
        revision: the "revision" `reviewer_view` returned with the patch; a stale one (the answer was
            edited elsewhere since) is refused instead of overwriting the newer answer. None: no check.
    Returns {"status": "saved"|"unchanged"|"updated", "revision", "message", "answered", "total"}.
    ReviewError (one sentence, nothing written) for a bad / expired / foreign token, a closed study, a
    patch of another study, or a malformed answer.
    """
    store = store or open_store()
    r = _reviewer(token, store)
    spec = json.loads(r["study_spec"])
    if not isinstance(patch_id, str) or not re.fullmatch(r"[0-9a-f]{16}", patch_id):
        raise ReviewError("This patch is not part of your review; reload the page.")
    if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int) or revision < 0):
        raise ReviewError("The form's revision could not be read; reload the page.")
    clean = _clean_answer(answer, list(spec["config"]["questions"]), list(spec["classes"]))
    res = store.submit(r["id"], patch_id, clean, revision=revision)
    res["message"] = {"saved": "Answer saved.",
                      "unchanged": "This answer was already saved; nothing changed.",
                      "updated": "Answer updated; the earlier one is kept in the history."}[res["status"]]
    return res
