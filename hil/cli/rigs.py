"""`hil rigs check R`: validate a rig file and say what it found."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hil.rig import load_rig
from hil.schema import ConfigError


def check(args: argparse.Namespace, extra: list[str]) -> int:
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
