"""`hil run --rig R [pytest args]`: the HIL suites against a rig, through pytest.

A slip in the arguments must not pass green without touching the rig: the suites are added
unless pytest itself takes an argument as a test path, and a run that selects no `hil` test
is an error (with -n, said by the xdist controller from what its workers collected).
`--rig` may be given several times or name a folder: a pool of rigs, which `-n N` drives at
once (see the hil plugin).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

import hil
from hil.plugin import WORKER_SELECTION
from hil.rig import DEFAULT_RIG

SUITES = "test_suites"
REWRITE_WARNING = "Module already imported so cannot be rewritten"


def run(args: argparse.Namespace, extra: list[str]) -> int:
    """pytest with the rig, the suites unless tests are named, and the hil-test check."""
    if args.help:
        print(args.run_help(), end="")
        print("\nEvery other argument goes to pytest, whose options follow.\n", flush=True)
        return int(pytest.main(["--help"], plugins=[HelpProg()]))
    rigs = args.rig or [DEFAULT_RIG]
    pytest_args = [word for rig in rigs for word in ("--rig", str(rig))]
    if not names_test_paths(pytest_args + extra):
        try:
            pytest_args.append(str(find_suites(rigs[0])))
        except LookupError as exc:
            print(f"hil run: {exc}", file=sys.stderr)
            return int(pytest.ExitCode.USAGE_ERROR)
    # `hil` itself is imported by now, so pytest cannot rewrite the plugin's asserts and would
    # say so on every run; the plugin has none that need it. labgrid's own pytest plugin (with
    # the labgrid extra) changes logging and breaks repeated in-process runs; hil talks to
    # labgrid through its client library instead.
    quiet = ["-W", f"ignore:{REWRITE_WARNING}:pytest.PytestAssertRewriteWarning"]
    return int(
        pytest.main(pytest_args + extra + quiet + ["-p", "no:labgrid"], plugins=[RequireHilTests()])
    )


def names_test_paths(args: list[str]) -> bool:
    """Whether pytest takes any of `args` as a test path.

    pytest's own parse of the command line (as pytest.main does it: PYTEST_ADDOPTS, addopts,
    plugin and conftest options) decides, so an option's value is never a path and a missing
    path still is one. The config is only parsed, never configured, and then dropped.
    """
    from _pytest.config import _prepareconfig

    try:
        config = _prepareconfig(list(args))
    except Exception:  # a bad argument or conftest: add nothing, pytest.main reports it
        return True
    try:
        return config.args_source is pytest.Config.ArgsSource.ARGS
    finally:
        config._ensure_unconfigure()


def find_suites(rig: Path) -> Path:
    """The suites for `rig` (a file or a folder of them): its repository's `test_suites/`,
    else the installed hil's.

    So `hil run` works from any folder, not only the repository root.
    """
    start = rig.resolve() if rig.is_dir() else rig.resolve().parent
    for folder in (start, *start.parents):
        if (folder / SUITES).is_dir():
            return folder / SUITES
    installed = Path(hil.__file__).resolve().parents[1] / SUITES
    if installed.is_dir():
        return installed
    raise LookupError(
        f"no {SUITES}/ folder in {start} or above it, nor at {installed} (beside the installed "
        f"hil package); name the tests to run: hil run --rig {rig} PATH/TO/{SUITES}"
    )


class HelpProg:
    """Names `hil run` in pytest's usage line, as that is how its options are given."""

    def pytest_addoption(self, parser: pytest.Parser) -> None:
        parser.prog = "hil run"


class RequireHilTests:
    """Fails a run that selected no `hil` test: a green `hil run` must have used the rig.

    Without xdist, before any test runs. An xdist controller collects nothing itself: its
    workers say what they selected, and a run none of whose workers had a `hil` test ends
    as a usage error.
    """

    def __init__(self) -> None:
        self.deselected = 0
        self.selections: list[dict] = []
        self.problem: str | None = None

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    @pytest.hookimpl(tryfirst=True)  # after a successful collection, even with --co
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        if session.config.pluginmanager.has_plugin("dsession"):
            return  # the workers collect; see pytest_sessionfinish
        items = session.items
        if session.testsfailed or any(item.get_closest_marker("hil") for item in items):
            return  # collection errors fail the run already
        raise pytest.UsageError(
            no_hil_tests([item.nodeid for item in items[:3]], len(items), self.deselected)
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error: object) -> None:
        selection = (getattr(node, "workeroutput", None) or {}).get(WORKER_SELECTION)
        if selection:
            self.selections.append(selection)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.selections or exitstatus == pytest.ExitCode.INTERRUPTED:
            return
        if any(s.get("hil") or s.get("errors") for s in self.selections):
            return
        first = max(self.selections, key=lambda s: s.get("count", 0))
        self.problem = no_hil_tests(
            first.get("items", []), first.get("count", 0), first.get("deselected", 0)
        )
        session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.problem:
            terminalreporter.write_line(f"ERROR: {self.problem}", red=True)


def no_hil_tests(shown: list[str], count: int, deselected: int) -> str:
    """Why a run would not touch the rig, and what to check."""
    if count:
        more = f" and {count - len(shown)} more" if count > len(shown) else ""
        tests = "1 test" if count == 1 else f"{count} tests"
        found = f"collected {tests} ({', '.join(shown)}{more}), none of them marked hil"
    elif deselected:
        found = f"no test selected ({deselected} deselected by -k/-m or the like)"
    else:
        found = "no test collected"
    return (
        f"hil run: {found}, so nothing would run against the rig. Name tests marked "
        f"@pytest.mark.hil (those in {SUITES}/, or leave test paths out to run them all) "
        "and check -k/-m."
    )
