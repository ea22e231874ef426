"""The gpiod power driver through the real gpiod package with only the kernel chip faked, and on
the kernel's gpio-sim where this machine has one.

The fake replaces the C extension's `Chip` (the part that opens /dev/gpiochipN) and records
the extension's `LineSettings`/`LineConfig` while still building the real ones; gpiod's Python
layer (LineSettings, request_lines, Chip, LineRequest) runs unchanged.
"""

from __future__ import annotations

import errno
import functools
import gzip
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hil.power import CommonPowerOptions, PowerError
from hil.power.gpiod import GpiodOptions, GpiodPower

try:
    import gpiod
    from gpiod import _ext
    from gpiod.line import Value
    from packaging.version import Version

    GPIOD_MISSING = None if Version(gpiod.__version__) >= Version("2.1") else gpiod.__version__
except ImportError as exc:
    GPIOD_MISSING = str(exc)
NO_GPIOD = f'the real gpiod>=2.1 package is missing ({GPIOD_MISSING}): pip install -e ".[dev]"'
needs_gpiod = pytest.mark.skipif(GPIOD_MISSING is not None, reason=NO_GPIOD)

CHIP = "/dev/gpiochip-hil-test"
LINE = 3
COMBOS = pytest.mark.parametrize(
    ("active_low", "normally_closed"), [(False, False), (False, True), (True, False), (True, True)]
)


def pin_level(normally_closed: bool, active_low: bool, powered: bool = True) -> int:
    """The pin level (1 = high) that gives the modem `powered`, from the wiring alone.

    The coil is energized at the pin's active level (low when active_low); a normally closed
    contact conducts while its coil is not energized.
    """
    energized = powered != normally_closed
    return int(energized != active_low)


def driver(
    active_low: bool = False,
    normally_closed: bool = False,
    chip: str = CHIP,
    line: int = LINE,
    section: str = "power",
) -> GpiodPower:
    return GpiodPower(
        GpiodOptions(chip=chip, line=line, active_low=active_low),
        CommonPowerOptions(normally_closed=normally_closed),
        Path("."),
        section,
    )


# --- the fake kernel chip ------------------------------------------------------------------


class ExtSettings:
    """_ext.LineSettings that keeps its fields; the real one is built too, for its type checks."""

    real_type: Any = None

    def __init__(self, **fields: Any) -> None:
        self.real = self.real_type(**fields)
        self.fields = fields


class ExtConfig:
    """_ext.LineConfig that keeps what it was given, forwarding to a real one."""

    real_type: Any = None

    def __init__(self) -> None:
        self.real = self.real_type()
        self.lines: list[tuple[int, ExtSettings]] = []
        self.output_values: list[Value] = []

    def add_line_settings(self, offsets: list[int], settings: ExtSettings) -> None:
        self.real.add_line_settings(offsets, settings.real)
        self.lines += [(offset, settings) for offset in offsets]

    def set_output_values(self, values: list[Value]) -> None:
        self.real.set_output_values(values)
        self.output_values = list(values)


@dataclass
class KernelLine:
    held: bool = False
    active_low: bool = False
    physical: int | None = None  # None: never driven


@dataclass
class Kernel:
    """What the GPIO character device would be asked to do, and the pin levels that follow."""

    num_lines: int = 8
    lines: dict[int, KernelLine] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[tuple[str, int, int | None]] = field(default_factory=list)
    stuck_at: int | None = None  # a pin that reads this level whatever it is driven to
    read_error: BaseException | None = None
    write_error: OSError | None = None

    def line(self, offset: int) -> KernelLine:
        return self.lines.setdefault(offset, KernelLine())

    def request(self, config: ExtConfig, consumer: str | None) -> ExtRequest:
        for offset, _ in config.lines:
            if self.line(offset).held:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        for index, (offset, settings) in enumerate(config.lines):
            f = settings.fields
            logical = (
                config.output_values[index].value if config.output_values else f["output_value"]
            )
            self.requests.append({"offset": offset, "consumer": consumer, **f})
            line = self.line(offset)
            line.held, line.active_low = True, f["active_low"]
            if f["direction"] == _ext.DIRECTION_OUTPUT:
                line.physical = logical ^ line.active_low
                self.timeline.append(("request", offset, line.physical))
        return ExtRequest(self, [offset for offset, _ in config.lines])


