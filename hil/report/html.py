"""The HTML report of one or more runs: one self-contained file, read from the top.

What a person opening it after a nightly failure needs first comes first: regressions
against the history, then per run its facts, each failed test's message with the console and
MQTT lines before it ended (the crash, the `Network lost`, the refusal highlighted), the
summary by suite, the measurements against their limits as plots, and every test with its
console and MQTT traffic on one time axis. With a history store the report ends with trends
over runs, by firmware version and rig, and each test's flake rate.

The file needs nothing else to open: styles, plots (SVG) and the few lines of script are
inline. Everything taken from the artifacts is escaped, as console lines are device output.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from html import escape
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from hil.report import plots, timeline
from hil.report.history import Flake, History, HistoryError, Regression, Trend
from hil.report.page import page

RUN_FILE = "run.json"
RUN_SCHEMA = 1
OUTCOMES = ("failed", "error", "passed", "skipped")
LINES_BEFORE_END = 20
EARLIER_BAD_LINES = 10


class ReportError(Exception):
    """A run folder or history file the report cannot use; the message names it and the fix."""


@dataclass
class TestResult:
    """One test of a run: its run.json entry and what its folder holds."""

    nodeid: str
    suite: str
    outcome: str
    duration_s: float
    started: datetime | None
    ended: datetime | None
    message: str | None
    folder: Path | None
    longrepr: str | None = None
    measurements: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # artifacts that could not be read

    @property
    def name(self) -> str:
        return self.nodeid.split("::", 1)[-1]


@dataclass
class Run:
    """A run folder, read: run.json's facts and its tests."""

    path: Path
    facts: dict
    zone: tzinfo
    started: datetime
    ended: datetime | None
    tests: list[TestResult]

    @property
    def title(self) -> str:
        return self.path.name


@dataclass
class HistoryView:
    """What the history says about the runs in the report."""

    path: Path
    trends: list[Trend]
    flakes: list[Flake]
    regressions: dict[Path, list[Regression]]
    not_added: list[Path]  # runs of the report the history does not hold


def write_report(run_dirs: list[Path], out: Path, history: Path | None = None) -> Path:
    """Write the report of `run_dirs` (oldest first) to `out`, with trends from `history`.

    Every input is read before anything is written, and the file is replaced in one step,
    so a bad run folder leaves no half-written report. ReportError names what was wrong.
    """
    if not run_dirs:
        raise ReportError("no run folder given; name one (a folder with run.json)")
    runs = [load_run(path) for path in run_dirs]
    view = read_history(history, [r.path for r in runs]) if history is not None else None
    html = render(runs, view)
    out = Path(out)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(html, encoding="utf-8")
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return out


# --- reading ---


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path} cannot be read as JSON ({exc}): {what}") from None


def _time(text: object, zone: tzinfo | None = None) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone) if zone else moment.astimezone()
    return moment


