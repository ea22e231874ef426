"""`hil accept --rig R --key KEY [--firmware F] [--repeat N] [-- PYTEST ARGS]`: pre-release
acceptance, the suites run N times and one signed record of every verdict and measurement;
`hil accept verify RECORD --key PUB`: whether a record is authentic and the release passed.

Everything that can be refused (the key, its passphrase, the rig file, the output folder) is
checked before the first run, so a typo never costs a run of the suites. An interrupted
acceptance writes no record: a signed record always covers every run it promised.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hil.accept.record import (
    RECORD_NAME,
    SCHEMA,
    RigFacts,
    RunResult,
    Selection,
    build_record,
    read_run_json,
    summary,
    write_record,
)
from hil.accept.runner import ChildRunner, Interrupted, hil_run_command, now
from hil.accept.signing import (
    InvalidRecord,
    KeyFileError,
    key_id,
    load_private_key,
    load_public_key,
    sign,
    verify,
)
from hil.lifetime import interrupted
from hil.rig import load_rig
from hil.schema import ConfigError

PROG = "hil accept"
ARTIFACTS = Path("hil-artifacts")
# pytest's exit statuses for a run that never started testing.
USAGE_ERROR, NO_TESTS_COLLECTED = 4, 5


class Refusal(Exception):
    """Why the acceptance cannot start, or stopped without a record (exit status 2)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _accept_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} --rig RIG --key KEY [--firmware F] [--repeat N] [--out DIR] "
        "[-- PYTEST ARGS]\n       hil accept verify RECORD --key PUB",
        description="Run the HIL suites N times (each a `hil run` of its own) and write one "
        "acceptance record of every verdict and measurement, signed with the release "
        "manager's Ed25519 key. Arguments after `--` go to every run's pytest; the record "
        "then says it covers a selection, not the full suites.",
        epilog="Exit status: 0 accepted, 1 a run failed (the record is still written and "
        "signed), 2 usage or key errors, 128+N when signal N stopped it (no record).",
    )
    parser.add_argument("--rig", type=Path, required=True, help="rig file to accept on")
    parser.add_argument(
        "--key",
        type=Path,
        required=True,
        help="Ed25519 private key, PEM PKCS#8 (`openssl genpkey -algorithm ed25519`)",
    )
    parser.add_argument(
        "--key-pass-env",
        metavar="VAR",
        help="environment variable holding the key's passphrase, when it is encrypted",
    )
    parser.add_argument(
        "--firmware",
        type=Path,
        metavar="F",
        help="the image to accept, passed to every `hil run --firmware`; without it the "
        "record names the firmware only by the version the device reports",
    )
    parser.add_argument(
        "--repeat", type=_positive_int, default=1, metavar="N", help="runs (default 1)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="new or empty folder for the runs (run-1, run-2, ...) and the record "
        f"(default: {ARTIFACTS}/accept-<timestamp>/)",
    )
    return parser


def _verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} verify",
        description="Check an acceptance record's signature against a trusted public key and "
        "say what it accepted.",
        epilog="Exit status: 0 authentic and accepted, 1 changed, signed by another key, or "
        "authentic but not accepted, 2 usage errors or an unreadable file.",
    )
    parser.add_argument("record", type=Path, metavar="RECORD", help="the acceptance.json")
    parser.add_argument(
        "--key",
        type=Path,
        required=True,
        metavar="PUB",
        help="the signer's public key, PEM (`openssl pkey -in KEY -pubout`)",
    )
    return parser


def _out_folder(given: Path | None) -> Path:
    """A folder of this acceptance's own: runs from an earlier one must not be read as its."""
    if given is None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = ARTIFACTS / (f"accept-{stamp}-{n:03d}" if n else f"accept-{stamp}")
            try:
                path.mkdir()
                return path.resolve()
            except FileExistsError:
                continue
        raise Refusal(f"no free accept-{stamp} folder in {ARTIFACTS}; name one with --out")
    if given.exists() and (not given.is_dir() or any(given.iterdir())):
        raise Refusal(
            f"--out {given} is not an empty folder; runs of another acceptance must not be read "
            "as this one's: name a new folder"
        )
    try:
        given.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Refusal(f"cannot make --out {given}: {exc.strerror or exc}") from None
    return given.resolve()


def _rig_facts(path: Path) -> RigFacts:
    try:
        rig = load_rig(path)
    except ConfigError as exc:
        raise Refusal(str(exc)) from None
    sha256 = hashlib.sha256(rig.path.read_bytes()).hexdigest()
    return RigFacts(rig.name, sha256, "virtual" if rig.sim else "hardware")


def _hil_version() -> str:
    from hil.cli import _version

    return _version()


def _split(words: list[str]) -> tuple[list[str], list[str]]:
    if "--" in words:
        cut = words.index("--")
        return words[:cut], words[cut + 1 :]
    return words, []


def _tally(run: dict) -> str:
    counts = run.get("counts") or {}
    return ", ".join(f"{counts.get(name, 0)} {name}" for name in counts)


