"""The serial console against a pty pair: expect, incidents, and a port that vanishes."""

import asyncio
import os

import pytest

from hil.console import ConsoleBuffer, ConsoleTimeout, DeviceIncident, PortGone
from hil.console.serial import ConsoleError, SerialConsole, SerialOptions
from hil.profile import load_profile

from .conftest import until

PROFILE = load_profile()
AWAY_S = 0.2


@pytest.fixture
def console(pty_port):
    logged: list[str] = []
    con = SerialConsole(SerialOptions(port=str(pty_port.link), reappear_s=2.0), PROFILE)
    con.sink = logged.append
    con.open(timeout=2)
    con.logged = logged
    yield con
    con.close()


async def test_expect_finds_a_line_and_moves_the_cursor(console, pty_port) -> None:
    pty_port.write_line("State: STATE_INIT_MODEM -> STATE_WAIT_NETWORK")
    pty_port.write_line("State: STATE_WAIT_NETWORK -> STATE_CONNECT_GPRS")
    first = await console.expect(PROFILE.console.state, timeout=2)
    second = await console.expect(PROFILE.console.state, timeout=2)
    assert (first["src"], second["src"]) == ("STATE_INIT_MODEM", "STATE_WAIT_NETWORK")
    assert second.line.index == first.line.index + 1


async def test_lines_are_timestamped_into_the_log_as_they_arrive(console, pty_port) -> None:
    pty_port.write_line("LED: ON")
    await console.expect("LED: ON", timeout=2)
    assert console.logged and console.logged[-1].rstrip().endswith("LED: ON")
    assert console.logged[-1][:4].isdigit()  # ISO timestamp first


async def test_timeout_says_what_was_expected_and_what_came(console, pty_port) -> None:
    pty_port.write_line("LCD: Connecting...")
    with pytest.raises(ConsoleTimeout, match=r"(?s)OTA Complete.*LCD: Connecting"):
        await console.expect("OTA Complete", timeout=0.3)


async def test_a_panic_fails_the_wait_at_once(console, pty_port) -> None:
    async def crash() -> None:
        await asyncio.sleep(AWAY_S)  # let expect() start waiting first
        pty_port.write_line("Guru Meditation Error: Core  0 panic'ed (LoadProhibited).")
        pty_port.write_line("Backtrace: 0x40081234:0x3ffb1234")

    task = asyncio.create_task(crash())
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(DeviceIncident, match="Guru Meditation"):
        await console.expect("never printed", timeout=10)
    assert loop.time() - start < 5
    await task


async def test_unplanned_reboot_is_an_incident_planned_one_is_not(console, pty_port) -> None:
    mark = console.mark()
    with console.reboot_expected():
        pty_port.write_line("rst:0xc (RTC_SW_CPU_RST),boot:0x8 (SPI_FAST_FLASH_BOOT)")
        await console.expect("rst:0xc", timeout=2)
    assert console.incidents_since(mark) == []
    pty_port.write_line("rst:0x1 (POWERON_RESET),boot:0x8 (SPI_FAST_FLASH_BOOT)")
    await console.expect("rst:0x1", timeout=2)
    [incident] = console.incidents_since(mark)
    assert incident.kind == "unplanned reboot"


async def test_port_that_vanishes_and_comes_back_is_reopened(console, pty_port) -> None:
    pty_port.write_line("before")
    await console.expect("before", timeout=2)
    pty_port.vanish()
    await asyncio.sleep(AWAY_S)  # the device is away for a while (the stimulus)
    pty_port.open()
    # pyserial flushes input when it opens a port, so write once the console has reopened it.
    await until(lambda: console.reopened == 1, 3, "reopening the console port")
    pty_port.write_line("Firmware 1.0.1 starting")
    found = await console.expect(PROFILE.console.firmware_start, timeout=3)
    assert found["version"] == "1.0.1"
    assert console.reopened == 1
    assert any("vanished" in line for line in console.logged)


async def test_port_that_stays_away_fails_the_wait(pty_port) -> None:
    con = SerialConsole(SerialOptions(port=str(pty_port.link), reappear_s=0.3), PROFILE)
    con.open(timeout=2)
    try:
        pty_port.vanish()
        with pytest.raises(PortGone, match=r"did not come back within 0.3 s"):
            await con.expect("anything", timeout=5)
    finally:
        con.close()


def test_missing_port_is_a_clear_error(tmp_path) -> None:
    con = SerialConsole(SerialOptions(port=str(tmp_path / "ttyACM7")), PROFILE)
    with pytest.raises(ConsoleError, match=r"ttyACM7.*\[console\]"):
        con.open(timeout=0.2)


