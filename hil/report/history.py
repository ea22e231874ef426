"""The history store: every run's verdicts and measurements in one SQLite file, so nights add up.

`History.add_run` reads a finished run folder (its `run.json` and each test's
`measurements.json`) in one transaction; the report asks for per-measurement trends, each
test's flake rate and the regressions of one run against the runs before it on the same rig.
The file is in WAL mode with a busy timeout, so runs that finish together (xdist workers, two
CI jobs) can add themselves at once.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

RUN_SCHEMA = 1  # the run.json schema this module reads
STORE_VERSION = 1  # PRAGMA user_version of a history file this module writes
BUSY_TIMEOUT_S = 30.0
OUTCOMES = ("passed", "failed", "error", "skipped")
TIME_UNITS = frozenset({"s", "ms", "us", "µs", "ns", "min", "h"})

_TABLES = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    started TEXT NOT NULL,
    started_ts REAL NOT NULL,
    ended TEXT,
    rig TEXT NOT NULL,
    rig_kind TEXT,
    rig_file TEXT,
    rig_sha256 TEXT,
    profile TEXT,
    hil_version TEXT,
    firmware_version TEXT,
    firmware_sha256 TEXT,
    suites_revision TEXT,
    outcome TEXT NOT NULL,
    folder TEXT NOT NULL,
    UNIQUE (host, started)
);
CREATE INDEX runs_by_rig ON runs (rig, started_ts);
CREATE TABLE verdicts (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    nodeid TEXT NOT NULL,
    suite TEXT,
    outcome TEXT NOT NULL,
    duration_s REAL,
    message TEXT,
    folder TEXT,
    PRIMARY KEY (run_id, nodeid)
);
CREATE TABLE measurements (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    nodeid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    unit TEXT NOT NULL,
    value REAL NOT NULL,
    low REAL,
    high REAL,
    PRIMARY KEY (run_id, nodeid, seq)
);
CREATE INDEX measurements_by_series ON measurements (nodeid, name, unit);
"""


class HistoryError(Exception):
    """A history file or a run folder that cannot be read; the message names the file."""


# --- a finished run folder, as run.json and measurements.json describe it ---


@dataclass(frozen=True)
class RecordedMeasurement:
    name: str
    value: float
    unit: str
    low: float | None
    high: float | None


@dataclass(frozen=True)
class RecordedTest:
    nodeid: str
    suite: str | None
    outcome: str
    duration_s: float | None
    folder: str | None
    message: str | None
    measurements: tuple[RecordedMeasurement, ...]


@dataclass(frozen=True)
class RecordedRun:
    """One run folder, checked against the run.json contract (schema 1)."""

    folder: Path
    host: str
    started: str
    started_ts: float
    ended: str | None
    ended_ts: float | None
    rig: str
    rig_kind: str | None
    rig_file: str | None
    rig_sha256: str | None
    profile: str | None
    hil_version: str | None
    firmware_version: str | None
    firmware_sha256: str | None
    suites_revision: str | None
    outcome: str
    tests: tuple[RecordedTest, ...]

    @property
    def counts(self) -> dict[str, int]:
        return {o: sum(t.outcome == o for t in self.tests) for o in OUTCOMES}


