"""pytest side of reporting: per-test results, run.json, history, metrics and the report.

Only a run that uses a rig and collected at least one `hil` test is recorded. Each test that
runs gets `result.json` in its folder, whatever its outcome; run.json and the JUnit testsuite
properties follow at the end of the session, also when it is interrupted or the rig never
came up. Then the run goes into the history file, the OpenMetrics file and the HTML report:
a failure there is one line in the summary and never changes the run's exit status.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _pytest.junitxml import xml_key

from hil.firmware import FIRMWARE_KEY
from hil.plugin import DEVICE_KEY, RIG_KEY, STORE_KEY
from hil.report.record import RunRecord, build_result, junit_properties

HISTORY_FILE = "history.sqlite"
REPORT_FILE = "report.html"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    group.addoption(
        "--history",
        metavar="FILE",
        help=f"the history file this run is added to (default: {HISTORY_FILE} beside the run "
        f"folders, or inside --hil-artifacts)",
    )
    group.addoption(
        "--metrics",
        metavar="FILE",
        help="also write the run's measurements and verdicts to FILE as OpenMetrics text",
    )
    group.addoption(
        "--no-hil-report",
        action="store_true",
        help=f"do not write the run's HTML report ({REPORT_FILE} in the run folder)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(RunReporter(config), "hil-run-reporter")


class RunReporter:
    """Records one run: result.json per test, run.json and the reports at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = time.time()
        self.record: RunRecord | None = None
        self._reports: dict[str, list[pytest.TestReport]] = {}
        self._lines: list[tuple[str, bool]] = []  # the summary's closing lines, and if failures

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = time.time()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        rig = self.config.stash.get(RIG_KEY, None)
        hil_tests = [item for item in session.items if item.get_closest_marker("hil")]
        if rig is None or not hil_tests or self.config.option.collectonly:
            return
        root = self.config.stash[STORE_KEY].start()
        suites = Path(os.path.commonpath([item.path.parent for item in hil_tests]))
        self.record = RunRecord(root, rig, suites, self.started)

    @pytest.hookimpl(wrapper=True, trylast=True)  # inside the hil plugin's, which makes the folder
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        if self.record is None:
            return (yield)
        folder = self.config.stash[STORE_KEY].test_folder
        began, interrupted = time.time(), None
        try:
            return (yield)
        except BaseException as exc:  # Ctrl-C, SIGTERM, pytest.exit: no report says so
            interrupted = f"interrupted while running: {type(exc).__name__} {exc}".rstrip()
            raise
        finally:
            result = build_result(
                item.nodeid,
                item.path.stem,
                folder.name if folder else None,
                self._reports.pop(item.nodeid, []),
                (began, time.time()),
                interrupted,
            )
            self.record.add_test(result)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.record is not None:
            self._reports.setdefault(report.nodeid, []).append(report)

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes its file
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.record is None:
            return
        device = self.config.stash.get(DEVICE_KEY, None)
        online = device.online if device is not None else None
        firmware = self.config.stash.get(FIRMWARE_KEY, None)
        root = self.record.root
        try:
            run = self.record.finish(int(exitstatus), firmware, online)
        except OSError as exc:
            self._say(f"hil: run.json not written to {root}: {exc}", failed=True)
            return
        xml = self.config.stash.get(xml_key, None)
        if xml is not None:
            for name, value in junit_properties(run):
                xml.add_global_property(name, value)
        self._say(f"hil: artifacts {root}")
        self._publish(root)

    def _publish(self, root: Path) -> None:
        """History, metrics and the report, in that order; each failure is one line."""
        store = self.config.stash[STORE_KEY]
        history = self._path("--history") or (
            root / HISTORY_FILE if store.given else root.parent / HISTORY_FILE
        )
        if not self._attempt("history not updated", "", _add_to_history, root, history):
            history = None  # the report is still written, without trends
        metrics = self._path("--metrics")
        if metrics is not None:
            self._attempt("metrics not written", "metrics", _write_metrics, root, metrics)
        if not self.config.getoption("--no-hil-report"):
            self._attempt("report not written", "report", _write_report, root, history)

    def _attempt(self, failure: str, shown: str, action: Callable[..., Path], *args: Any) -> bool:
        try:
            path = action(*args)
        except Exception as exc:  # never hides the tests' results or changes the exit status
            self._say(f"hil: {failure}: {type(exc).__name__}: {exc}", failed=True)
            return False
        if shown:
            self._say(f"hil: {shown} {path}")
        return True

    def _path(self, option: str) -> Path | None:
        value = self.config.getoption(option)
        return self.config.invocation_params.dir / value if value else None

    def _say(self, line: str, failed: bool = False) -> None:
        self._lines.append((line, failed))

    @pytest.hookimpl(trylast=True)  # the run's closing lines, after the device's
    def pytest_terminal_summary(self, terminalreporter) -> None:
        for line, failed in self._lines:
            terminalreporter.write_line(line, yellow=failed)


# Imported when used: a unit-test session need not load them, and one that cannot be imported
# is a failure of that step alone.
def _add_to_history(root: Path, history: Path) -> Path:
    from hil.report.history import History

    with History(history) as store:
        store.add_run(root)
    return history


def _write_metrics(root: Path, out: Path) -> Path:
    from hil.report.metrics import write_openmetrics

    return write_openmetrics(root, out)


def _write_report(root: Path, history: Path | None) -> Path:
    from hil.report.html import write_report

    return write_report([root], out=root / REPORT_FILE, history=history)
