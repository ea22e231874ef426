"""Power by shell commands: the escape hatch for PDUs, uhubctl, smart plugs and lab scripts."""

from __future__ import annotations

from dataclasses import dataclass

from hil import schema
from hil.power import PowerDriver, PowerError
from hil.shell import CommandFailed, run_command


@dataclass(frozen=True)
class CommandOptions:
    on: str
    off: str
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.nonempty, self.on, "on", "command that switches the supply on")
            check(schema.nonempty, self.off, "off", "command that switches the supply off")
            check(schema.positive, self.timeout_s, "timeout_s")


class CommandPower(PowerDriver):
    """Runs `on`/`off` commands; a non-zero exit or a hang is an error naming the command."""

    Options = CommandOptions

    def set(self, on: bool) -> None:
        # A command switches the supply itself, so "normally closed" means nothing here.
        self._run(self.options.on if on else self.options.off)
        self.is_on = on

    def _energize(self, energized: bool) -> None:
        self.set(energized)

    def _run(self, command: str) -> None:
        try:
            run_command(command, self.options.timeout_s)
        except CommandFailed as exc:
            raise PowerError(f"power {exc}; fix [{self.section}]") from None

    def describe(self) -> str:
        return f"command power ({self.options.on!r} / {self.options.off!r})"
