"""`python -m engine jobs ...`: background training runs from the command line.

    python -m engine jobs start --res 64 --kimg 5      # prints the new run id
    python -m engine jobs list
    python -m engine jobs stop RUN_ID
    python -m engine jobs resume RUN_ID [--kimg 10]
    python -m engine jobs rename RUN_ID "baseline, lr 2e-4"   # display name; the id stays
    python -m engine jobs delete RUN_ID --yes                 # refused while the run is alive
    python -m engine jobs estimate --res 64 --batch 16 --kimg 5   # rough time from this machine's runs
"""
from __future__ import annotations

import argparse
import sys

from engine import runs
from engine.jobs.core import STOP_GRACE_S, log_tail
from engine.jobs.train import delete, estimate_text, list_runs, progress, rename, resume, start, status, stop


def main(argv: list[str]) -> int:
    from engine import config as C

    p = argparse.ArgumentParser(prog="python -m engine jobs", description="Background training runs.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("start", help="start a training run in the background; prints its run id")
    ps.add_argument("--config", metavar="FILE.json", help="start from the fields of this JSON file")
    ps.add_argument("--run-id", help="name of the run directory (default: <date>-<time>-<family>-<res>px)")
    C.add_arguments(ps, C.TrainConfig, skip=("run_dir",))
    sub.add_parser("list", help="every run under the runs root, newest first")
    pe = sub.add_parser("estimate", help="rough duration of a run on this machine, from earlier runs' img/s")
    C.add_arguments(pe, C.TrainConfig, skip=("run_dir",))
    pr = sub.add_parser("rename", help="set a run's display name (the run id stays; '' removes the name)")
    pr.add_argument("run_id")
    pr.add_argument("name")
    pd_ = sub.add_parser("delete", help="delete a run directory and everything in it (not while it runs)")
    pd_.add_argument("run_id")
    pd_.add_argument("--yes", action="store_true", help="confirm: without it nothing is deleted")
    for name, help_ in (("status", "state of one run"), ("stop", "stop a run (checkpoint first)"),
                        ("resume", "continue a run from its latest checkpoint"),
                        ("tail", "last lines of a run's log")):
        q = sub.add_parser(name, help=help_)
        q.add_argument("run_id")
        if name == "stop":
            q.add_argument("--grace", type=float, default=STOP_GRACE_S, help="seconds before SIGKILL")
        if name == "resume":
            q.add_argument("--kimg", type=float, help="new training length (extends a finished run)")
    a = p.parse_args(argv)
    if a.cmd == "start":
        base = C.load_fields(C.TrainConfig, a.config) if a.config else {}  # over the preset
        print(start(C.from_args(C.TrainConfig, a, base), run_id=a.run_id))
    elif a.cmd == "list":
        for s in list_runs():
            print(f"{s.run_id:<40} {s.state:<9} {progress(s).text()}  {s.name or s.message}".rstrip())
    elif a.cmd == "estimate":
        print(estimate_text(C.from_args(C.TrainConfig, a)))
    elif a.cmd == "rename":
        s = rename(a.run_id, a.name)
        print(f"{s.run_id}: name {s.name!r}" if s.name else f"{s.run_id}: no name")
    elif a.cmd == "delete":
        s = status(a.run_id)
        if not a.yes:
            print(f"would delete run {s.title} ({s.state}, {progress(s).text()}) and everything in "
                  f"{s.run_dir}; add --yes to delete it", file=sys.stderr)
            return 1
        try:
            delete(a.run_id)
        except (RuntimeError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"deleted {a.run_id}")
    elif a.cmd == "tail":
        print(log_tail(runs.run_dir(a.run_id) / runs.LOG))
    else:
        if a.cmd == "stop":
            s = stop(a.run_id, grace_s=a.grace)
        elif a.cmd == "resume":
            resume(a.run_id, kimg=a.kimg)
            s = status(a.run_id)
        else:
            s = status(a.run_id)
        print(f"{s.run_id}: {s.state} ({progress(s).text()}) {s.message}".rstrip())
        if s.log_tail:
            print(s.log_tail)
    return 0
