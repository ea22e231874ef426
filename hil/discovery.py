"""Find USB serial ports by what they are (vendor, product, serial), not by /dev/ttyACM number.

An ESP32-S3's native USB port vanishes on every reset and may come back under another number,
and a runner with several boards numbers them in plug order. So a rig names its console by a
udev match, and the harness looks the port up again (or waits for it to come back) each time.
`hil discover` lists what is plugged in and prints the rig snippet that matches each port.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pyudev

BY_ID_DIR = "/dev/serial/by-id/"
DISCOVER_HINT = (
    "check the cable / the serial in the rig file; `hil discover` lists what is plugged in"
)

SIM7600 = ("1e0e", "9001")
SIM7600_AT_INTERFACE = "02"
SIM7600_INTERFACES = {"00": "diag", "01": "NMEA", "02": "AT", "03": "modem/PPP", "04": "audio"}
CH340 = ("1a86", "7523")
KINDS = {
    ("303a", "1001"): "ESP32-S3 native USB (serial/JTAG)",
    ("10c4", "ea60"): "CP2102 USB serial adapter",
    CH340: "CH340 (USB serial adapter or LCUS relay)",
    ("1a86", "55d4"): "CH9102 USB serial adapter",
    ("0403", "6001"): "FTDI FT232R USB serial adapter",
}


class PortNotFound(RuntimeError):
    """No serial port matched within the time allowed."""


class AmbiguousMatch(RuntimeError):
    """More than one serial port matched, so the harness cannot know which board is meant."""


@dataclass(frozen=True)
class UdevMatch:
    """The udev identity of one port; a field left None matches anything.

    Hex ids and the interface number compare case-insensitively (udev reports "303a", people
    copy "303A" from lsusb output of other tools); the serial compares exactly.
    """

    vendor_id: str | None = None
    product_id: str | None = None
    serial: str | None = None
    interface: str | None = None

    def __post_init__(self) -> None:
        if not any(self._wanted().values()):
            raise ValueError(
                "a udev match needs at least one of vendor_id, product_id, serial, interface;"
                " `hil discover` prints the match for each plugged-in port"
            )

    def _wanted(self) -> dict[str, str | None]:
        return {
            "ID_VENDOR_ID": self.vendor_id and self.vendor_id.lower(),
            "ID_MODEL_ID": self.product_id and self.product_id.lower(),
            "ID_SERIAL_SHORT": self.serial,
            "ID_USB_INTERFACE_NUM": self.interface and self.interface.lower(),
        }

    def matches(self, properties: Mapping[str, str]) -> bool:
        """True if every field that is set equals the udev property it stands for."""
        for key, wanted in self._wanted().items():
            if wanted is None:
                continue
            value = properties.get(key)
            if value is None:
                return False
            if (value if key == "ID_SERIAL_SHORT" else value.lower()) != wanted:
                return False
        return True

    def __str__(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return " ".join(f"{k}={v}" for k, v in fields.items())


@dataclass(frozen=True)
class SerialDevice:
    """One USB serial port as udev sees it, with a guess at what board it is."""

    node: str
    by_id: str | None
    vendor_id: str | None
    product_id: str | None
    serial: str | None
    interface: str | None
    driver: str | None
    manufacturer: str | None
    model: str | None

    @property
    def vid_pid(self) -> str:
        return f"{self.vendor_id or '????'}:{self.product_id or '????'}"

    @property
    def kind(self) -> str:
        ids = (self.vendor_id, self.product_id)
        if ids == SIM7600:
            role = SIM7600_INTERFACES.get(self.interface or "", "unknown interface")
            return f"SIM7600 {role} port (interface {self.interface})"
        return KINDS.get(ids, "unknown USB serial device")

    def properties(self) -> dict[str, str]:
        """The udev properties a `UdevMatch` compares, as far as this port has them."""
        values = {
            "ID_VENDOR_ID": self.vendor_id,
            "ID_MODEL_ID": self.product_id,
            "ID_SERIAL_SHORT": self.serial,
            "ID_USB_INTERFACE_NUM": self.interface,
        }
        return {k: v for k, v in values.items() if v is not None}

    def match(self) -> UdevMatch:
        """The narrowest match for this port; the interface only where a device has several."""
        interface = self.interface if (self.vendor_id, self.product_id) == SIM7600 else None
        return UdevMatch(self.vendor_id, self.product_id, self.serial, interface)

    def describe(self) -> str:
        serial = f" serial {self.serial}" if self.serial else ""
        return f"{self.node} ({self.vid_pid}{serial}, {self.kind})"

    def rig_snippet(self) -> str:
        """The TOML that selects this port in a rig file."""
        if self.vendor_id is None and self.product_id is None and self.serial is None:
            return f"# {self.node} reports no USB identity; a rig can only name it by path"
        if (self.vendor_id, self.product_id) == SIM7600 and self.interface != SIM7600_AT_INTERFACE:
            return (
                f"# {self.node} is the SIM7600 {SIM7600_INTERFACES.get(self.interface or '', '?')}"
                f" interface; a rig wants the AT port, interface {SIM7600_AT_INTERFACE}"
            )
        lines = [f"# {self.node}: {self.kind}"]
        if self.serial is None:
            lines.append(
                "# this chip reports no serial number: two of them cannot be told apart by match;"
            )
            lines.append("# the /dev/serial/by-path/ link, which names the USB socket, can")
        lines += ["[console]", 'driver = "serial"', f"match = {_inline_table(self.match())}"]
        if (self.vendor_id, self.product_id) == CH340:
            port = self.by_id or self.node
            lines += [
                "# or, if this CH340 is an LCUS relay on the modem's power:",
                "# [power]",
                '# driver = "lcus"',
                f"# port = {_toml_string(port)}",
                "# channel = 1",
            ]
        return "\n".join(lines)


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same quotes and escapes).
    return json.dumps(value, ensure_ascii=False)


def _inline_table(match: UdevMatch) -> str:
    fields = {k: v for k, v in asdict(match).items() if v is not None}
    return "{ " + ", ".join(f"{k} = {_toml_string(v)}" for k, v in fields.items()) + " }"


def _natural_key(node: str) -> list[object]:
    # /dev/ttyACM2 before /dev/ttyACM10
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", node)]


def _attribute(device: pyudev.Device | None, name: str) -> str | None:
    if device is None:
        return None
    value = device.attributes.get(name)
    return value.decode(errors="replace").strip() if value is not None else None


def _is_usb_tty(device: pyudev.Device) -> bool:
    return device.properties.get("ID_BUS") == "usb" or (
        device.find_parent("usb", "usb_device") is not None
    )


def _serial_device(device: pyudev.Device) -> SerialDevice:
    """Read a tty from its udev properties, falling back to the USB parents' sysfs attributes.

    The fallback keeps discovery working where the udev database is not visible, e.g. in a
    container that sees /sys but not /run/udev.
    """
    props = device.properties
    usb_device = device.find_parent("usb", "usb_device")
    usb_interface = device.find_parent("usb", "usb_interface")
    links = props.get("DEVLINKS", "").split() or list(device.device_links)
    return SerialDevice(
        node=device.device_node or f"/dev/{device.sys_name}",
        by_id=next((link for link in links if link.startswith(BY_ID_DIR)), None),
        vendor_id=props.get("ID_VENDOR_ID") or _attribute(usb_device, "idVendor"),
        product_id=props.get("ID_MODEL_ID") or _attribute(usb_device, "idProduct"),
        serial=props.get("ID_SERIAL_SHORT") or _attribute(usb_device, "serial"),
        interface=props.get("ID_USB_INTERFACE_NUM")
        or _attribute(usb_interface, "bInterfaceNumber"),
        driver=props.get("ID_USB_DRIVER") or (usb_interface.driver if usb_interface else None),
        manufacturer=_attribute(usb_device, "manufacturer") or props.get("ID_VENDOR"),
        model=_attribute(usb_device, "product") or props.get("ID_MODEL"),
    )


def list_serial_devices(context: pyudev.Context | None = None) -> list[SerialDevice]:
    """Every USB serial port (tty with a USB parent), sorted by device node."""
    context = context or pyudev.Context()
    devices = [
        _serial_device(device)
        for device in context.list_devices(subsystem="tty")
        if _is_usb_tty(device)
    ]
    return sorted(devices, key=lambda d: _natural_key(d.node))


def find_ports(match: UdevMatch, context: pyudev.Context | None = None) -> list[SerialDevice]:
    """The USB serial ports `match` selects (none, one, or several)."""
    return [d for d in list_serial_devices(context) if match.matches(d.properties())]


def find_port(match: UdevMatch, context: pyudev.Context | None = None) -> SerialDevice | None:
    """The one port `match` selects, None if absent; AmbiguousMatch if several answer."""
    found = find_ports(match, context)
    return _only(match, found) if found else None


def _only(match: UdevMatch, found: list[SerialDevice]) -> SerialDevice:
    if len(found) > 1:
        listing = "\n".join(f"  {d.describe()}" for d in found)
        raise AmbiguousMatch(
            f"{len(found)} serial ports match {match}:\n{listing}\n"
            "add `serial` (and `interface` for a multi-port device) to the match to pick one"
        )
    return found[0]


def _not_found(match: UdevMatch, timeout: float, context: pyudev.Context) -> PortNotFound:
    present = list_serial_devices(context)
    listing = (
        "\n".join(f"  {d.describe()}" for d in present)
        if present
        else "  (no USB serial devices at all)"
    )
    return PortNotFound(
        f"no serial port matching {match} appeared within {timeout:g} s; present:\n{listing}\n"
        f"{DISCOVER_HINT}"
    )


def wait_for_port(
    match: UdevMatch, timeout: float, context: pyudev.Context | None = None
) -> SerialDevice:
    """The one port `match` selects, waiting up to `timeout` seconds for it to be plugged in.

    The monitor starts before the first look, so a port that appears in between is not missed.
    """
    context = context or pyudev.Context()
    deadline = time.monotonic() + timeout
    monitor = pyudev.Monitor.from_netlink(context)
    monitor.filter_by("tty")
    monitor.start()
    found = find_ports(match, context)
    while not found:
        remaining = deadline - time.monotonic()
        event = monitor.poll(timeout=remaining) if remaining > 0 else None
        if event is None:
            # One last look: where no udev daemon runs no events come, yet the port may be.
            found = find_ports(match, context)
            if not found:
                raise _not_found(match, timeout, context)
        elif event.action == "add":
            found = find_ports(match, context)
    return _only(match, found)
