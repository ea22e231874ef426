"""Rig files: one TOML file says which console, power switch, broker and profile make a rig.

Loading validates everything a run needs before any test: unknown keys, wrong types, missing
files and unknown drivers stop it with one line naming the file, the key and the fix. Driver
tables are checked against the driver's own `Options` dataclass, so a third-party driver's keys
are validated the same way. Paths are relative to the rig file; `{sim}` stands for the virtual
rig's port folder, known only once the twin runs; `{labgrid:NAME}` the serial port NAME of the
rig's `[labgrid]` place, known only once the place is acquired.
"""

from __future__ import annotations

import dataclasses
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hil import registry, schema
from hil.firmware.options import FirmwareOptions, load_firmware_table
from hil.lab import LabgridOptions, load_options, resource_names
from hil.power import CommonPowerOptions
from hil.profile import DeviceProfile, load_profile
from hil.proxy.options import KEYS as PROXY_KEYS
from hil.proxy.options import ProxyOptions, load_proxy_options
from hil.schema import ConfigError
from hil.sim.firmware_rawtcp import refusal
from hil.sim.options import SimOptions, load_sim_table

SIM_DIR = "{sim}"
# A rig section whose drivers come from another group; [boot_strap] "on" holds GPIO0 low.
DRIVER_GROUPS = {"board_power": "power", "boot_strap": "power"}
SECTIONS = (
    "rig",
    "labgrid",
    "console",
    "power",
    "board_power",
    "reset",
    "boot_strap",
    "broker",
    "profile",
    "limits",
    "firmware",
    "sim",
)
DEFAULT_RIG = Path("rigs/sim.toml")
T = TypeVar("T")


@dataclass(frozen=True)
class RigInfo:
    name: str
    description: str = ""


@dataclass(frozen=True)
class DriverConfig:
    """A resolved driver table: the driver's name, its class and its validated options."""

    name: str
    cls: type
    options: Any


@dataclass(frozen=True)
class Rig:
    """A validated rig: what the fixtures open, in the order they open it."""

    path: Path
    info: RigInfo
    console: DriverConfig
    power: DriverConfig | None
    power_common: CommonPowerOptions
    broker: DriverConfig
    profile: DeviceProfile
    sim: SimOptions | None
    capabilities: frozenset[str] = field(default_factory=frozenset)
    board_power: DriverConfig | None = None  # the whole device's supply, for a cold boot
    board_power_common: CommonPowerOptions = field(default_factory=CommonPowerOptions)
    reset: DriverConfig | None = None  # the chip's reset line, or a command that resets it
    labgrid: LabgridOptions | None = None  # the lab's place whose ports {labgrid:NAME} name
    boot_strap: DriverConfig | None = None  # holds GPIO0 low, for the chip's serial loader
    boot_strap_common: CommonPowerOptions = field(default_factory=CommonPowerOptions)
    firmware: FirmwareOptions | None = None  # the firmware under test and how it is written
    proxy: ProxyOptions | None = None  # [broker] proxy = true: the MQTT proxy in between

    @property
    def reset_means(self) -> list[str]:
        """How bring-up can put the device in a known state, best first."""
        means = []
        if self.board_power:
            means.append("board power cycle")
        if self.reset:
            means.append(f"reset ({self.reset.name})")
        return means

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def directory(self) -> Path:
        return self.path.parent

    def with_sim_dir(self, sim_dir: Path) -> Rig:
        """This rig with `{sim}` in port paths replaced by the running twin's folder."""
        return dataclasses.replace(
            self,
            console=_substitute(self.console, sim_dir),
            power=_substitute(self.power, sim_dir) if self.power else None,
            board_power=_substitute(self.board_power, sim_dir) if self.board_power else None,
            reset=_substitute(self.reset, sim_dir) if self.reset else None,
            boot_strap=_substitute(self.boot_strap, sim_dir) if self.boot_strap else None,
        )

    @property
    def lab_resources(self) -> list[str]:
        """The place's resources the drivers' options name with `{labgrid:NAME}`."""
        names: list[str] = []
        for config in self._driver_configs().values():
            names += resource_names(_options_text(config.options))
        return sorted(set(names))

    def with_lab_ports(self, urls: dict[str, str]) -> Rig:
        """This rig with each `{labgrid:NAME}` replaced by where the place serves NAME now."""
        changes = {}
        for section, config in self._driver_configs().items():
            for name, url in urls.items():
                config = _replace(config, f"{{labgrid:{name}}}", url)
            changes[section] = config
        return dataclasses.replace(self, **changes)

    def _driver_configs(self) -> dict[str, DriverConfig]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), DriverConfig)
        }

    def summary(self) -> list[str]:
        lines = [f"rig {self.name!r} from {self.path}"]
        if self.labgrid:
            lines.append(
                f"  place:   {self.labgrid.place} on the labgrid coordinator "
                f"{self.labgrid.coordinator} (waits up to {self.labgrid.wait_s:g} s for it)"
            )
        lines.append(f"  console: {_driver_text(self.console.name, self.console.options)}")
        if self.power:
            nc = " (normally closed)" if self.power_common.normally_closed else ""
            lines.append(f"  power:   {_driver_text(self.power.name + nc, self.power.options)}")
        else:
            lines.append("  power:   none (tests that need power control are skipped)")
        if self.board_power:
            nc = " (normally closed)" if self.board_power_common.normally_closed else ""
            lines.append(
                f"  board:   {_driver_text(self.board_power.name + nc, self.board_power.options)}"
            )
        if self.reset:
            lines.append(f"  reset:   {_driver_text(self.reset.name, self.reset.options)}")
        if self.boot_strap:
            lines.append(
                f"  strap:   {_driver_text(self.boot_strap.name, self.boot_strap.options)} "
                "(on holds GPIO0 low)"
            )
        if self.firmware:
            fw = self.firmware
            lines.append(
                f"  firmware: {fw.image or '(from --firmware)'} by {fw.method}, chip {fw.chip}"
            )
        if not self.reset_means:
            lines.append(
                "  bring-up: no [board_power] or [reset]: the run trusts a retained "
                "STATUS:ONLINE, if the broker holds one"
            )
        lines.append(f"  broker:  {_driver_text(self.broker.name, self.broker.options)}")
        if self.proxy:
            lines.append(f"  proxy:   MQTT proxy for the device on {self.proxy.text}")
        lines.append(f"  profile: {self.profile.name}")
        if self.sim:
            faults = ", ".join(self.sim.faults) or "none"
            lines.append(
                f"  sim:     firmware {self.sim.firmware_version}, time scale "
                f"{self.sim.time_scale}, rtt {self.sim.rtt_ms:g} ms, faults: {faults}"
            )
        return lines


