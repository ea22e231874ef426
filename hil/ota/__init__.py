"""Firmware delivery over MQTT: the windowed sender and the fault plans that exercise devices."""

from hil.ota.faults import FaultPlan
from hil.ota.sender import DEFAULT_WINDOW, OtaError, OtaRefused, OtaResult, OtaSender, OtaTimeout

__all__ = [
    "DEFAULT_WINDOW",
    "FaultPlan",
    "OtaError",
    "OtaRefused",
    "OtaResult",
    "OtaSender",
    "OtaTimeout",
]