def read_run(run_dir: Path) -> RecordedRun:
    """Read and check `run_dir`'s run.json and its tests' measurements.json files.

    The firmware version is the one `--firmware` wrote, else the one the device reported when
    it came online. A measurement whose value is not a finite number (a NaN from a test that
    could not measure) is left out.
    """
    path = run_dir / "run.json"
    doc = _load_json(path, "run.json is written when a hil session ends; is this a run folder?")
    field = _Fields(path)
    if not isinstance(doc, dict):
        raise HistoryError(f"{path} is not a JSON object")
    schema = doc.get("schema")
    if schema != RUN_SCHEMA:
        raise HistoryError(
            f"{path}: run.json schema {schema!r} is not the schema {RUN_SCHEMA} this hil reads; "
            "add it with the hil version that wrote it"
        )
    rig = field.obj(doc, "rig")
    firmware = field.obj(doc, "firmware", optional=True) or {}
    device = field.obj(doc, "device", optional=True) or {}
    started = field.text(doc, "started")
    ended = field.text(doc, "ended", optional=True)
    tests = tuple(_read_test(run_dir, field, i, t) for i, t in enumerate(field.seq(doc, "tests")))
    seen: set[str] = set()
    for test in tests:
        if test.nodeid in seen:
            raise HistoryError(f"{path}: tests lists {test.nodeid!r} twice; each test once")
        seen.add(test.nodeid)
    return RecordedRun(
        folder=run_dir,
        host=field.text(doc, "host", optional=True) or "",
        started=started,
        started_ts=field.time(started, "started"),
        ended=ended,
        ended_ts=field.time(ended, "ended") if ended is not None else None,
        rig=field.text(rig, "name", where="rig."),
        rig_kind=field.text(rig, "kind", optional=True, where="rig."),
        rig_file=field.text(rig, "file", optional=True, where="rig."),
        rig_sha256=field.text(rig, "sha256", optional=True, where="rig."),
        profile=field.text(doc, "profile", optional=True),
        hil_version=field.text(doc, "hil_version", optional=True),
        firmware_version=field.text(firmware, "version", optional=True, where="firmware.")
        or field.text(device, "online_version", optional=True, where="device."),
        firmware_sha256=field.text(firmware, "sha256", optional=True, where="firmware."),
        suites_revision=field.text(doc, "suites_revision", optional=True),
        outcome=field.text(doc, "outcome"),
        tests=tests,
    )


def _read_test(run_dir: Path, field: _Fields, index: int, doc: Any) -> RecordedTest:
    where = f"tests[{index}]."
    if not isinstance(doc, dict):
        raise HistoryError(f"{field.path}: {where[:-1]} is not an object")
    outcome = field.text(doc, "outcome", where=where)
    if outcome not in OUTCOMES:
        raise HistoryError(
            f"{field.path}: {where}outcome {outcome!r} is not one of {', '.join(OUTCOMES)}"
        )
    folder = field.text(doc, "folder", optional=True, where=where)
    return RecordedTest(
        nodeid=field.text(doc, "nodeid", where=where),
        suite=field.text(doc, "suite", optional=True, where=where),
        outcome=outcome,
        duration_s=field.number(doc, "duration_s", optional=True, where=where),
        folder=folder,
        message=field.text(doc, "message", optional=True, where=where),
        measurements=_read_measurements(run_dir / folder / "measurements.json") if folder else (),
    )


def _read_measurements(path: Path) -> tuple[RecordedMeasurement, ...]:
    if not path.is_file():
        return ()  # a test that measured nothing writes no measurements.json
    doc = _load_json(path, "")
    if not isinstance(doc, list):
        raise HistoryError(f"{path}: measurements.json is not a list of measurements")
    field = _Fields(path)
    found = []
    for i, item in enumerate(doc):
        where = f"[{i}]."
        if not isinstance(item, dict):
            raise HistoryError(f"{path}: measurement {i} is not an object")
        value = field.number(item, "value", where=where)
        if not math.isfinite(value):
            continue
        found.append(
            RecordedMeasurement(
                name=field.text(item, "name", where=where),
                value=value,
                unit=field.text(item, "unit", where=where),
                low=field.number(item, "low", optional=True, where=where),
                high=field.number(item, "high", optional=True, where=where),
            )
        )
    return tuple(found)