def _driver_text(name: str, options: Any) -> str:
    """A driver's name and, when it was given any, its options apart from their defaults."""
    return " ".join(filter(None, (name, _options_text(options))))


def _options_text(options: Any) -> str:
    parts = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value in (None, "", {}, []) or value == f.default:
            continue
        parts.append(f"{f.name}={value}")
    return " ".join(parts)


def _substitute(config: DriverConfig, sim_dir: Path) -> DriverConfig:
    return _replace(config, SIM_DIR, str(sim_dir))


def _replace(config: DriverConfig, old: str, new: str) -> DriverConfig:
    changes = {
        f.name: getattr(config.options, f.name).replace(old, new)
        for f in dataclasses.fields(config.options)
        if isinstance(getattr(config.options, f.name), str)
        and old in getattr(config.options, f.name)
    }
    return dataclasses.replace(config, options=dataclasses.replace(config.options, **changes))


def _driver(section: str, table: dict[str, Any], rig_dir: Path, extra: tuple[str, ...] = ()):
    group = DRIVER_GROUPS.get(section, section)
    table = dict(table)
    name = table.pop("driver", None)
    if name is None:
        raise ConfigError(
            f"{section}.driver", f"missing; installed: {registry.driver_names(group)}"
        )
    if not isinstance(name, str):
        raise ConfigError(f"{section}.driver", f"expected a string, got {name!r}")
    if group == "broker" and name == "auto":
        name = "mosquitto" if shutil.which("mosquitto") else "embedded"
    try:
        cls = registry.resolve(group, name)
    except registry.UnknownDriver as exc:
        raise ConfigError(f"{section}.driver", str(exc)) from None
    own = {k: v for k, v in table.items() if k not in extra}
    own, errors = _resolve_paths(cls.Options, own, rig_dir, section)
    options = _attempt(errors, None, lambda: schema.load(cls.Options, own, section))
    if errors:  # a missing file and the other keys' problems, together
        raise ConfigError.combine(errors)
    return DriverConfig(name, cls, options), {k: v for k, v in table.items() if k in extra}


