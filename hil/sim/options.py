"""What a rig's `[sim]` table says about the virtual rig it wants started.

`flash` is relative to the rig file: where the twin keeps its flash between runs, as a board
keeps what was last written to it; without it every start is a factory-fresh device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil import schema
from hil.sim.flash import FlashFileError, check_file

FAULTS = (
    "echo_no_prefix",
    "echo_wrong_iv",
    "ota_accept_gaps",
    "ota_skip_verify",
    "ota_no_request",
    "no_recovery",
    "no_resubscribe",
    "no_keepalive_check",
    "no_reconnect_after_refusal",
    "takeover_loop",
    "mqtt_v31",
    "crash_on_bad_base64",
    "http_no_version_check",
    "http_no_verify",
    "http_no_resume",
    "http_no_rollback",
    "no_sni",
    "tls_no_verify",
)

CONSOLES = ("native-usb", "uart-bridge")
# How the modem carries MQTT: its own MQTT service (AT+CMQTT…), or SIM7000-style TCP commands
# carrying frames the firmware builds itself (hil.sim.tcpip, hil.sim.firmware_rawtcp).
TRANSPORTS = ("cmqtt", "raw-tcp")
CHANNELS = ("relay_channel", "board_channel", "strap_channel")


@dataclass(frozen=True)
class SimOptions:
    """The twin's knobs: firmware version, modem time scale, cellular link, switched-on faults."""

    firmware_version: str = "1.0.0"
    time_scale: float = 0.05  # modem boot and registration delays are multiplied by this
    rtt_ms: float = 0.0  # cellular round trip between modem and broker
    loss: float = 0.0  # probability a packet needs a TCP retransmission (costs one more RTT)
    faults: list[str] = field(default_factory=list)
    seed: int = 0
    relay_channel: int = 1  # LCUS channel on the modem's supply
    board_channel: int = 2  # LCUS channel on the whole device's supply (a cold boot)
    strap_channel: int = 3  # LCUS channel holding GPIO0 low while energized (download mode)
    console: str = "native-usb"  # or "uart-bridge": a CP210x/CH340 board whose port stays
    transport: str = "cmqtt"  # or "raw-tcp"
    flash: Path | None = None  # the file the whole flash is kept in; None: fresh at each start

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.positive, self.time_scale, "time_scale", "a time scale")
            check(schema.finite_range, self.rtt_ms, "rtt_ms", 0, what="a round trip in ms")
            for name in CHANNELS:
                check(schema.whole_range, getattr(self, name), name, 1, 8, "an LCUS channel")
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r}; known faults: {', '.join(FAULTS)}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be from 0 up to 1, got {self.loss}")
        if self.console not in CONSOLES:
            raise ValueError(f"console must be one of {', '.join(CONSOLES)}, got {self.console!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(
                f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}"
            )
        for i, first in enumerate(CHANNELS):
            for second in CHANNELS[i + 1 :]:
                if getattr(self, first) == getattr(self, second):
                    raise ValueError(
                        f"{first} and {second} are both {getattr(self, first)}; the modem's "
                        "supply, the board's supply and the GPIO0 strap are three channels"
                    )
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale}")


def load_sim_table(table: dict[str, Any], rig_dir: Path) -> SimOptions:
    """`[sim]` validated, its `flash` made absolute against the rig file's folder and checked:
    a file there must be a whole flash image (a missing one is a factory-fresh device)."""
    options = schema.load(SimOptions, table, "sim")
    if options.flash is None:
        return options
    flash = options.flash.expanduser()
    flash = flash if flash.is_absolute() else rig_dir / flash
    try:
        check_file(flash)
    except FlashFileError as exc:
        raise schema.ConfigError("sim.flash", str(exc)) from None
    return dataclasses.replace(options, flash=flash)