def _load_json(path: Path, hint: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HistoryError(f"{path} does not exist{'; ' + hint if hint else ''}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"{path} cannot be read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HistoryError(
            f"{path} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
            "a run cut off while writing it leaves such a file"
        ) from None


class _Fields:
    """Typed reads of one JSON file's fields; a wrong one is a HistoryError naming file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _get(
        self, doc: dict, key: str, kinds: tuple[type, ...], what: str, optional: bool, where: str
    ) -> Any:
        value = doc.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, kinds) or isinstance(value, bool):
            found = "missing" if key not in doc else f"{value!r}"
            raise HistoryError(f"{self.path}: {where}{key} must be {what}, found {found}")
        return value

    def text(self, doc: dict, key: str, *, optional: bool = False, where: str = "") -> Any:
        return self._get(doc, key, (str,), "a string", optional, where)

    def number(self, doc: dict, key: str, *, optional: bool = False, where: str = "") -> Any:
        value = self._get(doc, key, (int, float), "a number", optional, where)
        return None if value is None else float(value)

    def obj(self, doc: dict, key: str, *, optional: bool = False) -> Any:
        return self._get(doc, key, (dict,), "an object", optional, "")

    def seq(self, doc: dict, key: str) -> Any:
        return self._get(doc, key, (list,), "a list", False, "")

    def time(self, text: str, key: str) -> float:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise HistoryError(
                f"{self.path}: {key} {text!r} is not an ISO-8601 time with a time zone"
            )
        return moment.timestamp()


# --- what the report reads ---


@dataclass(frozen=True)
class Point:
    run_id: int
    started: str
    rig: str
    firmware_version: str | None
    value: float


@dataclass(frozen=True)
class Trend:
    """One test's measurement over runs, oldest first; unit and limits are the newest run's."""

    nodeid: str
    measurement: str
    unit: str
    low: float | None
    high: float | None
    points: list[Point]


@dataclass(frozen=True)
class Flake:
    """How often a test failed (or errored) and how often its verdict changed, in order."""

    nodeid: str
    runs: int
    failures: int
    flips: int
    rate: float


@dataclass(frozen=True)
class Regression:
    """A measurement of one run worse than the median of the runs before it on its rig."""

    nodeid: str
    measurement: str
    unit: str
    rig: str
    value: float
    baseline_median: float
    change: float  # +0.25 = 25 % worse


def larger_is_worse(unit: str, low: float | None, high: float | None) -> bool | None:
    """Which way a measurement gets worse: True if larger, False if smaller, None if unknown.

    A value with only a `high` limit (a time, a latency) is worse when larger; with only a
    `low` limit (a throughput) worse when smaller. With both or neither, the unit decides:
    larger is worse for times (s, ms, ...), smaller is worse for rates (anything per second,
    and %). Counts (chunks, messages) have no direction and get no regression verdict.
    """
    if high is not None and low is None:
        return True
    if low is not None and high is None:
        return False
    if unit in TIME_UNITS:
        return True
    if unit.endswith("/s") or unit == "%":
        return False
    return None


class History:
    """A history file: runs, their tests' verdicts and their measurements."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"history file {path} cannot be opened: {exc}") from None
        try:
            self._migrate()
            self._use_wal()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if exc.sqlite_errorname == "SQLITE_NOTADB":
                raise HistoryError(
                    f"{path} is not a hil history file ({exc}); give --history a new file"
                ) from None
            raise HistoryError(f"history file {path} cannot be opened: {exc}") from None
        except HistoryError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Make the tables of a new file; refuse, leaving it as it was, a file not ours."""
        with _Transaction(self._db):
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == STORE_VERSION:
                return
            if version > STORE_VERSION:
                raise HistoryError(
                    f"{self.path} is a version {version} history, newer than this hil's "
                    f"version {STORE_VERSION}; use the newer hil or another --history file"
                )
            if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise HistoryError(
                    f"{self.path} is an SQLite file but not a hil history; "
                    "give --history a new file"
                )
            for statement in _TABLES.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {STORE_VERSION}")

    def _use_wal(self) -> None:
        """Switch the file to WAL, so readers and one writer do not block each other.

        The switch needs the file to itself, and SQLite refuses at once (without its busy
        timeout) when another connection is switching too, so a busy file is tried again.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorname != "SQLITE_BUSY" or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- adding ---

    def add_run(self, run_dir: Path) -> int:
        """Add (or replace) the run in `run_dir` and return its id.

        A run is known by its host and start time, so adding the same folder twice, or a copy
        of it, keeps one run (with the folder's latest content). A broken folder raises a
        HistoryError naming the file and leaves the history as it was.
        """
        run = read_run(run_dir)
        fields = (
            run.ended,
            run.rig,
            run.rig_kind,
            run.rig_file,
            run.rig_sha256,
            run.profile,
            run.hil_version,
            run.firmware_version,
            run.firmware_sha256,
            run.suites_revision,
            run.outcome,
            str(run_dir.resolve()),
        )
        try:
            return self._store(run, fields)
        except sqlite3.Error as exc:
            raise HistoryError(
                f"{self.path}: adding {run_dir} failed ({exc}); nothing of that run was added"
            ) from None

    def _store(self, run: RecordedRun, fields: tuple) -> int:
        with _Transaction(self._db):
            row = self._db.execute(
                "SELECT id FROM runs WHERE host = ? AND started = ?", (run.host, run.started)
            ).fetchone()
            if row:
                run_id = row[0]
                self._db.execute("DELETE FROM measurements WHERE run_id = ?", (run_id,))
                self._db.execute("DELETE FROM verdicts WHERE run_id = ?", (run_id,))
                self._db.execute(
                    "UPDATE runs SET ended = ?, rig = ?, rig_kind = ?, rig_file = ?,"
                    " rig_sha256 = ?, profile = ?, hil_version = ?, firmware_version = ?,"
                    " firmware_sha256 = ?, suites_revision = ?, outcome = ?, folder = ?,"
                    " started_ts = ? WHERE id = ?",
                    (*fields, run.started_ts, run_id),
                )
            else:
                run_id = self._db.execute(
                    "INSERT INTO runs (host, started, started_ts, ended, rig, rig_kind, rig_file,"
                    " rig_sha256, profile, hil_version, firmware_version, firmware_sha256,"
                    " suites_revision, outcome, folder)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run.host, run.started, run.started_ts, *fields),
                ).lastrowid
            self._db.executemany(
                "INSERT INTO verdicts (run_id, nodeid, suite, outcome, duration_s, message,"
                " folder) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, t.nodeid, t.suite, t.outcome, t.duration_s, t.message, t.folder)
                    for t in run.tests
                ],
            )
            self._db.executemany(
                "INSERT INTO measurements (run_id, nodeid, seq, name, unit, value, low, high)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, t.nodeid, seq, m.name, m.unit, m.value, m.low, m.high)
                    for t in run.tests
                    for seq, m in enumerate(t.measurements)
                ],
            )
        return run_id

    def run_id(self, run_dir: Path) -> int | None:
        """The id of the run in `run_dir`, or None when it has not been added."""
        run = read_run(run_dir)
        row = self._db.execute(
            "SELECT id FROM runs WHERE host = ? AND started = ?", (run.host, run.started)
        ).fetchone()
        return row[0] if row else None

    # --- reading ---

    def runs(self, rig: str | None = None) -> list[dict]:
        """Every run (on `rig`, if given), newest last, with its counts of each outcome."""
        counts = ", ".join(
            f"(SELECT count(*) FROM verdicts v WHERE v.run_id = r.id AND v.outcome = '{o}') AS {o}"
            for o in OUTCOMES
        )
        cursor = self._db.execute(
            f"SELECT r.*, {counts} FROM runs r WHERE ? IS NULL OR r.rig = ?"
            " ORDER BY r.started_ts, r.id",
            (rig, rig),
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def trends(self, rig: str | None = None, last: int = 30) -> list[Trend]:
        """Each test's measurements over the `last` runs (on `rig`, if given), by test and name.

        A measurement whose unit changed between runs is one trend per unit.
        """
        rows = self._db.execute(
            "WITH recent AS (SELECT id FROM runs WHERE ? IS NULL OR rig = ?"
            "  ORDER BY started_ts DESC, id DESC LIMIT ?)"
            " SELECT m.nodeid, m.name, m.unit, m.low, m.high,"
            "  r.id, r.started, r.rig, r.firmware_version, m.value"
            " FROM measurements m JOIN runs r ON r.id = m.run_id"
            " WHERE r.id IN (SELECT id FROM recent)"
            " ORDER BY m.nodeid, m.name, m.unit, r.started_ts, r.id, m.seq",
            (rig, rig, last),
        ).fetchall()
        trends = []
        for key, series in _groups(rows, 3):
            newest = series[-1]
            trends.append(
                Trend(
                    nodeid=key[0],
                    measurement=key[1],
                    unit=key[2],
                    low=newest[3],
                    high=newest[4],
                    points=[Point(r[5], r[6], r[7], r[8], r[9]) for r in series],
                )
            )
        return trends

    def flake_rates(self, last: int = 30, rig: str | None = None) -> list[Flake]:
        """Each test's failures and verdict flips over its `last` runs, worst rate first.

        The runs counted are those on the rig and firmware version of the test's newest run
        (on `rig`, if given), so a new rig or firmware starts a test's record afresh. A failure
        is a `failed` or an `error` verdict; skipped runs do not count.
        """
        rows = self._db.execute(
            "SELECT v.nodeid, r.rig, r.firmware_version, v.outcome"
            " FROM verdicts v JOIN runs r ON r.id = v.run_id"
            " WHERE v.outcome != 'skipped' AND (? IS NULL OR r.rig = ?)"
            " ORDER BY v.nodeid, r.started_ts DESC, r.id DESC",
            (rig, rig),
        ).fetchall()
        flakes = []
        for (nodeid,), verdicts in _groups(rows, 1):
            context = verdicts[0][1:3]
            newest_first = [v[3] != "passed" for v in verdicts if v[1:3] == context][:last]
            failed = newest_first[::-1]
            flips = sum(a != b for a, b in pairwise(failed))
            flakes.append(Flake(nodeid, len(failed), sum(failed), flips, sum(failed) / len(failed)))
        return sorted(flakes, key=lambda f: (-f.rate, -f.flips, f.nodeid))

    def regressions(
        self, run_id: int, window: int = 7, threshold: float = 0.20
    ) -> list[Regression]:
        """The measurements of run `run_id` more than `threshold` worse than their baseline.

        The baseline is the median of the same test's same measurement (same unit) on the same
        rig over the `window` runs before this one that took it; with fewer than 3 such runs
        there is no verdict. A value taken several times in one run counts as its median.
        Which way is worse: see `larger_is_worse`. A zero baseline gives no verdict.
        """
        run = self._db.execute(
            "SELECT rig, started_ts FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        if run is None:
            raise HistoryError(f"{self.path} holds no run {run_id}")
        rig, started_ts = run
        current = self._db.execute(
            "SELECT nodeid, name, unit, low, high, value FROM measurements"
            " WHERE run_id = ? ORDER BY nodeid, name, unit, seq",
            (run_id,),
        ).fetchall()
        found = []
        for (nodeid, name, unit), taken in _groups(current, 3):
            worse = larger_is_worse(unit, taken[0][3], taken[0][4])
            if worse is None:
                continue
            earlier = self._db.execute(
                "SELECT r.id, m.value FROM measurements m JOIN runs r ON r.id = m.run_id"
                " WHERE r.rig = ? AND m.nodeid = ? AND m.name = ? AND m.unit = ?"
                "  AND (r.started_ts < ? OR (r.started_ts = ? AND r.id < ?))"
                " ORDER BY r.started_ts DESC, r.id DESC, m.seq",
                (rig, nodeid, name, unit, started_ts, started_ts, run_id),
            ).fetchall()
            per_run = [statistics.median(v[1] for v in vs) for _, vs in _groups(earlier, 1)]
            if len(per_run[:window]) < 3:
                continue
            baseline = statistics.median(per_run[:window])
            value = statistics.median(t[5] for t in taken)
            if baseline == 0:
                continue
            change = (value - baseline if worse else baseline - value) / abs(baseline)
            if change > threshold:
                found.append(Regression(nodeid, name, unit, rig, value, baseline, change))
        return sorted(found, key=lambda r: -r.change)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: a writer waits (busy timeout)
    for the file instead of failing halfway when another run adds itself."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _groups(rows: Iterable[tuple], width: int) -> list[tuple[tuple, list[tuple]]]:
    """Consecutive rows grouped by their first `width` columns (rows come sorted by them)."""
    groups: list[tuple[tuple, list[tuple]]] = []
    for row in rows:
        key = tuple(row[:width])
        if groups and groups[-1][0] == key:
            groups[-1][1].append(row)
        else:
            groups.append((key, [row]))
    return groups
