"""The review store on both servers: schema and migrations, answers written once, history, tokens that
read only their own study, refused submissions that change nothing, 20 reviewers at once, a crash.

Every test runs on SQLite; the PostgreSQL ones run when HISTOGEN_TEST_PG_URL names a server
(`source .ci/pg.sh` starts one), each in its own schema, and are skipped otherwise.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.review import store as ST
from engine.review import studies as S
from engine.review.store import ReviewError, Store

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("HISTOGEN_TEST_PG_URL", "")
CLASSES = ["ADI", "BACK", "TUM"]
GOOD = {"real_or_synthetic": "real", "confidence": 4, "realism": 3, "class": "ADI", "comment": ""}


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty review database: a SQLite file, or a new schema on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "review.sqlite3")
        return
    if not PG_URL:
        pytest.skip("HISTOGEN_TEST_PG_URL is not set (source .ci/pg.sh starts a server)")
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    yield _pg_schema_url(PG_URL, schema)
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"DROP SCHEMA {schema} CASCADE")


def make_study(store: Store, root: Path, n_patches: int = 6, questions=S.QUESTIONS, name: str = "s") -> dict:
    """A study written straight into the store (no generator): n patches, half real, tiny PNG files."""
    import numpy as np

    sid = f"{name}-{secrets.token_hex(3)}"
    sdir = root / sid
    (sdir / "patches").mkdir(parents=True)
    patches, truth = [], []
    for i in range(n_patches):
        pid = secrets.token_hex(8)
        (sdir / "patches" / f"{pid}.png").write_bytes(S._encode(np.full((1, 4, 4, 3), i, np.uint8), 8)[0])
        patches.append({"id": pid, "file": f"patches/{pid}.png"})
        truth.append({"patch_id": pid, "source": "real" if i % 2 else "synthetic", "class": CLASSES[i % 3],
                      "run": None if i % 2 else "r1", "step": None if i % 2 else 8, "seed": i, "psi": 1.0})
    spec = {"config": {"questions": list(questions), "display_size": 8, "instructions": ""}, "classes": CLASSES,
            "runs": [{"run": "r1"}]}
    store.add_study({"id": sid, "name": name, "created_at": ST.now_iso(), "dir": str(sdir),
                     "spec": json.dumps(spec)}, patches, truth)
    return {"id": sid, "patches": [p["id"] for p in patches]}


def snapshot(store: Store, study_id: str) -> tuple:
    with store.tx() as t:
        a = t.all("SELECT * FROM answers WHERE study_id = ? ORDER BY reviewer_id, patch_id", study_id)
        h = t.all("SELECT * FROM answer_history WHERE study_id = ? ORDER BY reviewer_id, patch_id, revision",
                  study_id)
    return a, h


# ----------------------------------------------------------------------------------------------

def test_schema_is_created_versioned_and_migrated(db_url, monkeypatch):
    st = Store(db_url)
    assert st.schema_version() == ST.SCHEMA_VERSION == len(ST.MIGRATIONS)
    assert Store(db_url).schema_version() == ST.SCHEMA_VERSION  # reopening applies nothing twice
    # a later engine appends a step: an existing database is migrated to it, once
    extra = ["ALTER TABLE studies ADD COLUMN note TEXT"]
    monkeypatch.setattr(ST, "MIGRATIONS", ST.MIGRATIONS + [extra])
    monkeypatch.setattr(ST, "SCHEMA_VERSION", ST.SCHEMA_VERSION + 1)
    st2 = Store(db_url)
    assert st2.schema_version() == ST.SCHEMA_VERSION
    with st2.tx() as t:
        assert len(t.all("SELECT version FROM schema_version")) == ST.SCHEMA_VERSION
        t.all("SELECT note FROM studies")  # the new column exists
    monkeypatch.setattr(ST, "SCHEMA_VERSION", 1)
    with pytest.raises(ReviewError, match="newer than this engine"):
        Store(db_url)


def test_sqlite_is_in_wal_mode(tmp_path):
    st = Store(tmp_path / "r.sqlite3")
    with st.tx() as t:
        assert t.one("PRAGMA journal_mode")["journal_mode"] == "wal"


def test_default_store_is_sqlite_under_the_runs_root_and_env_picks_another(tmp_path, monkeypatch):
    monkeypatch.delenv(ST.ENV_DB, raising=False)
    st = ST.open_store()
    assert st.kind == "sqlite" and Path(st.url) == Path(os.environ["HISTOGEN_RUNS"]) / ".review" / "review.sqlite3"
    assert ST.open_store() is st  # one per process: the schema is checked once, not per page rerun
    Path(st.url).unlink()
    assert ST.open_store().schema_version() == ST.SCHEMA_VERSION  # a deleted file is made again
    monkeypatch.setenv(ST.ENV_DB, f"sqlite:///{tmp_path / 'other.db'}")
    assert ST.open_store().kind == "sqlite" and (tmp_path / "other.db").is_file()
    monkeypatch.setenv(ST.ENV_DB, "postgresql://u:secret@127.0.0.1:1/none")
    with pytest.raises(ReviewError, match="cannot reach the review database") as e:
        ST.open_store()
    assert "secret" not in str(e.value)


def test_identical_resubmit_is_a_no_op_that_says_so(db_url, tmp_path):
    st = Store(db_url)
    s = make_study(st, tmp_path)
    tok = S.invite(s["id"], 1, store=st)[0]["token"]
    pid = S.reviewer_view(tok, store=st)["patch"]["id"]
    r1 = S.submit(tok, pid, GOOD, store=st)
    before = snapshot(st, s["id"])
    r2 = S.submit(tok, pid, dict(GOOD, comment="  "), store=st)  # blank comment = no comment
    r3 = S.submit(tok, pid, GOOD, revision=0, store=st)  # a double click of the first form
    assert (r1["status"], r2["status"], r3["status"]) == ("saved", "unchanged", "unchanged")
    assert "already saved" in r2["message"] and r2["revision"] == 1
    assert snapshot(st, s["id"]) == before and len(before[0]) == 1 and before[1] == []


def test_edit_moves_the_old_answer_to_history(db_url, tmp_path):
    st = Store(db_url)
    s = make_study(st, tmp_path)
    tok = S.invite(s["id"], 1, store=st)[0]["token"]
    pid = S.reviewer_view(tok, store=st)["patch"]["id"]
    S.submit(tok, pid, GOOD, store=st)
    r = S.submit(tok, pid, dict(GOOD, real_or_synthetic="synthetic", realism=1), revision=1, store=st)
    assert r["status"] == "updated" and r["revision"] == 2
    S.submit(tok, pid, dict(GOOD, comment="third thoughts"), store=st)
    answers, history = snapshot(st, s["id"])
    assert len(answers) == 1 and answers[0]["revision"] == 3 and answers[0]["comment"] == "third thoughts"
    assert [(h["revision"], h["real_or_synthetic"], h["realism"]) for h in history] == \
        [(1, "real", 3), (2, "synthetic", 1)]
    # the view shows the reviewer's current answer and its revision for the next edit
    v = S.reviewer_view(tok, index=0, store=st)
    assert v["patch"]["id"] == pid and v["answer"]["comment"] == "third thoughts" and v["revision"] == 3
    # a replayed stale form (revision 1) does not overwrite the newer answer
    with pytest.raises(ReviewError, match="changed after the page was loaded"):
        S.submit(tok, pid, dict(GOOD, realism=5), revision=1, store=st)
    assert snapshot(st, s["id"]) == (answers, history)


def test_a_token_reads_and_writes_only_its_own_study(db_url, tmp_path):
    st = Store(db_url)
    a, b = make_study(st, tmp_path, name="a"), make_study(st, tmp_path, name="b")
    ta = S.invite(a["id"], 1, store=st)[0]["token"]
    tb = S.invite(b["id"], 1, store=st)[0]["token"]
    seen = set()
    for i in range(len(a["patches"])):
        seen.add(S.reviewer_view(ta, index=i, store=st)["patch"]["id"])
    assert seen == set(a["patches"])
    before = snapshot(st, b["id"]), snapshot(st, a["id"])
    with pytest.raises(ReviewError, match="not part of your review"):
        S.submit(ta, b["patches"][0], GOOD, store=st)
    assert (snapshot(st, b["id"]), snapshot(st, a["id"])) == before
    # and the other reviewer's answers never show in this reviewer's view
    S.submit(tb, S.reviewer_view(tb, store=st)["patch"]["id"], GOOD, store=st)
    v = S.reviewer_view(ta, store=st)
    assert v["answered"] == 0 and v["answer"] is None and v["study"]["id"] == a["id"]


@pytest.mark.parametrize("answer, match", [
    ("real", "could not be read"),
    ({}, "answer every question"),
    (dict(GOOD, real_or_synthetic="fake"), "must be 'real' or 'synthetic'"),
    (dict(GOOD, confidence=0), "whole number from 1 to 5"),
    (dict(GOOD, confidence=True), "whole number from 1 to 5"),
    (dict(GOOD, realism=2.5), "whole number from 1 to 5"),
    (dict(GOOD, **{"class": "XYZ"}), "Tissue class must be one of"),
    (dict(GOOD, comment="x" * 2001), "longer than 2000"),
    (dict(GOOD, truth="real"), "does not ask"),
    ({k: v for k, v in GOOD.items() if k != "realism"}, "realism is missing"),
])
def test_malformed_submissions_are_refused_and_change_nothing(db_url, tmp_path, answer, match):
    st = Store(db_url)
    s = make_study(st, tmp_path)
    tok = S.invite(s["id"], 1, store=st)[0]["token"]
    pid = S.reviewer_view(tok, store=st)["patch"]["id"]
    S.submit(tok, pid, GOOD, store=st)
    before = snapshot(st, s["id"])
    with pytest.raises(ReviewError, match=match):
        S.submit(tok, pid, answer, store=st)
    assert snapshot(st, s["id"]) == before


def test_questions_not_asked_must_be_left_out(tmp_path):
    st = Store(tmp_path / "r.sqlite3")
    s = make_study(st, tmp_path, questions=("real_or_synthetic", "realism"))
    tok = S.invite(s["id"], 1, store=st)[0]["token"]
    pid = S.reviewer_view(tok, store=st)["patch"]["id"]
    with pytest.raises(ReviewError, match="does not ask confidence"):
        S.submit(tok, pid, GOOD, store=st)
    assert S.submit(tok, pid, {"real_or_synthetic": "synthetic", "realism": "2"}, store=st)["status"] == "saved"


def test_bad_expired_revoked_and_closed_tokens_get_one_sentence(db_url, tmp_path):
    st = Store(db_url)
    s = make_study(st, tmp_path)
    tok = S.invite(s["id"], 1, store=st)[0]["token"]
    pid = s["patches"][0]
    for bad in ("", "nope", None, 42, "x" * 500, tok[:-1]):
        with pytest.raises(ReviewError) as e:
            S.reviewer_view(bad, store=st)
        assert str(e.value) == S.BAD_TOKEN
        with pytest.raises(ReviewError, match="not valid"):
            S.submit(bad, pid, GOOD, store=st)
    with pytest.raises(ReviewError, match="not part of your review"):
        S.submit(tok, "../../etc/passwd", GOOD, store=st)
    old = S.invite(s["id"], 1, expires_days=1, store=st)[0]
    with st.tx(write=True) as t:
        t.run("UPDATE reviewers SET expires_at = ? WHERE id = ?", "2000-01-01T00:00:00+00:00", old["reviewer"])
    with pytest.raises(ReviewError, match="expired"):
        S.reviewer_view(old["token"], store=st)
    with st.tx(write=True) as t:
        t.run("UPDATE reviewers SET revoked_at = ? WHERE id = ?", ST.now_iso(), old["reviewer"])
    with pytest.raises(ReviewError, match="not valid"):
        S.reviewer_view(old["token"], store=st)
    S.submit(tok, pid, GOOD, store=st)
    S.close_study(s["id"], store=st)
    before = snapshot(st, s["id"])
    with pytest.raises(ReviewError, match="closed"):
        S.submit(tok, pid, dict(GOOD, realism=5), store=st)
    with pytest.raises(ReviewError, match="closed"):
        S.reviewer_view(tok, store=st)
    with pytest.raises(ReviewError, match="is closed"):
        S.invite(s["id"], 1, store=st)
    assert snapshot(st, s["id"]) == before


def test_only_token_hashes_are_stored(db_url, tmp_path):
    st = Store(db_url)
    s = make_study(st, tmp_path)
    toks = S.invite(s["id"], 3, store=st)
    with st.tx() as t:
        stored = t.all("SELECT * FROM reviewers WHERE study_id = ?", s["id"])
    text = json.dumps(stored, default=str)
    assert all(x["token"] not in text for x in toks)
    assert sorted(r["token_hash"] for r in stored) == sorted(S.token_hash(x["token"]) for x in toks)


def test_twenty_reviewers_at_once_lose_and_duplicate_no_answer(db_url, tmp_path):
    st = Store(db_url)
    s = make_study(st, tmp_path, n_patches=8)
    toks = [x["token"] for x in S.invite(s["id"], 20, store=st)]
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(toks))

    def reviewer(i: int, tok: str) -> None:
        try:
            barrier.wait()
            out = []
            while True:
                v = S.reviewer_view(tok, store=st)
                if v["done"]:
                    break
                ans = dict(GOOD, realism=1 + i % 5, comment=f"r{i}")
                out.append(S.submit(tok, v["patch"]["id"], ans, revision=v["revision"], store=st)["status"])
                out.append(S.submit(tok, v["patch"]["id"], ans, store=st)["status"])  # a replay
            results[i] = out
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reviewer, args=(i, t)) for i, t in enumerate(toks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert all(r == ["saved", "unchanged"] * 8 for r in results.values()) and len(results) == 20
    answers, history = snapshot(st, s["id"])
    assert len(answers) == 20 * 8 and history == []
    assert len({(a["reviewer_id"], a["patch_id"]) for a in answers}) == 20 * 8
    assert all(p["answered"] == 8 and p["state"] == "finished" for p in S.progress(s["id"], store=st))


CRASHER = r"""
import os, sys
sys.path.insert(0, sys.argv[3])
from engine.review import studies as S
from engine.review.store import Store
st = Store(sys.argv[1])
tok = sys.argv[2]
for i in range(3):
    v = S.reviewer_view(tok, store=st)
    S.submit(tok, v["patch"]["id"], {"real_or_synthetic": "real", "confidence": 1, "realism": 1,
                                     "class": "ADI"}, store=st)
    print("confirmed", v["patch"]["id"], flush=True)
v = S.reviewer_view(tok, store=st)
with st.tx(write=True) as t:  # the 4th answer: the process dies inside its transaction
    t.run("INSERT INTO answers (reviewer_id, patch_id, study_id, answered_at, revision) "
          "SELECT id, ?, study_id, 'x', 1 FROM reviewers", v["patch"]["id"])
    os._exit(3)
"""


def test_a_crash_between_answers_loses_nothing_already_confirmed(db_url, tmp_path):
    st = Store(db_url)
    s = make_study(st, tmp_path)
    tok = S.invite(s["id"], 1, store=st)[0]["token"]
    p = subprocess.run([sys.executable, "-c", CRASHER, db_url, tok, str(ROOT)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 3, p.stderr
    confirmed = {line.split()[1] for line in p.stdout.splitlines() if line.startswith("confirmed")}
    assert len(confirmed) == 3
    answers, _ = snapshot(Store(db_url), s["id"])
    assert {a["patch_id"] for a in answers} == confirmed  # the three, and not the half-written fourth
    assert S.reviewer_view(tok, store=st)["answered"] == 3
