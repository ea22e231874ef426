"""The twin's ESP32-S3 ROM loader, judged by esptool: its SLIP framing and command encoding
against esptool's own functions, raw frames for what esptool never sends (a corrupt checksum,
a block out of order), and the real esptool CLI writing the app over the console pty in both
console modes, after which the board boots what was written (or, for a broken image, does not).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial
from esptool.loader import ESPLoader, slip_reader
from esptool.targets.esp32s3 import ESP32S3ROM
from esptool.util import FatalError

from hil.power.lcus import encode_frame
from hil.protocol.image import build_image
from hil.sim import rom_loader
from hil.sim.rom_loader import RomLoader, SlipDecoder, slip_encode
from hil.sim.s3_memory import BASE_MAC, S3Memory
from hil.sim.spi_flash import SpiFlash
from tests.sim.rig import ConsoleLog, VirtualRig
from tests.waiting import until

APP = 0x10000
BOARD_CHANNEL = 2
STRAP_CHANNEL = 3
ESPTOOL_S = 60
NO_RESET = ("--before", "no-reset", "--after", "no-reset", "--no-stub")  # a pty has no DTR/RTS
ESCAPES = bytes([0xC0, 0x01, 0xDB, 0xDC, 0xDD, 0xC0, 0xDB])  # both escapes, and their look-alikes


class LoaderPort:
    """A serial port as esptool drives one, wired to an in-process RomLoader (or to nothing,
    only keeping what esptool wrote)."""

    def __init__(self, loader: RomLoader | None) -> None:
        self.loader = loader
        self.sent = bytearray()  # every byte esptool wrote, SLIP-framed
        self._rx = bytearray()
        self.baudrate = 115200
        self.timeout = 0.1
        self.write_timeout = None
        self.port = self.name = "loader"

    def write(self, data: bytes) -> int:
        self.sent += data
        if self.loader is not None:
            self._rx += self.loader.receive(bytes(data))
        return len(data)

    def feed(self, data: bytes) -> None:
        """Bytes for esptool to read, as if the chip sent them."""
        self._rx += data

    def inWaiting(self) -> int:  # pyserial's names
        return len(self._rx)

    def read(self, size: int = 1) -> bytes:
        data, self._rx = bytes(self._rx[:size]), self._rx[size:]
        return data

    def flushInput(self) -> None:
        self._rx.clear()

    def flushOutput(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        self._rx.clear()


def loader() -> tuple[RomLoader, SpiFlash]:
    flash = SpiFlash()
    return RomLoader(flash, S3Memory(flash, download=True)), flash


def esptool_on(rom: RomLoader) -> ESP32S3ROM:
    return ESP32S3ROM(LoaderPort(rom))


def replies(data: bytes) -> list[bytes]:
    """The packets in `data`, split by esptool's own slip_reader (which raises at the end)."""
    port = LoaderPort(None)
    port.feed(data)
    reader = slip_reader(port, lambda _message: None)
    packets = []
    with contextlib.suppress(FatalError):
        while True:
            packets.append(next(reader))
    assert port.inWaiting() == 0
    return packets


def request(op: int, data: bytes = b"", chk: int = 0) -> bytes:
    """A request framed as esptool's ESPLoader.command frames it (bytes taken off its port)."""
    port = LoaderPort(None)
    ESP32S3ROM(port).command(op, data, chk, wait_response=False)
    return bytes(port.sent)


def status(reply: bytes) -> tuple[int, int, int, bytes]:
    """(op, value, error, body) of one reply; error 0 is success."""
    direction, op, size, value = struct.unpack_from("<BBHI", reply)
    assert direction == 1 and size == len(reply) - 8, reply.hex()
    data = reply[8:]
    body, flag, error, reserved = data[:-4], data[-4], data[-3], data[-2:]
    assert reserved == b"\0\0" and (flag == 0) == (error == 0), reply.hex()
    return op, value, error, body


def data_block(seq: int, block: bytes) -> bytes:
    return struct.pack("<IIII", len(block), seq, 0, 0) + block


# -- SLIP framing, against esptool's encoder and decoder ---------------------------------------


def test_slip_decoder_takes_the_frames_esptool_writes():
    payload = ESCAPES * 3
    frame = request(rom_loader.FLASH_DATA, payload, chk=0xC0)
    assert frame.count(0xC0) == 2, "esptool escaped every 0xC0 inside the frame"
    packet = struct.pack("<BBHI", 0, rom_loader.FLASH_DATA, len(payload), 0xC0) + payload
    assert SlipDecoder().feed(b"boot noise" + frame) == [packet]


