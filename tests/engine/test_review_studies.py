"""Review studies end to end on a tiny run: creation from runs and the held-out split, blinding, the
reviewer's order and resumption, export joined with the truth, close / archive, and the CLI."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from engine.config import ConfigError
from engine.review import store as ST
from engine.review import studies as S
from engine.review.store import ReviewError, Store
from tests.fixtures_runs import tiny_run_on

HEX16 = re.compile(r"[0-9a-f]{16}")
ANSWER = {"real_or_synthetic": "synthetic", "confidence": 3, "realism": 2, "class": "TUM"}


@pytest.fixture(autouse=True)
def _sqlite_store(monkeypatch):
    """These tests use the default store: the SQLite file under the test's runs root, whatever the shell has."""
    monkeypatch.delenv(ST.ENV_DB, raising=False)



@pytest.fixture
def study(review_data):
    tiny_run_on(review_data)
    return S.create_study({"name": "Pilot 1", "runs": ["tiny"], "classes": ["ADI", "LYM", "TUM"],
                           "synthetic_per_class": 2, "real_per_class": 2, "display_size": 24, "reviewers": 3,
                           "device": "cpu"})


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        out.append(kind.decode())
        i += 12 + n
    return out


def png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


def test_study_draws_synthetic_and_held_out_real_patches(study, review_data):
    assert (study["patches"], study["synthetic"], study["real"]) == (12, 6, 6)
    assert study["id"].startswith("pilot-1-") and len(study["tokens"]) == 3
    truth = Store().truth_rows(study["id"])
    syn = [t for t in truth if t["source"] == "synthetic"]
    real = [t for t in truth if t["source"] == "real"]
    assert sorted((t["class"], t["seed"]) for t in syn) == sorted((c, s) for c in ("ADI", "LYM", "TUM") for s in (0, 1))
    assert all(t["run"] == "tiny" and t["step"] == 8 and t["psi"] == 1.0 for t in syn)
    assert sorted(t["class"] for t in real) == ["ADI", "ADI", "LYM", "LYM", "TUM", "TUM"]
    assert all(t["data"] == str(Path(review_data).resolve()) and t["run"] is None and t["seed"] is None
               for t in real) and sorted(t["item"] for t in real) == [0, 0, 0, 1, 1, 1]
    # the real ones come from the eval split: the same pixels real_tiles(split="eval") gives
    from engine.data.dataset import real_tiles
    from engine.images import png_bytes, resize_uint8

    sdir = Path(study["dir"])
    files = {t["patch_id"]: (sdir / "patches" / f"{t['patch_id']}.png").read_bytes() for t in real}
    want = {png_bytes(im) for c in ("ADI", "LYM", "TUM")
            for im in resize_uint8(resize_uint8(real_tiles(review_data, c, 2, split="eval"), 16), 24)}
    assert set(files.values()) == want


def test_nothing_a_reviewer_gets_carries_the_truth(study):
    sdir = Path(study["dir"])
    truth = {t["patch_id"]: t for t in Store().truth_rows(study["id"])}
    files = sorted((sdir / "patches").iterdir())
    assert len(files) == 12
    sizes = set()
    for f in files:
        assert HEX16.fullmatch(f.stem) and f.suffix == ".png" and f.stem in truth
        data = f.read_bytes()
        # no tEXt/zTXt/iTXt/eXIf/tIME chunk: only the pixels
        assert set(png_chunks(data)) == {"IHDR", "IDAT", "IEND"}
        sizes.add(png_size(data))
    assert sizes == {(24, 24)}  # real and synthetic alike
    tok = study["tokens"][0]["token"]
    v = S.reviewer_view(tok)
    shown = {k: v[k] for k in v if k != "patch"} | {"patch": v["patch"]["id"]}
    shown["study"] = {k: x for k, x in v["study"].items() if k != "questions"}  # "real_or_synthetic" is asked
    text = json.dumps(shown).lower()
    assert not re.search(r"real|synth|fake|tiny|seed|step|psi", text), text
    assert set(v) == {"study", "reviewer", "total", "answered", "done", "index", "patch", "answer", "revision"}
    assert set(v["patch"]) == {"id", "png"} and set(v["study"]) == {"id", "name", "questions", "classes",
                                                                   "display_size", "instructions"}


