"""`hil run --rig R [pytest args]`: the HIL suites against a rig, through pytest."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace, extra: list[str]) -> int:
    import pytest

    pytest_args = ["--rig", str(args.rig)]
    # Run the suites unless a test path was named (an option's value, like -k's, is not one).
    if not any(Path(a.split("::")[0]).exists() for a in extra if not a.startswith("-")):
        pytest_args.append("test_suites")
    return int(pytest.main(pytest_args + extra))