def load_run(path: Path) -> Run:
    """Read a run folder: run.json (required) and each test's result and measurements."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder; name a run folder (one with {RUN_FILE})")
    hint = f"is {path} a run folder written by `hil run` (which writes it when the run ends)?"
    facts = _read_json(path / RUN_FILE, hint)
    if not isinstance(facts, dict) or facts.get("schema") != RUN_SCHEMA:
        schema = facts.get("schema") if isinstance(facts, dict) else None
        raise ReportError(
            f"{path / RUN_FILE} has schema {schema!r}; this hil reads schema {RUN_SCHEMA} "
            "(use the hil that wrote the run)"
        )
    started = _time(facts.get("started"))
    if started is None or not isinstance(facts.get("tests"), list):
        raise ReportError(f"{path / RUN_FILE} lacks a valid 'started' time or 'tests' list; {hint}")
    zone = started.tzinfo
    tests = [_load_test(path, entry, zone) for entry in facts["tests"] if isinstance(entry, dict)]
    return Run(path, facts, zone, started, _time(facts.get("ended"), zone), tests)


def _load_test(root: Path, entry: dict, zone: tzinfo) -> TestResult:
    folder_name = entry.get("folder")
    folder = root / folder_name if isinstance(folder_name, str) and folder_name else None
    test = TestResult(
        nodeid=str(entry.get("nodeid", "?")),
        suite=str(entry.get("suite") or "?"),
        outcome=str(entry.get("outcome", "error")),
        duration_s=float(entry.get("duration_s") or 0.0),
        started=_time(entry.get("started"), zone),
        ended=_time(entry.get("ended"), zone),
        message=entry.get("message") if isinstance(entry.get("message"), str) else None,
        folder=folder if folder is not None and folder.is_dir() else None,
    )
    if test.folder is None:
        return test
    for name, keep in (("result.json", _keep_result), ("measurements.json", _keep_measurements)):
        file = test.folder / name
        if not file.is_file():
            continue
        try:
            keep(test, json.loads(file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
            test.problems.append(f"{name} could not be read: {exc}")
    return test


def _keep_result(test: TestResult, result: dict) -> None:
    longrepr = result.get("longrepr")
    test.longrepr = longrepr if isinstance(longrepr, str) else None


def _keep_measurements(test: TestResult, items: list) -> None:
    for item in items:
        if not isinstance(item.get("value"), int | float):
            raise TypeError(f"measurement {item.get('name')!r} has no numeric value")
    test.measurements = items


def read_history(path: Path, run_dirs: list[Path]) -> HistoryView:
    """Trends, flake rates and the regressions of `run_dirs` from a history file.

    The file is only read: a run it does not hold gets no regression verdict, and is named.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(
            f"history file {path} does not exist; give --history the file `hil run` adds runs "
            "to (by default history.sqlite beside the run folders)"
        )
    try:
        with History(path) as history:
            regressions, not_added = {}, []
            for run_dir in run_dirs:
                run_id = history.run_id(run_dir)
                if run_id is None:
                    not_added.append(run_dir)
                else:
                    regressions[run_dir] = history.regressions(run_id)
            return HistoryView(
                path, history.trends(), history.flake_rates(), regressions, not_added
            )
    except HistoryError as exc:
        raise ReportError(str(exc)) from None


# --- the page ---


def render(runs: list[Run], view: HistoryView | None) -> str:
    """The whole HTML document."""
    counts = Counter(t.outcome for run in runs for t in run.tests)
    rigs = sorted({str(_get(run.facts, "rig", "name") or "?") for run in runs})
    title = f"HIL report: {', '.join(rigs)}"
    subtitle = (
        f"{len(runs)} run{'s' if len(runs) != 1 else ''} · "
        + " · ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])
        + f" · written {datetime.now().astimezone():%Y-%m-%d %H:%M} by hil {_hil_version()}"
    )
    body = []
    if view is not None:
        body.append(_regressions(view, runs))
    if len(runs) > 1:
        body.append(_run_index(runs))
    for n, run in enumerate(runs):
        body.append(_run_section(run, f"r{n}"))
    if view is not None:
        body.append(_trends(view))
    return page(title, subtitle, "\n".join(body))


def _hil_version() -> str:
    try:
        return version("hil")
    except PackageNotFoundError:
        return "(not installed)"


def _get(facts: dict, *keys: str):
    for key in keys:
        facts = facts.get(key) if isinstance(facts, dict) else None
    return facts


def _verdict(outcome: str) -> str:
    return f'<span class="verdict {escape(outcome)}">{escape(outcome)}</span>'


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 60 else str(timedelta(seconds=round(value)))


