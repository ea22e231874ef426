"""The benchmark: its UART arithmetic, and that `--quick` runs end to end on the twin."""

from __future__ import annotations

import pytest

from hil import bench
from hil.profile import load_profile


def test_ceiling_counts_the_modems_framing():
    ceiling = bench.uart_ceiling(load_profile(), 262144)
    # "\r\n+CMQTTRXSTART: 0,15,684\r\n" 27, "+CMQTTRXTOPIC: 0,15\r\n" 21, topic + CRLF 17,
    # "+CMQTTRXPAYLOAD: 0,684\r\n" 24, base64 payload + CRLF 686, "+CMQTTRXEND: 0\r\n" 16
    assert ceiling.chunk_bytes == 27 + 21 + 17 + 24 + 686 + 16
    # ">" + OK twice (topic, payload), OK + "+CMQTTPUB: 0,0" for the publish
    assert ceiling.answer_bytes == 3 + 6 + 3 + 6 + 6 + 18
    assert ceiling.rate() == pytest.approx(508 * 11520 / (791 + 42))


@pytest.mark.slow
def test_quick_benchmark_prints_a_table(capsys):
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "UART ceiling" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("50 ")]
    assert [row[1] for row in rows] == ["1", "8"]
    assert rows[1][6] != "-"
