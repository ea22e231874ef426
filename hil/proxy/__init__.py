"""An MQTT-aware proxy between the device and any broker: it records what the device says on
the wire and injects network faults on command."""

from hil.proxy.codec import MalformedPacket, Will
from hil.proxy.faults import ProxyFaults
from hil.proxy.proxy import MqttProxy, OpenConnection, ProxyError, ProxyTimeout
from hil.proxy.records import ConnectRecord

__all__ = [
    "ConnectRecord",
    "MalformedPacket",
    "MqttProxy",
    "OpenConnection",
    "ProxyError",
    "ProxyFaults",
    "ProxyTimeout",
    "Will",
]