def _regressions(view: HistoryView, runs: list[Run]) -> str:
    items = []
    for n, run in enumerate(runs):
        tests = {t.nodeid: i for i, t in enumerate(run.tests)}
        for r in view.regressions.get(run.path, []):
            test = f"#r{n}-t{tests[r.nodeid]}" if r.nodeid in tests else f"#r{n}"
            items.append(
                f"<li><a href='#r{n}'><b>{escape(run.title)}</b></a> · "
                f"<a href='{test}' class='mono'>{_breakable(r.nodeid)}</a> · "
                f"{escape(r.measurement)} on rig {escape(r.rig)}: {plots.fmt(r.value)} "
                f"{escape(r.unit)}, <span class='out-of-limits'>{r.change:.0%} worse</span> than "
                f"the median {plots.fmt(r.baseline_median)} {escape(r.unit)} of the runs before "
                "it</li>"
            )
    note = "".join(
        f"<p class='muted'>Run {escape(p.name)} is not in {escape(str(view.path))}, so it has "
        "no regression verdict.</p>"
        for p in view.not_added
    )
    if not items:
        return f"<section class='block' id='regressions'><h2>No regressions</h2>{note}</section>"
    return (
        "<section class='alerts' id='regressions'>"
        f"<h2>Regressions ({len(items)})</h2><ul>{''.join(items)}</ul>{note}</section>"
    )


def _run_index(runs: list[Run]) -> str:
    rows = "".join(
        f"<tr><td><a href='#r{n}'>{escape(run.title)}</a></td>"
        f"<td>{_verdict(str(run.facts.get('outcome', '?')))}</td>"
        f"<td>{escape(str(_get(run.facts, 'rig', 'name') or '?'))}</td>"
        f"<td>{escape(str(_get(run.facts, 'firmware', 'version') or '?'))}</td>"
        + "".join(
            f"<td class='num'>{sum(t.outcome == o for t in run.tests)}</td>" for o in OUTCOMES
        )
        + "</tr>"
        for n, run in enumerate(runs)
    )
    head = "".join(f"<th class='num'>{o}</th>" for o in OUTCOMES)
    return (
        "<section class='block'><h2>Runs</h2><table><tr><th>Run</th><th>Outcome</th>"
        f"<th>Rig</th><th>Firmware</th>{head}</tr>{rows}</table></section>"
    )


def _run_section(run: Run, anchor: str) -> str:
    outcome = str(run.facts.get("outcome", "?"))
    failures = [t for t in run.tests if t.outcome in ("failed", "error")]
    parts = [
        f"<section class='block run' id='{anchor}'>",
        f"<h2>Run {escape(run.title)} {_verdict(outcome)}</h2>",
        _facts(run),
    ]
    events = [timeline.load(t.folder, run.zone) if t.folder else [] for t in run.tests]
    if failures:
        parts.append(f"<h3>Failures ({len(failures)})</h3>")
        parts.extend(
            _failure(run, t, events[n], f"{anchor}-t{n}")
            for n, t in enumerate(run.tests)
            if t.outcome in ("failed", "error")
        )
    parts.append("<h3>Suites</h3>" + _suites(run))
    charts = _measurement_charts(run)
    if charts:
        parts.append(f"<h3>Measurements</h3><div class='plots'>{charts}</div>")
    parts.append("<h3>Tests</h3>")
    by_suite: dict[str, list[int]] = defaultdict(list)
    for n, test in enumerate(run.tests):
        by_suite[test.suite].append(n)
    for suite, indexes in by_suite.items():
        parts.append(f"<h4>{escape(suite)}</h4>")
        parts.extend(_test(run, run.tests[n], events[n], f"{anchor}-t{n}") for n in indexes)
    parts.append("</section>")
    return "\n".join(parts)


