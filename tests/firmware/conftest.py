"""ESP-IDF build outputs made the way the tools make them, and esptool's word on each.

A build folder is what `idf.py build` leaves: the bootloader, the partition table and the app,
and `flasher_args.json` in ESP-IDF's format (components/esptool_py/flasher_args.json.in) naming
each at its offset. Merged images come from `esptool merge-bin`; reference values (validation
hash, version, compile time) from `esptool image-info`, never from hil's own reader.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

from hil.protocol.image import build_image

APP_TYPE, DATA_TYPE = 0x00, 0x01
FACTORY, OTA_0 = 0x00, 0x10


def esptool(*args: str) -> str:
    """Run the installed esptool as its own program; its output."""
    result = subprocess.run(
        [sys.executable, "-m", "esptool", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"esptool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def image_info(path: Path) -> dict[str, str]:
    """What `esptool image-info` says of an app image."""
    text = esptool("--chip", "esp32s3", "image-info", str(path))
    fields = {}
    for key, label in (
        ("sha256", r"Validation hash: ([0-9a-f]{64}) \(valid\)"),
        ("version", r"App version: (.*)"),
        ("project", r"Project name: (.*)"),
        ("compiled", r"Compile time: (.*)"),
        ("idf", r"ESP-IDF: (.*)"),
    ):
        found = re.search(label, text)
        assert found, f"esptool image-info showed no {key}:\n{text}"
        fields[key] = found[1].strip()
    return fields


def partition_table(*entries: tuple[str, int, int, int, int]) -> bytes:
    """A binary partition table in gen_esp32part.py's layout: 32-byte entries (magic AA 50,
    type, subtype, offset, size, label, flags), the MD5 entry (EB EB, 14 x FF, the MD5 of
    the entries), 0xFF up to 0xC00."""
    body = b"".join(
        struct.pack("<2sBBII16sI", b"\xaa\x50", kind, subtype, offset, size, label.encode(), 0)
        for label, kind, subtype, offset, size in entries
    )
    body += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()
    return body.ljust(0xC00, b"\xff")


def default_table(app_offset: int = 0x10000, subtype: int = FACTORY) -> bytes:
    """ESP-IDF's "single factory app" table, with the app where asked."""
    return partition_table(
        ("nvs", DATA_TYPE, 0x02, 0x9000, 0x6000),
        ("phy_init", DATA_TYPE, 0x01, 0xF000, 0x1000),
        ("factory", APP_TYPE, subtype, app_offset, 0x100000),
    )


def ota_table() -> bytes:
    """A two-slot OTA table without a factory app, the virtual rig's device's layout:
    ESP-IDF's nvs, otadata at 0xD000 (0x2000 bytes) and phy_init, ota_0 and ota_1."""
    return partition_table(
        ("nvs", DATA_TYPE, 0x02, 0x9000, 0x4000),
        ("otadata", DATA_TYPE, 0x00, 0xD000, 0x2000),
        ("phy_init", DATA_TYPE, 0x01, 0xF000, 0x1000),
        ("ota_0", APP_TYPE, OTA_0, 0x10000, 0x1E0000),
        ("ota_1", APP_TYPE, OTA_0 + 1, 0x1F0000, 0x1E0000),
    )


def make_build(
    folder: Path,
    version: str = "1.2.0",
    *,
    size: int = 6000,
    app_offset: int = 0x10000,
    table: bytes | None = None,
    chip: str = "esp32s3",
    seed: int = 1,
    otadata: int | None = None,
) -> Path:
    """An ESP-IDF build folder for project "demo": bootloader, partition table, app and
    flasher_args.json; with `otadata` (its offset) also ota_data_initial.bin, as ESP-IDF
    builds it for a table with an OTA data partition (two erased sectors)."""
    (folder / "bootloader").mkdir(parents=True, exist_ok=True)
    (folder / "partition_table").mkdir(exist_ok=True)
    (folder / "bootloader" / "bootloader.bin").write_bytes(
        build_image("bootloader", 4000, project="bootloader", seed=seed + 100)
    )
    (folder / "partition_table" / "partition-table.bin").write_bytes(
        table if table is not None else default_table(app_offset)
    )
    (folder / "demo.bin").write_bytes(build_image(version, size, project="demo", seed=seed))
    app = f"0x{app_offset:x}"
    files = {
        "bootloader": ("0x0", "bootloader/bootloader.bin"),
        "partition-table": ("0x8000", "partition_table/partition-table.bin"),
        "app": (app, "demo.bin"),
    }
    if otadata is not None:
        (folder / "ota_data_initial.bin").write_bytes(b"\xff" * 0x2000)
        files["otadata"] = (f"0x{otadata:x}", "ota_data_initial.bin")
    args = {
        "write_flash_args": ["--flash_mode", "dio", "--flash_size", "2MB", "--flash_freq", "80m"],
        "flash_settings": {"flash_mode": "dio", "flash_size": "2MB", "flash_freq": "80m"},
        "flash_files": {offset: file for offset, file in files.values()},
        **{
            name: {"offset": offset, "file": file, "encrypted": "false"}
            for name, (offset, file) in files.items()
        },
        "extra_esptool_args": {
            "after": "hard_reset",
            "before": "default_reset",
            "stub": True,
            "chip": chip,
        },
    }
    (folder / "flasher_args.json").write_text(json.dumps(args, indent=4))
    return folder


def merge(build: Path, out: Path, app_offset: int = 0x10000) -> Path:
    """The build merged into one image by `esptool merge-bin`."""
    esptool(
        "--chip",
        "esp32s3",
        "merge-bin",
        "-o",
        str(out),
        "0x0",
        str(build / "bootloader" / "bootloader.bin"),
        "0x8000",
        str(build / "partition_table" / "partition-table.bin"),
        f"0x{app_offset:x}",
        str(build / "demo.bin"),
    )
    return out
