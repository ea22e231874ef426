"""The `hil` command: run suites, check rigs, encrypt test messages, and the tools of later verbs.

Each verb is a small function; verbs that belong to another concept (sim, image, discover,
ota) hand their arguments to that concept's own `main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from hil.rig import DEFAULT_RIG, load_rig
from hil.schema import ConfigError


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    import pytest

    pytest_args = ["--rig", str(args.rig)]
    # Run the suites unless a test path was named (an option's value, like -k's, is not one).
    if not any(Path(a.split("::")[0]).exists() for a in extra if not a.startswith("-")):
        pytest_args.append("test_suites")
    return int(pytest.main(pytest_args + extra))


def _crypto(args: argparse.Namespace, extra: list[str]) -> int:
    from hil.protocol.crypto import DecryptError

    try:
        cipher = load_rig(args.rig).profile.crypto.cipher() if args.rig else _reference_cipher()
    except ConfigError as exc:
        print(f"hil crypto: {exc}", file=sys.stderr)
        return 2
    if args.action == "encrypt":
        print(cipher.encrypt(args.text))
        return 0
    try:
        print(cipher.decrypt(args.text).decode("utf-8", "backslashreplace"))
    except DecryptError as exc:
        print(f"hil crypto: cannot decrypt: {exc}", file=sys.stderr)
        return 1
    return 0


def _reference_cipher():
    from hil.profile import load_profile

    return load_profile().crypto.cipher()


def _rigs_check(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        rig = load_rig(args.path)
    except ConfigError as exc:
        print(f"hil rigs check: {exc}", file=sys.stderr)
        return 1
    print("\n".join(rig.summary()))
    problems = 0
    for group, config in (("console", rig.console), ("power", rig.power)):
        port = getattr(config.options, "port", None) if config else None
        if port and "{sim}" not in port:
            present = Path(port).exists()
            problems += not present
            print(f"  {group} port {port}: {'present' if present else 'NOT PRESENT now'}")
    variable = getattr(rig.broker.options, "password_env", None)
    if variable:
        is_set = variable in os.environ
        problems += not is_set
        print(f"  broker password variable {variable}: {'set' if is_set else 'NOT SET'}")
    print(f"rig file OK{f', {problems} thing(s) to fix before a run' if problems else ''}")
    return 0


def _delegate(module: str) -> Callable[[argparse.Namespace, list[str]], int]:
    def run(args: argparse.Namespace, extra: list[str]) -> int:
        import importlib

        # The words after the verb, in their order (argparse moves unknown options to `extra`).
        return int(importlib.import_module(module).main(args.words))

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil", description="Hardware-in-the-loop tests for cellular IoT devices."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="run the HIL suites (pytest) against a rig")
    run.add_argument("--rig", type=Path, default=DEFAULT_RIG, help=f"default {DEFAULT_RIG}")
    run.set_defaults(func=_run)

    crypto = verbs.add_parser("crypto", help="encrypt or decrypt an echo message")
    crypto.add_argument("action", choices=("encrypt", "decrypt"))
    crypto.add_argument("text")
    crypto.add_argument("--rig", type=Path, help="take key and IV from this rig's profile")
    crypto.set_defaults(func=_crypto)

    rigs = verbs.add_parser("rigs", help="rig files")
    rig_verbs = rigs.add_subparsers(dest="rig_verb", required=True)
    check = rig_verbs.add_parser("check", help="validate a rig file and say what it found")
    check.add_argument("path", type=Path)
    check.set_defaults(func=_rigs_check)

    for verb, module, text in (
        ("sim", "hil.sim.cli", "run the device twin standalone"),
        ("image", "hil.image_cli", "inspect or make ESP32 app images"),
        ("discover", "hil.discovery", "list serial devices and their rig-file tables"),
        ("doctor", "hil.doctor", "check a rig part by part: broker, console, relay, device"),
        ("ota", "hil.ota_cli", "push a firmware image to a rig's device over MQTT"),
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
    if extra and args.verb not in ("run", "sim", "image", "discover", "doctor", "ota"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args, extra)


if __name__ == "__main__":
    sys.exit(main())
