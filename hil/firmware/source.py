"""What a firmware path names, as the flasher writes it: files at flash offsets, and the app.

ESP-IDF leaves three kinds of output a lab points at:

- the app image alone (`build/<project>.bin`), written at 0x10000, where ESP-IDF's default
  partition tables put the app (for another layout, give the build folder);
- a merged image (`esptool merge-bin`): the flash from 0x0, whose partition table says where
  the app is;
- the build folder, whose `flasher_args.json` (written by `idf.py build`) lists the bootloader,
  the partition table, the app and any other file at their offsets.

Each is read and verified here as the bootloader would (header, checksum, appended SHA-256, the
app descriptor carrying the version the device will report, the chip it was built for) before
any part of the rig is touched, so a wrong path costs one line, not a bring-up.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.firmware import FirmwareFacts
from hil.protocol.image import (
    APP_DESC,
    EXT_HEADER,
    HASH_SIZE,
    HEADER,
    MAGIC,
    SEGMENT,
    ImageError,
    ImageInfo,
    parse_image,
)

APP_OFFSET = 0x10000
FLASHER_ARGS = "flasher_args.json"
SECTOR = 0x1000
APP_DESC_AT = HEADER.size + EXT_HEADER.size + SEGMENT.size  # the first segment's data
# ESP-IDF's partition table (gen_esp32part.py): 32-byte entries, then an MD5 entry, in 0xC00.
PT_ENTRY = struct.Struct("<2sBBII16sI")  # magic, type, subtype, offset, size, label, flags
PT_MAGIC = b"\xaa\x50"
PT_MD5_MAGIC = b"\xeb\xeb"
PT_MAX = 0xC00
APP_TYPE = 0x00
FACTORY, OTA_0 = 0x00, 0x10
WORD = 4  # esptool pads what it writes to whole 32-bit words with 0xFF


class SourceError(ValueError):
    """A path that names nothing the device could boot; the message names it and the fix."""


@dataclass(frozen=True)
class Region:
    """One file's bytes and the flash offset they go to."""

    offset: int
    data: bytes
    name: str

    @property
    def written(self) -> bytes:
        """The bytes flash holds once esptool has written the region."""
        return self.data + b"\xff" * (-len(self.data) % WORD)

    @property
    def md5(self) -> str:
        """What esptool's flash MD5 over this region reads when it is already written."""
        return hashlib.md5(self.written).hexdigest()

    def describe(self) -> str:
        return f"{self.name} at 0x{self.offset:X} ({len(self.data)} bytes)"


@dataclass(frozen=True)
class Partition:
    type: int
    subtype: int
    offset: int
    size: int
    label: str


@dataclass(frozen=True)
class FirmwareSource:
    """A verified firmware: what to write where, and the app it makes the device run."""

    path: Path
    kind: str  # "app image", "merged image" or "build folder"
    chip: str  # esptool's name of the chip it is built for
    regions: tuple[Region, ...]
    app_offset: int
    app: bytes  # the app image alone, what an OTA update sends
    info: ImageInfo
    build_date: str
    build_time: str
    partitions: tuple[Partition, ...] | None = None  # its partition table, when it has one

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def sha256(self) -> str:
        """The app's SHA-256, the validation hash `esptool image-info` shows."""
        return self.info.sha256

    def describe(self) -> str:
        return f"{self.kind} {self.path}"

    def facts(self, method: str, written: bool) -> FirmwareFacts:
        return FirmwareFacts(
            path=str(self.path),
            version=self.version,
            sha256=self.sha256,
            project=self.info.project_name,
            idf_version=self.info.idf_version,
            build_date=self.build_date,
            build_time=self.build_time,
            method=method,
            written=written,
        )


def read_source(path: Path, chip: str) -> FirmwareSource:
    """Read and verify what `path` names for a device with `chip`; SourceError if unusable."""
    if path.is_dir():
        return _build_folder(path, chip)
    if path.name == FLASHER_ARGS:
        return _build_folder(path.parent, chip)
    data = _read(path, "the firmware")
    try:
        info = parse_image(data)
    except ImageError as exc:
        table = _find_partition_table(data, path)
        if table is not None:
            return _merged(path, data, table, chip)
        if data[:1] == bytes((MAGIC,)):
            raise SourceError(
                f"{path} is not a valid ESP32 app image: {exc}; rebuild it, or check that "
                "the copy is whole"
            ) from None
        raise SourceError(
            f"{path} is not an ESP32 image: {exc}; give the app .bin, a merged image "
            f"(esptool merge-bin) or the build folder (with {FLASHER_ARGS}) of an ESP-IDF build"
        ) from None
    _check_app(info, str(path), chip)
    region = Region(APP_OFFSET, data, path.name)
    return _source(path, "app image", chip, (region,), APP_OFFSET, data, info)


