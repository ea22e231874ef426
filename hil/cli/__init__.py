"""The `hil` command: one module per verb in this package, so every verb is found in one place.

Small verbs are a function each (`run`, `crypto`, `rigs`); verbs with options of their own
(sim, image, discover, doctor, ota) get the words after the verb and parse them themselves.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from hil.cli.crypto import crypto as crypto_verb
from hil.cli.rigs import check as rigs_check
from hil.cli.run import run as run_suites
from hil.rig import DEFAULT_RIG


def _delegate(module: str) -> Callable[[argparse.Namespace, list[str]], int]:
    def run(args: argparse.Namespace, extra: list[str]) -> int:
        import importlib

        # The words after the verb, in their order (argparse moves unknown options to `extra`).
        return int(importlib.import_module(module).main(args.words))

    return run


def _version() -> str:
    try:
        return version("hil")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil", description="Hardware-in-the-loop tests for cellular IoT devices."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    # Its own -h: `hil run --help` shows these options and then pytest's, which it passes on.
    run = verbs.add_parser(
        "run",
        help="run the HIL suites (pytest) against a rig",
        add_help=False,
        usage="hil run [-h] [--rig RIG ...] [pytest options] [test paths]",
        description="Run the HIL suites (test_suites/ beside the rig's repository, else beside "
        "the installed hil) against a rig, or the tests named.",
    )
    run.add_argument("-h", "--help", action="store_true", help="show this, then pytest's help")
    run.add_argument(
        "--rig",
        type=Path,
        action="append",
        help=f"a rig file or a folder of them; several times for a pool (default {DEFAULT_RIG})",
    )
    run.set_defaults(func=run_suites, run_help=run.format_help)

    crypto = verbs.add_parser("crypto", help="encrypt or decrypt an echo message")
    crypto.add_argument("action", choices=("encrypt", "decrypt"))
    crypto.add_argument("text")
    crypto.add_argument("--rig", type=Path, help="take key and IV from this rig's profile")
    crypto.set_defaults(func=crypto_verb)

    rigs = verbs.add_parser("rigs", help="rig files")
    rig_verbs = rigs.add_subparsers(dest="rig_verb", required=True)
    check = rig_verbs.add_parser(
        "check",
        help="validate rig files and say what each holds",
        description="Validate each rig file and say what it holds: its parts, whether its "
        "ports are present now, its broker password variable set. Exit status 1 when any "
        "file lists something to fix.",
    )
    check.add_argument(
        "paths",
        nargs="+",
        metavar="R",
        help="a rig file, or a folder of them (a pool: every *.toml in it), as --rig takes",
    )
    check.set_defaults(func=rigs_check)

    for verb, module, text in (
        ("sim", "hil.cli.sim", "run the device twin standalone"),
        ("image", "hil.cli.image", "inspect or make ESP32 app images"),
        ("discover", "hil.cli.discover", "list serial devices and their rig-file tables"),
        ("doctor", "hil.cli.doctor", "check a rig part by part: broker, console, relay, device"),
        ("ota", "hil.cli.ota", "push a firmware image to a rig's device over MQTT"),
        ("power", "hil.cli.power", "switch a rig's modem or board power: on, off, cycle"),
        ("reset", "hil.cli.reset", "restart the device through the rig's [reset] or board power"),
        ("report", "hil.cli.report", "write one self-contained HTML report of one or more runs"),
        ("accept", "hil.cli.accept", "pre-release acceptance: N runs, a signed record; verify one"),
        ("lab", "hil.cli.lab", "labgrid places: list them"),
    ):
        sub = verbs.add_parser(verb, help=text, add_help=False)
        sub.add_argument("rest", nargs=argparse.REMAINDER)
        sub.set_defaults(func=_delegate(module))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.words = argv[argv.index(args.verb) + 1 :]
    if extra and args.verb in ("crypto", "rigs"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args, extra)


if __name__ == "__main__":
    sys.exit(main())
