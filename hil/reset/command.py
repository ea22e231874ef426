"""Reset by a shell command: a lab script, a debug probe (`openocd -c "reset run"`), a PDU."""

from __future__ import annotations

from dataclasses import dataclass

from hil import schema
from hil.reset import ResetDriver, ResetError
from hil.shell import CommandFailed, run_command


@dataclass(frozen=True)
class CommandResetOptions:
    command: str
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.positive, self.timeout_s, "timeout_s")
        if not self.command.strip():
            raise ValueError("command is empty; give the command that resets the device")


class CommandReset(ResetDriver):
    """Runs `command`; a non-zero exit or a hang is an error naming the command."""

    Options = CommandResetOptions

    def reset(self) -> None:
        try:
            run_command(self.options.command, self.options.timeout_s)
        except CommandFailed as exc:
            raise ResetError(f"reset {exc}; fix [reset] command") from None

    def describe(self) -> str:
        return f"reset command {self.options.command!r}"