async def test_port_found_by_udev_identity_comes_back_at_a_new_path(tmp_path, monkeypatch) -> None:
    """An ESP32-S3 reset re-enumerates: same USB identity, maybe another /dev/ttyACM number."""
    import hil.discovery
    from hil.discovery import SerialDevice

    from .conftest import PtyPort

    first = PtyPort(tmp_path / "ttyACM0")
    second: PtyPort | None = None
    present: list[PtyPort] = [first]

    def find_port(match, context=None):
        assert (match.vendor_id, match.product_id, match.serial) == ("303a", "1001", "F4:12")
        if not present:
            return None
        link = str(present[0].link)
        return SerialDevice(link, None, "303a", "1001", "F4:12", "00", "cdc_acm", None, None)

    monkeypatch.setattr(hil.discovery, "find_port", find_port)
    options = SerialOptions(
        match={"vendor_id": "303a", "product_id": "1001", "serial": "F4:12"}, reappear_s=3.0
    )
    con = SerialConsole(options, PROFILE)
    con.open(timeout=2)
    try:
        first.write_line("Rebooting...")
        await con.expect("Rebooting", timeout=2)
        with con.reboot_expected():
            first.vanish()
            present.clear()
            await asyncio.sleep(AWAY_S)  # the board is off the bus for a while (the stimulus)
            second = PtyPort(tmp_path / "ttyACM1")
            present.append(second)
            await until(lambda: con.reopened == 1, 3, "reopening at the new path")
            second.write_line("rst:0xc (RTC_SW_CPU_RST),boot:0x8 (SPI_FAST_FLASH_BOOT)")
            await con.expect("RTC_SW_CPU_RST", timeout=2)
        assert con.incidents == []
        assert con.vanished_since(0)
        assert con.port_path == str(tmp_path / "ttyACM1")
        texts = [line.text for line in con.lines]
        assert texts.index("Rebooting...") < texts.index(
            "rst:0xc (RTC_SW_CPU_RST),boot:0x8 (SPI_FAST_FLASH_BOOT)"
        )
    finally:
        con.close()
        first.close()
        if second:
            second.close()


async def test_a_port_that_vanishes_outside_a_planned_reboot_is_an_incident(pty_port) -> None:
    """A native USB console shows a reset only by leaving the bus: that is an unplanned reboot."""
    con = SerialConsole(SerialOptions(port=str(pty_port.link), reappear_s=3.0), PROFILE)
    con.open(timeout=2)
    try:
        pty_port.write_line("State: STATE_RUNNING")
        await con.expect("STATE_RUNNING", timeout=2)
        pty_port.vanish()
        pty_port.open()
        await until(lambda: con.reopened == 1, 3, "reopening")
        kinds = [incident.kind for incident in con.incidents]
        assert kinds == ["unplanned reboot (the console port vanished)"]
        assert "STATE_RUNNING" in con.incidents[0].describe()
    finally:
        con.close()


async def test_a_path_that_points_at_a_new_node_is_a_vanished_port(pty_port, tmp_path) -> None:
    """A udev symlink re-made for the re-enumerated device, while the old node reads nothing
    (no read error): the console follows the path to the new node."""
    from .conftest import PtyPort

    con = SerialConsole(SerialOptions(port=str(pty_port.link), reappear_s=3.0), PROFILE)
    con.open(timeout=2)
    newer = PtyPort(tmp_path / "newer")
    try:
        old_node = con.port_path and os.path.realpath(con.port_path)
        with con.reboot_expected():
            pty_port.link.unlink()
            pty_port.link.symlink_to(newer.slave_path)  # the old pty stays open and silent
            await until(lambda: con.reopened == 1, 3, "following the path to the new node")
            newer.write_line("Firmware 2.0.0 starting")
            await con.expect("Firmware 2.0.0 starting", timeout=2)
        assert os.path.realpath(pty_port.link) != old_node
        assert con.vanished_since(0) and con.incidents == []
    finally:
        con.close()
        newer.close()


def test_a_line_without_end_is_passed_on_in_bounded_pieces() -> None:
    """16 MiB without a newline: the unfinished line never grows past MAX_LINE, so each read
    costs what it brings, and no byte is dropped."""
    con = SerialConsole(SerialOptions(port="/dev/null"), PROFILE)
    chunk = b"x" * 4000
    held = 0
    for _ in range(4200):
        con._take(chunk)
        held = max(held, len(con._partial))
    assert held < con.MAX_LINE
    assert {len(line.text) for line in con.lines} == {con.MAX_LINE}
    assert len(con.lines) * con.MAX_LINE + len(con._partial) == 4000 * 4200


def test_history_is_bounded_and_waiting_looks_only_at_new_lines() -> None:
    con = ConsoleBuffer()
    for n in range(con.HISTORY + 500):
        con.feed(f"line {n}")
    assert len(con.lines) == con.HISTORY
    assert con.lines[0].index == 500  # indexes keep counting from the session's first line
    assert [line.text for line in con.since(con.mark() - 2)] == [
        f"line {con.HISTORY + 498}",
        f"line {con.HISTORY + 499}",
    ]
    assert con.search("line 3$", since=0) is None  # trimmed: no longer held, not searched


def test_the_console_port_is_opened_exclusively(pty_port) -> None:
    """A terminal left open on the port would steal lines from the run: it is refused."""
    import serial

    con = SerialConsole(SerialOptions(port=str(pty_port.link)), PROFILE)
    con.open(timeout=2)
    try:
        with pytest.raises(serial.SerialException, match="exclusively lock"):
            serial.Serial(str(pty_port.link), 115200, exclusive=True)
    finally:
        con.close()
