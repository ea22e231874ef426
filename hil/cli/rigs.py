"""`hil rigs check R...`: validate rig files and say what each holds.

R is what `--rig` takes: a rig file, or a folder (a pool: every `*.toml` in it), as often as
needed; each file is checked and reported in turn. The exit status is 0 only when every rig is
fit to run: valid, its ports present (for a rig with `[labgrid]`: its place there and
exporting the ports the rig names) and its password variable set. Anything listed to fix, in
any file, exits 1, so a script or CI step can rely on the check.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hil.lab import resource_names
from hil.pool import folder_name, rig_files
from hil.rig import SIM_DIR, Rig, load_rig
from hil.schema import ConfigError


def check(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        files = rig_files(args.paths, Path.cwd())
    except ConfigError as exc:
        _errors(exc)
        return 1
    names: dict[str, Path] = {}
    failed = 0
    for number, path in enumerate(files):
        if number:
            print()
        failed += _check_file(path, names)
    if len(files) > 1:
        verdict = f"{failed} of them to fix (exit status 1)" if failed else "all OK"
        print(f"\n{len(files)} rig files checked: {verdict}")
    return 1 if failed else 0


def _check_file(path: Path, names: dict[str, Path]) -> bool:
    """Check and report one rig file; True when it needs fixing."""
    try:
        rig = load_rig(path)
    except ConfigError as exc:
        _errors(exc)
        return True
    print("\n".join(rig.summary()))
    problems = _ports(rig) + _place(rig) + _password(rig)
    other = names.setdefault(folder_name(rig.name), rig.path)
    if other != rig.path:  # as a pool given to --rig refuses it
        print(f"  name {rig.name!r}: {other} has it too; each rig of a pool needs its own")
        problems += 1
    if problems:
        print(f"rig file OK, but {problems} thing(s) to fix before a run (exit status 1)")
        return True
    print("rig file OK")
    return False


def _errors(exc: ConfigError) -> None:
    for line in str(exc).splitlines():
        print(f"hil rigs check: {line}", file=sys.stderr)
    if len(exc.errors) > 1:
        print(
            f"hil rigs check: {len(exc.errors)} problems; fix them and check again",
            file=sys.stderr,
        )


def _ports(rig: Rig) -> int:
    """Print each port the rig names and whether it is there now; the number missing."""
    missing = 0
    for group, config in (
        ("console", rig.console),
        ("power", rig.power),
        ("board_power", rig.board_power),
    ):
        options = config.options if config else None
        port = getattr(options, "port", None)
        if port and SIM_DIR not in port and not resource_names(port):
            present = Path(port).exists()
            missing += not present
            print(f"  {group} port {port}: {'present' if present else 'NOT PRESENT now'}")
        elif getattr(options, "match", None):
            found = _match_present(options.match)
            missing += found is not True
            state = "present" if found is True else found or "NOT PRESENT now"
            print(f"  {group} port {options.describe()}: {state}")
    return missing


def _match_present(match: dict[str, str]) -> bool | str:
    """True when exactly one port answers to the udev `match`; else what was found instead."""
    try:
        from hil.discovery import UdevMatch, find_ports

        found = find_ports(UdevMatch(**match))
    except Exception as exc:  # no udev here (a container): say so rather than guess
        return f"cannot look it up here ({exc})"
    if len(found) > 1:
        return f"{len(found)} ports answer; add serial or interface to match"
    return bool(found)


def _place(rig: Rig) -> int:
    """Print what the coordinator says of the rig's place and its ports; the problems seen."""
    if rig.labgrid is None:
        return 0
    from hil.lab import LabError
    from hil.lab.check import check_place
    from hil.lab.place import wanted_classes

    try:
        names = wanted_classes(rig)
    except LabError as exc:
        print(f"  place {rig.labgrid.place}: {exc}")
        return 1
    lines, problems = check_place(rig.labgrid, names)
    print("\n".join(lines))
    return problems


def _password(rig: Rig) -> int:
    variable = getattr(rig.broker.options, "password_env", None)
    if not variable:
        return 0
    is_set = variable in os.environ
    print(f"  broker password variable {variable}: {'set' if is_set else 'NOT SET'}")
    return not is_set