def test_slip_decoder_joins_a_frame_split_anywhere():
    frame = request(rom_loader.READ_REG, ESCAPES + b"\x00")
    for cut in range(1, len(frame)):
        decoder = SlipDecoder()
        assert decoder.feed(frame[:cut]) + decoder.feed(frame[cut:]) == SlipDecoder().feed(frame)


def test_slip_decoder_drops_a_frame_with_a_bad_escape_and_keeps_the_next():
    good = request(rom_loader.READ_REG, struct.pack("<I", 0x40001000))
    assert SlipDecoder().feed(b"\xc0\x00\xdb\x01\xc0" + good) == SlipDecoder().feed(good)


def test_slip_encode_is_read_back_by_esptool():
    packet = b"\x01\x13" + ESCAPES + bytes(range(256))
    assert replies(slip_encode(packet) * 2) == [packet, packet]


# -- commands, through esptool's own ESPLoader -------------------------------------------------


def test_esptool_reads_chip_mac_security_info_and_flash_id():
    esp = esptool_on(loader()[0])
    esp.sync()
    assert not esp.sync_stub_detected, "a ROM answers SYNC with a non-zero value"
    assert esp.get_chip_id() == ESP32S3ROM.IMAGE_CHIP_ID
    assert esp.read_reg(ESPLoader.CHIP_DETECT_MAGIC_REG_ADDR) == 0x9  # esptool 3's S3 magic
    assert bytes(esp.read_mac()) == BASE_MAC
    assert esp.get_chip_description() == "ESP32-S3 (QFN56) (revision v0.2)"
    assert not esp.get_security_info()["parsed_flags"]["SECURE_DOWNLOAD_ENABLE"]
    esp.flash_spi_attach(0)
    assert esp.flash_id() == 0x1640C8  # GigaDevice, 4 MB
    assert esp.read_spiflash_sfdp(0, 32) == 0x50444653  # "SFDP"


def test_sync_is_answered_eight_times_with_the_roms_value():
    rom, _flash = loader()
    answers = replies(rom.receive(request(rom_loader.SYNC, rom_loader.SYNC_PAYLOAD)))
    assert len(answers) == 8
    assert {status(a) for a in answers} == {(rom_loader.SYNC, 0x20120707, 0, b"")}


def test_a_write_md5_and_slow_read_through_esptool():
    rom, flash = loader()
    esp = esptool_on(rom)
    esp.flash_spi_attach(0)
    esp.flash_set_parameters(4 * 1024 * 1024)
    image = build_image("3.1.4", size=5000)
    blocks = esp.flash_begin(len(image), APP)
    for seq in range(blocks):
        block = image[seq * esp.FLASH_WRITE_SIZE :][: esp.FLASH_WRITE_SIZE]
        esp.flash_block(block.ljust(esp.FLASH_WRITE_SIZE, b"\xff"), seq)
    assert esp.flash_md5sum(APP, len(image)) == hashlib.md5(image).hexdigest()
    assert esp.read_flash(APP + 100, 200) == image[100:300]
    assert flash.read(APP + len(image), 16) == b"\xff" * 16


def test_compressed_write_inflates_into_flash():
    rom, flash = loader()
    esp = esptool_on(rom)
    esp.flash_spi_attach(0)
    image = build_image("3.1.5", size=9000)
    packed = zlib.compress(image, 9)
    blocks = esp.flash_defl_begin(len(image), len(packed), APP)
    for seq in range(blocks):
        esp.flash_defl_block(packed[seq * esp.FLASH_WRITE_SIZE :][: esp.FLASH_WRITE_SIZE], seq)
    assert flash.read(APP, len(image)) == image


# -- what esptool never sends: raw frames ------------------------------------------------------


def begin(rom: RomLoader, size: int, blocks: int, block_size: int = 0x400) -> None:
    for op, data in (
        (rom_loader.SPI_ATTACH, bytes(8)),
        (rom_loader.FLASH_BEGIN, struct.pack("<IIIII", size, blocks, block_size, APP, 0)),
    ):
        (reply,) = replies(rom.receive(request(op, data)))
        assert status(reply)[2] == 0, reply.hex()


def test_a_corrupt_flash_data_checksum_gets_the_roms_checksum_error_and_writes_nothing():
    rom, flash = loader()
    begin(rom, 0x400, 1)
    block = bytes(range(256)) * 4
    good = rom_loader.checksum(block)
    (reply,) = replies(rom.receive(request(rom_loader.FLASH_DATA, data_block(0, block), good ^ 1)))
    assert status(reply) == (rom_loader.FLASH_DATA, 0, 0x07, b"")
    assert flash.read(APP, 0x400) == b"\xff" * 0x400
    (reply,) = replies(rom.receive(request(rom_loader.FLASH_DATA, data_block(0, block), good)))
    assert status(reply)[2] == 0, "the same block with its right checksum is taken"
    assert flash.read(APP, 0x400) == block


