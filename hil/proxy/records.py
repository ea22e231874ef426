"""What the proxy saw, as records: every CONNECT in full, every packet's fields, each event.

A record never holds a password (only whether one was sent) nor a payload (only its size: the
MQTT recorder keeps the payloads the harness sees). Each becomes one JSON line of the test's
`proxy.jsonl`: `{"time", "conn", "direction"/"event", ...}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hil.proxy.codec import Packet, Will


@dataclass(frozen=True)
class ConnectRecord:
    """A device's CONNECT as the proxy read it, with what its TLS handshake said."""

    time: float
    connection: int
    protocol_name: str
    level: int
    client_id: str
    clean_session: bool
    keepalive: int
    will: Will | None
    username: str | None
    password: bool  # whether one was sent; its value is never kept
    sni: str | None = None  # the server name the device asked for (TLS-terminating proxy)
    client_cert: str | None = None  # the subject of the device's certificate (RFC 4514)

    @classmethod
    def of(
        cls, packet: Packet, when: float, connection: int, sni: str | None, cert: str | None
    ) -> ConnectRecord:
        f = packet.fields
        return cls(
            when,
            connection,
            f["protocol_name"],
            f["level"],
            f["client_id"],
            f["clean_session"],
            f["keepalive"],
            f["will"],
            f["username"],
            f["password"],
            sni,
            cert,
        )


def frame_record(
    when: float, connection: int, direction: str, packet: Packet, **extra: Any
) -> dict[str, Any]:
    """One packet: when it was read, its connection, direction, type and fields (and fault)."""
    fields = dict(packet.fields)
    if fields.get("will") is not None:
        fields["will"] = fields["will"]._asdict()
    return {
        "time": when,
        "conn": connection,
        "direction": direction,
        "type": packet.name,
        **fields,
        **{k: v for k, v in extra.items() if v is not None},
    }


def event_record(when: float, connection: int, event: str, **details: Any) -> dict[str, Any]:
    """A connection's open, close, refusal or error."""
    return {"time": when, "conn": connection, "event": event, **details}


def to_json(record: dict[str, Any]) -> str:
    """One line of proxy.jsonl; the time as local ISO 8601 like mqtt.jsonl's."""
    data = dict(record)
    data["time"] = datetime.fromtimestamp(data["time"]).isoformat(timespec="milliseconds")
    return json.dumps(data)