class ExtRequest:
    """_ext.Request on the fake kernel: set_values/get_values apply active_low like the kernel."""

    chip_name = "gpiochip-hil-test"
    fd = -1

    def __init__(self, kernel: Kernel, offsets: list[int]) -> None:
        self.kernel, self.offsets = kernel, offsets
        self.num_lines = len(offsets)

    def release(self) -> None:
        for offset in self.offsets:
            self.kernel.line(offset).held = False
            self.kernel.timeline.append(("release", offset, None))

    def set_values(self, values: dict[int, Value]) -> None:
        if self.kernel.write_error is not None:
            raise self.kernel.write_error
        for offset, value in values.items():
            if not isinstance(value, Value):
                raise TypeError(f"line value must be gpiod.line.Value, got {value!r}")
            line = self.kernel.line(offset)
            line.physical = value.value ^ line.active_low
            self.kernel.timeline.append(("set", offset, line.physical))

    def get_values(self, offsets: list[int], buf: list[Value | None]) -> None:
        if self.kernel.read_error is not None:
            raise self.kernel.read_error
        for index, offset in enumerate(offsets):
            line = self.kernel.line(offset)
            level = self.kernel.stuck_at if self.kernel.stuck_at is not None else line.physical
            buf[index] = Value(int(level) ^ line.active_low)


class ExtChip:
    """_ext.Chip: the one object that would open the character device."""

    def __init__(self, kernel: Kernel, path: str) -> None:
        if path != CHIP:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self.kernel, self.path, self.fd = kernel, path, -1

    def get_info(self) -> gpiod.ChipInfo:
        lines = self.kernel.num_lines
        return gpiod.ChipInfo(name=ExtRequest.chip_name, label="fake", num_lines=lines)

    def get_line_name(self, offset: int) -> str | None:
        return None

    def request_lines(
        self, config: ExtConfig, consumer: str | None, event_buffer_size: int | None
    ) -> ExtRequest:
        return self.kernel.request(config, consumer)

    def close(self) -> None:
        pass


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    if GPIOD_MISSING is not None:
        pytest.skip(NO_GPIOD)
    fake = Kernel()
    monkeypatch.setattr(ExtSettings, "real_type", _ext.LineSettings)
    monkeypatch.setattr(ExtConfig, "real_type", _ext.LineConfig)
    monkeypatch.setattr(_ext, "LineSettings", ExtSettings)
    monkeypatch.setattr(_ext, "LineConfig", ExtConfig)
    monkeypatch.setattr(_ext, "Chip", functools.partial(ExtChip, fake))
    return fake


# --- safety at open and on each switch -----------------------------------------------------


@COMBOS
def test_open_requests_the_line_at_the_powering_level(
    kernel: Kernel, active_low: bool, normally_closed: bool
) -> None:
    power = driver(active_low, normally_closed)
    power.open()
    on_level = pin_level(normally_closed, active_low)
    (request,) = kernel.requests
    assert request["offset"] == LINE
    assert request["direction"] == _ext.DIRECTION_OUTPUT
    assert request["active_low"] is active_low
    energized_for_on = _ext.VALUE_INACTIVE if normally_closed else _ext.VALUE_ACTIVE
    assert request["output_value"] == energized_for_on
    assert request["consumer"] == "hil-power"
    # The request is the first thing the line is given, at the level that keeps the modem on.
    assert kernel.timeline == [("request", LINE, on_level)]
    assert power.is_on is True
    power.on()  # what the session does right after open
    assert {level for _, _, level in kernel.timeline} == {on_level}
    power.close()


