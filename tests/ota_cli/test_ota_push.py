"""`hil ota push` against the twin, checked from outside through an independent subscriber."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest

from hil.cli import ota as ota_cli
from hil.protocol.image import build_image
from tests.ota_cli.conftest import PASSWORD, TOPICS

TWIN_VERSION = "1.0.0"  # rigs/sim.toml [sim] firmware_version
IMAGE_SIZE = 6000


def _image(tmp_path: Path, version: str) -> Path:
    path = tmp_path / f"fw-{version}.bin"
    path.write_bytes(build_image(version, IMAGE_SIZE))
    return path


def _summary(version: str) -> re.Pattern[str]:
    return re.compile(
        rf"pushed fw-{re.escape(version)}\.bin \({re.escape(version)}, {IMAGE_SIZE} bytes, "
        rf"12 chunks\) in [\d.]+ s, [\d.]+ kB/s, \d+ retransmissions, window auto \(up to \d+\); "
        rf"device now reports {re.escape(version)}"
    )


def test_push_installs_the_new_version(rig_file, watch, tmp_path, capsys):
    image = _image(tmp_path, "2.0.0")
    code = ota_cli.main(["push", str(image), "--rig", str(rig_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _summary("2.0.0").fullmatch(out.strip()), out
    watch.wait_for(TOPICS.status_topic, "STATUS:ONLINE:2.0.0")
    assert "100.0 %" in err, "no progress reached 100 %"
    assert PASSWORD not in out + err


def test_same_version_is_refused_and_nothing_is_sent(rig_file, watch, tmp_path, capsys):
    image = _image(tmp_path, TWIN_VERSION)
    code = ota_cli.main(["push", str(image), "--rig", str(rig_file)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert f"already reports version {TWIN_VERSION}" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1, err
    assert watch.on(TOPICS.firmware_topic) == []
    assert watch.on(TOPICS.status_topic).count(f"STATUS:ONLINE:{TWIN_VERSION}") == 1


def test_force_pushes_the_same_version(rig_file, watch, tmp_path, capsys):
    image = _image(tmp_path, TWIN_VERSION)
    code = ota_cli.main(["push", str(image), "--rig", str(rig_file), "--force"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _summary(TWIN_VERSION).fullmatch(out.strip()), out
    assert "OTA:END" in watch.on(TOPICS.firmware_topic)
    # once when the twin came up, once after rebooting into the pushed image
    assert watch.on(TOPICS.status_topic).count(f"STATUS:ONLINE:{TWIN_VERSION}") == 2


def test_non_image_is_refused_before_any_rig_comes_up(tmp_path, capsys, monkeypatch):
    def no_rig(*args, **kwargs):
        raise AssertionError("a rig was brought up for a file that is not an image")

    monkeypatch.setattr(ota_cli, "rig_up", no_rig)
    monkeypatch.setattr(ota_cli, "load_rig", no_rig)
    junk = tmp_path / "zeros.bin"
    junk.write_bytes(bytes(2048))
    started = time.monotonic()
    code = ota_cli.main(["push", str(junk), "--rig", "rigs/sim.toml"])
    _, err = capsys.readouterr()
    assert code == 1
    assert time.monotonic() - started < 2.0
    assert err.count("\n") == 1
    assert str(junk) in err and "first byte is 0x00" in err and "nothing was sent" in err


def test_bad_window_is_a_usage_error(tmp_path, capsys):
    assert ota_cli.main(["push", str(tmp_path / "x.bin"), "--rig", "r.toml", "--window", "0"]) == 2
    assert "--window" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_timeout_is_a_usage_error(tmp_path, capsys, value):
    argv = ["push", str(tmp_path / "x.bin"), "--rig", "r.toml", "--timeout", value]
    assert ota_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--timeout: must be a finite number greater than 0, not {value}" in err, err


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_prints_a_line_per_tenth_when_not_a_terminal():
    stream = _Pipe()
    progress = ota_cli.ProgressLine(stream, 10_000)
    for acked in range(0, 10_001, 500):
        progress(acked, 10_000, 1)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [
        f"{n * 1000:>5}/10000".strip() for n in range(11)
    ]
    assert all("kB/s" in line and "ETA" in line and "1 retransmissions" in line for line in lines)


def test_progress_redraws_in_place_on_a_terminal():
    stream = _Terminal()
    progress = ota_cli.ProgressLine(stream, 1000)
    for acked in (100, 500, 1000):
        progress(acked, 1000, 0)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")


@pytest.mark.parametrize("argv", [["push"], ["pull", "x.bin", "--rig", "r.toml"]])
def test_usage_errors_exit_2(argv, capsys):
    assert ota_cli.main(argv) == 2
