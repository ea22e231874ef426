"""Power by shell commands: the escape hatch for PDUs, uhubctl, smart plugs and lab scripts."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass

from hil import schema
from hil.power import PowerDriver, PowerError


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
            result = subprocess.run(
                shlex.split(command),
                capture_output=True,
                # Lab scripts and PDU tools print what they like; a stray byte must not hide
                # the exit status behind a UnicodeDecodeError.
                encoding="utf-8",
                errors="replace",
                timeout=self.options.timeout_s,
                check=False,
            )
        except FileNotFoundError:
            raise PowerError(f"power command {command!r}: program not found; fix [power]") from None
        except subprocess.TimeoutExpired:
            raise PowerError(
                f"power command {command!r} did not finish in {self.options.timeout_s} s"
            ) from None
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise PowerError(
                f"power command {command!r} exited with {result.returncode}: {tail[0]}"
            )

    def describe(self) -> str:
        return f"command power ({self.options.on!r} / {self.options.off!r})"
