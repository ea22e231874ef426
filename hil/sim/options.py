"""What a rig's `[sim]` table says about the virtual rig it wants started."""

from __future__ import annotations

from dataclasses import dataclass, field

FAULTS = (
    "echo_no_prefix",
    "echo_wrong_iv",
    "ota_accept_gaps",
    "ota_skip_verify",
    "ota_no_request",
    "no_recovery",
    "no_resubscribe",
    "mqtt_v31",
    "crash_on_bad_base64",
)


@dataclass(frozen=True)
class SimOptions:
    """The twin's knobs: firmware version, modem time scale, cellular link, switched-on faults."""

    firmware_version: str = "1.0.0"
    time_scale: float = 0.05  # modem boot and registration delays are multiplied by this
    rtt_ms: float = 0.0  # cellular round trip between modem and broker
    loss: float = 0.0  # probability a packet needs a TCP retransmission (costs one more RTT)
    faults: list[str] = field(default_factory=list)
    seed: int = 0
    relay_channel: int = 1

    def __post_init__(self) -> None:
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r}; known faults: {', '.join(FAULTS)}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be from 0 up to 1, got {self.loss}")
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale}")