def _source(
    path: Path,
    kind: str,
    chip: str,
    regions: tuple[Region, ...],
    app_offset: int,
    app: bytes,
    info: ImageInfo,
    partitions: list[Partition] | None = None,
) -> FirmwareSource:
    fields = APP_DESC.unpack_from(app, APP_DESC_AT)
    return FirmwareSource(
        path.resolve(),
        kind,
        chip,
        regions,
        app_offset,
        app,
        info,
        build_date=_cstr(fields[6]),
        build_time=_cstr(fields[5]),
        partitions=tuple(partitions) if partitions is not None else None,
    )


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(
            f"{what} {path} does not exist; give the app .bin, a merged image or the build "
            "folder of an ESP-IDF build"
        ) from None
    except OSError as exc:
        raise SourceError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not data:
        raise SourceError(f"{what} {path} is empty; rebuild it")
    return data


def _image_chip_ids() -> dict[int, str]:
    from esptool.targets import CHIP_DEFS

    return {
        cls.IMAGE_CHIP_ID: name
        for name, cls in CHIP_DEFS.items()
        if getattr(cls, "IMAGE_CHIP_ID", None) is not None
    }


def _check_chip(info: ImageInfo, where: str, chip: str) -> None:
    built_for = _image_chip_ids().get(info.chip_id, f"chip id {info.chip_id}")
    if built_for != chip:
        raise SourceError(
            f"{where} is built for {built_for}, but the rig's device is an {chip} "
            f"([firmware] chip); build for it (idf.py set-target {chip}) or correct "
            "[firmware] chip in the rig file"
        )


def _check_app(info: ImageInfo, where: str, chip: str) -> None:
    if not info.version:
        raise SourceError(
            f"{where} has no app descriptor (esp_app_desc_t), so it is not an app (a bootloader?) "
            "or the device could not report its version; give the app image of an ESP-IDF build"
        )
    _check_chip(info, where, chip)


def _image_at(data: bytes, start: int) -> bytes:
    """The ESP image that starts at `start` of a larger blob, cut where its header says it ends."""
    pos = start + HEADER.size + EXT_HEADER.size
    if pos > len(data):
        return data[start:]
    count, hash_appended = data[start + 1], data[pos - 1]
    for _ in range(count):
        if pos + SEGMENT.size > len(data):
            return data[start:]
        _, length = SEGMENT.unpack_from(data, pos)
        pos += SEGMENT.size + length
    end = start + ((pos - start) | 15) + 1  # the checksum byte ends a 16-byte block
    return data[start : end + (HASH_SIZE if hash_appended else 0)]


def _verified_image(data: bytes, where: str, chip: str, *, app: bool) -> ImageInfo:
    if data[:1] != bytes((MAGIC,)):
        first = f"0x{data[0]:02X}" if data else "nothing"
        raise SourceError(f"{where} is not an ESP32 image: it starts with {first}, not 0xE9")
    try:
        info = parse_image(data)
    except ImageError as exc:
        raise SourceError(f"{where} is not a valid ESP32 image: {exc}; rebuild it") from None
    if app:
        _check_app(info, where, chip)
    else:
        _check_chip(info, where, chip)
    return info


# -- partition tables ----------------------------------------------------------------------
def _parse_partition_table(blob: bytes, where: str) -> list[Partition] | None:
    """The entries of a partition table at the start of `blob`; None if it is not one."""
    entries: list[Partition] = []
    for pos in range(0, PT_MAX, PT_ENTRY.size):
        raw = blob[pos : pos + PT_ENTRY.size]
        if len(raw) < PT_ENTRY.size:
            return None
        if raw[:2] == PT_MAGIC:
            _, kind, subtype, offset, size, label, _ = PT_ENTRY.unpack(raw)
            entries.append(Partition(kind, subtype, offset, size, _cstr(label)))
        elif raw[:2] == PT_MD5_MAGIC:
            if hashlib.md5(blob[:pos]).digest() != raw[16:]:
                raise SourceError(
                    f"{where}: the partition table's MD5 does not match its entries; rebuild it"
                )
            break
        elif raw == b"\xff" * PT_ENTRY.size:
            break
        else:
            return None
    return entries or None


def _find_partition_table(data: bytes, path: Path) -> tuple[int, list[Partition]] | None:
    """A merged image's partition table: the first sector that holds one."""
    for offset in range(SECTOR, len(data), SECTOR):
        if data[offset : offset + 2] == PT_MAGIC:
            entries = _parse_partition_table(data[offset : offset + PT_MAX], str(path))
            if entries is not None:
                return offset, entries
    return None


def _boot_app(entries: list[Partition]) -> Partition | None:
    """The app the bootloader starts with blank OTA data: factory, else ota_0, else the first."""
    apps = [p for p in entries if p.type == APP_TYPE]
    for subtype in (FACTORY, OTA_0):
        for partition in apps:
            if partition.subtype == subtype:
                return partition
    return apps[0] if apps else None


