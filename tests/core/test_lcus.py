"""LCUS relay frames against the board's documented bytes, and the driver on a pty."""

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