@COMBOS
def test_switching_drives_the_pin_by_wiring(
    kernel: Kernel, active_low: bool, normally_closed: bool
) -> None:
    power = driver(active_low, normally_closed)
    power.open()
    power.off()
    assert kernel.timeline[-1] == ("set", LINE, pin_level(normally_closed, active_low, False))
    assert power.is_on is False
    power.on()
    assert kernel.timeline[-1] == ("set", LINE, pin_level(normally_closed, active_low, True))
    assert power.is_on is True
    power.close()


# --- requests are released ------------------------------------------------------------------


def test_close_releases_the_line(kernel: Kernel) -> None:
    power = driver()
    power.open()
    power.close()
    assert not kernel.line(LINE).held
    assert kernel.timeline[-1] == ("release", LINE, None)
    assert power.is_on is None
    power.close()  # closing twice is harmless
    with pytest.raises(PowerError, match=r"call open\(\) first"):
        power.on()
    driver().open()  # the line is free for the next request


def test_open_twice_keeps_the_one_request(kernel: Kernel) -> None:
    power = driver()
    power.open()
    power.open()
    assert len(kernel.requests) == 1
    power.close()


def test_a_pin_that_does_not_follow_is_refused_and_released(kernel: Kernel) -> None:
    kernel.stuck_at = pin_level(False, False, powered=False)
    power = driver()
    with pytest.raises(PowerError, match=r"reads INACTIVE right after being driven ACTIVE"):
        power.open()
    assert not kernel.line(LINE).held
    with pytest.raises(PowerError, match=r"open\(\)"):
        power.on()


def test_any_failure_after_the_request_releases_the_line(kernel: Kernel) -> None:
    kernel.read_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        driver().open()
    assert not kernel.line(LINE).held


def test_a_chip_that_cannot_read_back_still_drives(kernel: Kernel) -> None:
    kernel.read_error = OSError(errno.EIO, os.strerror(errno.EIO))
    power = driver()
    power.open()
    assert kernel.line(LINE).held
    power.close()


# --- errors name the thing and the fix ------------------------------------------------------


def test_a_line_held_elsewhere_names_the_fix(kernel: Kernel) -> None:
    first = driver()
    first.open()
    with pytest.raises(PowerError, match=rf"line {LINE} of {CHIP} is held by another program"):
        driver().open()
    assert kernel.line(LINE).held
    first.close()


@pytest.mark.parametrize("section", ["power", "board_power"])
def test_a_line_off_the_chip_names_the_fix(kernel: Kernel, section: str) -> None:
    with pytest.raises(PowerError, match=rf"line 99 is not on .*check \[{section}\] line"):
        driver(line=99, section=section).open()
    assert kernel.requests == []


def test_a_failed_switch_names_the_line(kernel: Kernel) -> None:
    power = driver()
    power.open()
    kernel.write_error = OSError(errno.ENODEV, os.strerror(errno.ENODEV))
    with pytest.raises(PowerError, match=rf"line {LINE} of {CHIP} cannot be set"):
        power.off()
    power.close()


@needs_gpiod
def test_a_missing_chip_is_one_clear_error(tmp_path: Path) -> None:
    """The real C extension, no fake: the path simply does not exist."""
    chip = str(tmp_path / "gpiochip7")
    with pytest.raises(PowerError) as caught:
        driver(chip=chip).open()
    message = str(caught.value)
    assert f"GPIO chip {chip} does not exist" in message
    assert "set [power] chip" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@needs_gpiod
def test_a_file_that_is_no_chip_names_the_fix() -> None:
    with pytest.raises(PowerError, match=r"/dev/null is not a GPIO chip device"):
        driver(chip="/dev/null").open()


@pytest.mark.parametrize("bindings", ["absent", "libgpiod v1"])
def test_missing_gpiod_bindings_name_the_install(
    monkeypatch: pytest.MonkeyPatch, bindings: str
) -> None:
    if bindings == "absent":
        monkeypatch.setitem(sys.modules, "gpiod", None)
    else:  # v1's bindings are one C module named gpiod, without gpiod.line
        monkeypatch.setitem(sys.modules, "gpiod", types.ModuleType("gpiod"))
        monkeypatch.delitem(sys.modules, "gpiod.line", raising=False)
    with pytest.raises(PowerError, match=r'gpiod>=2\.1.*pip install "hil\[gpio\]"'):
        driver().open()