def _merged(
    path: Path, data: bytes, table: tuple[int, list[Partition]], chip: str
) -> FirmwareSource:
    table_at, entries = table
    app_part = _boot_app(entries)
    if app_part is None:
        raise SourceError(
            f"{path}: the partition table at 0x{table_at:X} has no app partition; merge the "
            "build's app into it (esptool merge-bin)"
        )
    from esptool.targets import CHIP_DEFS

    boot_at = CHIP_DEFS[chip].BOOTLOADER_FLASH_OFFSET
    _verified_image(
        _image_at(data, boot_at), f"{path} (its bootloader at 0x{boot_at:X})", chip, app=False
    )
    app = _image_at(data, app_part.offset)
    where = f"{path} (its app {app_part.label!r} at 0x{app_part.offset:X})"
    if not app:
        raise SourceError(f"{where}: the merged image ends before it; merge the app in")
    info = _verified_image(app, where, chip, app=True)
    region = Region(0, data, path.name)
    return _source(path, "merged image", chip, (region,), app_part.offset, app, info, entries)


# -- build folders -------------------------------------------------------------------------
def _offset(text: Any, where: str) -> int:
    try:
        return int(text, 0)
    except (TypeError, ValueError):
        raise SourceError(f"{where}: offset {text!r} is not a number like 0x10000") from None


def _build_folder(folder: Path, chip: str) -> FirmwareSource:
    args_path = folder / FLASHER_ARGS
    if not args_path.is_file():
        what = "does not exist" if not folder.exists() else f"is a folder without {FLASHER_ARGS}"
        raise SourceError(
            f"{folder} {what}; give an ESP-IDF build folder (idf.py build writes "
            f"{FLASHER_ARGS} there), or the app .bin or a merged image"
        )
    try:
        args = json.loads(args_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{args_path} cannot be read as JSON ({exc}); rebuild") from None
    files = args.get("flash_files") if isinstance(args, dict) else None
    app_entry = args.get("app") if isinstance(args, dict) else None
    if not isinstance(files, dict) or not files or not isinstance(app_entry, dict):
        raise SourceError(
            f'{args_path} is not ESP-IDF\'s {FLASHER_ARGS}: it needs "flash_files" and '
            '"app"; rebuild with idf.py build'
        )
    extra = args.get("extra_esptool_args")
    built_for = extra.get("chip") if isinstance(extra, dict) else None
    if built_for and built_for != chip:
        raise SourceError(
            f"{args_path} is a build for {built_for}, but the rig's device is an {chip} "
            f"([firmware] chip); build for it (idf.py set-target {chip}) or correct "
            "[firmware] chip in the rig file"
        )
    for name, entry in args.items():
        if isinstance(entry, dict) and str(entry.get("encrypted", "false")).lower() == "true":
            raise SourceError(
                f"{args_path} marks {name} ({entry.get('file')}) for flash encryption, which "
                "the harness does not write; test a build without flash encryption"
            )
    regions = []
    for offset_text, name in files.items():
        offset = _offset(offset_text, f"{args_path} flash_files")
        file = folder / str(name)
        if not file.is_file():
            raise SourceError(
                f"{args_path} lists {name} at {offset_text}, which is not in {folder}; finish "
                "the build (idf.py build)"
            )
        regions.append(Region(offset, _read(file, "the firmware file"), str(name)))
    regions.sort(key=lambda r: r.offset)
    for before, after in itertools.pairwise(regions):
        if before.offset + len(before.data) > after.offset:
            raise SourceError(
                f"{args_path}: {before.describe()} overlaps {after.describe()}; rebuild"
            )
    app_offset = _offset(app_entry.get("offset"), f"{args_path} app")
    app_region = next((r for r in regions if r.offset == app_offset), None)
    if app_region is None:
        raise SourceError(
            f"{args_path}: the app's offset 0x{app_offset:X} is not in flash_files; rebuild"
        )
    info = _verified_image(app_region.data, f"{folder / app_region.name}", chip, app=True)
    bootloader = args.get("bootloader")
    if isinstance(bootloader, dict):
        boot_at = _offset(bootloader.get("offset"), f"{args_path} bootloader")
        boot = next((r for r in regions if r.offset == boot_at), None)
        if boot is not None:
            _verified_image(boot.data, f"{folder / boot.name}", chip, app=False)
    table_entry = args.get("partition-table") or args.get("partition_table")
    table = None
    if isinstance(table_entry, dict):
        table = _checked_table(folder, regions, table_entry, app_offset)
    return _source(
        folder, "build folder", chip, tuple(regions), app_offset, app_region.data, info, table
    )


def _checked_table(
    folder: Path, regions: list[Region], entry: dict[str, Any], app_offset: int
) -> list[Partition] | None:
    """The build's partition table, which must have an app partition where the app is written;
    None when the build writes none."""
    at = _offset(entry.get("offset"), f"{folder / FLASHER_ARGS} partition-table")
    region = next((r for r in regions if r.offset == at), None)
    if region is None:
        return None
    where = str(folder / region.name)
    entries = _parse_partition_table(region.data.ljust(PT_MAX, b"\xff"), where)
    if entries is None:
        raise SourceError(f"{where} is not an ESP-IDF partition table; rebuild")
    if not any(p.type == APP_TYPE and p.offset == app_offset for p in entries):
        apps = ", ".join(f"{p.label} at 0x{p.offset:X}" for p in entries if p.type == APP_TYPE)
        raise SourceError(
            f"{where} has no app partition at 0x{app_offset:X}, where {FLASHER_ARGS} puts the "
            f"app (its apps: {apps or 'none'}); rebuild"
        )
    return entries
