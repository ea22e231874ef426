"""Command reset: a lab script's success, failure and hang, each reported once, in words."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from hil.reset import ResetError
from hil.reset.command import CommandReset, CommandResetOptions

HANG_TIMEOUT_S = 0.5


def python(body: str) -> str:
    """A command line running `body` in this Python."""
    return shlex.join([sys.executable, "-c", body])


def reset(command: str, tmp_path: Path, timeout_s: float = 10.0) -> CommandReset:
    return CommandReset(CommandResetOptions(command=command, timeout_s=timeout_s), tmp_path)


def test_a_command_that_succeeds_resets(tmp_path: Path) -> None:
    marker = tmp_path / "pulsed"
    reset(python(f"open({str(marker)!r}, 'w').write('EN')"), tmp_path).reset()
    assert marker.read_text() == "EN", "the reset command did not run"


def test_a_failing_command_with_undecodable_stderr_reports_its_exit_status(
    tmp_path: Path,
) -> None:
    command = python(
        "import sys; sys.stderr.buffer.write(b'probe r\\xe9ponse \\xff\\n'); sys.exit(3)"
    )
    with pytest.raises(ResetError) as info:
        reset(command, tmp_path).reset()
    message = str(info.value)
    assert "exited with 3" in message and repr(command) in message, message
    assert "probe r\ufffdponse \ufffd" in message, "stderr's tail is shown, bad bytes replaced"
    assert "[reset] command" in message, "the fix (the rig's [reset] command) is not named"
    assert not isinstance(info.value.__context__, UnicodeError)


def test_a_hanging_command_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    command = python("import time; time.sleep(60)")
    with pytest.raises(ResetError, match=rf"did not finish in {HANG_TIMEOUT_S:g} s"):
        reset(command, tmp_path, timeout_s=HANG_TIMEOUT_S).reset()


@pytest.mark.parametrize("command", ["", "   "])
def test_an_empty_command_is_refused_by_the_options(command: str) -> None:
    with pytest.raises(ValueError, match="command is empty"):
        CommandResetOptions(command=command)


def test_a_command_cannot_start_the_serial_loader(tmp_path: Path) -> None:
    driver = reset(python("pass"), tmp_path)
    assert not driver.can_enter_bootloader
    with pytest.raises(ResetError, match="cannot start the chip's serial loader"):
        driver.enter_bootloader()