def test_reviewer_requests_never_read_the_truth_table(study, monkeypatch):
    statements: list[str] = []
    connect = ST._Backend.connect

    def traced(self):
        con = connect(self)
        con.set_trace_callback(statements.append)
        return con

    monkeypatch.setattr(ST._Backend, "connect", traced)
    tok = study["tokens"][1]["token"]
    for _ in range(3):
        v = S.reviewer_view(tok)
        S.submit(tok, v["patch"]["id"], ANSWER, revision=v["revision"])
        S.submit(tok, v["patch"]["id"], dict(ANSWER, realism=5))
    S.reviewer_view(tok, index=0)
    with pytest.raises(ReviewError):
        S.submit(tok, "0" * 16, ANSWER)
    assert len(statements) > 20
    assert not [s for s in statements if re.search(r"\btruth\b", s, re.I)]
    statements.clear()
    S.export_rows(study["id"])  # the researcher's export does join it (so the trace works)
    assert any(re.search(r"\btruth\b", s) for s in statements)


def test_each_reviewer_has_an_own_order_that_resumes(study):
    t1, t2 = (t["token"] for t in study["tokens"][:2])
    order1 = [S.reviewer_view(t1, index=i)["patch"]["id"] for i in range(12)]
    order2 = [S.reviewer_view(t2, index=i)["patch"]["id"] for i in range(12)]
    assert sorted(order1) == sorted(order2) and len(set(order1)) == 12 and order1 != order2
    for pid in order1[:5]:
        S.submit(t1, pid, ANSWER)
    v = S.reviewer_view(t1)  # "closing the browser": a new call continues at the first unanswered
    assert (v["index"], v["patch"]["id"], v["answered"], v["done"]) == (5, order1[5], 5, False)
    assert S.reviewer_view(t2)["index"] == 0
    for pid in order1[5:]:
        S.submit(t1, pid, ANSWER)
    v = S.reviewer_view(t1)
    assert v["done"] and v["patch"] is None and v["answered"] == 12
    with pytest.raises(ReviewError, match="no patch number 12"):
        S.reviewer_view(t1, index=12)
    # the order is the reviewer's seed applied to the sorted ids: nothing about the truth enters
    seed = Store().reviewer_by_token_hash(S.token_hash(t1))["seed"]
    assert S.display_order(list(reversed(order1)), seed) == order1


def test_export_joins_the_truth_and_progress_counts(study, tmp_path):
    toks = [t["token"] for t in study["tokens"]]
    truth = {t["patch_id"]: t for t in Store().truth_rows(study["id"])}
    for i in range(4):
        v = S.reviewer_view(toks[0])
        right = truth[v["patch"]["id"]]["source"]
        S.submit(toks[0], v["patch"]["id"], dict(ANSWER, real_or_synthetic=right if i < 3 else
                                                  {"real": "synthetic", "synthetic": "real"}[right]))
    out = tmp_path / "answers.csv"
    S.export_csv(study["id"], out)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == list(S.EXPORT_COLUMNS) and len(rows) == 4
    assert sorted(r["correct"] for r in rows) == ["0", "1", "1", "1"]
    assert all(r["source"] == truth[r["patch"]]["source"] and r["true_class"] == truth[r["patch"]]["class"]
               for r in rows)
    prog = {p["label"]: p for p in S.progress(study["id"])}
    assert (prog["reviewer 1"]["answered"], prog["reviewer 1"]["state"]) == (4, "in progress")
    assert (prog["reviewer 2"]["answered"], prog["reviewer 2"]["state"]) == (0, "not started")
    assert S.list_studies()[0]["answers"] == 4


def test_close_and_archive(study):
    tok = study["tokens"][0]["token"]
    S.submit(tok, S.reviewer_view(tok)["patch"]["id"], ANSWER)
    assert S.close_study("Pilot 1")["state"] == "closed"  # by name as well as by id
    with pytest.raises(ReviewError, match="closed"):
        S.submit(tok, Store().study_patches(study["id"])[0]["id"], ANSWER)
    with pytest.raises(ReviewError, match="closed"):
        S.close_study(study["id"])
    s = S.archive_study(study["id"])
    assert s["state"] == "archived"
    sdir = Path(study["dir"])
    assert len(list(csv.DictReader(io.StringIO((sdir / "answers.csv").read_text())))) == 1
    assert json.loads((sdir / "stats.json").read_text())["n_answers"] == 1
    assert S.list_studies() == [] and S.list_studies(include_archived=True)[0]["id"] == study["id"]