def _facts(run: Run) -> str:
    f = run.facts
    duration = (run.ended - run.started).total_seconds() if run.ended else None
    firmware = " · ".join(
        f"{label} {_get(f, 'firmware', key)}"
        for label, key in (
            ("", "version"),
            ("project", "project"),
            ("IDF", "idf_version"),
            ("built", "build_date"),
            ("", "build_time"),
        )
        if _get(f, "firmware", key)
    ).strip()
    written = _get(f, "firmware", "written")
    method = _get(f, "firmware", "method")
    if method:
        firmware += f" · {'written' if written else 'checked'} by {method}"
    device = _get(f, "device") or {}
    came_up = " · ".join(
        text
        for text in (
            f"online as {device.get('online_version')}" if device.get("online_version") else "",
            f"by {device.get('means')}" if device.get("means") else "",
            f"in {device['bringup_s']:.1f} s"
            if isinstance(device.get("bringup_s"), int | float)
            else "",
        )
        if text
    )
    revision = f.get("suites_revision")
    if revision and f.get("suites_dirty"):
        revision = f"{revision} (with uncommitted changes)"
    rows = [
        ("Rig", _rig_name(f)),
        ("Rig file", f"{_get(f, 'rig', 'file') or '?'}"),
        ("Rig file SHA-256", _get(f, "rig", "sha256")),
        ("Profile", f.get("profile")),
        ("Firmware", firmware or None),
        ("Firmware SHA-256", _get(f, "firmware", "sha256")),
        ("Device", came_up or "never came online"),
        ("Boot reason", device.get("boot_reason")),
        ("Host", f.get("host")),
        ("hil", f.get("hil_version")),
        ("Started", f"{run.started:%Y-%m-%d %H:%M:%S %z}"),
        ("Duration", _seconds(duration) if duration is not None else "(no end recorded)"),
        ("Suites revision", revision),
        (
            "Tests",
            ", ".join(f"{n} {o}" for o, n in (_get(f, "counts") or {}).items() if n) or "none",
        ),
    ]
    cells = "".join(
        f"<dt>{escape(label)}</dt><dd>{escape(str(value))}</dd>"
        for label, value in rows
        if value not in (None, "")
    )
    return f"<dl class='facts'>{cells}</dl>"


def _rig_name(facts: dict) -> str:
    name, kind = _get(facts, "rig", "name") or "?", _get(facts, "rig", "kind")
    return f"{name} ({kind} rig)" if kind and kind != name else str(name)


def _failure(run: Run, test: TestResult, events: list[timeline.Event], anchor: str) -> str:
    """A failed test's message and the lines that matter, before its full entry."""
    end = test.ended or (events[-1].time if events else run.started)
    window = timeline.last_before(events, end, LINES_BEFORE_END)
    earlier = [e for e in events if e.bad and e.time <= end and e not in window]
    start = test.started or (events[0].time if events else end)
    parts = [
        f"<article class='failure {escape(test.outcome)}' data-nodeid='{escape(test.nodeid)}'>",
        f"<h4>{_verdict(test.outcome)} <a href='#{anchor}' class='mono'>"
        f"{_breakable(test.nodeid)}</a></h4>",
        f"<p class='message'>{escape(test.message or '(no message recorded)')}</p>",
    ]
    if earlier:
        parts.append(
            f"<p class='muted'>Earlier lines that may explain it ({len(earlier)}"
            f"{f', the last {EARLIER_BAD_LINES}' if len(earlier) > EARLIER_BAD_LINES else ''})"
            ":</p>" + _lines(earlier[-EARLIER_BAD_LINES:], start)
        )
    if window:
        parts.append(
            f"<p class='muted'>The last {len(window)} console and MQTT lines before the test "
            "ended:</p>" + _lines(window, start)
        )
    else:
        parts.append("<p class='muted'>No console or MQTT line was recorded for this test.</p>")
    if test.longrepr:
        parts.append(
            "<details class='inner'><summary>Full failure text</summary>"
            f"<pre>{escape(test.longrepr)}</pre></details>"
        )
    parts.append("</article>")
    return "".join(parts)


def _lines(events: list[timeline.Event], start: datetime) -> str:
    """Events as table rows: clock time, seconds since the test started, where, what."""
    rows = []
    for e in events:
        if e.source == "console":
            where, kind = "console", "harness" if e.harness else "console"
        else:
            arrow = "→" if e.direction == "out" else "←"
            where, kind = f"MQTT {arrow} {e.topic}", e.direction
        classes = f"{kind}{' bad' if e.bad else ''}"
        clock = e.time.strftime("%H:%M:%S.%f")[:-3]
        rel = (e.time - start).total_seconds()
        rows.append(
            f"<tr class='{escape(classes)}'><td class='when'>{clock}</td>"
            f"<td class='rel'>{rel:+.3f}</td><td class='src'>{escape(where)}</td>"
            f"<td class='text'>{escape(e.text)}</td></tr>"
        )
    return f"<table class='lines'>{''.join(rows)}</table>"


