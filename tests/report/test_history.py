"""The history store over synthetic nights: two rigs, two firmware versions, a flaky test and a
recovery 30 % slower on the last night; idempotent and concurrent adds; broken folders and
files refused whole."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hil.report.history import Flake, History, HistoryError, Point, Regression

ECHO = "test_suites/test_echo.py::test_echo_answers_plaintext_then_prefixed_ciphertext[seed]"
RECOVERY = "test_suites/test_recovery.py::test_recovers_after_power_cut[medium]"
OTA = "test_suites/test_ota.py::test_ota_delivers_the_image_despite[drop_middle]"
BROKER = (
    "test_suites/test_broker_protocol.py::test_device_connects_with_clean_session_and_keepalive"
)
OVERSIZE = "test_suites/test_ota.py::test_oversize_begin_is_refused"

NIGHT0 = datetime(2025, 3, 1, 1, 0, tzinfo=UTC)
BENCH, VIRTUAL = "bench-a", "virtual"
NIGHTS = 10
BENCH_RECOVERY = [40.0, 40.0, 40.0, 20.0, 22.0, 20.0, 21.0, 19.5, 20.0, 26.0]  # last: +30 %
BENCH_THROUGHPUT = [50.0] * 9 + [37.5]  # last: 25 % less
BENCH_RETRANSMISSIONS = [2.0] * 9 + [8.0]  # a count: no direction, no verdict
BENCH_ECHO = [0.5] * 9 + [0.3]  # better
BENCH_BROKER = ["passed", "failed", "passed", "passed", "failed", "failed", "passed", "skipped"]
BENCH_BROKER += ["passed", "passed"]  # nights 8 and 9 run firmware 1.1.0
VIRTUAL_BROKER = ["passed"] * 3 + ["error"] + ["passed"] * 6


def measurement(name: str, value: float, unit: str, low=None, high=None) -> dict:
    passed = (low is None or value >= low) and (high is None or value <= high)
    return {"name": name, "value": value, "unit": unit, "low": low, "high": high, "passed": passed}


def write_run(
    folder: Path,
    started: datetime,
    rig: str,
    firmware: str | None,
    tests: dict[str, tuple[str, list[dict]]],
    host: str = "lab-pc",
) -> Path:
    """A run folder as hil writes it: run.json, and measurements.json in each test's folder."""
    entries = []
    for n, (nodeid, (outcome, measured)) in enumerate(tests.items()):
        at = started + timedelta(seconds=10 * n)
        test_folder = f"t{n:02d}"
        (folder / test_folder).mkdir(parents=True)
        if measured:
            (folder / test_folder / "measurements.json").write_text(json.dumps(measured))
        entries.append(
            {
                "nodeid": nodeid,
                "suite": nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py"),
                "outcome": outcome,
                "duration_s": 9.5,
                "started": at.isoformat(),
                "ended": (at + timedelta(seconds=9.5)).isoformat(),
                "folder": test_folder,
                "message": None if outcome in ("passed", "skipped") else "AssertionError: no",
            }
        )
    counts = {o: sum(e["outcome"] == o for e in entries) for o in ("passed", "failed", "error")}
    counts["skipped"] = sum(e["outcome"] == "skipped" for e in entries)
    run = {
        "schema": 1,
        "rig": {"name": rig, "file": f"/lab/{rig}.toml", "sha256": "ab" * 32, "kind": "hardware"},
        "profile": "reference",
        "hil_version": "0.1.0",
        "firmware": {"version": firmware, "sha256": None, "project": None, "idf_version": None,
                     "build_date": None, "build_time": None, "path": None, "method": None,
                     "written": None},
        "device": {"online_version": firmware, "boot_reason": "poweron", "means": "board_power",
                   "bringup_s": 4.2},
        "host": host,
        "started": started.isoformat(),
        "ended": (started + timedelta(seconds=10 * len(tests) + 5)).isoformat(),
        "suites_revision": "0123abc",
        "suites_dirty": False,
        "outcome": "passed" if counts["failed"] + counts["error"] == 0 else "failed",
        "counts": counts,
        "tests": entries,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(run, indent=2))
    return folder


def bench_night(root: Path, night: int) -> Path:
    return write_run(
        root / f"{BENCH}-{night:02d}",
        NIGHT0 + timedelta(days=night),
        BENCH,
        "1.0.0" if night < 8 else "1.1.0",
        {
            ECHO: ("passed", [measurement("echo_round_trip", BENCH_ECHO[night], "s", high=2.0)]),
            RECOVERY: (
                "passed",
                [
                    measurement("detection", 3.0, "s", high=10.0),
                    measurement("recovery", BENCH_RECOVERY[night], "s", high=60.0),
                ],
            ),
            OTA: (
                "passed",
                [
                    measurement("ota_throughput", BENCH_THROUGHPUT[night], "kB/s"),
                    measurement("ota_retransmissions", BENCH_RETRANSMISSIONS[night], "chunks"),
                ],
            ),
            BROKER: (BENCH_BROKER[night], []),
            OVERSIZE: ("skipped", []),
        },
    )