def test_two_runs_and_their_errors(review_data, tmp_path):
    tiny_run_on(review_data, "a")
    tiny_run_on(review_data, "b")
    res = S.create_study({"runs": ["a@4", "b"], "classes": ["ADI"], "synthetic_per_class": 1,
                          "real_per_class": 1, "display_size": 16, "device": "cpu"})
    truth = Store().truth_rows(res["id"])
    assert sorted((t["run"], t["step"]) for t in truth if t["source"] == "synthetic") == [("a", 4), ("b", 8)]
    assert sum(t["source"] == "real" for t in truth) == 1  # one data set: its reals once
    with pytest.raises(ConfigError, match="not a run"):
        S.create_study({"runs": ["missing"], "device": "cpu"})
    with pytest.raises(ConfigError, match="no checkpoint at step 5"):
        S.create_study({"runs": ["a@5"], "device": "cpu"})
    with pytest.raises(ConfigError, match="unknown class"):
        S.create_study({"runs": ["a"], "classes": ["XYZ"], "device": "cpu"})
    with pytest.raises(ConfigError, match="questions"):
        S.create_study({"runs": ["a"], "questions": ["mood"], "device": "cpu"})
    # a data set whose eval split was trained on is refused for the real side
    old = tmp_path / "old"
    shutil.copytree(review_data, old)
    info = json.loads((old / "dataset.json").read_text())
    info["eval_disjoint"] = False
    (old / "dataset.json").write_text(json.dumps(info))
    d = tiny_run_on(review_data, "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["data"] = str(old)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="no held-out eval split"):
        S.create_study({"runs": ["c"], "device": "cpu"})
    assert len(S.list_studies()) == 1  # failed creations leave no study behind
    assert [p.name for p in ST.review_root().iterdir() if p.is_dir()] == [res["id"]]


def test_cli_create_invite_export_stats_close_archive(review_data, tmp_path, capsys):
    from engine.__main__ import main

    tiny_run_on(review_data)
    assert main(["review", "create", "--name", "cli", "--runs", "tiny", "--classes", "ADI,TUM",
                 "--synthetic-per-class", "1", "--real-per-class", "1", "--display-size", "16",
                 "--reviewers", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    sid = re.search(r"study (\S+): 4 patches \(2 synthetic, 2 real\)", out).group(1)
    tokens = re.findall(r"reviewer \d+\s+(\S+)", out)
    assert len(tokens) == 2
    assert main(["review", "invite", sid, "--reviewers", "1"]) == 0
    assert len(re.findall(r"reviewer 3\s+\S+", capsys.readouterr().out)) == 1
    for t in tokens:
        while not (v := S.reviewer_view(t))["done"]:
            S.submit(t, v["patch"]["id"], ANSWER)
    assert main(["review", "list"]) == 0 and sid in capsys.readouterr().out
    assert main(["review", "progress", sid]) == 0 and "4 / 4" in capsys.readouterr().out
    assert main(["review", "export", sid, "--out", str(tmp_path / "a.csv")]) == 0
    assert len((tmp_path / "a.csv").read_text().splitlines()) == 1 + 8
    assert "wrote 8 answers" in capsys.readouterr().out
    assert main(["review", "stats", sid, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["detection"]["pooled"]["n"] == 8 and st["detection"]["pooled"]["accuracy"] == 0.5
    assert main(["review", "stats", sid]) == 0 and "pooled" in capsys.readouterr().out
    assert main(["review", "close", sid]) == 0
    assert main(["review", "archive", sid]) == 0
    assert main(["review", "invite", sid, "--reviewers", "1"]) == 2
    assert "archived" in capsys.readouterr().err
    assert main(["review", "stats", "nope"]) == 2 and "no study 'nope'" in capsys.readouterr().err
