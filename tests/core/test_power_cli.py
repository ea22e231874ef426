"""`hil power` and `hil reset` on a hardware-style rig: the frames that reach the relay board.

The rig's LCUS board is a pty this test holds: [power] is channel 1 (the modem's supply) and
[board_power] channel 2 (the board's), both wired normally closed, so "off" energizes the coil.
The broker (127.0.0.1 port 1) is never connected by these verbs.
"""

from __future__ import annotations

import contextlib
import os
import pty
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil import cli
from hil.lock import RigLock
from hil.power.lcus import decode_frame

from .conftest import PtyPort

ROOT = Path(__file__).resolve().parents[2]
MODEM, BOARD = 1, 2


class RelayBoard:
    """The LCUS board's end of a pty: the test reads the frames the verbs wrote."""

    def __init__(self) -> None:
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # kept open: the master never reads a hang-up between verbs
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)

    def frames(self) -> list[tuple[int, bool]]:
        """(channel, energized) for every frame written since the last call."""
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.master, 4096):
                data += chunk
        assert len(data) % 4 == 0, f"a partial LCUS frame: {data.hex(' ')}"
        return [decode_frame(data[i : i + 4]) for i in range(0, len(data), 4)]

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
def relay() -> Iterator[RelayBoard]:
    board = RelayBoard()
    yield board
    board.close()


@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "locks"
    monkeypatch.setenv("HIL_LOCK_DIR", str(folder))
    return folder


def lcus(section: str, port: str, channel: int) -> str:
    return (
        f'[{section}]\ndriver = "lcus"\nport = "{port}"\nchannel = {channel}\n'
        "normally_closed = true\noff_s = 0.05\n"
    )


def write_rig(
    tmp_path: Path, relay: RelayBoard, console: PtyPort, power: bool = True, board: bool = True
) -> Path:
    text = (
        '[rig]\nname = "bench-under-test"\n\n'
        f'[console]\ndriver = "serial"\nport = "{console.link}"\n\n'
        '[broker]\ndriver = "external"\nhost = "127.0.0.1"\nport = 1\ntls = false\n\n'
    )
    if power:
        text += lcus("power", relay.path, MODEM) + "\n"
    if board:
        text += lcus("board_power", relay.path, BOARD) + "\n"
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


SWITCHES = [
    (["off"], [(MODEM, True)]),  # normally closed: the modem's coil energized cuts it
    (["on"], [(MODEM, False)]),
    (["cycle"], [(MODEM, True), (MODEM, False)]),
    (["off", "--board"], [(BOARD, True)]),
    (["on", "--board"], [(BOARD, False)]),
    (["cycle", "--board"], [(BOARD, True), (BOARD, False)]),
]


@pytest.mark.parametrize(
    ("words", "frames"), [pytest.param(w, f, id=" ".join(w)) for w, f in SWITCHES]
)
def test_power_writes_the_channels_frames(tmp_path, relay, pty_port, capsys, words, frames) -> None:
    rig = write_rig(tmp_path, relay, pty_port)
    assert cli.main(["power", *words, "--rig", str(rig)]) == 0, capsys.readouterr().err
    assert relay.frames() == frames
    channel = BOARD if "--board" in words else MODEM
    assert f"channel {channel}: {words[0]}" in capsys.readouterr().out
    with RigLock(rig):  # given back: the next holder gets it at once
        pass


def test_board_without_board_power_is_refused_naming_the_table(
    tmp_path, relay, pty_port, capsys
) -> None:
    rig = write_rig(tmp_path, relay, pty_port, board=False)
    assert cli.main(["power", "cycle", "--board", "--rig", str(rig)]) == 1
    assert "[board_power]" in capsys.readouterr().err
    assert relay.frames() == []


def test_reset_without_reset_table_cycles_the_board_power(
    tmp_path, relay, pty_port, capsys
) -> None:
    rig = write_rig(tmp_path, relay, pty_port, power=False)
    assert cli.main(["reset", "--rig", str(rig)]) == 0, capsys.readouterr().err
    assert relay.frames() == [(BOARD, True), (BOARD, False)]


@pytest.mark.parametrize(
    "words", [["power", "on"], ["power", "off", "--board"], ["reset"]], ids=" ".join
)
def test_a_virtual_rig_is_refused(capsys, words) -> None:
    assert cli.main([*words, "--rig", str(ROOT / "rigs" / "sim.toml")]) == 1
    err = capsys.readouterr().err
    assert "is a virtual rig" in err and "hil sim" in err, err


@pytest.mark.parametrize(
    "words", [["power", "off"], ["power", "cycle", "--board"], ["reset"]], ids=" ".join
)
def test_a_rig_in_use_is_not_switched_and_the_holder_is_named(
    tmp_path, relay, pty_port, capsys, words
) -> None:
    rig = write_rig(tmp_path, relay, pty_port)
    with RigLock(rig, "bench-under-test"):  # in $HIL_LOCK_DIR, where the verb looks
        assert cli.main([*words, "--rig", str(rig)]) == 1
    err = capsys.readouterr().err
    assert f"in use by pid {os.getpid()}" in err, err
    assert relay.frames() == [], "a switch was thrown under the lock's holder"
