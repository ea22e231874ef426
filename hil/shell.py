"""Running a rig's shell commands (power, reset): one place that turns every failure into words."""

from __future__ import annotations

import shlex
import subprocess


class CommandFailed(RuntimeError):
    """The command could not run, failed or hung; the message names it and says how."""


def run_command(command: str, timeout_s: float) -> str:
    """Run `command` (no shell) and return its output; CommandFailed if it does not succeed."""
    try:
        result = subprocess.run(
            shlex.split(command),
            capture_output=True,
            # Lab scripts print what they like; a stray byte must not hide the exit status.
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise CommandFailed(f"command {command!r}: program not found") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"command {command!r} did not finish in {timeout_s:g} s") from None
    except ValueError as exc:  # shlex: unbalanced quotes
        raise CommandFailed(f"command {command!r} cannot be parsed: {exc}") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        raise CommandFailed(f"command {command!r} exited with {result.returncode}: {tail[0]}")
    return result.stdout