def virtual_night(root: Path, night: int) -> Path:
    """The virtual rig runs an hour after the bench, always on 1.0.0, with a 2 s recovery."""
    return write_run(
        root / f"{VIRTUAL}-{night:02d}",
        NIGHT0 + timedelta(days=night, hours=1),
        VIRTUAL,
        "1.0.0",
        {
            RECOVERY: ("passed", [measurement("recovery", 2.0, "s", high=60.0)]),
            BROKER: (VIRTUAL_BROKER[night], []),
        },
    )


@pytest.fixture
def nights(tmp_path) -> tuple[History, dict[tuple[str, int], int]]:
    """Ten nights on both rigs added in the order they ran; their run ids by (rig, night)."""
    history = History(tmp_path / "history.sqlite")
    ids = {}
    for night in range(NIGHTS):
        ids[BENCH, night] = history.add_run(bench_night(tmp_path / "runs", night))
        ids[VIRTUAL, night] = history.add_run(virtual_night(tmp_path / "runs", night))
    yield history, ids
    history.close()


def test_runs_come_oldest_first_per_rig_with_their_facts(nights) -> None:
    history, ids = nights
    bench = history.runs(BENCH)
    assert [r["id"] for r in bench] == [ids[BENCH, n] for n in range(NIGHTS)]
    assert [r["firmware_version"] for r in bench] == ["1.0.0"] * 8 + ["1.1.0"] * 2
    assert (bench[7]["passed"], bench[7]["failed"], bench[7]["skipped"]) == (3, 0, 2)
    assert (bench[1]["passed"], bench[1]["failed"], bench[1]["outcome"]) == (3, 1, "failed")
    assert bench[0]["started"] == NIGHT0.isoformat() and bench[0]["rig_kind"] == "hardware"
    assert len(history.runs()) == 2 * NIGHTS
    assert [r["rig"] for r in history.runs()[:4]] == [BENCH, VIRTUAL, BENCH, VIRTUAL]


def test_trends_follow_each_measurement_by_rig_and_firmware(nights) -> None:
    history, ids = nights
    trends = {(t.nodeid, t.measurement): t for t in history.trends(BENCH)}
    assert sorted(trends) == sorted(
        [
            (ECHO, "echo_round_trip"),
            (OTA, "ota_retransmissions"),
            (OTA, "ota_throughput"),
            (RECOVERY, "detection"),
            (RECOVERY, "recovery"),
        ]
    )
    recovery = trends[RECOVERY, "recovery"]
    assert (recovery.unit, recovery.low, recovery.high) == ("s", None, 60.0)
    assert recovery.points == [
        Point(
            ids[BENCH, n],
            (NIGHT0 + timedelta(days=n)).isoformat(),
            BENCH,
            "1.0.0" if n < 8 else "1.1.0",
            BENCH_RECOVERY[n],
        )
        for n in range(NIGHTS)
    ]

    both = {(t.nodeid, t.measurement): t for t in history.trends()}
    assert [(p.rig, p.value) for p in both[RECOVERY, "recovery"].points] == [
        pair for n in range(NIGHTS) for pair in ((BENCH, BENCH_RECOVERY[n]), (VIRTUAL, 2.0))
    ]
    last4 = {(t.nodeid, t.measurement): t for t in history.trends(last=4)}
    assert [p.run_id for p in last4[RECOVERY, "recovery"].points] == [
        ids[BENCH, 8],
        ids[VIRTUAL, 8],
        ids[BENCH, 9],
        ids[VIRTUAL, 9],
    ]


def test_flake_rate_counts_failures_and_flips_on_one_rig_and_firmware(tmp_path) -> None:
    with History(tmp_path / "history.sqlite") as history:
        for night in range(8):  # firmware 1.0.0 only
            history.add_run(bench_night(tmp_path / "runs", night))
        # passed failed passed passed failed failed passed (skipped): 3 of 7, four changes
        flakes = history.flake_rates()
        assert flakes[0] == Flake(BROKER, runs=7, failures=3, flips=4, rate=3 / 7)
        assert Flake(ECHO, runs=8, failures=0, flips=0, rate=0.0) in flakes
        assert OVERSIZE not in {f.nodeid for f in flakes}, "a test only ever skipped has no rate"
        assert history.flake_rates(last=4)[0] == Flake(BROKER, 4, 2, 2, 0.5)  # P F F P

        for night in (8, 9):  # firmware 1.1.0: its record starts afresh
            history.add_run(bench_night(tmp_path / "runs", night))
        assert Flake(BROKER, runs=2, failures=0, flips=0, rate=0.0) in history.flake_rates()