def test_esptool_names_the_checksum_error():
    rom, _flash = loader()
    begin(rom, 0x400, 1)
    esp = esptool_on(rom)
    with pytest.raises(FatalError, match=r"result was 0107: Checksum error"):
        esp.check_command("write", rom_loader.FLASH_DATA, data_block(0, b"\x00" * 0x400), 0x12)


def test_blocks_out_of_order_are_refused_and_a_repeat_is_taken():
    rom, flash = loader()
    begin(rom, 0x1000, 4)
    blocks = [bytes([i]) * 0x400 for i in range(4)]

    def send(seq: int) -> int:
        chk = rom_loader.checksum(blocks[seq])
        frame = request(rom_loader.FLASH_DATA, data_block(seq, blocks[seq]), chk)
        return status(replies(rom.receive(frame))[0])[2]

    assert send(1) == 0x05, "block 1 before block 0"
    assert [send(0), send(0), send(1)] == [0, 0, 0]
    assert send(3) == 0x05, "block 2 skipped"
    assert flash.read(APP, 0x800) == blocks[0] + blocks[1]


def test_flash_commands_before_spi_attach_fail_to_act():
    rom, _flash = loader()
    frame = request(rom_loader.SPI_FLASH_MD5, struct.pack("<IIII", APP, 16, 0, 0))
    assert status(replies(rom.receive(frame))[0])[2] == 0x06


def test_an_unknown_command_and_ram_loading_are_invalid_messages():
    rom, _flash = loader()
    for op in (0xD0, rom_loader.MEM_BEGIN):
        (reply,) = replies(rom.receive(request(op, bytes(16))))
        assert status(reply) == (op, 0, 0x05, b"")
    with pytest.raises(FatalError, match=r"0105: The format of the received message is invalid"):
        esptool_on(rom).mem_begin(16, 1, 16, 0x40380000)


# -- the twin, flashed by the esptool CLI over its console pty ---------------------------------


def esptool(port: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "esptool",
            "--chip",
            "esp32s3",
            "--port",
            str(port),
            *NO_RESET,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=ESPTOOL_S,
    )


def relay(rig: VirtualRig, channel: int, energized: bool) -> None:
    with serial.Serial(str(rig.ports.relay), 9600, timeout=1) as port:
        port.write(encode_frame(channel, energized))
        port.flush()


def cold_boot(rig: VirtualRig, gpio0_low: bool, native_usb: bool) -> None:
    """Set the strap, then cut and restore the board's supply (normally closed: energized cuts);
    a native USB port is seen to leave and come back."""
    link = rig.ports.console
    relay(rig, STRAP_CHANNEL, gpio0_low)
    relay(rig, BOARD_CHANNEL, True)
    if native_usb:
        until(lambda: not link.exists(), rig.timeout, "the console port leaving with the power")
    relay(rig, BOARD_CHANNEL, False)
    until(link.exists, rig.timeout, "the console port with the board powered")


def image_info(path: Path) -> str:
    info = subprocess.run(
        [sys.executable, "-m", "esptool", "--chip", "esp32s3", "image-info", str(path)],
        capture_output=True,
        text=True,
        timeout=ESPTOOL_S,
    )
    assert info.returncode == 0, info.stdout + info.stderr
    return info.stdout


@pytest.fixture
def console_log() -> Iterator[Callable[[Path], ConsoleLog]]:
    """`console_log(port)`: a console reader, with the port open (a UART bridge drops what
    the chip prints while no host has it open), closed at the end of the test."""
    logs: list[ConsoleLog] = []

    def start(port: Path) -> ConsoleLog:
        logs.append(ConsoleLog(port))
        until(lambda: logs[-1].ports_seen, ESPTOOL_S, "the console reader opening the port")
        return logs[-1]

    yield start
    for log in logs:
        log.close()


def download_mode(rig: VirtualRig, native_usb: bool) -> None:
    """Strap held, board cycled: the ROM waits for download. A UART bridge shows its banner;
    a native USB port comes up only after the ROM printed it."""
    mark = rig.console.mark()
    cold_boot(rig, gpio0_low=True, native_usb=native_usb)
    if not native_usb:
        index, _ = rig.console.expect(
            r"^rst:0x1 \(POWERON\),boot:0x0 \(DOWNLOAD", rig.timeout, mark
        )
        rig.console.expect(r"^waiting for download$", rig.timeout, index)
    rig.console.close()  # esptool needs the port to itself


