"""The review store: studies, patches, the truth, reviewers, answers and their history, in SQL.

Where: SQLite in WAL mode at `<runs root>/.review/review.sqlite3` by default (no server); PostgreSQL
when `HISTOGEN_REVIEW_DB` is a `postgresql://` URL (a file path or `sqlite:///path` picks a SQLite file).

Why plain DB-API (sqlite3 + psycopg 3) and not SQLAlchemy Core: the store is a dozen fixed statements
that are the same SQL on both servers (TEXT/BIGINT/DOUBLE PRECISION columns, random text keys instead
of auto-increment, `INSERT ... ON CONFLICT DO NOTHING`), so the only differences are the paramstyle
(`?` vs `%s`), how a write transaction begins (SQLite `BEGIN IMMEDIATE` takes the write lock at once, so
two writers queue on busy_timeout instead of one failing at its lock upgrade; SQLAlchemy's pysqlite
driver needs event-hook workarounds to issue it) and a lock for migrations. `_Backend` holds those
three, a few lines; the SQL a reader audits for blinding is literally what runs. One dependency fewer.

Schema: created and migrated by the engine. `MIGRATIONS` is a list of steps (each a list of SQL
statements); `schema_version` holds how many have been applied, and a store opened on an older file
applies the rest in one transaction per step, under a lock, so two processes opening it at once do not
both migrate. Never edit a released step: append a new one.

Blinding: the truth (real/synthetic, class, run, step, seed) lives in `truth` alone; the functions a
reviewer's request reaches (`reviewer_by_token_hash`, `submit`) read studies / patches / reviewers /
answers only. Patch ids and file names are random hex.

Answers: one row per (reviewer, patch) (the primary key); `submit` locks the reviewer's row first, so
one reviewer's submissions are serialised on both servers, and then either inserts (saved), does
nothing for an identical answer (unchanged), or copies the old row into `answer_history` and updates
(updated) - in one transaction, committed (fsync'd: SQLite synchronous=FULL) before it returns, so a
crash after a confirmed answer loses nothing.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from engine.config import REVIEW_QUESTIONS
from engine.utils import runs_root

ENV_DB = "HISTOGEN_REVIEW_DB"
ANSWER_FIELDS = REVIEW_QUESTIONS  # one home: engine.config
STUDY_STATES = ("open", "closed", "archived")


class ReviewError(ValueError):
    """A review request cannot be served; the message is one sentence a reviewer or researcher reads."""


def now_iso() -> str:
    """UTC time as ISO 8601 text: sortable, and the same text on SQLite and PostgreSQL."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def is_past(stamp: str | None) -> bool:
    """Whether an ISO 8601 time (as `now_iso` writes; naive = UTC) has passed; None never passes."""
    if not stamp:
        return False
    t = dt.datetime.fromisoformat(str(stamp))
    t = t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
    return t <= dt.datetime.now(dt.timezone.utc)


def review_root() -> Path:
    """`<runs root>/.review`: the SQLite file and one folder per study (hidden, so never taken for a run)."""
    return runs_root() / ".review"


# ----------------------------------------------------------------------------------------------
# Schema

_ANSWER_COLS = """real_or_synthetic TEXT, confidence INTEGER, realism INTEGER, class TEXT, comment TEXT,
    answered_at TEXT NOT NULL, revision INTEGER NOT NULL"""

