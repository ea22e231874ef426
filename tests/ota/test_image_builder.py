"""build_image makes files esptool accepts; parse_image refuses what a bootloader would."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hil.protocol.image import MIN_SIZE, ImageError, build_image, parse_image

esptool = pytest.mark.skipif(shutil.which("esptool") is None, reason="esptool is not on PATH")


@esptool
@pytest.mark.parametrize(
    ("size", "version"),
    [(None, "0.0.1"), (4096, "1.2.3"), (100000, "v2.0.0-rc1"), (262144, "3.14.159-lab")],
)
def test_esptool_accepts_built_images(tmp_path: Path, size: int | None, version: str) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(build_image(version, size, seed=5))
    out = subprocess.run(
        ["esptool", "image-info", str(path)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert re.search(r"^Checksum: 0x[0-9a-f]{2} \(valid\)$", out, re.M), out
    assert re.search(r"^Validation hash: [0-9a-f]{64} \(valid\)$", out, re.M), out
    assert re.search(rf"^App version: {re.escape(version)}$", out, re.M), out
    assert path.stat().st_size == (size or MIN_SIZE)


def test_built_image_reads_back() -> None:
    info = parse_image(build_image("4.5.6", 100000, project="lab-fw"))
    assert (info.size, info.version, info.project_name, info.chip) == (
        100000,
        "4.5.6",
        "lab-fw",
        "ESP32-S3",
    )


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


GOOD = build_image("1.0.0", 4096)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (flip(GOOD, 1000), "checksum"),
        (flip(GOOD, len(GOOD) - 33), "checksum"),  # the checksum byte itself
        (flip(GOOD, len(GOOD) - 1), "sha256"),
        (GOOD[:-100], "truncated"),
        (GOOD[:10], "truncated"),
        (bytes(2048), "magic"),  # the seed's test file
        (GOOD + b"\0" * 16, "size"),
    ],
    ids=["data-byte", "checksum-byte", "hash-byte", "short", "header-only", "zeros", "stray"],
)
def test_parse_image_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as refused:
        parse_image(data)
    assert refused.value.reason == reason


def test_sizes_round_up_to_16() -> None:
    assert len(build_image("1", 4001)) == 4016
    assert len(build_image("1", 1)) == MIN_SIZE