def accept(words: list[str]) -> int:
    own, pytest_args = _split(words)
    try:
        args = _accept_parser().parse_args(own)
    except SystemExit as exc:  # usage error or --help: argparse has printed it
        return int(exc.code or 0)
    try:
        key = load_private_key(args.key, args.key_pass_env)
        rig = _rig_facts(args.rig)
        if args.firmware is not None and not args.firmware.exists():
            raise Refusal(f"--firmware {args.firmware} does not exist; name the image to accept")
        out = _out_folder(args.out)
    except (KeyFileError, Refusal) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    selection = Selection(tuple(pytest_args), os.environ.get("PYTEST_ADDOPTS") or None)
    if not selection.full_suites:
        passed_on = shlex.join(pytest_args) or f"PYTEST_ADDOPTS={selection.pytest_addopts}"
        print(
            f"{PROG}: warning: pytest is given {passed_on}: this is not an acceptance of the "
            "full suites, and the record says so",
            file=sys.stderr,
        )
    if args.firmware is None:
        print(
            f"{PROG}: warning: no --firmware: the record names the firmware only by the version "
            "the device reports, not by the image's sha256",
            file=sys.stderr,
        )
    env = {name: value for name, value in os.environ.items() if name != args.key_pass_env}
    try:
        results = _run_all(args, out, pytest_args, env)
    except Interrupted as exc:
        left = f"no record written; the runs' artifacts are in {out}"
        return interrupted(exc.received, PROG, left)
    except Refusal as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    return _sign_and_write(results, key, rig, selection, args, out)


def _run_all(
    args: argparse.Namespace, out: Path, pytest_args: list[str], env: dict[str, str]
) -> list[RunResult]:
    firmware = args.firmware.resolve() if args.firmware is not None else None
    results = []
    with ChildRunner() as runner:
        for index in range(1, args.repeat + 1):
            folder = out / f"run-{index}"
            command = hil_run_command(args.rig.resolve(), folder, firmware, pytest_args)
            print(f"{PROG}: run {index} of {args.repeat}, artifacts in {folder}", flush=True)
            started = now()
            status = runner.run(command, env)
            result = RunResult(index, folder, status, started, now())
            run = read_run_json(folder)
            if run is None and status in (USAGE_ERROR, NO_TESTS_COLLECTED):
                raise Refusal(
                    f"run {index}: hil run stopped before testing (exit status {status}, see "
                    "its message above); no record written"
                )
            said = (
                f"{run.get('outcome')} ({_tally(run)})"
                if run is not None
                else f"left no run.json (exit status {status})"
            )
            print(f"{PROG}: run {index} of {args.repeat} {said}", flush=True)
            results.append(result)
    return results


def _sign_and_write(
    results: list[RunResult],
    key: Ed25519PrivateKey,
    rig: RigFacts,
    selection: Selection,
    args: argparse.Namespace,
    out: Path,
) -> int:
    record = build_record(
        results,
        rig=rig,
        selection=selection,
        repeat=args.repeat,
        firmware_given=args.firmware is not None,
        created=now(),
        hil_version=_hil_version(),
    )
    signed = sign(record, key)
    path = out / RECORD_NAME
    write_record(path, signed)
    if signed["passed"]:
        print(f"{PROG}: accepted: {summary(signed)}; record {path}")
        return 0
    reasons = "; ".join(signed["reasons"])
    print(f"{PROG}: NOT accepted: {summary(signed)} ({reasons}); record {path}")
    return 1


def verify_record(words: list[str]) -> int:
    prog = f"{PROG} verify"
    try:
        args = _verify_parser().parse_args(words)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        key = load_public_key(args.key)
    except KeyFileError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        text = args.record.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        print(f"{prog}: cannot read {args.record}: {reason or exc}", file=sys.stderr)
        return 2
    try:
        record = json.loads(text)
    except ValueError as exc:
        print(
            f"{prog}: {args.record} is not valid JSON ({exc}): it was damaged, or it is not "
            "an acceptance record",
            file=sys.stderr,
        )
        return 1
    try:
        verify(record, key)
    except InvalidRecord as exc:
        print(f"{prog}: {args.record}: {exc}", file=sys.stderr)
        return 1
    if record.get("schema") != SCHEMA:
        print(
            f"{prog}: {args.record} is signed by key {key_id(key)} but has schema "
            f"{record.get('schema')!r}; this hil reads schema {SCHEMA}: upgrade hil",
            file=sys.stderr,
        )
        return 1
    if not record.get("passed"):
        reasons = "; ".join(record.get("reasons") or [])
        print(f"valid signature, NOT accepted: {summary(record)} ({reasons})")
        return 1
    print(f"valid: {summary(record)}")
    return 0


def main(words: list[str]) -> int:
    """Run `hil accept <words>` or, with `verify` first, `hil accept verify <words>`."""
    if words[:1] == ["verify"]:
        return verify_record(words[1:])
    return accept(words)