MIGRATIONS: list[list[str]] = [
    # 1: the first schema
    [
        """CREATE TABLE studies (id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL,
            created_at TEXT NOT NULL, dir TEXT NOT NULL, spec TEXT NOT NULL, closed_at TEXT,
            archived_at TEXT)""",
        # what a reviewer's view reads: an opaque id and a file named by it
        """CREATE TABLE patches (id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(id),
            file TEXT NOT NULL)""",
        "CREATE INDEX patches_study ON patches(study_id)",
        # kept apart: nothing a reviewer's request runs joins or reads this table
        """CREATE TABLE truth (patch_id TEXT PRIMARY KEY REFERENCES patches(id), study_id TEXT NOT NULL,
            source TEXT NOT NULL, class TEXT NOT NULL, run TEXT, step BIGINT, seed BIGINT,
            psi DOUBLE PRECISION, data TEXT, item BIGINT)""",
        "CREATE INDEX truth_study ON truth(study_id)",
        # token_hash = sha256 of the token; the token itself is shown once and never stored
        """CREATE TABLE reviewers (id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(id),
            label TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, seed BIGINT NOT NULL,
            created_at TEXT NOT NULL, expires_at TEXT, revoked_at TEXT)""",
        "CREATE INDEX reviewers_study ON reviewers(study_id)",
        f"""CREATE TABLE answers (reviewer_id TEXT NOT NULL REFERENCES reviewers(id),
            patch_id TEXT NOT NULL REFERENCES patches(id), study_id TEXT NOT NULL, {_ANSWER_COLS},
            PRIMARY KEY (reviewer_id, patch_id))""",
        "CREATE INDEX answers_study ON answers(study_id)",
        f"""CREATE TABLE answer_history (reviewer_id TEXT NOT NULL, patch_id TEXT NOT NULL,
            study_id TEXT NOT NULL, {_ANSWER_COLS}, replaced_at TEXT NOT NULL,
            PRIMARY KEY (reviewer_id, patch_id, revision))""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


# ----------------------------------------------------------------------------------------------
# The two servers: what differs between them, and nothing else

class _Backend:
    """Connection, paramstyle, write-transaction start and migration lock of one server."""

    def __init__(self, url: str):
        self.url = url
        self.kind = "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
        if self.kind == "sqlite":
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
            self.path = Path(path).expanduser()
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def connect(self):
        if self.kind == "sqlite":
            # isolation_level=None: the module issues no implicit BEGIN; the store says BEGIN itself.
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.row_factory = lambda cur, row: dict(zip([c[0] for c in cur.description], row))
            con.execute("PRAGMA busy_timeout = 30000")
            con.execute("PRAGMA foreign_keys = ON")
            # FULL: a committed answer survives a power cut too, not only a crash of the process
            con.execute("PRAGMA synchronous = FULL")
            return con
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise ReviewError(f"{ENV_DB} names a PostgreSQL server, but psycopg is not installed; "
                              "install it with: pip install 'psycopg[binary]'") from None
        try:
            # autocommit: like SQLite above, transactions are the BEGIN/COMMIT the store sends
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        except psycopg.OperationalError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ReviewError(f"cannot reach the review database {redact(self.url)} ({first}); start the "
                              f"server or unset {ENV_DB} to use SQLite") from None

    def sql(self, q: str) -> str:
        """The store writes `?` placeholders (and never a literal `?` or `%`); psycopg wants `%s`."""
        return q if self.kind == "sqlite" else q.replace("?", "%s")

    def begin(self, write: bool) -> str:
        return "BEGIN IMMEDIATE" if (write and self.kind == "sqlite") else "BEGIN"

    def lock_schema(self, cur) -> None:
        # SQLite: BEGIN IMMEDIATE already holds the database's one write lock. PostgreSQL: a transaction-
        # scoped advisory lock, so two processes migrating at once take turns (the number is arbitrary).
        if self.kind == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(7140514)")


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else url
    return url


def default_url() -> str:
    """`HISTOGEN_REVIEW_DB` when set, else the SQLite file under the runs root."""
    return os.environ.get(ENV_DB, "").strip() or str(review_root() / "review.sqlite3")


class Tx:
    """One open transaction: `all` / `one` return rows as dicts, `run` returns the row count."""

    def __init__(self, backend: _Backend, cur):
        self._b, self.cur = backend, cur

    def all(self, q: str, *params: Any) -> list[dict]:
        self.cur.execute(self._b.sql(q), params)
        return list(self.cur.fetchall()) if self.cur.description else []

    def one(self, q: str, *params: Any) -> dict | None:
        rows = self.all(q, *params)
        return rows[0] if rows else None

    def run(self, q: str, *params: Any) -> int:
        self.cur.execute(self._b.sql(q), params)
        return self.cur.rowcount

    def many(self, q: str, rows: list[tuple]) -> None:
        if rows:
            self.cur.executemany(self._b.sql(q), rows)


# ----------------------------------------------------------------------------------------------
# The store

class Store:
    """The review database. Thread-safe: each transaction opens its own connection (a reviewer answers
    every few seconds, so the connection cost does not matter, and nothing is shared between threads)."""

    def __init__(self, url: str | os.PathLike | None = None):
        self.url = str(url) if url is not None else default_url()
        self._b = _Backend(self.url)
        self.kind = self._b.kind
        if self.kind == "sqlite":
            con = self._b.connect()
            try:
                # WAL is a property of the file: readers never block the writer and vice versa
                mode = con.execute("PRAGMA journal_mode = WAL").fetchone()
                if str(next(iter(mode.values()))).lower() != "wal":
                    raise ReviewError(f"review database {self._b.path}: SQLite refused WAL mode "
                                      "(is it on a network file system?); put the runs root on a local disk")
            finally:
                con.close()
        self.migrate()

    def __repr__(self) -> str:
        return f"Store({redact(self.url)}, {self.kind})"

    @contextlib.contextmanager
    def tx(self, write: bool = False) -> Iterator[Tx]:
        """A transaction: committed when the block ends, rolled back on any exception."""
        con = self._b.connect()
        try:
            cur = con.cursor()
            cur.execute(self._b.begin(write))
            try:
                yield Tx(self._b, cur)
            except BaseException:
                with contextlib.suppress(Exception):  # a dead connection: the server rolls back itself
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        finally:
            con.close()

    # -- schema --------------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self.tx() as t:
            return self._version(t)

    @staticmethod
    def _version(t: Tx) -> int:
        try:
            t.cur.execute("SAVEPOINT probe")
            row = t.one("SELECT MAX(version) AS v FROM schema_version")
            t.cur.execute("RELEASE SAVEPOINT probe")
        except Exception:
            # no schema_version table yet (a new database); the savepoint keeps PostgreSQL's
            # transaction usable after the failed statement
            t.cur.execute("ROLLBACK TO SAVEPOINT probe")
            t.cur.execute("RELEASE SAVEPOINT probe")
            return 0
        return int(row["v"] or 0) if row else 0

    def migrate(self) -> int:
        """Apply the migrations this database lacks; returns the schema version now."""
        with self.tx() as t:  # the common case, up to date: a read, no write lock taken
            if self._version(t) == SCHEMA_VERSION:
                return SCHEMA_VERSION
        with self.tx(write=True) as t:
            self._b.lock_schema(t.cur)
            t.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)")
            have = self._version(t)
        if have > SCHEMA_VERSION:
            raise ReviewError(f"review database {redact(self.url)} has schema version {have}, newer than this "
                              f"engine's {SCHEMA_VERSION}; update the lab")
        for v in range(have + 1, SCHEMA_VERSION + 1):
            with self.tx(write=True) as t:
                self._b.lock_schema(t.cur)
                if self._version(t) >= v:  # another process applied it meanwhile
                    continue
                for stmt in MIGRATIONS[v - 1]:
                    t.run(stmt)
                t.run("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", v, now_iso())
        return SCHEMA_VERSION

    # -- studies (researcher side) -------------------------------------------------------------

    def add_study(self, study: dict, patches: list[dict], truth: list[dict]) -> None:
        """Insert a study with its patches and their truth in one transaction (all or nothing)."""
        with self.tx(write=True) as t:
            t.run("INSERT INTO studies (id, name, state, created_at, dir, spec) VALUES (?, ?, ?, ?, ?, ?)",
                  study["id"], study["name"], "open", study["created_at"], study["dir"], study["spec"])
            t.many("INSERT INTO patches (id, study_id, file) VALUES (?, ?, ?)",
                   [(p["id"], study["id"], p["file"]) for p in patches])
            t.many("INSERT INTO truth (patch_id, study_id, source, class, run, step, seed, psi, data, item) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(r["patch_id"], study["id"], r["source"], r["class"], r.get("run"), r.get("step"),
                     r.get("seed"), r.get("psi"), r.get("data"), r.get("item")) for r in truth])

    def get_study(self, study_id: str) -> dict | None:
        with self.tx() as t:
            return t.one("SELECT * FROM studies WHERE id = ?", study_id)

    def list_studies(self) -> list[dict]:
        """Every study with its counts of patches, reviewers and answers, newest first."""
        with self.tx() as t:
            rows = t.all("SELECT * FROM studies ORDER BY created_at DESC, id")
            for kind, table in (("patches", "patches"), ("reviewers", "reviewers"), ("answers", "answers")):
                counts = {r["study_id"]: int(r["n"]) for r in
                          t.all(f"SELECT study_id, COUNT(*) AS n FROM {table} GROUP BY study_id")}
                for r in rows:
                    r[kind] = counts.get(r["id"], 0)
        return rows

    def set_state(self, study_id: str, state: str, allowed_from: tuple[str, ...]) -> str:
        """Move a study to `state` from one of `allowed_from`; returns the state it was in."""
        stamp = {"closed": "closed_at", "archived": "archived_at"}[state]
        with self.tx(write=True) as t:
            row = t.one("SELECT state FROM studies WHERE id = ?", study_id)
            if row is None:
                raise ReviewError(f"there is no study {study_id!r}")
            if row["state"] not in allowed_from:
                raise ReviewError(f"study {study_id} is {row['state']}; it cannot be {state} from there")
            t.run(f"UPDATE studies SET state = ?, {stamp} = ? WHERE id = ?", state, now_iso(), study_id)
        return row["state"]

    def add_reviewers(self, rows: list[dict]) -> None:
        with self.tx(write=True) as t:
            t.many("INSERT INTO reviewers (id, study_id, label, token_hash, seed, created_at, expires_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [(r["id"], r["study_id"], r["label"], r["token_hash"], r["seed"], r["created_at"],
                     r.get("expires_at")) for r in rows])

    def reviewers(self, study_id: str) -> list[dict]:
        """The study's reviewers (no token hashes) with their number of answers and last answer time."""
        with self.tx() as t:
            rows = t.all("SELECT id, label, created_at, expires_at, revoked_at FROM reviewers "
                         "WHERE study_id = ? ORDER BY created_at, label", study_id)
            done = {r["reviewer_id"]: r for r in t.all(
                "SELECT reviewer_id, COUNT(*) AS n, MAX(answered_at) AS last FROM answers "
                "WHERE study_id = ? GROUP BY reviewer_id", study_id)}
        for r in rows:
            d = done.get(r["id"], {})
            r["answered"], r["last_answered_at"] = int(d.get("n", 0)), d.get("last")
        return rows

    def export_rows(self, study_id: str) -> list[dict]:
        """Every current answer joined with the truth of its patch (researcher side only)."""
        with self.tx() as t:
            return t.all(
                "SELECT a.study_id AS study, r.label AS reviewer, a.reviewer_id, a.patch_id AS patch, "
                "a.real_or_synthetic, a.confidence, a.realism, a.class, a.comment, a.answered_at, "
                "a.revision, t.source, t.class AS true_class, t.run, t.step, t.seed, t.psi, t.data, t.item "
                "FROM answers a JOIN reviewers r ON r.id = a.reviewer_id "
                "JOIN truth t ON t.patch_id = a.patch_id WHERE a.study_id = ? "
                "ORDER BY r.label, a.reviewer_id, a.answered_at, a.patch_id", study_id)

    def truth_rows(self, study_id: str) -> list[dict]:
        with self.tx() as t:
            return t.all("SELECT * FROM truth WHERE study_id = ? ORDER BY patch_id", study_id)

    def history(self, study_id: str) -> list[dict]:
        with self.tx() as t:
            return t.all("SELECT * FROM answer_history WHERE study_id = ? "
                         "ORDER BY reviewer_id, patch_id, revision", study_id)

    # -- the reviewer's side (never reads `truth`) -----------------------------------------------

    def reviewer_by_token_hash(self, token_hash: str, with_patches: bool = False) -> dict | None:
        """The reviewer with this token hash and its study's name, state, dir and spec; with_patches adds
        "patches" ([{"id", "file"}] of the study, by id: random hex, so that order says nothing) and
        "answers" (patch id -> this reviewer's current answer), read in the same transaction."""
        with self.tx() as t:
            r = t.one("SELECT r.id, r.study_id, r.label, r.seed, r.expires_at, r.revoked_at, "
                      "s.name AS study_name, s.state AS study_state, s.dir AS study_dir, "
                      "s.spec AS study_spec FROM reviewers r JOIN studies s ON s.id = r.study_id "
                      "WHERE r.token_hash = ?", token_hash)
            if r is not None and with_patches:
                r["patches"] = t.all("SELECT id, file FROM patches WHERE study_id = ? ORDER BY id", r["study_id"])
                rows = t.all("SELECT patch_id, real_or_synthetic, confidence, realism, class, comment, "
                             "answered_at, revision FROM answers WHERE reviewer_id = ?", r["id"])
                r["answers"] = {a.pop("patch_id"): a for a in rows}
        return r

    def study_patches(self, study_id: str) -> list[dict]:
        """[{"id", "file"}] of a study, by id."""
        with self.tx() as t:
            return t.all("SELECT id, file FROM patches WHERE study_id = ? ORDER BY id", study_id)

    def submit(self, reviewer_id: str, patch_id: str, answer: dict, revision: int | None = None) -> dict:
        """Write one answer (already validated) of a reviewer; see the module docstring.

        Args:
            revision: the revision the reviewer's page showed (0 = none yet); when given and the answer
                has moved on since, nothing is written and ReviewError says so (a replayed old form).
        Returns {"status": "saved"|"unchanged"|"updated", "revision", "answered", "total"} (the reviewer's
        answers and the study's patches after this one).
        """
        with self.tx(write=True) as t:
            res = self._submit(t, reviewer_id, patch_id, answer, revision)
            res["answered"] = int(t.one("SELECT COUNT(*) AS n FROM answers WHERE reviewer_id = ?", reviewer_id)["n"])
            res["total"] = int(t.one("SELECT COUNT(*) AS n FROM patches WHERE study_id = ?", res.pop("study_id"))["n"])
            return res

    @staticmethod
    def _submit(t: Tx, reviewer_id: str, patch_id: str, answer: dict, revision: int | None) -> dict:
        values = tuple(answer.get(k) for k in ANSWER_FIELDS)
        # Row lock on the reviewer (a no-op update): one reviewer's submissions run one at a time
        # on PostgreSQL too; SQLite's BEGIN IMMEDIATE already serialises every writer.
        if t.run("UPDATE reviewers SET seed = seed WHERE id = ?", reviewer_id) != 1:
            raise ReviewError("This review link is not valid; ask the researcher for a new one.")
        r = t.one("SELECT r.study_id, s.state FROM reviewers r JOIN studies s ON s.id = r.study_id "
                  "WHERE r.id = ?", reviewer_id)
        if r["state"] != "open":
            raise ReviewError("This study is closed and takes no more answers; thank you for your help.")
        if t.one("SELECT id FROM patches WHERE id = ? AND study_id = ?", patch_id, r["study_id"]) is None:
            raise ReviewError("This patch is not part of your review; reload the page.")
        old = t.one("SELECT * FROM answers WHERE reviewer_id = ? AND patch_id = ?", reviewer_id, patch_id)
        if old is None:
            if revision not in (None, 0):
                raise ReviewError(f"This answer does not exist yet (the form said revision {revision}); "
                                  "reload the page.")
            t.run("INSERT INTO answers (reviewer_id, patch_id, study_id, real_or_synthetic, confidence, "
                  "realism, class, comment, answered_at, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                  reviewer_id, patch_id, r["study_id"], *values, now_iso())
            return {"status": "saved", "revision": 1, "study_id": r["study_id"]}
        cur = int(old["revision"])
        if tuple(old[k] for k in ANSWER_FIELDS) == values:
            return {"status": "unchanged", "revision": cur, "study_id": r["study_id"]}
        if revision is not None and int(revision) != cur:
            raise ReviewError(f"This answer was changed after the page was loaded (it is now revision "
                              f"{cur}); reload the page to see it before editing.")
        t.run("INSERT INTO answer_history (reviewer_id, patch_id, study_id, real_or_synthetic, confidence, "
              "realism, class, comment, answered_at, revision, replaced_at) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              reviewer_id, patch_id, old["study_id"], *(old[k] for k in ANSWER_FIELDS),
              old["answered_at"], cur, now_iso())
        t.run("UPDATE answers SET real_or_synthetic = ?, confidence = ?, realism = ?, class = ?, "
              "comment = ?, answered_at = ?, revision = ? WHERE reviewer_id = ? AND patch_id = ?",
              *values, now_iso(), cur + 1, reviewer_id, patch_id)
        return {"status": "updated", "revision": cur + 1, "study_id": r["study_id"]}


_OPEN: dict[str, Store] = {}


def open_store(url: str | os.PathLike | None = None) -> Store:
    """The review store at `url` (default: `HISTOGEN_REVIEW_DB`, else the SQLite file under the runs root).

    One Store per URL and process (a Store holds no connection, so threads share it): the schema check
    runs once, not on every page rerun. A SQLite file deleted meanwhile is created again."""
    key = str(url) if url is not None else default_url()
    st = _OPEN.get(key)
    if st is None or (st.kind == "sqlite" and not st._b.path.is_file()):
        st = _OPEN[key] = Store(key)
    return st