def test_flake_rate_per_rig_counts_an_error_as_a_failure(nights) -> None:
    history, _ = nights
    virtual = {f.nodeid: f for f in history.flake_rates(rig=VIRTUAL)}
    assert virtual[BROKER] == Flake(BROKER, runs=10, failures=1, flips=2, rate=0.1)
    assert {f.nodeid: f for f in history.flake_rates(rig=BENCH)}[BROKER].runs == 2
    # Without a rig, each test is judged on the rig and firmware of its newest run.
    assert {f.nodeid: f for f in history.flake_rates()}[BROKER] == virtual[BROKER]


def test_a_slower_recovery_and_a_lower_throughput_are_regressions(nights) -> None:
    history, ids = nights
    last = ids[BENCH, 9]
    assert history.regressions(last) == [
        # baseline: nights 2..8 on the bench, 19.5 20 20 20 21 22 40 -> 20; virtual's 2 s not in it
        Regression(RECOVERY, "recovery", "s", BENCH, 26.0, 20.0, pytest.approx(0.30)),
        Regression(OTA, "ota_throughput", "kB/s", BENCH, 37.5, 50.0, pytest.approx(0.25)),
    ]
    wider = history.regressions(last, window=9)  # nights 0..8: three 40 s nights lift it to 21
    assert [(r.measurement, r.baseline_median, round(r.change, 3)) for r in wider] == [
        ("ota_throughput", 50.0, 0.25),
        ("recovery", 21.0, 0.238),  # worst first
    ]
    assert history.regressions(last, threshold=0.35) == []
    assert history.regressions(ids[BENCH, 8]) == []
    assert history.regressions(ids[VIRTUAL, 9]) == []


def test_no_verdict_below_three_earlier_runs(tmp_path) -> None:
    with History(tmp_path / "history.sqlite") as history:
        ids = []
        for night, seconds in enumerate([20.0, 20.0, 40.0, 40.0]):
            run = write_run(
                tmp_path / f"run{night}",
                NIGHT0 + timedelta(days=night),
                BENCH,
                "1.0.0",
                {RECOVERY: ("passed", [measurement("recovery", seconds, "s", high=60.0)])},
            )
            ids.append(history.add_run(run))
        assert history.regressions(ids[2]) == [], "twice as slow, but only two runs before it"
        assert history.regressions(ids[3]) == [
            Regression(RECOVERY, "recovery", "s", BENCH, 40.0, 20.0, 1.0)
        ]


def test_the_same_run_added_twice_is_one_run(tmp_path) -> None:
    run = bench_night(tmp_path / "runs", 1)
    with History(tmp_path / "history.sqlite") as history:
        assert history.run_id(run) is None
        first = history.add_run(run)
        assert history.add_run(run) == first == history.run_id(run)
        copy = shutil.copytree(run, tmp_path / "elsewhere" / run.name)
        assert history.add_run(copy) == first
        assert len(history.runs()) == 1
        assert history.runs()[0]["folder"] == str(copy.resolve())
        assert (history.runs()[0]["passed"], history.runs()[0]["failed"]) == (3, 1)
        recovery = [t for t in history.trends() if t.measurement == "recovery"]
        assert [p.value for p in recovery[0].points] == [BENCH_RECOVERY[1]]

        doc = json.loads((copy / "run.json").read_text())
        doc["tests"][3]["outcome"] = "passed"  # the same run, rewritten
        (copy / "run.json").write_text(json.dumps(doc))
        assert history.add_run(copy) == first
        assert (history.runs()[0]["passed"], history.runs()[0]["failed"]) == (4, 0)


def _add_all(path: str, folders: list[str], together) -> None:
    together.wait()
    with History(Path(path)) as history:
        for folder in folders:
            history.add_run(Path(folder))


