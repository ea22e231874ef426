"""LCUS relay frames against the board's documented bytes, and the driver on a pty."""

import threading
import time

import pytest

from hil.power import CommonPowerOptions, PowerError
from hil.power.lcus import LcusOptions, LcusRelay, decode_frame, encode_frame


def test_channel_1_frames_match_the_documented_bytes() -> None:
    assert encode_frame(1, True) == bytes.fromhex("A0 01 01 A2")
    assert encode_frame(1, False) == bytes.fromhex("A0 01 00 A1")


@pytest.mark.parametrize("channel", [1, 2, 3, 4])
@pytest.mark.parametrize("on", [True, False])
def test_frames_round_trip(channel: int, on: bool) -> None:
    frame = encode_frame(channel, on)
    assert frame[3] == (0xA0 + channel + on) & 0xFF
    assert decode_frame(frame) == (channel, on)


@pytest.mark.parametrize("frame", ["A0 01 01 A3", "A1 01 01 A3", "A0 01 02 A3", "A0 01 01"])
def test_bad_frames_are_refused(frame: str) -> None:
    with pytest.raises(ValueError):
        decode_frame(bytes.fromhex(frame))


def _relay(port, normally_closed: bool) -> LcusRelay:
    relay = LcusRelay(
        LcusOptions(port=str(port.link), channel=2),
        CommonPowerOptions(normally_closed=normally_closed),
        port.link.parent,
    )
    relay.open()
    return relay


def _read_frame(port) -> bytes:
    data = b""
    while len(data) < 4:
        data += port.read(4 - len(data))
    return data


@pytest.mark.parametrize(("normally_closed", "coil_on"), [(False, 1), (True, 0)])
def test_power_on_drives_the_coil_by_wiring(pty_port, normally_closed: bool, coil_on: int) -> None:
    relay = _relay(pty_port, normally_closed)
    try:
        relay.on()
        assert _read_frame(pty_port) == encode_frame(2, bool(coil_on))
        relay.off()
        assert _read_frame(pty_port) == encode_frame(2, not coil_on)
    finally:
        relay.close()


def test_frames_are_spaced_for_slow_boards(pty_port) -> None:
    relay = _relay(pty_port, False)
    try:
        start = time.monotonic()
        relay.on()
        relay.off()
        relay.on()
        elapsed = time.monotonic() - start
        frames = [_read_frame(pty_port) for _ in range(3)]
    finally:
        relay.close()
    assert frames == [encode_frame(2, True), encode_frame(2, False), encode_frame(2, True)]
    assert elapsed >= 2 * 0.05 - 0.002


def test_missing_port_names_it_and_the_fix(tmp_path) -> None:
    relay = LcusRelay(LcusOptions(port=str(tmp_path / "nope")), CommonPowerOptions(), tmp_path)
    with pytest.raises(PowerError, match=r"nope.*\[power\] port"):
        relay.open()


def _channel(port, channel: int) -> LcusRelay:
    relay = LcusRelay(
        LcusOptions(port=str(port.link), channel=channel), CommonPowerOptions(), port.link.parent
    )
    relay.open()
    return relay


def test_two_channels_of_one_board_share_its_port_without_mixing_frames(pty_port) -> None:
    """[power] on channel 1 and [board_power] on channel 2 of one LCUS-2, switched at once."""
    modem, board = _channel(pty_port, 1), _channel(pty_port, 2)
    switches = 6

    def toggle(relay: LcusRelay) -> None:
        for n in range(switches):
            relay.set(n % 2 == 0)

    try:
        threads = [threading.Thread(target=toggle, args=(r,)) for r in (modem, board)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        frames = [_read_frame(pty_port) for _ in range(2 * switches)]
        for thread in threads:
            thread.join(5)
        elapsed = time.monotonic() - start
    finally:
        modem.close()
        board.close()
    decoded = [decode_frame(f) for f in frames]  # raises on a torn or mixed frame
    for channel in (1, 2):
        assert [on for ch, on in decoded if ch == channel] == [n % 2 == 0 for n in range(switches)]
    # One frame gap for the board, not one per channel: 12 frames need 11 gaps of 50 ms.
    assert elapsed >= (2 * switches - 1) * 0.05 - 0.01, f"{elapsed:.3f} s for 12 frames"


def test_closing_one_channel_leaves_the_other_working(pty_port) -> None:
    modem, board = _channel(pty_port, 1), _channel(pty_port, 2)
    board.close()
    try:
        modem.on()
        assert _read_frame(pty_port) == encode_frame(1, True)
    finally:
        modem.close()


def test_a_board_that_re_enumerated_is_reopened_by_path(pty_port) -> None:
    relay = _channel(pty_port, 1)
    try:
        relay.on()
        assert _read_frame(pty_port) == encode_frame(1, True)
        pty_port.vanish()
        pty_port.open()  # back, as another tty node behind the same by-path name
        relay.off()
        assert _read_frame(pty_port) == encode_frame(1, False)
    finally:
        relay.close()


def test_a_board_that_stays_away_is_one_clear_error(tmp_path, pty_port) -> None:
    relay = LcusRelay(
        LcusOptions(port=str(pty_port.link), channel=1, reappear_s=0.2),
        CommonPowerOptions(),
        tmp_path,
        section="board_power",
    )
    relay.open()
    try:
        pty_port.vanish()
        with pytest.raises(PowerError, match=r"went away and did not come back within 0.2 s"):
            relay.on()
    finally:
        relay.close()


@pytest.mark.parametrize("channel", [0, 9, 99])
def test_a_channel_no_lcus_board_has_is_refused(channel: int) -> None:
    with pytest.raises(ValueError, match="channel must be 1 to 8"):
        LcusOptions(port="/dev/null", channel=channel)