# --- the kernel's gpio-sim -------------------------------------------------------------------

SIM_ROOT = Path("/sys/kernel/config/gpio-sim")
SIM_DRIVER = Path("/sys/bus/platform/drivers/gpio-sim")
KERNEL_OPTIONS = ("CONFIG_GPIOLIB", "CONFIG_GPIO_CDEV", "CONFIG_CONFIGFS_FS", "CONFIG_GPIO_SIM")


@functools.cache
def gpio_sim_missing() -> str | None:
    """Why no gpio-sim chip can be made here (None: it can), loading the module if need be."""
    modprobe = shutil.which("modprobe")
    failure = ""
    if not SIM_ROOT.is_dir() and not SIM_DRIVER.is_dir() and modprobe:
        done = subprocess.run([modprobe, "gpio-sim"], capture_output=True, text=True)
        if done.returncode:
            failure = done.stderr.strip() or f"exit {done.returncode}"
    if SIM_ROOT.is_dir():
        return None
    missing = []
    try:
        config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        config = ""
    unset = [o for o in KERNEL_OPTIONS if f"{o}=y" not in config and f"{o}=m" not in config]
    if config and unset:
        missing.append(f"the kernel is built without {', '.join(unset)}")
    if SIM_DRIVER.is_dir():
        pass
    elif modprobe is None:
        missing.append("no gpio-sim driver, and no modprobe to load it (apt-get install kmod)")
    else:
        missing.append(f"modprobe gpio-sim failed: {failure}" if failure else "no gpio-sim driver")
    if "configfs" not in Path("/proc/filesystems").read_text():
        missing.append("configfs is not in this kernel (/proc/filesystems)")
    elif not os.path.ismount("/sys/kernel/config"):
        missing.append("configfs is not mounted (mount -t configfs none /sys/kernel/config)")
    return f"no gpio-sim at {SIM_ROOT}: " + "; ".join(missing or ["reason unknown"])


@pytest.fixture
def sim_chip() -> Iterator[tuple[str, Path]]:
    """A live gpio-sim chip of 8 lines: its /dev path and the sysfs folder of its lines."""
    if GPIOD_MISSING is not None:
        pytest.skip(NO_GPIOD)
    reason = gpio_sim_missing()
    if reason is not None:
        pytest.skip(reason)
    device = SIM_ROOT / f"hil-power-{os.getpid()}"
    bank = device / "bank0"
    device.mkdir()
    try:
        bank.mkdir()
        (bank / "num_lines").write_text("8")
        (device / "live").write_text("1")
        name = (bank / "chip_name").read_text().strip()
        path = f"/dev/{name}"
        if not Path(path).exists():
            pytest.skip(f"gpio-sim made {name} but {path} is missing (no devtmpfs on /dev)")
        yield path, Path("/sys/devices/platform") / (device / "dev_name").read_text().strip() / name
    finally:
        if (device / "live").read_text().strip() == "1":
            (device / "live").write_text("0")
        if bank.exists():
            bank.rmdir()
        device.rmdir()


@COMBOS
def test_on_gpio_sim(sim_chip: tuple[str, Path], active_low: bool, normally_closed: bool) -> None:
    path, lines = sim_chip
    value = lines / f"sim_gpio{LINE}" / "value"
    power = driver(active_low, normally_closed, chip=path)
    power.open()
    try:
        assert int(value.read_text()) == pin_level(normally_closed, active_low)
        power.off()
        assert int(value.read_text()) == pin_level(normally_closed, active_low, powered=False)
        power.on()
        assert int(value.read_text()) == pin_level(normally_closed, active_low)
    finally:
        power.close()
    with gpiod.Chip(path) as chip:
        assert not chip.get_line_info(LINE).used