def test_two_processes_adding_at_once_lose_nothing(tmp_path) -> None:
    """Two runs finishing together (two CI jobs) open a new file and add at the same moment."""
    shared = str(bench_night(tmp_path / "runs", 0))
    each = {
        rig: [
            str(write_run(tmp_path / rig / str(n), NIGHT0 + timedelta(minutes=n), rig, "1.0.0",
                          {ECHO: ("passed", [measurement("echo_round_trip", n, "s")])}, host=rig))
            for n in range(15)
        ]
        for rig in ("ci-job-1", "ci-job-2")
    }  # fmt: skip
    path = tmp_path / "history.sqlite"
    spawn = multiprocessing.get_context("spawn")
    together = spawn.Barrier(len(each))
    workers = [
        spawn.Process(target=_add_all, args=(str(path), [shared, *folders], together))
        for folders in each.values()
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]

    with History(path) as history:
        runs = history.runs()
        assert len(runs) == 31, "15 runs from each job and the one both added"
        for rig in each:
            assert [r["passed"] for r in history.runs(rig)] == [1] * 15
            (trend,) = history.trends(rig)
            assert [p.value for p in trend.points] == list(range(15))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (1,)


def _remove_run_json(run: Path) -> None:
    (run / "run.json").unlink()


def _cut_off(run: Path) -> None:
    text = (run / "run.json").read_text()
    (run / "run.json").write_text(text[: len(text) // 2])


def _edit(change):
    def edit(run: Path) -> None:
        doc = json.loads((run / "run.json").read_text())
        change(doc)
        (run / "run.json").write_text(json.dumps(doc))

    return edit


def _bad_measurement(run: Path) -> None:
    path = run / "t01" / "measurements.json"
    doc = json.loads(path.read_text())
    doc[1]["value"] = "fast"
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "file", "says"),
    [
        (_remove_run_json, "run.json", "does not exist"),
        (_cut_off, "run.json", "is not valid JSON"),
        (_edit(lambda d: d.update(schema=2)), "run.json", "schema 2"),
        (_edit(lambda d: d["rig"].pop("name")), "run.json", "rig.name must be a string"),
        (_edit(lambda d: d["tests"][2].update(outcome="xfail")), "run.json", "tests[2].outcome"),
        (_edit(lambda d: d.update(started="2025-03-02T01:00:00")), "run.json", "time zone"),
        (_edit(lambda d: d["tests"].append(d["tests"][0])), "run.json", "twice"),
        (_bad_measurement, "t01/measurements.json", "[1].value must be a number, found 'fast'"),
    ],
    ids=["no run.json", "cut off", "unknown schema", "no rig name", "unknown outcome",
         "time without zone", "test twice", "bad measurement"],
)  # fmt: skip
def test_a_broken_run_folder_is_refused_whole(tmp_path, damage, file, says) -> None:
    good = bench_night(tmp_path / "runs", 0)
    broken = bench_night(tmp_path / "runs", 1)
    damage(broken)
    with History(tmp_path / "history.sqlite") as history:
        history.add_run(good)
        with pytest.raises(HistoryError) as refused:
            history.add_run(broken)
        assert str(broken / file) in str(refused.value)
        assert says in str(refused.value)
        assert [(r["started"], r["passed"]) for r in history.runs()] == [(NIGHT0.isoformat(), 4)]
        assert len(history.trends()[0].points) == 1


class _FailingInserts:
    """A connection whose measurement inserts fail, as a full disk would."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def executemany(self, sql: str, rows):
        if "INSERT INTO measurements" in sql:
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.executemany(sql, rows)

    def __getattr__(self, name: str):
        return getattr(self._db, name)


def test_a_write_failing_halfway_leaves_nothing_of_the_run(tmp_path) -> None:
    path = tmp_path / "history.sqlite"
    with History(path) as history:
        history._db = _FailingInserts(history._db)  # type: ignore[assignment]
        with pytest.raises(HistoryError, match="disk is full") as refused:
            history.add_run(bench_night(tmp_path / "runs", 0))
        assert str(path) in str(refused.value)
    with sqlite3.connect(path) as db:
        counts = [
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "verdicts")
        ]
    assert counts == [0, 0]


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database, just some bytes of a log file\n" * 40)


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")


def _newer(path: Path) -> None:
    History(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 2")


@pytest.mark.parametrize(
    ("make", "says"),
    [(_garbage, "is not a hil history file"), (_foreign, "not a hil history"), (_newer, "newer")],
    ids=["not sqlite", "someone else's sqlite", "newer history"],
)
def test_a_file_that_is_no_history_of_ours_is_refused_untouched(tmp_path, make, says) -> None:
    path = tmp_path / "history.sqlite"
    make(path)
    before = path.read_bytes()
    with pytest.raises(HistoryError, match=says) as refused:
        History(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == before


def test_an_unknown_run_id_is_named(nights) -> None:
    history, _ = nights
    with pytest.raises(HistoryError, match="holds no run 999"):
        history.regressions(999)
