"""What a firmware path names: an app .bin, a merged image or an ESP-IDF build folder, each
with its regions at their offsets, verified before anything is written; and each bad input
refused with one message naming the file and the fix."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from functools import reduce
from pathlib import Path

import pytest

from hil.firmware.source import SourceError, read_source
from hil.protocol.image import build_image

from .conftest import (
    APP_TYPE,
    DATA_TYPE,
    OTA_0,
    default_table,
    esptool,
    image_info,
    make_build,
    merge,
    partition_table,
)

CHIP_ID_AT = 12  # extended header: WP pin, 3 drive bytes, then the chip id (u16)


def rehashed(body: bytearray) -> bytes:
    """An image whose appended SHA-256 is made again after an edit."""
    return bytes(body[:-32]) + hashlib.sha256(body[:-32]).digest()


def xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


def refused(path: Path, *needles: str, chip: str = "esp32s3") -> str:
    with pytest.raises(SourceError) as caught:
        read_source(path, chip)
    text = str(caught.value)
    for needle in needles:
        assert re.search(needle, text), f"{needle!r} not in: {text}"
    return text


# -- what each kind of path gives ----------------------------------------------------------
def test_an_app_bin_is_written_at_0x10000_with_what_esptool_reads_from_it(tmp_path) -> None:
    app = make_build(tmp_path / "build") / "demo.bin"
    reference = image_info(app)

    source = read_source(app, "esp32s3")

    assert source.kind == "app image"
    assert [(r.offset, r.data) for r in source.regions] == [(0x10000, app.read_bytes())]
    assert source.app_offset == 0x10000
    assert source.version == reference["version"] == "1.2.0"
    assert source.sha256 == reference["sha256"]
    assert source.info.project_name == reference["project"]
    assert f"{source.build_date} {source.build_time}" == reference["compiled"]
    facts = source.facts("serial", written=True)
    assert (facts.version, facts.sha256, facts.idf_version) == (
        "1.2.0",
        reference["sha256"],
        reference["idf"],
    )


def test_a_build_folder_writes_each_file_at_its_flasher_args_offset(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    files = json.loads((build / "flasher_args.json").read_text())["flash_files"]

    source = read_source(build, "esp32s3")

    assert source.kind == "build folder"
    assert [(r.offset, r.data) for r in source.regions] == sorted(
        (int(offset, 16), (build / name).read_bytes()) for offset, name in files.items()
    )
    assert [r.offset for r in source.regions] == [0x0, 0x8000, 0x10000]
    assert source.app == (build / "demo.bin").read_bytes()
    assert source.sha256 == image_info(build / "demo.bin")["sha256"]
    assert read_source(build / "flasher_args.json", "esp32s3").regions == source.regions


def test_a_build_folder_with_its_app_elsewhere_names_that_offset(tmp_path) -> None:
    build = make_build(tmp_path / "build", app_offset=0x20000)
    source = read_source(build, "esp32s3")
    assert source.app_offset == 0x20000
    assert source.regions[-1].offset == 0x20000


def test_a_merged_image_is_written_whole_from_0x0_and_its_app_found(tmp_path) -> None:
    build = make_build(tmp_path / "build", "2.0.1")
    merged = merge(build, tmp_path / "merged.bin")

    source = read_source(merged, "esp32s3")

    assert source.kind == "merged image"
    assert [(r.offset, r.data) for r in source.regions] == [(0x0, merged.read_bytes())]
    assert source.app_offset == 0x10000
    assert source.app == (build / "demo.bin").read_bytes()
    assert source.version == "2.0.1"
    assert source.sha256 == image_info(build / "demo.bin")["sha256"]


def test_a_merged_image_with_an_ota_layout_boots_ota_0(tmp_path) -> None:
    table = partition_table(
        ("nvs", DATA_TYPE, 0x02, 0x9000, 0x4000),
        ("otadata", DATA_TYPE, 0x00, 0xD000, 0x2000),
        ("ota_0", APP_TYPE, OTA_0, 0x20000, 0x100000),
        ("ota_1", APP_TYPE, OTA_0 + 1, 0x120000, 0x100000),
    )
    build = make_build(tmp_path / "build", app_offset=0x20000, table=table)
    source = read_source(merge(build, tmp_path / "merged.bin", 0x20000), "esp32s3")
    assert (source.app_offset, source.app) == (0x20000, (build / "demo.bin").read_bytes())


def test_a_region_compares_as_esptool_writes_it_padded_to_whole_words(tmp_path) -> None:
    app = tmp_path / "odd.bin"
    app.write_bytes(build_image("1.0.1", 5000))
    (region,) = read_source(app, "esp32s3").regions
    assert len(region.data) % 4 == 0  # an image ends on 16 + 32 bytes: nothing to pad
    assert region.md5 == hashlib.md5(app.read_bytes()).hexdigest()


# -- bad inputs ----------------------------------------------------------------------------
def test_a_missing_path_says_what_to_give(tmp_path) -> None:
    refused(tmp_path / "nope.bin", "nope.bin does not exist", "build folder")


def test_an_empty_file_is_refused(tmp_path) -> None:
    (tmp_path / "empty.bin").write_bytes(b"")
    refused(tmp_path / "empty.bin", "empty.bin is empty")


def test_a_file_that_is_no_image_is_refused(tmp_path) -> None:
    (tmp_path / "zeros.bin").write_bytes(bytes(2048))  # the seed's firmware of 2048 zero bytes
    refused(tmp_path / "zeros.bin", "zeros.bin is not an ESP32 image: first byte is 0x00", "IDF")


def test_a_corrupt_image_names_what_the_bootloader_would_refuse(tmp_path) -> None:
    data = bytearray(build_image("1.2.0", 4096))
    data[600] ^= 0x01
    (tmp_path / "bad.bin").write_bytes(data)
    refused(tmp_path / "bad.bin", r"bad.bin is not a valid ESP32 app image: checksum", "rebuild")


def test_a_truncated_image_is_refused(tmp_path) -> None:
    (tmp_path / "cut.bin").write_bytes(build_image("1.2.0", 4096)[:3000])
    refused(tmp_path / "cut.bin", "cut.bin is not a valid ESP32 app image", "past the end")


def test_an_image_for_another_chip_is_refused_before_anything_is_written(tmp_path) -> None:
    body = bytearray(build_image("1.2.0", 4096))
    body[CHIP_ID_AT : CHIP_ID_AT + 2] = (0).to_bytes(2, "little")  # ESP32
    (tmp_path / "esp32.bin").write_bytes(rehashed(body))
    info = esptool("image-info", str(tmp_path / "esp32.bin"))
    assert "Detected image type: ESP32\n" in info and "Validation hash" in info, info
    refused(
        tmp_path / "esp32.bin",
        "built for esp32, but the rig's device is an esp32s3",
        "idf.py set-target esp32s3",
    )


def test_an_image_without_app_descriptor_is_not_taken_for_an_app(tmp_path) -> None:
    body = bytearray(build_image("1.2.0", 4096))
    magic_at = 0x20
    checksum_at = len(body) - 33
    body[checksum_at] ^= xor(body[magic_at : magic_at + 4])  # the segment bytes change
    body[magic_at : magic_at + 4] = bytes(4)
    (tmp_path / "plain.bin").write_bytes(rehashed(body))
    info = esptool("--chip", "esp32s3", "image-info", str(tmp_path / "plain.bin"))
    assert "(valid)" in info and "App version" not in info, info
    refused(tmp_path / "plain.bin", "has no app descriptor", "a bootloader")


def test_a_folder_without_flasher_args_is_refused(tmp_path) -> None:
    refused(tmp_path, "without flasher_args.json", "idf.py build")


def test_flasher_args_that_are_not_json_are_refused(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    (build / "flasher_args.json").write_text("{ not json")
    refused(build, "flasher_args.json cannot be read as JSON")


def test_flasher_args_without_its_keys_are_refused(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    (build / "flasher_args.json").write_text('{"flash_files": {}}')
    refused(build, "is not ESP-IDF's flasher_args.json", '"flash_files" and "app"')


def test_a_file_missing_from_the_build_is_named(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    shutil.rmtree(build / "bootloader")
    refused(build, "lists bootloader/bootloader.bin at 0x0, which is not in", "idf.py build")


def test_a_build_for_another_chip_is_refused(tmp_path) -> None:
    build = make_build(tmp_path / "build", chip="esp32c3")
    refused(build, "is a build for esp32c3, but the rig's device is an esp32s3")


def test_an_encrypted_build_is_refused(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    args = json.loads((build / "flasher_args.json").read_text())
    args["app"]["encrypted"] = "true"
    (build / "flasher_args.json").write_text(json.dumps(args))
    refused(build, "marks app \\(demo.bin\\) for flash encryption")


def test_a_partition_table_without_the_app_partition_is_refused(tmp_path) -> None:
    build = make_build(tmp_path / "build", table=default_table(0x20000))
    refused(build, "partition-table.bin has no app partition at 0x10000", "factory at 0x20000")


def test_overlapping_files_are_refused(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    args = json.loads((build / "flasher_args.json").read_text())
    args["flash_files"]["0xf00"] = args["flash_files"].pop("0x8000")
    (build / "flasher_args.json").write_text(json.dumps(args))
    refused(build, r"bootloader.bin at 0x0 \(4000 bytes\) overlaps .*partition-table.bin at 0xF00")


def test_a_merged_image_whose_app_is_missing_is_refused(tmp_path) -> None:
    build = make_build(tmp_path / "build")
    merged = tmp_path / "merged.bin"
    esptool(
        "--chip",
        "esp32s3",
        "merge-bin",
        "-o",
        str(merged),
        "0x0",
        str(build / "bootloader" / "bootloader.bin"),
        "0x8000",
        str(build / "partition_table" / "partition-table.bin"),
    )
    refused(merged, "its app 'factory' at 0x10000", "ends before it")
