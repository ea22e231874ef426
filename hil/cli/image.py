"""`hil image info|make`: inspect an ESP32 app image, or build a valid one to push in tests.

A lab about to push a file wants to know at once whether the device's verify step will take
it, and why not; and suites need real-format images of a given size and version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil.protocol.image import MIN_SIZE, ImageError, build_image, parse_image
from hil.protocol.ota import CHUNK_DATA_SIZE, chunk_count


class _Refusal(Exception):
    """A one-line reason the verb could not do its job (exit code 1)."""


def _size(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil image", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    info = verbs.add_parser("info", help="verify an image as the bootloader would and describe it")
    info.add_argument("file", type=Path)
    make = verbs.add_parser("make", help="build a valid ESP32-S3 app image")
    make.add_argument("--version", required=True, help="app version, as STATUS:ONLINE reports it")
    make.add_argument(
        "--size", required=True, type=_size, help="file size in bytes, rounded up to 16"
    )
    make.add_argument("--project", default="hil-test", help="project name in the app descriptor")
    make.add_argument("--seed", type=int, default=0, help="seed of the filler bytes")
    make.add_argument("out", type=Path)
    return parser


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Refusal(f"cannot read {path}: {exc.strerror or exc}") from None


def info(path: Path) -> None:
    data = _read(path)
    try:
        image = parse_image(data)
    except ImageError as exc:
        raise _Refusal(f"{path.name} is not an ESP32 app image: {exc}") from None
    appended = data[-32:].hex() == image.sha256
    segments = ", ".join(f"0x{s.address:08X} ({s.length} bytes)" for s in image.segments)
    print(f"{path.name}: {image.chip} app image, {image.size} bytes")
    print(f"  version:   {image.version or '(no app descriptor)'}")
    print(f"  project:   {image.project_name or '(no app descriptor)'}")
    print(f"  segments:  {len(image.segments)}: {segments}")
    print(f"  entry:     0x{image.entry:08X}")
    print(f"  checksum:  0x{image.checksum:02X} (valid)")
    print(f"  SHA-256:   {image.sha256} ({'valid' if appended else 'not appended'})")
    print(f"  OTA:       {chunk_count(image.size)} chunks of {CHUNK_DATA_SIZE} bytes")


def make(version: str, size: int, project: str, seed: int, out: Path) -> None:
    try:
        data = build_image(version, size, project=project, seed=seed)
    except ValueError as exc:
        raise _Refusal(f"cannot build the image: {exc}") from None
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise _Refusal(f"cannot write {out}: {exc.strerror or exc}") from None
    image = parse_image(data)
    if len(data) == size:
        note = ""
    elif size < MIN_SIZE:
        note = f" (asked {size}; the smallest image is {MIN_SIZE} bytes)"
    else:
        note = f" (asked {size}, rounded up to a multiple of 16)"
    print(
        f"wrote {out}: {image.chip} app image, version {image.version}, "
        f"project {image.project_name}, {len(data)} bytes{note}, sha256 {image.sha256}"
    )


def main(argv: list[str]) -> int:
    """Run `hil image <argv>`: 0 on success, 1 with one line on stderr when refused, 2 on usage."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage error or --help: argparse has printed it
        return int(exc.code or 0)
    try:
        if args.verb == "info":
            info(args.file)
        else:
            make(args.version, args.size, args.project, args.seed, args.out)
    except _Refusal as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0
