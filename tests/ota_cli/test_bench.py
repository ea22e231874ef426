"""The benchmark: its UART arithmetic, its verdicts, and a short run end to end on the twin."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from hil import bench
from hil.ota.window import AUTO, MAX_WINDOW
from hil.profile import load_profile

SIM_RIG = Path(__file__).resolve().parents[2] / "rigs" / "sim.toml"


def test_ceiling_counts_the_modems_framing():
    ceiling = bench.uart_ceiling(load_profile(), 262144)
    # "\r\n+CMQTTRXSTART: 0,15,684\r\n" 27, "+CMQTTRXTOPIC: 0,15\r\n" 21, topic + CRLF 17,
    # "+CMQTTRXPAYLOAD: 0,684\r\n" 24, base64 payload + CRLF 686, "+CMQTTRXEND: 0\r\n" 16
    assert ceiling.chunk_bytes == 27 + 21 + 17 + 24 + 686 + 16
    # ">" + OK twice (topic, payload), OK + "+CMQTTPUB: 0,0" for the publish
    assert ceiling.answer_bytes == 3 + 6 + 3 + 6 + 6 + 18
    assert ceiling.rate() == pytest.approx(508 * 11520 / (791 + 42))


def _run(rtt_ms: float, window, seconds: float, loss: float = 0.0) -> bench.Run:
    return bench.Run(rtt_ms, window, loss, 50800, 100, seconds, 0, 8)


def test_verdicts_are_ratios_to_the_ceiling_measured_in_the_same_run():
    runs = [
        _run(0, MAX_WINDOW, 10.0),
        _run(300, 1, 40.0),
        _run(300, AUTO, 10.4),  # 96 % of the measured ceiling
        _run(600, AUTO, 11.5),  # 87 %
        _run(600, 1, 80.0),  # 0.8 s a chunk: 8 of the ceiling's 0.1 s
        _run(600, AUTO, 20.0, loss=0.05),  # 50 %
        _run(300, AUTO, 16.0, loss=0.05),  # 62 %, no target
    ]
    lines = bench.verdicts(runs, bench.uart_ceiling(load_profile(), 50800))
    assert lines[0].startswith("measured ceiling: 5.08 kB/s at 0 ms with window 64")
    assert lines[1] == (
        "target at 300 ms, window auto: 96% of the measured ceiling (want >= 95%): MET"
    )
    assert lines[2] == (
        "target at 600 ms, window auto: 87% of the measured ceiling (want >= 90%): NOT MET"
    )
    # 0.05 / 0.95 = 0.0526 lost per chunk written, 8 chunk times each: 1 / 1.42 = 70 %
    assert lines[3] == (
        "target at 600 ms with 5% of the chunks lost, window auto: 50% of the measured ceiling "
        "(want >= 75%): NOT MET; the device writes in order, so no sender passes ~70% here: "
        "a chunk round trip is 8.0 chunk times, and each of the 5.3 chunks lost per 100 "
        "written idles the device that long: 1 / (1 + 0.053 x 8.0) = 70%; the target is "
        "above that bound: no window meets it with this device"
    )
    # 0.4 s a chunk at 300 ms: 4 chunk times, 1 / 1.21 = 83 %
    assert lines[4] == (
        "at 300 ms with 5% of the chunks lost, window auto (no target): 62% of the measured "
        "ceiling; the device writes in order, so no sender passes ~83% here: a chunk round "
        "trip is 4.0 chunk times, and each of the 5.3 chunks lost per 100 written idles the "
        "device that long: 1 / (1 + 0.053 x 4.0) = 83%"
    )
    assert len(lines) == 5


def test_a_lossy_target_below_its_bound_is_not_called_out_of_reach():
    runs = [_run(0, MAX_WINDOW, 10.0), _run(600, 1, 20.0), _run(600, AUTO, 12.0, loss=0.05)]
    line = bench.verdicts(runs, bench.uart_ceiling(load_profile(), 50800))[3]
    assert line.startswith("target at 600 ms with 5% of the chunks lost, window auto: 83% of ")
    assert "(want >= 75%): MET; the device writes in order, so no sender passes ~90% here" in line
    assert "above that bound" not in line


def test_a_failed_push_is_a_row_and_a_verdict_not_the_end_of_the_run():
    runs = [_run(0, MAX_WINDOW, 10.0), _run(300, AUTO, 0.0)]
    runs[1] = bench.Run(300, AUTO, 0.0, 50800, 0, 0.0, 0, 0, failed="no answer within 3 s")
    uart = bench.uart_ceiling(load_profile(), 50800)
    assert bench.table(runs, uart)[-1].endswith("300   auto   0% failed: no answer within 3 s")
    assert bench.verdicts(runs, uart)[1].endswith("(want >= 95%): NOT MET, the push failed")


def test_plan_measures_the_ceiling_first_on_a_twin_of_its_own():
    one, auto, lossy = bench.Push(1), bench.Push(AUTO), bench.Push(AUTO, 0.05)
    ceiling = bench.Push(MAX_WINDOW)
    assert bench.plan([300.0], [1, AUTO]) == {300.0: [one, auto], 0.0: [ceiling]}
    assert bench.plan([0.0], [AUTO], 0.05) == {0.0: [ceiling, auto, lossy]}


def test_bad_windows_are_a_usage_error(capsys):
    assert bench.main(["--windows", "1,fast"]) == 2
    assert "'fast' in '1,fast': a window is 'auto' or a whole number" in capsys.readouterr().err


def test_short_benchmark_prints_the_ratios_and_the_sized_window_beats_window_1(tmp_path, capsys):
    rig = tmp_path / "sim.toml"  # a copy: its flash file and rig lock are its own
    shutil.copy(SIM_RIG, rig)
    argv = ["--rig", str(rig), "--rtt", "300", "--size", "8192", "--windows", f"1,{AUTO}"]
    argv += ["--loss", "0"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "UART ceiling (115200 baud" in out
    rows = {
        tuple(line.split()[:2]): line.split()
        for line in out.splitlines()
        if re.match(r"\s+\d+ +(\d+|auto) ", line)
    }
    assert set(rows) == {("0", str(MAX_WINDOW)), ("300", "1"), ("300", AUTO)}
    assert rows[("0", str(MAX_WINDOW))][6] == "100%"  # the ceiling is its own yardstick
    speedup = float(rows[("300", AUTO)][8].removesuffix("x"))
    assert speedup > 2.0, out  # a round trip per chunk against a window that covers it
    assert re.search(
        r"^target at 300 ms, window auto: \d+% of the measured ceiling \(want >= 95%\): "
        r"(MET|NOT MET)$",
        out,
        re.MULTILINE,
    ), out
