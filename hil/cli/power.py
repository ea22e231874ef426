"""`hil power on|off|cycle --rig R [--board]` and `hil reset --rig R`: a rig's switches by hand.

Bench work (a board that hung, a modem to restart) goes through the same drivers the runs use,
so a relay wired to the wrong channel shows here first. The rig's lock is taken, so a switch is
never thrown under a running test; a rig on a labgrid place waits for the place in its queue as
a run does, and gives it back after the switch. SIGTERM and SIGHUP unwind like Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from hil.lab import LabError
from hil.lifetime import interrupted, signals_as_interrupt
from hil.lock import RigBusy, RigLock
from hil.power import PowerDriver, PowerError
from hil.reset import ResetError
from hil.rig import DEFAULT_RIG, Rig, load_rig
from hil.schema import ConfigError


class Refusal(Exception):
    """What to print instead of doing it."""


def _parser(verb: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"hil {verb}", description=__doc__.splitlines()[0])
    if verb == "power":
        parser.add_argument("action", choices=("on", "off", "cycle"))
        parser.add_argument(
            "--board", action="store_true", help="the whole device's supply ([board_power])"
        )
        parser.add_argument(
            "--off-s",
            type=float,
            default=None,
            metavar="S",
            help="how long `cycle` holds the supply off (default: the table's off_s)",
        )
    parser.add_argument("--rig", type=Path, default=DEFAULT_RIG, help=f"default {DEFAULT_RIG}")
    return parser


def _load(path: Path) -> Rig:
    try:
        rig = load_rig(path)
    except ConfigError as exc:
        raise Refusal(str(exc)) from None
    if rig.sim is not None:
        raise Refusal(
            f"{path} is a virtual rig: its switches live only while a run's twin does "
            "(`hil sim` prints the relay port of a standalone one)"
        )
    return rig


@contextlib.contextmanager
def _place(rig: Rig, *sections: str) -> Iterator[Rig]:
    """The rig with the place's ports its tables `sections` name, the place held for the block
    (a rig without `[labgrid]` as it is); released on every way out, Ctrl-C included. Only
    those ports are waited for: a hung board's console may be gone."""
    if rig.labgrid is None:
        yield rig
        return
    from hil.lab.place import PlaceHold, wanted_classes

    try:
        hold = PlaceHold(rig.labgrid, wanted_classes(rig, sections), _notice)
    except LabError as exc:
        raise Refusal(str(exc)) from None
    try:
        try:
            urls = hold.acquire()
        except LabError as exc:
            raise Refusal(str(exc)) from None
        yield rig.with_lab_ports(urls)
    finally:
        hold.release()


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(rig: Rig) -> Iterator[None]:
    lock = RigLock(rig.path, rig.name)
    try:
        lock.acquire()
    except RigBusy as exc:
        raise Refusal(str(exc)) from None
    try:
        yield
    finally:
        lock.release()


def switch(rig: Rig, action: str, board: bool, off_s: float | None) -> str:
    config, common, section = (
        (rig.board_power, rig.board_power_common, "board_power")
        if board
        else (rig.power, rig.power_common, "power")
    )
    if config is None:
        raise Refusal(f"rig {rig.name!r} ({rig.path}) has no [{section}] table")
    with _place(rig, section) as rig, _locked(rig):
        config = rig.board_power if board else rig.power
        assert config is not None
        driver: PowerDriver = config.cls(config.options, common, rig.directory, section=section)
        try:
            driver.open()
            try:
                if action == "cycle":
                    driver.cycle(common.off_s if off_s is None else off_s)
                else:
                    driver.set(action == "on")
            finally:
                if action != "off" and driver.is_on is not True:
                    driver.on()  # an interrupted cycle still ends with the power on
                driver.close()
        except PowerError as exc:
            raise Refusal(str(exc)) from None
    return f"{driver.describe()}: {action}"


def reset(rig: Rig) -> str:
    if rig.reset is None:
        if rig.board_power is not None:
            return switch(rig, "cycle", True, None)
        raise Refusal(
            f"rig {rig.name!r} ({rig.path}) has no [reset] or [board_power] table; add one "
            '([reset] driver = "esp-serial" or "command")'
        )
    uses_console = getattr(rig.reset.cls, "can_enter_bootloader", False)
    with _place(rig, "reset", *(["console"] if uses_console else [])) as rig, _locked(rig):
        assert rig.reset is not None
        console = None
        if uses_console:
            console = rig.console.cls(rig.console.options, rig.profile)
            console.open()
        try:
            driver = rig.reset.cls(rig.reset.options, rig.directory, console)
            driver.reset()
        except (ResetError, OSError, RuntimeError) as exc:
            raise Refusal(str(exc)) from None
        finally:
            if console is not None:
                console.close()
    return f"{driver.describe()}: reset"


def main(argv: list[str], verb: str = "power") -> int:
    try:
        args = _parser(verb).parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    with signals_as_interrupt() as received:
        try:
            rig = _load(args.rig)
            if verb == "power":
                print(switch(rig, args.action, args.board, args.off_s))
            else:
                print(reset(rig))
        except Refusal as exc:
            print(f"hil {verb}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return interrupted(received, f"hil {verb}", "power left on")
    return 0
