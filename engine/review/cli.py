"""`python -m engine review ...`: blinded clinician review studies from the command line.

    review create --runs RUN[@STEP],... [--classes ...] [--reviewers N] ...   build a study (tokens shown once)
    review list [--all]                                 studies (archived ones with --all)
    review invite STUDY --reviewers N [--expires-days D]   more reviewer tokens (shown once)
    review progress STUDY                               answers per reviewer
    review export STUDY --out answers.csv               answers joined with the truth
    review stats STUDY [--json]                         accuracy with CI, realism, class agreement, kappas
    review close STUDY | review archive STUDY           no more answers | close, write answers.csv + stats.json

The store is SQLite under the runs root unless HISTOGEN_REVIEW_DB is a postgresql:// URL.
"""
from __future__ import annotations

import argparse
import json
import sys

from engine import config as C
from engine.config import ConfigError


def _parser() -> argparse.ArgumentParser:
    from engine.review.studies import StudyConfig

    p = argparse.ArgumentParser(prog="python -m engine review", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    c = sub.add_parser("create", help="build a study from runs and their held-out real patches")
    c.add_argument("--config", default=None, help="a JSON file of study settings (flags override it)")
    C.add_arguments(c, StudyConfig)
    ls = sub.add_parser("list", help="list studies")
    ls.add_argument("--all", action="store_true", help="include archived studies")
    inv = sub.add_parser("invite", help="make reviewer tokens (shown once)")
    inv.add_argument("study")
    inv.add_argument("--reviewers", type=int, required=True, help="how many tokens")
    inv.add_argument("--expires-days", dest="expires_days", type=float, default=0.0,
                     help="the links expire after this many days (default 0 = never)")
    for name, help_ in (("progress", "answers per reviewer"), ("close", "take no more answers"),
                        ("archive", "close, write answers.csv and stats.json into the study, hide it")):
        sub.add_parser(name, help=help_).add_argument("study")
    ex = sub.add_parser("export", help="answers joined with the truth, as CSV")
    ex.add_argument("study")
    ex.add_argument("--out", required=True, help="the CSV file to write")
    st = sub.add_parser("stats", help="statistics of a study")
    st.add_argument("study")
    st.add_argument("--json", action="store_true", help="print every statistic as JSON")
    return p


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _print_stats(s: dict) -> None:
    def row(name: str, d: dict) -> str:
        p = "-" if d["p_value"] is None else f"{d['p_value']:.3g}"
        return (f"  {name:<16} n={d['n']:<5} accuracy {_pct(d['accuracy'])} "
                f"[{_pct(d['ci_low'])}, {_pct(d['ci_high'])}]  p={p}  "
                f"sensitivity {_pct(d['sensitivity'])}  specificity {_pct(d['specificity'])}")

    print(f"{s['n_answers']} answers from {len(s['reviewers'])} reviewers")
    print("real vs synthetic (95% exact CI, binomial test against 50%):")
    for r in s["detection"]["per_reviewer"]:
        print(row(r["reviewer"], r))
    print(row("pooled", s["detection"]["pooled"]))
    re_ = s["realism"]
    print(f"realism: real mean {re_['real']['mean']}, synthetic mean {re_['synthetic']['mean']}, "
          f"Mann-Whitney U {re_['mann_whitney_u']} p={re_['p_value']}")
    ca = s["class_agreement"]
    print(f"class agreement: {_pct(ca['accuracy'])} of {ca['n']} (kappa vs truth {ca['kappa']})")
    for q, a in s["agreement"].items():
        print(f"inter-reviewer {q}: Fleiss' kappa {a['fleiss']['kappa']} on {a['fleiss']['n_patches']} patches; "
              + ", ".join(f"{p['a']}~{p['b']} {p['kappa']}" for p in a["pairs"]))
    for run, d in s["by_run"].items():
        print(row(run, d["detection"]))
    print("(`--json` prints every statistic, per class and per run)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from engine.review import studies as S
    from engine.review.store import ReviewError

    try:
        if args.cmd == "create":
            base = C.load_fields(S.StudyConfig, args.config) if args.config else None
            cfg = C.from_args(S.StudyConfig, args, base)
            res = S.create_study(cfg, progress=lambda m: print(m, file=sys.stderr))
            print(f"study {res['id']}: {res['patches']} patches ({res['synthetic']} synthetic, {res['real']} real) "
                  f"in {res['dir']}")
            for w in res["warnings"]:
                print(f"warning: {w}")
            _print_tokens(res["tokens"])
        elif args.cmd == "list":
            for s in S.list_studies(include_archived=args.all):
                print(f"{s['id']:<32} {s['state']:<9} {s['patches']:>5} patches {s['reviewers']:>3} reviewers "
                      f"{s['answers']:>6} answers  runs: {', '.join(s['runs'])}  ({s['created_at'][:19]})")
        elif args.cmd == "invite":
            _print_tokens(S.invite(args.study, args.reviewers, expires_days=args.expires_days))
        elif args.cmd == "progress":
            for r in S.progress(args.study):
                print(f"{r['label']:<16} {r['answered']:>5} / {r['total']:<5} {r['state']:<12} "
                      f"last answer {r['last_answered_at'] or '-'}")
        elif args.cmd == "export":
            text = S.export_csv(args.study, args.out)
            print(f"wrote {max(0, text.count(chr(10)) - 1)} answers to {args.out}")
        elif args.cmd == "stats":
            from engine.review.stats import summarize

            st = summarize(S.answers_frame(args.study), S.get_study(args.study)["spec"]["classes"])
            if args.json:
                print(json.dumps(st, indent=2, default=str))
            else:
                _print_stats(st)
        elif args.cmd == "close":
            print(f"study {S.close_study(args.study)['id']} is closed: it takes no more answers")
        elif args.cmd == "archive":
            s = S.archive_study(args.study)
            print(f"study {s['id']} is archived; answers.csv and stats.json are in {s['dir']}")
    except (ReviewError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _print_tokens(tokens: list[dict]) -> None:
    if not tokens:
        return
    print("reviewer tokens (shown once; only their hashes are stored). Each reviewer opens the app's review "
          "page with ?token=TOKEN:")
    for t in tokens:
        exp = f"  (expires {t['expires_at']})" if t["expires_at"] else ""
        print(f"  {t['label']:<16} {t['token']}{exp}")


if __name__ == "__main__":
    sys.exit(main())