def _suites(run: Run) -> str:
    by_suite: dict[str, list[TestResult]] = defaultdict(list)
    for test in run.tests:
        by_suite[test.suite].append(test)
    rows = []
    for suite, tests in by_suite.items():
        counts = Counter(t.outcome for t in tests)
        worst = next((o for o in OUTCOMES if counts[o]), "skipped")
        rows.append(
            f"<tr><td>{escape(suite)}</td><td>{_verdict(worst)}</td>"
            + "".join(f"<td class='num'>{counts[o] or ''}</td>" for o in OUTCOMES)
            + f"<td class='num'>{_seconds(sum(t.duration_s for t in tests))}</td></tr>"
        )
    head = "".join(f"<th class='num'>{o}</th>" for o in OUTCOMES)
    return (
        f"<table><tr><th>Suite</th><th>Verdict</th>{head}<th class='num'>Time</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _measurement_charts(run: Run) -> str:
    """One dot chart per measurement across the run's tests (`recovery_2` goes with
    `recovery`), each against its limits."""
    groups: dict[tuple[str, str], list[tuple[TestResult, dict]]] = defaultdict(list)
    for test in run.tests:
        for m in test.measurements:
            base = re.sub(r"_\d+$", "", str(m.get("name", "?")))
            groups[(base, str(m.get("unit", "")))].append((test, m))
    charts = []
    for (name, unit), taken in sorted(groups.items()):
        labels = _row_labels([t.name for t, _ in taken])
        rows = [
            plots.Row(
                label + ("" if m.get("name") == name else f" · {m.get('name')}"),
                float(m["value"]),
                bool(m.get("passed", True)),
                f"{test.nodeid} · {m.get('name')}: {plots.fmt(float(m['value']))} {unit}"
                + ("" if m.get("passed", True) else " (out of limits)"),
            )
            for label, (test, m) in zip(labels, taken, strict=True)
        ]
        lows = {m.get("low") for _, m in taken} - {None}
        highs = {m.get("high") for _, m in taken} - {None}
        charts.append(
            plots.dot_chart(
                rows,
                title=f"{name} ({unit})",
                unit=unit,
                low=lows.pop() if len(lows) == 1 else None,
                high=highs.pop() if len(highs) == 1 else None,
                width=560,
            )
        )
    return "".join(f"<figure>{chart}</figure>" for chart in charts)


def _row_labels(names: list[str]) -> list[str]:
    """Tests' names without what they share: only their parameters when they are one test
    function, else without their common leading words."""
    functions = {name.split("[", 1)[0] for name in names}
    if len(functions) == 1 and all("[" in name for name in names):
        return ["[" + name.split("[", 1)[1] for name in names]
    if len(set(names)) == 1:
        return names
    columns = enumerate(zip(*names, strict=False))
    same = next((n for n, chars in columns if len(set(chars)) > 1), min(map(len, names)))
    cut = names[0].rfind("_", 0, same) + 1
    return [name[cut:] for name in names]


def _test(run: Run, test: TestResult, events: list[timeline.Event], anchor: str) -> str:
    start = test.started or (events[0].time if events else run.started)
    is_failure = test.outcome in ("failed", "error")
    parts = [
        f"<details class='test' id='{anchor}' data-nodeid='{escape(test.nodeid)}'"
        f"{' open' if is_failure else ''}>",
        f"<summary>{_verdict(test.outcome)}<span class='name'>{_breakable(test.name)}</span>"
        f"<span class='dur'>{_seconds(test.duration_s)}</span></summary><div class='body'>",
        f"<p class='mono muted'>{escape(test.nodeid)}"
        + (f" · folder {escape(test.folder.name)}" if test.folder else " · no artifact folder")
        + "</p>",
    ]
    if test.message and test.outcome != "passed":
        parts.append(f"<p class='message'>{escape(test.message)}</p>")
    parts.extend(f"<p class='out-of-limits'>{escape(p)}</p>" for p in test.problems)
    if test.measurements:
        parts.append(_measurement_table(test.measurements))
    transfers = timeline.ota_transfers(events)
    if transfers:
        parts.append(f"<div class='plots'>{_ota_charts(transfers)}</div>")
    if events:
        parts.append(
            f"<details class='inner'><summary>Console and MQTT on one time axis "
            f"({len(events)} lines)</summary>{_lines(events, start)}</details>"
        )
    parts.append("</div></details>")
    return "".join(parts)


def _measurement_table(items: list[dict]) -> str:
    rows = []
    for m in items:
        unit = escape(str(m.get("unit", "")))
        limits = " and ".join(
            f"{sign} {plots.fmt(m[key])}"
            for sign, key in ((">=", "low"), ("<=", "high"))
            if isinstance(m.get(key), int | float)
        )
        passed = bool(m.get("passed", True))
        verdict = "within limits" if passed and limits else ("" if passed else "OUT OF LIMITS")
        rows.append(
            f"<tr><td class='mono'>{escape(str(m.get('name', '?')))}</td>"
            f"<td class='num'>{plots.fmt(float(m['value']))} {unit}</td>"
            f"<td>{escape(limits)}{' ' + unit if limits else ''}</td>"
            f"<td class='{'' if passed else 'out-of-limits'}'>{verdict}</td></tr>"
        )
    return (
        "<table class='measures'><tr><th>Measurement</th><th class='num'>Value</th>"
        "<th>Limits</th><th>Verdict</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _ota_charts(transfers: list[timeline.OtaTransfer]) -> str:
    charts = []
    for n, t in enumerate(transfers):
        label = f"OTA update {n + 1}" if len(transfers) > 1 else "OTA update"
        total = f" of {t.total} chunks" if t.total else ""
        progress = plots.line_chart(
            [
                plots.Series("written (OTA:PROGRESS)", t.written, plots.PALETTE[0], line="step"),
                plots.Series("sent", t.sent, "#9ca3af", line="none"),
                plots.Series("sent again", t.resent, plots.PALETTE[1], line="none"),
                plots.Series("OTA:REQUEST", t.requested, plots.FAIL, line="none", marker="cross"),
            ],
            title=f"{label}: progress{total}, {t.outcome}",
            x_label="seconds since OTA:BEGIN",
            y_label="chunk",
            width=480,
            height=260,
        )
        resent = plots.line_chart(
            [
                plots.Series(
                    "chunks sent again, as the broker saw them",
                    t.resent_so_far,
                    plots.PALETTE[1],
                    line="step",
                )
            ],
            title=f"{label}: {len(t.resent)} chunk{'' if len(t.resent) == 1 else 's'} resent",
            x_label="seconds since OTA:BEGIN",
            y_label="chunks",
            width=380,
            height=260,
        )
        charts.append(f"<figure>{progress}</figure><figure>{resent}</figure>")
    return "".join(charts)


def _trends(view: HistoryView) -> str:
    """Every measurement over the history's recent runs, one series per rig, points coloured
    by firmware version; then the tests' flake rates."""
    runs = sorted({(p.started, p.run_id) for t in view.trends for p in t.points})
    order = {run_id: n for n, (_, run_id) in enumerate(runs)}
    versions = sorted({p.firmware_version or "unknown" for t in view.trends for p in t.points})
    colour = {v: plots.PALETTE[n % len(plots.PALETTE)] for n, v in enumerate(versions)}
    rigs = sorted({p.rig for t in view.trends for p in t.points})
    greys = ("#374151", "#9ca3af", "#6b7280", "#d1d5db")
    rig_line = {rig: greys[n % len(greys)] for n, rig in enumerate(rigs)}
    ticks = _run_ticks(runs)
    figures: dict[str, list[str]] = defaultdict(list)
    for trend in view.trends:
        series = []
        for rig in rigs:
            points = [p for p in trend.points if p.rig == rig]
            if not points:
                continue
            series.append(
                plots.Series(
                    f"rig {rig}",
                    [(order[p.run_id], p.value) for p in points],
                    rig_line[rig],
                    notes=[
                        f"run {p.run_id} · {p.started[:19]} · rig {p.rig} · firmware "
                        f"{p.firmware_version or 'unknown'} · {plots.fmt(p.value)} {trend.unit}"
                        for p in points
                    ],
                    point_colours=[colour[p.firmware_version or "unknown"] for p in points],
                )
            )
        limits = [
            plots.Limit(v, w)
            for v, w in ((trend.low, "low"), (trend.high, "high"))
            if v is not None
        ]
        chart = plots.line_chart(
            series,
            title=f"{trend.measurement} ({trend.unit})",
            x_label="run",
            y_label=trend.unit,
            limits=limits,
            x_ticks=ticks,
            legend=[] if len(rigs) == 1 else [(s.name, s.colour, "line") for s in series],
            width=340,
            height=180,
        )
        file, _, name = trend.nodeid.rpartition("::")
        figures[file].append(
            f"<figure data-nodeid='{escape(trend.nodeid)}'><figcaption>"
            f"{_breakable(name)}</figcaption>{chart}</figure>"
        )
    legend = "".join(
        f"<span><span class='swatch' style='background:{colour[v]}'></span>firmware "
        f"{escape(v)}</span>"
        for v in versions
    ) + "".join(
        f"<span><span class='swatch' style='background:{rig_line[r]};border-radius:0'></span>"
        f"rig {escape(r)}</span>"
        for r in rigs
    )
    charts = (
        "".join(
            f"<h4>{escape(file)}</h4><div class='plots'>{''.join(shown)}</div>"
            for file, shown in figures.items()
        )
        or "<p>No measurements in the history yet.</p>"
    )
    return (
        "<section class='block' id='trends'><h2>Trends</h2>"
        f"<p class='muted'>{_last(len(runs))} in {escape(str(view.path))}, oldest first."
        "</p>"
        f"<div class='legend'>{legend}</div>{charts}"
        f"<h3>Flake rates</h3>{_flakes(view.flakes)}</section>"
    )


def _last(runs: int) -> str:
    return "The last run" if runs == 1 else f"The last {runs} runs"


def _breakable(name: str) -> str:
    """A test id, escaped, that may wrap after its underscores and before its parameters."""
    return re.sub(
        r"(_|::|\[)",
        lambda m: f"<wbr>{m.group()}" if m.group() == "[" else f"{m.group()}<wbr>",
        escape(name),
    )


def _run_ticks(runs: list[tuple[str, int]]) -> list[tuple[float, str]]:
    """The first, middle and last run, labelled by their start day and time."""
    picks = sorted({0, (len(runs) - 1) // 2, len(runs) - 1}) if runs else []
    return [(n, runs[n][0][5:16].replace("T", " ")) for n in picks]


def _flakes(flakes: list[Flake]) -> str:
    unsteady = [f for f in flakes if f.failures or f.flips]
    steady = len(flakes) - len(unsteady)
    if not unsteady:
        return f"<p>All {steady} tests passed in every run counted.</p>"
    rows = "".join(
        f"<tr data-nodeid='{escape(f.nodeid)}'><td class='mono'>{escape(f.nodeid)}</td>"
        f"<td class='num'>{f.runs}</td><td class='num'>{f.failures}</td>"
        f"<td class='num'>{f.flips}</td><td class='num'>{f.rate:.0%}</td></tr>"
        for f in unsteady
    )
    return (
        "<p class='muted'>Over each test's last runs on the rig and firmware of its newest run; "
        "a flip is a change of verdict from one run to the next.</p>"
        "<table><tr><th>Test</th><th class='num'>Runs</th><th class='num'>Failures</th>"
        f"<th class='num'>Flips</th><th class='num'>Failure rate</th></tr>{rows}</table>"
        f"<p class='muted'>{steady} other tests passed in every run counted.</p>"
    )
