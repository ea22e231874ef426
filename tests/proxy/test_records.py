"""What the proxy records is what mosquitto logs it received and sent, packet for packet.

A paho client at MQTT 3.1, 3.1.1 and 5 connects through the proxy, subscribes, publishes at
QoS 1 to itself, pings and disconnects; mosquitto (`log_type all`) logs each packet with its
fields. The password is never in a record.
"""

from __future__ import annotations

import json
import re

import pytest

from hil.proxy import MqttProxy, Will
from tests.proxy.conftest import Client, Mosquitto, needs_mosquitto, wait_log
from tests.waiting import until

pytestmark = needs_mosquitto

LOGGED = re.compile(r"^\S+ (?P<verb>Received|Sending) (?P<type>[A-Z]+) (?:from|to) (?P<client>\S+)")
PUBLISH = re.compile(r"\(d(\d), q(\d), r(\d), m(\d+), '([^']*)', \.\.\. \((\d+) bytes\)\)")
CONNECTED = r"New client connected from \S+ as {} \(p(\d), c(\d), k(\d+), u'([^']*)'\)"
MOSQUITTO_LEVEL = {"1": 3, "2": 4, "5": 5}  # its log's p1, p2, p5


def broker_view(broker: Mosquitto, client_id: str) -> tuple[list[str], list[str], list[tuple]]:
    """Types mosquitto received from and sent to `client_id`, and the PUBLISHes' fields."""
    received, sent, publishes = [], [], []
    for line in broker.log().splitlines():
        m = LOGGED.match(line)
        if not m or m["client"] != client_id:
            continue
        (received if m["verb"] == "Received" else sent).append(m["type"])
        if m["type"] == "PUBLISH":
            d, q, r, mid, topic, size = PUBLISH.search(line).groups()
            publishes.append((m["verb"], d == "1", int(q), r == "1", int(mid), topic, int(size)))
    return received, sent, publishes


def proxy_view(proxy: MqttProxy) -> tuple[list[str], list[str], list[tuple]]:
    received, sent, publishes = [], [], []
    for frame in proxy.frames:
        up = frame["direction"] == "up"
        if frame["type"] != "CONNECT":  # mosquitto logs it as a new client, below
            (received if up else sent).append(frame["type"])
        if frame["type"] == "PUBLISH":
            publishes.append(
                (
                    "Received" if up else "Sending",
                    frame["dup"],
                    frame["qos"],
                    frame["retain"],
                    frame["packet_id"],
                    frame["topic"],
                    frame["size"],
                )
            )
    return received, sent, publishes


@pytest.mark.parametrize("level", [3, 4, 5])
def test_the_proxy_records_what_mosquitto_logs(
    level: int, proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    client_id = f"ESP32_SIM7600_{level}"
    client = Client(proxy.endpoint, client_id, level=level, keepalive=1)
    clients.append(client)
    client.paho.username_pw_set("lab", "s3cret-password")
    client.paho.will_set("esp32_status", "gone", qos=1, retain=False)
    assert not client.connect().is_failure
    client.subscribe("server_cmd", qos=1)
    client.publish("server_cmd", b"x" * 700, qos=1).wait_for_publish(5)
    assert client.message().payload == b"x" * 700
    wait_log(broker, rf"Sending PINGRESP to {client_id}$")
    client.close()
    wait_log(broker, rf"Received DISCONNECT from {client_id}")
    until(lambda: proxy.events[-1]["event"] == "close", 5, "the proxy closing the connection")

    (p, c, k, user) = wait_log(broker, CONNECTED.format(client_id))[0].groups()
    [connect] = proxy.connects
    assert (connect.level, connect.clean_session, connect.keepalive, connect.username) == (
        MOSQUITTO_LEVEL[p],
        c == "1",
        int(k),
        user,
    )
    assert connect.client_id == client_id and connect.protocol_name == (
        "MQIsdp" if level == 3 else "MQTT"
    )
    assert connect.will == Will("esp32_status", 1, False) and connect.password is True
    assert proxy_view(proxy) == broker_view(broker, client_id)
    received = set(proxy_view(proxy)[0])
    assert received >= {"SUBSCRIBE", "PUBLISH", "PUBACK", "PINGREQ", "DISCONNECT"}
    assert not any("s3cret" in line for line in proxy.lines)  # type: ignore[attr-defined]
    events = [json.loads(line).get("event") for line in proxy.lines]  # type: ignore[attr-defined]
    assert events[0] == "open" and events[-1] == "close"
    # after the device's DISCONNECT both ends close; which the proxy sees first is a race
    assert proxy.events[-1]["by"] in ("device", "broker")
