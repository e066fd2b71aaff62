"""Blinded clinician review of synthetic vs real patches (DESIGN "Clinician review").

    store.py    the SQL store: SQLite (WAL) by default, PostgreSQL by URL; schema migrations
    studies.py  the researcher's side: studies from runs (blinded patches), invites, progress, close,
                archive, export (re-exports the reviewer's side)
    reviewer.py the reviewer's side: a token -> the next patch, an answer -> stored once (never the truth)
    stats.py    accuracy with CI, sensitivity/specificity, realism, class agreement, kappas
    cli.py      `python -m engine review ...`

Import the modules themselves (`from engine.review import studies`); this package imports nothing, so
`python -m engine review --help` stays fast.
"""