def _resolve_paths(
    options_cls: type, table: dict[str, Any], rig_dir: Path, group: str
) -> tuple[dict[str, Any], list[ConfigError]]:
    """File options made absolute (relative to the rig file), and an error for each missing."""
    out, missing = dict(table), []
    for f in dataclasses.fields(options_cls):
        if f.metadata.get("file") and isinstance(out.get(f.name), str):
            path = Path(out[f.name]).expanduser()
            path = path if path.is_absolute() else rig_dir / path
            if not path.exists():
                missing.append(
                    ConfigError(
                        f"{group}.{f.name}",
                        f"file {path} does not exist; fix the path or create it",
                    )
                )
            out[f.name] = str(path)
    return out, missing


def _attempt(errors: list[ConfigError], default: T, build: Callable[[], T]) -> T:
    """`build()`, or `default` with its error kept: one bad section must not hide the others."""
    try:
        return build()
    except ConfigError as exc:
        errors.append(exc)
        return default


def parse_rig(data: dict[str, Any], path: Path) -> Rig:
    """Validate parsed TOML as a rig; ConfigError names the key, ConfigErrors every problem.

    Each section is checked even when an earlier one failed; only a check that needs a failed
    section (a `{sim}` path needs [sim]) is left out.
    """
    errors: list[ConfigError] = []
    for key in data:
        if key not in SECTIONS:
            errors.append(ConfigError(key, f"unknown section; a rig has: {', '.join(SECTIONS)}"))
        elif not isinstance(data[key], dict):
            errors.append(ConfigError(key, f"expected a table [{key}], got {data[key]!r}"))
    tables = {k: v for k, v in data.items() if k in SECTIONS and isinstance(v, dict)}
    rig_dir = path.parent

    def driver(section: str, extra: tuple[str, ...] = ()) -> DriverConfig | None:
        if section not in tables:
            return None
        return _attempt(errors, None, lambda: _driver(section, tables[section], rig_dir, extra)[0])

    def required(section: str, what: str) -> None:
        if section not in data:
            errors.append(ConfigError(section, f"missing; a rig needs a [{section}] table{what}"))

    info = _attempt(
        errors, None, lambda: schema.load(RigInfo, tables.get("rig", {"name": path.stem}), "rig")
    )
    required("console", "")
    console = driver("console")
    power, common = _attempt(
        errors, (None, CommonPowerOptions()), lambda: _power_table(tables, "power", rig_dir)
    )
    board_power, board_common = _attempt(
        errors, (None, CommonPowerOptions()), lambda: _power_table(tables, "board_power", rig_dir)
    )
    reset = driver("reset")
    boot_strap, strap_common = _attempt(
        errors, (None, CommonPowerOptions()), lambda: _power_table(tables, "boot_strap", rig_dir)
    )
    firmware = None
    if "firmware" in tables:
        firmware = _attempt(errors, None, lambda: load_firmware_table(tables["firmware"], rig_dir))
    required("broker", ' (driver = "auto" spawns one for the session)')
    broker = driver("broker", PROXY_KEYS)  # the proxy's keys are common to every driver
    proxy = _attempt(errors, None, lambda: load_proxy_options(tables.get("broker", {})))
    profile = _attempt(errors, None, lambda: _profile(tables))
    lab = None
    if "labgrid" in tables:
        lab = _attempt(errors, None, lambda: load_options(tables["labgrid"]))
    errors += _lab_port_errors(tables, "labgrid" in data)
    sim = None
    if "sim" in tables:
        sim = _attempt(errors, None, lambda: load_sim_table(tables["sim"], rig_dir))
    if sim is not None and broker is not None and profile is not None:
        errors += _transport_errors(sim, broker, profile)
    if "sim" not in data:
        for config, group in (
            (console, "console"),
            (power, "power"),
            (board_power, "board_power"),
            (reset, "reset"),
            (boot_strap, "boot_strap"),
        ):
            if config and SIM_DIR in _options_text(config.options):
                errors.append(
                    ConfigError(group, "uses {sim} but the rig has no [sim] table to start one")
                )
    if errors:
        raise ConfigError.combine(errors)
    assert info and console and broker and profile  # no error: every required part loaded
    caps = {"console", "mqtt"}
    if power:
        caps.add("power")
    if board_power:
        caps.add("board_power")
    if getattr(broker.cls, "reports_connections", False):
        caps.add("broker_log")
    if proxy:
        caps.add("proxy")
    if getattr(broker.options, "tls", False):
        caps.add("tls")
    if profile.http_ota.enabled:
        caps.add("http_ota")
    return Rig(
        path,
        info,
        console,
        power,
        common,
        broker,
        profile,
        sim,
        frozenset(caps),
        board_power=board_power,
        board_power_common=board_common,
        reset=reset,
        labgrid=lab,
        boot_strap=boot_strap,
        boot_strap_common=strap_common,
        firmware=firmware,
        proxy=proxy,
    )


