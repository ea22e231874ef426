"""`hil report [RUN...] [-o FILE] [--history FILE]`: one self-contained HTML file of runs.

Without RUN it reports the newest finished run under ./hil-artifacts/, the one a person just
ran; several RUNs make one file with a section each. The trends come from the history file
`hil run` adds runs to, found beside the runs unless --history names one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil.report.html import RUN_FILE, ReportError, write_report

ARTIFACTS = Path("hil-artifacts")
HISTORY = "history.sqlite"
REPORT = "report.html"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs",
        nargs="*",
        type=Path,
        metavar="RUN",
        help=f"run folders (with {RUN_FILE}); default: the newest under ./{ARTIFACTS}/",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help=f"the HTML file to write; default RUN/{REPORT} for one run, ./{REPORT} for several",
    )
    parser.add_argument(
        "--history",
        type=Path,
        help=f"history file for trends; default {HISTORY} in or beside the first RUN, if there",
    )
    return parser


def newest_run(base: Path = ARTIFACTS) -> Path:
    """The newest run folder under `base` that has finished (has run.json).

    Run folders are named by their start time, so the newest sorts last.
    """
    runs = sorted(p for p in base.iterdir() if (p / RUN_FILE).is_file()) if base.is_dir() else []
    if not runs:
        raise ReportError(
            f"no finished run under {base.resolve()}/ (a folder with {RUN_FILE}); "
            "name the run folder: hil report PATH/TO/RUN"
        )
    return runs[-1]


def default_history(run: Path) -> Path | None:
    """The history `hil run` keeps for `run`: in the run folder (when it was --hil-artifacts)
    or beside it (the default artifacts base)."""
    for candidate in (run / HISTORY, run.parent / HISTORY):
        if candidate.is_file():
            return candidate
    return None


def main(argv: list[str]) -> int:
    """Run `hil report <argv>`: 0 when written, 1 with one line on stderr when not, 2 on usage."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage error or --help: argparse has printed it
        return int(exc.code or 0)
    try:
        runs = args.runs or [newest_run()]
        out = args.output or (runs[0] / REPORT if len(runs) == 1 else Path(REPORT))
        history = args.history or default_history(runs[0])
        written = write_report(runs, out, history=history)
    except ReportError as exc:
        print(f"hil report: {exc}", file=sys.stderr)
        return 1
    trends = f" with trends from {history}" if history else ""
    print(f"hil report: wrote {written}{trends}")
    return 0
