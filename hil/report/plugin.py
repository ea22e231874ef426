"""pytest side of reporting: per-test results, run.json, history, metrics and the report.

Only a run that uses a rig and collected at least one `hil` test is recorded. Each test that
runs gets `result.json` in its folder, whatever its outcome; run.json and the JUnit testsuite
properties follow at the end of the session, also when it is interrupted or the rig never
came up. Then the run goes into the history file, the OpenMetrics file and the HTML report:
a failure there is one line in the summary and never changes the run's exit status.

A run on a pool of rigs records each rig's part as its own run in `<run>/<rig name>/` (its
own run.json, its own entry in the history and, with --metrics, its own file); one report
over all of them is written in the run folder, by the xdist controller when there are workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from _pytest.junitxml import xml_key

from hil.firmware import FIRMWARE_KEY
from hil.plugin import DEVICE_KEY, POOL_KEY, RIG_KEY, STORE_KEY, plain_nodeid, rig_run
from hil.pool import RigPool, RigRun, folder_name
from hil.report.record import RUN_FILE, RunRecord, build_result, junit_properties

HISTORY_FILE = "history.sqlite"
REPORT_FILE = "report.html"
WORKER_RUNS = "hil_runs"  # the rig run folders a worker wrote (workeroutput)


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
    """Records one run: result.json per test, run.json and the reports at the end.

    One RunRecord per rig the run used; without a pool, the one rig's is the run folder's.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = time.time()
        self.suites: Path | None = None  # set when the run is recorded
        self.records: dict[RigRun, RunRecord] = {}
        self.worker_runs: list[Path] = []  # on the xdist controller: what the workers wrote
        self._reports: dict[str, list[pytest.TestReport]] = {}
        self._lines: list[tuple[str, bool]] = []  # the summary's closing lines, and if failures

    @property
    def pool(self) -> RigPool | None:
        return self.config.stash.get(POOL_KEY, None)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = time.time()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        rig = self.config.stash.get(RIG_KEY, None)
        hil_tests = [item for item in session.items if item.get_closest_marker("hil")]
        if rig is None or not hil_tests or self.config.option.collectonly:
            return
        root = self.config.stash[STORE_KEY].start()
        self.suites = Path(os.path.commonpath([item.path.parent for item in hil_tests]))
        pool = self.pool
        if not pool.nested:  # recorded from the start, so even a run cut short has run.json
            run = pool.run(pool.rigs[0].name)
            self.records[run] = RunRecord(root, run.rig, self.suites, self.started)

    def _record(self, item: pytest.Item) -> RunRecord | None:
        run = rig_run(item)
        if self.suites is None or run is None:
            return None
        if run not in self.records:  # a pool's rig: its part starts with its first test
            self.records[run] = RunRecord(run.store.root, run.rig, self.suites, time.time())
        return self.records[run]

    @pytest.hookimpl(wrapper=True, trylast=True)  # inside the hil plugin's, which makes the folder
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        record = self._record(item)
        if record is None:
            return (yield)
        run = rig_run(item)
        folder = run.store.test_folder
        began, interrupted = time.time(), None
        try:
            return (yield)
        except BaseException as exc:  # Ctrl-C, SIGTERM, pytest.exit: no report says so
            interrupted = f"interrupted while running: {type(exc).__name__} {exc}".rstrip()
            raise
        finally:
            result = build_result(
                plain_nodeid(item),
                item.path.stem,
                folder.name if folder else None,
                self._reports.pop(item.nodeid, []),
                (began, time.time()),
                interrupted,
            )
            record.add_test(result)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.records:
            self._reports.setdefault(report.nodeid, []).append(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """xdist controller: the rig runs a worker finished, for the merged report."""
        output = getattr(node, "workeroutput", None) or {}
        self.worker_runs.extend(Path(path) for path in output.get(WORKER_RUNS, []))

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes its file
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.records and not self.worker_runs:
            self._drop_unused_folder()
            return
        nested = self.pool.nested
        store = self.config.stash[STORE_KEY]
        history = self._path("--history") or (
            store.root / HISTORY_FILE if store.given else store.root.parent / HISTORY_FILE
        )
        own = [
            (record.root, run.name, doc)
            for run, record in self.records.items()
            if (doc := self._finish(run, record, int(exitstatus), nested)) is not None
        ]
        output = getattr(self.config, "workeroutput", None)
        if output is not None:  # an xdist worker: its controller reports
            for root, name, _ in own:
                self._add(root, history, name)
            output[WORKER_RUNS] = [str(root) for root, _, _ in own]
            return
        runs = [(root, doc) for root, _, doc in own]
        runs += [(root, doc) for root in self.worker_runs if (doc := _read_run(root))]
        if not runs:
            return
        if nested:
            for root, doc in runs:
                self._say(_rig_line(root, doc), failed=doc["outcome"] != "passed")
        self._say(f"hil: artifacts {store.root if nested else runs[0][0]}")
        added = all([self._add(root, history, name if nested else None) for root, name, _ in own])
        if not own and not history.is_file():
            added = False  # the workers' runs went into no history: a report without trends
        self._junit(doc for _, doc in runs)
        if not self.config.getoption("--no-hil-report"):
            roots = [root for root, _ in sorted(runs, key=lambda run: run[1]["started"])]
            out = (store.root if nested else roots[0]) / REPORT_FILE
            shown = history if added else None
            self._attempt("report not written", "report", _write_report, roots, out, shown)

    def _junit(self, docs: Iterable[dict[str, Any]]) -> None:
        """The run's facts as JUnit testsuite properties; a pool's rigs by name only (each
        test has its rig as its `hil.rig` property)."""
        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        docs = list(docs)
        if len(docs) == 1:
            for name, value in junit_properties(docs[0]):
                xml.add_global_property(name, value)
        else:
            xml.add_global_property("hil.rigs", ",".join(doc["rig"]["name"] for doc in docs))

    def _finish(
        self, run: RigRun, record: RunRecord, exitstatus: int, nested: bool
    ) -> dict[str, Any] | None:
        """Write the rig's run.json; None (and a line saying why) if it cannot be written."""
        if nested:  # a rig's outcome is its own tests'; only a cut-short run stands for all
            device, firmware = run.device, run.firmware
            if exitstatus == pytest.ExitCode.TESTS_FAILED:
                exitstatus = pytest.ExitCode.OK
        else:
            device = self.config.stash.get(DEVICE_KEY, None)
            firmware = self.config.stash.get(FIRMWARE_KEY, None)
        online = device.online if device is not None else None
        try:
            return record.finish(exitstatus, firmware, online)
        except OSError as exc:
            self._say(f"hil: run.json not written to {record.root}: {exc}", failed=True)
            return None

    def _add(self, root: Path, history: Path, rig: str | None) -> bool:
        """The rig's run into the history and, with --metrics, its metrics file; whether the
        history has it."""
        added = self._attempt("history not updated", "", _add_to_history, root, history)
        metrics = self._path("--metrics")
        if metrics is not None:
            if rig is not None:  # one file per rig, as a textfile collector reads a folder
                metrics = metrics.with_name(f"{metrics.stem}-{folder_name(rig)}{metrics.suffix}")
            self._attempt("metrics not written", "metrics", _write_metrics, root, metrics)
        return added

    def _drop_unused_folder(self) -> None:
        """The xdist controller makes the run folder for its workers; none used it."""
        store = self.config.stash[STORE_KEY]
        if (
            not store.given
            and self.pool is not None
            and self.config.pluginmanager.has_plugin("dsession")
        ):
            with contextlib.suppress(OSError):
                store.root.rmdir()  # only if it is empty

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


def _read_run(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _rig_line(root: Path, doc: dict[str, Any]) -> str:
    """One rig's part of a pool's run: its counts, its device and its folder."""
    counts = ", ".join(f"{n} {outcome}" for outcome, n in doc["counts"].items() if n)
    device = doc["device"]
    if device["online_version"]:
        up = (
            f"device came up as {device['online_version']} by {device['means']} in "
            f"{device['bringup_s']:.1f} s"
        )
    else:
        up = "device not brought online"
    return f"hil: rig {doc['rig']['name']}: {counts or 'no tests'}; {up}; {root}"


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


def _write_report(roots: list[Path], out: Path, history: Path | None) -> Path:
    from hil.report.html import write_report

    return write_report(roots, out=out, history=history)
