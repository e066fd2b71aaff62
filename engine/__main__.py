"""`python -m engine <command> ...`: the whole lab from the command line.

Each command lives in its own module and is imported only when called, so `--help` stays fast and a
command never pays for another's imports (torch, timm ...).
"""
from __future__ import annotations

import importlib
import sys

from engine.config import ConfigError

# command -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("engine.data.prepare", "prepare a data set (histosynth demo or a folder) into a cache"),
    "train": ("engine.train.loop", "train a generator (stylegan2 ...) into a run directory"),
    "train-classifier": ("engine.metrics.classifier", "train the in-domain classifier"),
    "jobs": ("engine.jobs", "start / stop / resume / list background training runs"),
    "sample": ("engine.sampling.cli", "per-class samples (PNGs + manifest.csv + grid) or style mixes from a run"),
    "evaluate": ("engine.metrics.evaluate", "FID/KID/PR/IS, LPIPS, downstream, memorisation, colour of a run"),
    "compare": ("engine.compare", "several runs side by side on comparable reports, with their training cost"),
    "review": ("engine.review.cli", "blinded clinician review studies: create, invite, export, stats, close"),
    "access": ("engine.access", "the lab's access key for an app on an outside address: reset, status"),
}


def usage() -> str:
    lines = ["usage: python -m engine <command> [options]", "", "commands:"]
    for name, (_, help_) in COMMANDS.items():
        lines.append(f"  {name:<18} {help_}")
    lines.append("")
    lines.append("`python -m engine <command> --help` lists a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
