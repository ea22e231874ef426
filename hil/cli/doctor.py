"""`hil doctor --rig R`: each part of a rig checked in order, with what to fix."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hil.doctor import FAIL, format_table, run_checks
from hil.lifetime import interrupted, signals_as_interrupt
from hil.rig import DEFAULT_RIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hil doctor", description="Check a rig part by part before trusting it with a run."
    )
    parser.add_argument("--rig", type=Path, default=DEFAULT_RIG, help=f"default {DEFAULT_RIG}")
    parser.add_argument(
        "--power-consent",
        action="store_true",
        help="allow one power cut of the modem to check the relay",
    )
    args = parser.parse_args(argv)
    # SIGTERM mid power cut unwinds like Ctrl-C: the relay back on, the twin and broker
    # stopped, the temporary folder removed.
    with signals_as_interrupt() as received:
        try:
            with tempfile.TemporaryDirectory(prefix="hil-doctor-") as workdir:
                checks = run_checks(args.rig, Path(workdir), args.power_consent)
        except KeyboardInterrupt:
            return interrupted(received, "hil doctor", "the rig was given back")
    print(format_table(checks))
    failed = sum(c.result == FAIL for c in checks)
    print(f"{failed} check(s) failed" if failed else "rig OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
