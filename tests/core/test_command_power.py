"""Command power: whatever bytes a lab script prints, a failure is one PowerError naming it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from hil.power import CommonPowerOptions, PowerError
from hil.power.command import CommandOptions, CommandPower

# Latin-1 "é" and a lone 0xff: not UTF-8, as an old PDU tool or a locale-less script prints.
BAD_BYTES = b"relay r\xe9ponse \xff"


def script(stream: str, code: int) -> str:
    """A command line that writes BAD_BYTES to `stream` and exits with `code`."""
    body = f"import sys; sys.{stream}.buffer.write({BAD_BYTES!r} + b'\\n'); sys.exit({code})"
    return shlex.join([sys.executable, "-c", body])


def power(on: str, tmp_path: Path) -> CommandPower:
    return CommandPower(CommandOptions(on=on, off="true"), CommonPowerOptions(), tmp_path)


@pytest.mark.parametrize("stream", ["stderr", "stdout"])
def test_undecodable_output_of_a_failing_command_is_one_power_error(
    tmp_path: Path, stream: str
) -> None:
    command = script(stream, 3)
    with pytest.raises(PowerError) as info:
        power(command, tmp_path).on()
    message = str(info.value)
    assert "exited with 3" in message and repr(command) in message
    assert "relay r\ufffdponse \ufffd" in message, "the tail is shown, bad bytes replaced"
    assert not isinstance(info.value.__context__, UnicodeError)


def test_undecodable_output_of_a_succeeding_command_is_fine(tmp_path: Path) -> None:
    driver = power(script("stdout", 0), tmp_path)
    driver.on()
    assert driver.is_on is True