@pytest.mark.parametrize("console", ["native-usb", "uart-bridge"])
def test_esptool_writes_the_app_over_the_console_and_the_board_boots_it(
    start_twin, console_log, tmp_path, console
):
    rig = start_twin(console=console)
    native_usb = console == "native-usb"
    app = tmp_path / "app.bin"
    app.write_bytes(build_image("2.5.0", size=40000, project="esp32-sim7600"))
    info = image_info(app)
    assert "App version: 2.5.0" in info and "Chip ID: 9 (ESP32-S3)" in info, info
    assert re.search(r"Checksum: 0x[0-9a-f]+ \(valid\)", info), info
    other = tmp_path / "other.bin"
    other.write_bytes(build_image("2.5.1", size=40000))

    download_mode(rig, native_usb)
    mac = esptool(rig.ports.console, "read-mac")
    assert mac.returncode == 0, mac.stdout + mac.stderr
    assert "Connected to ESP32-S3" in mac.stdout, mac.stdout
    assert f"MAC:                {BASE_MAC.hex(':')}" in mac.stdout, mac.stdout
    quiet = rig.status.mark()  # whatever was on its way before the power cut has landed
    write = esptool(rig.ports.console, "write-flash", hex(APP), str(app))
    assert write.returncode == 0, write.stdout + write.stderr
    assert "Hash of data verified." in write.stdout, write.stdout
    verify = esptool(rig.ports.console, "verify-flash", hex(APP), str(app))
    assert "Verification successful (digest matched)." in verify.stdout, verify.stdout
    wrong = esptool(rig.ports.console, "verify-flash", hex(APP), str(other))
    assert wrong.returncode != 0 and "digest mismatch" in wrong.stdout, wrong.stdout
    assert rig.status.messages[quiet:] == [], "the device spoke MQTT in download mode"

    rig.console = console_log(rig.ports.console)
    cold_boot(rig, gpio0_low=False, native_usb=native_usb)
    rig.wait_online("2.5.0", quiet)


def test_a_broken_image_written_over_serial_does_not_boot(start_twin, console_log, tmp_path):
    rig = start_twin(console="uart-bridge")
    broken = bytearray(build_image("2.6.0", size=40000))
    broken[5000] ^= 0x55
    path = tmp_path / "broken.bin"
    path.write_bytes(broken)
    verdict = r"Checksum: (0x[0-9a-f]+) \(invalid - calculated (0x[0-9a-f]+)\)"
    found = re.search(verdict, image_info(path))
    assert found, "esptool image-info does not see the corruption"
    stored, calculated = found.groups()

    download_mode(rig, native_usb=False)
    write = esptool(rig.ports.console, "write-flash", hex(APP), str(path))
    assert write.returncode == 0, write.stdout + write.stderr

    rig.console = console_log(rig.ports.console)
    mark, smark = rig.console.mark(), rig.status.mark()
    cold_boot(rig, gpio0_low=False, native_usb=False)
    checksum = rf"^E \(\d+\) esp_image: Checksum failed\. Calculated {calculated} read {stored}$"
    index, _ = rig.console.expect(checksum, rig.timeout, mark)
    slot0 = r"^E \(\d+\) boot: OTA app partition slot 0 is not bootable$"
    rig.console.expect(slot0, rig.timeout, index)
    index, _ = rig.console.expect(
        r"^E \(\d+\) boot: No bootable app partitions", rig.timeout, index
    )
    index, _ = rig.console.expect(r"^rst:0x3 \(RTC_SW_SYS_RST\)", rig.timeout, index)
    rig.console.expect(checksum, rig.timeout, index)  # and again: a boot loop
    started = [line for line in rig.console.lines[mark:] if line.startswith("Firmware ")]
    assert started == [], started
    assert rig.status.messages[smark:] == [], "a device with no bootable app spoke MQTT"


def test_flash_end_runs_the_app_or_reboots_into_download_mode_again(start_twin, console_log):
    """esptool's `run` (FLASH_END 1) starts the app with the strap still held and no reset; a
    raw FLASH_END 0 reboots, the ROM samples the held strap and waits for download again."""
    rig = start_twin(console="uart-bridge")
    download_mode(rig, native_usb=False)
    smark = rig.status.mark()
    run = esptool(rig.ports.console, "run")
    assert run.returncode == 0, run.stdout + run.stderr
    rig.wait_online("1.0.0", smark)

    rig.console = console_log(rig.ports.console)
    download_mode(rig, native_usb=False)
    rig.console = console_log(rig.ports.console)
    mark = rig.console.mark()
    with serial.Serial(str(rig.ports.console), 115200, timeout=1) as port:
        port.write(request(rom_loader.FLASH_END, struct.pack("<I", 0)))
        port.flush()
    index, _ = rig.console.expect(
        r"^rst:0x3 \(RTC_SW_SYS_RST\),boot:0x0 \(DOWNLOAD", rig.timeout, mark
    )
    rig.console.expect(r"^waiting for download$", rig.timeout, index)
