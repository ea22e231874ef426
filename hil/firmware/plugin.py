"""pytest options for the firmware under test: `--firmware PATH` and `--reflash`.

`--firmware` (else the rig's `[firmware] image`) is verified when the run is configured, before
any test and before any part of the rig is switched; a path that names nothing the device could
boot, or a rig that cannot write it, stops the run with one line. Bring-up then installs it
(`hil.firmware.install`), and the terminal summary says whether it was written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.firmware.install import INSTALLED_KEY, PLAN_KEY, Plan, unusable
from hil.firmware.options import FirmwareOptions
from hil.firmware.source import SourceError, read_source
from hil.plugin import DEVICE_KEY, RIG_KEY


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    group.addoption(
        "--firmware",
        metavar="PATH",
        help="the firmware to test: an ESP-IDF build folder (with flasher_args.json), a merged "
        "image or an app .bin; verified, written before the first rig test unless the device "
        "has it already, and required to come online (default: the rig's [firmware] image)",
    )
    group.addoption(
        "--reflash",
        action="store_true",
        help="write the firmware even when the device already has it",
    )


@pytest.hookimpl(trylast=True)  # after hil.plugin has loaded the rig
def pytest_configure(config: pytest.Config) -> None:
    plan = _plan(config)
    if plan is not None:
        config.stash[PLAN_KEY] = plan


def _plan(config: pytest.Config) -> Plan | None:
    given = config.getoption("--firmware")
    reflash = bool(config.getoption("--reflash"))
    rig = config.stash.get(RIG_KEY, None)
    configured = rig.firmware if rig is not None else None
    if given:
        path, where = Path(config.invocation_params.dir, given), "--firmware"
    elif configured is not None and configured.image:
        path, where = Path(configured.image), f"[firmware] image of {rig.path}"
    else:
        if reflash:
            raise pytest.UsageError(
                "hil: --reflash needs a firmware to write: pass --firmware PATH or set "
                "[firmware] image in the rig file"
            )
        return None
    if rig is None:
        raise pytest.UsageError(f"hil: {where} needs a rig to write it to: pass --rig PATH")
    options = configured or FirmwareOptions()
    try:
        source = read_source(path, options.chip)
    except SourceError as exc:
        raise pytest.UsageError(f"hil: {where}: {exc}") from None
    problem = unusable(rig, options, source)
    if problem:
        raise pytest.UsageError(
            f"hil: cannot install {source.describe()} on rig {rig.name!r}: {problem}"
        )
    return Plan(source, options, reflash)


def pytest_report_header(config: pytest.Config) -> list[str]:
    plan = config.stash.get(PLAN_KEY, None)
    if plan is None:
        return []
    how = plan.options.method + (", --reflash" if plan.reflash else "")
    return [f"hil firmware: {plan.title} from {plan.source.describe()} by {how}"]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    plan = config.stash.get(PLAN_KEY, None)
    if plan is None:
        return
    installed = config.stash.get(INSTALLED_KEY, None)
    if installed is None:
        device = config.stash.get(DEVICE_KEY, None)
        if device is None:
            terminalreporter.write_line(f"hil: {plan.title}: not installed (no rig test ran)")
        return  # else the install's failure stands in full in the first error above
    if installed.facts.written:
        terminalreporter.write_line(
            f"hil: {plan.title} written from {plan.source.describe()} by {installed.how} in "
            f"{installed.seconds:.1f} s; the device came up running it"
        )
    elif plan.options.method == "ota":
        terminalreporter.write_line(
            f"hil: {plan.title} already on the device (it reports version "
            f"{plan.source.version}; an OTA install can compare only versions): not written"
        )
    else:
        terminalreporter.write_line(f"hil: {plan.title} already on the device: not written")