def _transport_errors(
    sim: SimOptions, broker: DriverConfig, profile: DeviceProfile
) -> list[ConfigError]:
    """What the twin's modem transport cannot serve, told by `hil rigs check` rather than by a
    twin that fails to start: raw TCP carries no TLS, no MQTT 5 and no QoS 2."""
    if sim.transport != "raw-tcp":
        return []
    why = refusal(profile, tls=bool(getattr(broker.options, "tls", False)))
    return [ConfigError("sim.transport", why)] if why else []


def _lab_port_errors(tables: dict[str, Any], has_lab: bool) -> list[ConfigError]:
    """`{labgrid:NAME}` needs a [labgrid] table, and a NAME."""
    errors = []
    for section, table in tables.items():
        for key, value in table.items():
            names = resource_names(value) if isinstance(value, str) else []
            if names and not has_lab:
                errors.append(
                    ConfigError(
                        f"{section}.{key}",
                        "names a labgrid resource ({labgrid:NAME}) but the rig has no "
                        "[labgrid] table naming the place",
                    )
                )
            elif any(not name.strip() for name in names):
                errors.append(
                    ConfigError(
                        f"{section}.{key}",
                        "{labgrid:} names no resource; write {labgrid:NAME} with the name of "
                        "the place's resource",
                    )
                )
    return errors


def _profile(tables: dict[str, Any]) -> DeviceProfile:
    """The shipped profile `[profile] name` with the rig's [profile] and [limits] on top."""
    profile_table = dict(tables.get("profile", {}))
    profile_name = profile_table.pop("name", "reference")
    limits = {"limits": tables["limits"]} if "limits" in tables else {}
    try:
        return load_profile(profile_name, schema.merge(profile_table, limits))
    except ConfigError as exc:
        raise ConfigError.combine(
            [
                e if e.key.startswith(("profile", "limits")) else e.under("profile")
                for e in exc.errors
            ]
        ) from None


def _power_table(
    data: dict[str, Any], section: str, rig_dir: Path
) -> tuple[DriverConfig | None, CommonPowerOptions]:
    """`[power]` (the modem's supply) and `[board_power]` (the device's) share one form."""
    if section not in data:
        return None, CommonPowerOptions()
    common_keys = tuple(f.name for f in dataclasses.fields(CommonPowerOptions))
    errors: list[ConfigError] = []
    config = _attempt(
        errors, None, lambda: _driver(section, data[section], rig_dir, extra=common_keys)[0]
    )
    rest = {k: v for k, v in data[section].items() if k in common_keys}
    common = _attempt(
        errors, CommonPowerOptions(), lambda: schema.load(CommonPowerOptions, rest, section)
    )
    if errors:
        raise ConfigError.combine(errors)
    return config, common


def load_rig(path: str | Path) -> Rig:
    """Read and validate a rig file; every error names the file and the key."""
    path = Path(path).expanduser().resolve()
    try:
        data = tomllib.loads(_rig_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", path) from None
    try:
        return parse_rig(data, path)
    except ConfigError as exc:
        raise exc.in_file(path) from None


def _rig_text(path: Path) -> str:
    """The file's text; what cannot be read as UTF-8 TOML text is a ConfigError, not a traceback."""
    if path.is_dir():
        rigs = ", ".join(sorted(p.name for p in path.glob("*.toml"))) or "none"
        raise ConfigError(
            "", f"is a directory, not a rig file; give a rig file (rig files in it: {rigs})", path
        )
    if not path.is_file():
        raise ConfigError(
            "", f"rig file not found; `hil rigs check` takes a path like {DEFAULT_RIG}", path
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            "", f"cannot read the rig file ({exc.strerror}); check its permissions", path
        ) from None
    nul = raw.find(b"\0")
    if nul >= 0:
        raise ConfigError("", f"a binary file (NUL at byte {nul}), not a TOML rig file", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "",
            f"not UTF-8 text: byte {exc.start} is {raw[exc.start]:#04x}; save the rig file as "
            "UTF-8",
            path,
        ) from None
    return text
