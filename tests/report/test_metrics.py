"""OpenMetrics of one run, read back by prometheus_client's parser and by Prometheus' own
(`promtool`, from Debian's prometheus package), sample for sample."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from hil.report.history import HistoryError
from hil.report.metrics import write_openmetrics

# pytest writes a non-ASCII id as an escape, so nodeids hold backslashes; this one quotes too.
ECHO = 'test_suites/test_echo.py::test_echo[caf\\xe9 "quoted"]'
RECOVERY = "test_suites/test_recovery.py::test_recovers_after_power_cut[medium]"
OTA = "test_suites/test_ota.py::test_ota_delivers_the_image_despite[drop_middle]"
OVERSIZE = "test_suites/test_ota.py::test_oversize_begin_is_refused"
BROKER = "test_suites/test_broker_protocol.py::test_device_connects_with_the_profiles_mqtt_version"
RIG_SHA = "5f" * 32
FIRMWARE_SHA = "c0ffee" + "00" * 29

TESTS = {
    ECHO: ("passed", [("echo_round_trip", 0.42, "s"), ("decrypt", 850.0, "µs")]),
    RECOVERY: ("passed", [("detection", 3.5, "s"), ("recovery", 21.25, "s")]),
    OTA: ("failed", [("ota_throughput", 48.5, "kB/s"), ("ota_retransmissions", 3.0, "chunks")]),
    OVERSIZE: ("skipped", []),
    BROKER: ("error", []),
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def sample(name: str, value: float, **labels: str) -> Samples:
    return {(name, frozenset(labels.items())): value}


EXPECTED: Samples = {
    **sample("hil_measurement", 0.42, rig="bench-a", test=ECHO, measurement="echo_round_trip",
             unit="s", firmware_version="1.1.0"),
    **sample("hil_measurement", 850.0, rig="bench-a", test=ECHO, measurement="decrypt",
             unit="µs", firmware_version="1.1.0"),
    **sample("hil_measurement", 3.5, rig="bench-a", test=RECOVERY, measurement="detection",
             unit="s", firmware_version="1.1.0"),
    **sample("hil_measurement", 21.25, rig="bench-a", test=RECOVERY, measurement="recovery",
             unit="s", firmware_version="1.1.0"),
    **sample("hil_measurement", 48.5, rig="bench-a", test=OTA, measurement="ota_throughput",
             unit="kB/s", firmware_version="1.1.0"),
    **sample("hil_measurement", 3.0, rig="bench-a", test=OTA, measurement="ota_retransmissions",
             unit="chunks", firmware_version="1.1.0"),
    **sample("hil_test_passed", 1, rig="bench-a", test=ECHO, firmware_version="1.1.0"),
    **sample("hil_test_passed", 1, rig="bench-a", test=RECOVERY, firmware_version="1.1.0"),
    **sample("hil_test_passed", 0, rig="bench-a", test=OTA, firmware_version="1.1.0"),
    **sample("hil_test_passed", 0, rig="bench-a", test=BROKER, firmware_version="1.1.0"),
    **sample("hil_run_tests", 2, rig="bench-a", outcome="passed"),
    **sample("hil_run_tests", 1, rig="bench-a", outcome="failed"),
    **sample("hil_run_tests", 1, rig="bench-a", outcome="error"),
    **sample("hil_run_tests", 1, rig="bench-a", outcome="skipped"),
    **sample("hil_run_duration_seconds", 754.5, rig="bench-a"),  # 01:00:00+01:00 to 00:12:34.5Z
    **sample("hil_run_info", 1, rig="bench-a", rig_sha256=RIG_SHA, profile="reference",
             hil_version="0.1.0", firmware_version="1.1.0", firmware_sha256=FIRMWARE_SHA,
             outcome="error"),
}  # fmt: skip


def write_run(folder: Path) -> Path:
    """A run folder as hil writes it, with TESTS in it."""
    entries = []
    for n, (nodeid, (outcome, measured)) in enumerate(TESTS.items()):
        (folder / f"t{n}").mkdir(parents=True)
        if measured:
            (folder / f"t{n}" / "measurements.json").write_text(
                json.dumps(
                    [
                        {
                            "name": k,
                            "value": v,
                            "unit": u,
                            "low": None,
                            "high": None,
                            "passed": True,
                        }
                        for k, v, u in measured
                    ]
                ),
                encoding="utf-8",
            )
        entries.append(
            {"nodeid": nodeid, "suite": nodeid.split("::")[0], "outcome": outcome,
             "duration_s": 1.0, "started": "2025-03-01T01:00:05+01:00",
             "ended": "2025-03-01T01:00:06+01:00", "folder": f"t{n}", "message": None}
        )  # fmt: skip
    run = {
        "schema": 1,
        "rig": {"name": "bench-a", "file": "/lab/a.toml", "sha256": RIG_SHA, "kind": "hardware"},
        "profile": "reference",
        "hil_version": "0.1.0",
        "firmware": {"version": "1.1.0", "sha256": FIRMWARE_SHA, "project": "echo",
                     "idf_version": "v5.2.1", "build_date": "Mar  1 2025", "build_time": "00:10:00",
                     "path": "/builds/echo.bin", "method": "serial", "written": True},
        "device": {"online_version": "1.1.0", "boot_reason": "poweron", "means": "board_power",
                   "bringup_s": 4.2},
        "host": "lab-pc",
        "started": "2025-03-01T01:00:00+01:00",
        "ended": "2025-03-01T00:12:34.500000+00:00",
        "suites_revision": None,
        "suites_dirty": None,
        "outcome": "error",
        "counts": {"passed": 2, "failed": 1, "error": 1, "skipped": 1},
        "tests": entries,
    }  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run), encoding="utf-8")
    return folder


@pytest.fixture
def exposition(tmp_path) -> Path:
    out = tmp_path / "textfile" / "hil.prom"
    assert write_openmetrics(write_run(tmp_path / "run"), out) == out
    return out


def test_the_library_parser_reads_back_every_sample(exposition) -> None:
    text = exposition.read_text(encoding="utf-8")
    assert text.endswith("\n# EOF\n")
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name, frozenset(s.labels.items())] = s.value
    assert found == EXPECTED
    assert "# UNIT hil_run_duration_seconds seconds" in text


promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed"
)


@promtool
def test_promtool_lints_it_as_prometheus_text(exposition) -> None:
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition.read_bytes(),
        capture_output=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


SERIES = re.compile(r"^\{(?P<labels>.*)\} (?P<value>\S+) (?P<ms>\d+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@promtool
def test_prometheus_openmetrics_parser_stores_every_sample(exposition, tmp_path) -> None:
    """Backfilled into a TSDB by promtool (which wants a timestamp per sample) and dumped."""
    stamped = tmp_path / "stamped.om"
    stamped.write_text(
        "".join(
            line if line.startswith("#") else line.rstrip("\n") + " 1740787200\n"
            for line in exposition.read_text(encoding="utf-8").splitlines(keepends=True)
        ),
        encoding="utf-8",
    )
    tsdb = tmp_path / "tsdb"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(stamped), str(tsdb)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    (tsdb / "wal").mkdir(exist_ok=True)  # dump opens the folder as a live TSDB
    dump = subprocess.run(
        ["promtool", "tsdb", "dump", str(tsdb)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    stored: Samples = {}
    for line in dump.splitlines():
        series = SERIES.match(line)
        assert series, f"unexpected dump line {line!r}"
        labels = {k: json.loads(f'"{v}"') for k, v in LABEL.findall(series["labels"])}
        name = labels.pop("__name__")
        assert series["ms"] == "1740787200000"
        stored[name, frozenset(labels.items())] = float(series["value"])
    assert stored == EXPECTED


def test_a_broken_run_folder_leaves_the_last_file_in_place(tmp_path, exposition) -> None:
    before = exposition.read_bytes()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text('{"schema": 1, "rig": {"name": "bench-a"}, "tes')
    with pytest.raises(HistoryError, match="is not valid JSON") as refused:
        write_openmetrics(broken, exposition)
    assert str(broken / "run.json") in str(refused.value)
    assert exposition.read_bytes() == before
    assert sorted(p.name for p in exposition.parent.iterdir()) == ["hil.prom"]
