"""`hil image info|make` through main(), as the core CLI dispatches it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli.image import main
from hil.protocol.image import build_image


def test_make_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fw.bin"
    assert main(["make", "--version", "1.4.0", "--size", "4001", "--project", "lab", str(out)]) == 0
    made = capsys.readouterr().out
    assert f"wrote {out}: ESP32-S3 app image, version 1.4.0, project lab, 4016 bytes" in made
    assert "(asked 4001, rounded up to a multiple of 16)" in made
    assert out.stat().st_size == 4016

    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    for line in (
        "fw.bin: ESP32-S3 app image, 4016 bytes",
        "version:   1.4.0",
        "project:   lab",
        "segments:  2: 0x3C000020",
        "(valid)",
        "OTA:       8 chunks of 508 bytes",
    ):
        assert line in shown
    assert shown.count("(valid)") == 2


def test_make_is_reproducible_by_seed(tmp_path: Path) -> None:
    paths = [tmp_path / f"{n}.bin" for n in range(3)]
    for path, seed in zip(paths, ["1", "1", "2"], strict=True):
        assert main(["make", "--version", "1", "--size", "2000", "--seed", seed, str(path)]) == 0
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b != c


def test_make_smallest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make", "--version", "1", "--size", "10", str(tmp_path / "s.bin")]) == 0
    assert "(asked 10; the smallest image is 352 bytes)" in capsys.readouterr().out


GOOD = build_image("1.0.0", 4096)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes(2048), "first byte is 0x00, an ESP32 image starts with 0xE9"),
        (GOOD[:1000] + b"\xff" + GOOD[1001:], "checksum byte is 0x"),
        (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "appended SHA-256 does not match"),
        (GOOD[:-100], "runs past the end of the file"),
    ],
    ids=["zeros", "checksum", "sha256", "truncated"],
)
def test_info_refuses_bad_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, message: str
) -> None:
    path = tmp_path / "firmware.bin"
    path.write_bytes(data)
    assert main(["info", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("firmware.bin is not an ESP32 app image: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "{tmp}/missing.bin"], "cannot read {tmp}/missing.bin: No such file"),
        (["make", "--version", "x" * 32, "--size", "4096", "{tmp}/a.bin"], "longer than 31"),
        (["make", "--version", "1", "--size", "4096", "{tmp}/no/dir/a.bin"], "cannot write"),
    ],
    ids=["missing", "long-version", "unwritable"],
)
def test_refusals_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [[], ["make", "--size", "4096", "out.bin"], ["make", "--version", "1", "--size", "-5", "o"]],
    ids=["no-verb", "no-version", "negative-size"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: hil image" in capsys.readouterr().err
