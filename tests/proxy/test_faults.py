"""Each fault kind against a real mosquitto and real clients: what the client saw (paho's own
callbacks, mosquitto_pub's exit and message) and what the broker saw (mosquitto's log)."""

from __future__ import annotations

import time

import pytest

from hil.proxy import MqttProxy
from tests.proxy.conftest import Client, Mosquitto, mosquitto_pub, needs_mosquitto, wait_log
from tests.waiting import until

pytestmark = needs_mosquitto


def connected(proxy: MqttProxy, clients: list[Client], client_id: str, **options) -> Client:
    client = Client(proxy.endpoint, client_id, **options)
    clients.append(client)
    assert not client.connect().is_failure
    return client


def direct(broker: Mosquitto, clients: list[Client], client_id: str, **options) -> Client:
    """A client that reaches the broker without the proxy: the other end of a test."""
    client = Client((broker.endpoint.host, broker.endpoint.port), client_id, **options)
    clients.append(client)
    assert not client.connect().is_failure
    return client


def test_drop_closes_the_connection_at_once_on_both_sides(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    client = connected(proxy, clients, "dropped")
    assert proxy.drop() == 1
    assert client.disconnected.wait(2), "the client did not notice its connection closing"
    wait_log(broker, r"Client dropped closed its connection")
    until(lambda: not proxy.connections, 2, "the proxy letting the connection go")
    assert proxy.events[-1] | {"time": 0} == {
        "time": 0,
        "conn": 1,
        "event": "close",
        "by": "proxy",
        "reason": "dropped (fault)",
    }


def test_blackhole_is_found_by_the_clients_keepalive_not_by_a_close(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    keepalive = 2
    client = connected(proxy, clients, "silent", keepalive=keepalive)
    proxy.blackhole(True)
    start = time.monotonic()
    time.sleep(keepalive * 0.75)  # within the keepalive nobody may have noticed anything
    [held] = proxy.connections
    assert held.device_open and held.broker_open and not client.disconnected.is_set()
    # paho pings after a keepalive of silence and gives up a keepalive later without an answer
    assert client.disconnected.wait(keepalive * 2.5 + 1 - (time.monotonic() - start))
    detected = time.monotonic() - start
    assert keepalive <= detected <= keepalive * 2.5 + 1, f"paho gave up after {detected:.1f} s"
    assert "Keep alive timeout" in str(client.disconnect_reason)
    lost = [f["type"] for f in proxy.frames if f.get("fault") == "blackhole"]
    assert "PINGREQ" in lost, f"the client's ping should have been swallowed: {lost}"
    # the broker hears nothing of it, as across a dead radio link
    until(
        lambda: [c for c in proxy.connections if not c.device_open and c.broker_open],
        2,
        "the device's side closed while the broker's stays open",
    )
    assert not broker.lines(r"Client silent (closed its connection|has exceeded timeout)")
    proxy.blackhole(False)
    until(lambda: not proxy.connections, 2, "the proxy closing the broker's side")


def test_a_side_that_closes_in_a_blackhole_is_held_open_on_the_other(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    client = connected(proxy, clients, "leaving")
    proxy.blackhole(True)
    client.close()
    until(
        lambda: [c for c in proxy.connections if not c.device_open and c.broker_open],
        2,
        "the device's side closed while the broker's stays open",
    )
    assert not broker.lines(r"Client leaving (closed its connection|disconnected)")
    proxy.blackhole(False)
    wait_log(broker, r"Client leaving closed its connection", 2)
    assert not broker.lines(r"Received DISCONNECT from leaving")  # it went into the blackhole


def test_delay_holds_every_packet_in_order(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    listener = direct(broker, clients, "listener")
    listener.subscribe("delay/#")
    device = connected(proxy, clients, "slow")
    proxy.delay(0.4)
    start = time.monotonic()
    infos = [device.publish(f"delay/{n}", str(n), qos=1) for n in range(5)]
    for info in infos:
        info.wait_for_publish(5)
    acked = time.monotonic() - start
    assert acked >= 0.8, f"PUBLISH up and PUBACK down should take 2 x 0.4 s, took {acked:.2f}"
    assert [listener.message().topic for _ in range(5)] == [f"delay/{n}" for n in range(5)]
    proxy.delay(0)
    start = time.monotonic()
    device.publish("delay/fast", "x", qos=1).wait_for_publish(5)
    assert time.monotonic() - start < 0.4


@pytest.mark.parametrize("direction", ["up", "down"])
def test_drop_publish_drops_only_the_chosen_topic(
    direction: str, proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    device = connected(proxy, clients, f"dropper-{direction}")
    other = direct(broker, clients, f"other-{direction}")
    sender, receiver = (device, other) if direction == "up" else (other, device)
    receiver.subscribe("cmd/#", qos=0)
    proxy.drop_publish("cmd/lost", direction=direction, count=2)
    for topic in ("cmd/lost", "cmd/kept", "cmd/lost", "cmd/lost"):
        sender.publish(topic, topic, qos=0)
    got = [receiver.message().topic for _ in range(2)]
    assert got == ["cmd/kept", "cmd/lost"], "two dropped, then the rule is used up"
    assert receiver.no_message(0.3)
    dropped = [f for f in proxy.frames if f.get("fault") == "drop"]
    assert [(f["direction"], f["topic"]) for f in dropped] == [(direction, "cmd/lost")] * 2


def lossy_run(proxy: MqttProxy, broker: Mosquitto, clients: list[Client], run: int) -> list[str]:
    """200 PUBLISHes on loss/... and 20 on kept/... to a subscriber behind a proxy losing a
    quarter of those on loss/#; what it got, up to the end mark sent last on kept/."""
    device = connected(proxy, clients, f"lossy-{run}")
    device.subscribe("loss/#", qos=0)
    device.subscribe("kept/#", qos=0)
    sender = direct(broker, clients, f"lossy-sender-{run}")
    proxy.drop_publish_rate(0.25, topic="loss/#", seed=7)
    for n in range(200):
        sender.publish(f"loss/{n}", str(n), qos=0)
        if n % 10 == 0:
            sender.publish(f"kept/{n}", str(n), qos=0)
    sender.publish("kept/end", "end", qos=0)
    got = []
    while (topic := device.message().topic) != "kept/end":
        got.append(topic)
    proxy.clear()
    device.close()  # the next run's draws are for its subscriber alone
    return got


def test_drop_publish_rate_loses_that_share_of_the_chosen_topic_the_same_for_a_seed(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    first = lossy_run(proxy, broker, clients, 1)
    assert [t for t in first if t.startswith("kept/")] == [f"kept/{n}" for n in range(0, 200, 10)]
    kept = [t for t in first if t.startswith("loss/")]
    lost = [f for f in proxy.frames if f.get("fault") == "loss"]
    assert len(kept) + len(lost) == 200
    assert {f["direction"] for f in lost} == {"down"}
    assert {f["topic"] for f in lost}.isdisjoint(kept)
    assert 25 <= len(lost) <= 75, f"a rate of 0.25 lost {len(lost)} of 200"  # mean 50, sd 6
    assert lossy_run(proxy, broker, clients, 2) == first, "the same seed, the same losses"


def test_drop_publish_rate_0_ends_the_losses_of_that_direction(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    device = connected(proxy, clients, "healed")
    device.subscribe("loss/#", qos=0)
    sender = direct(broker, clients, "healed-sender")
    proxy.drop_publish_rate(1, topic="loss/a")
    proxy.drop_publish_rate(1, topic="loss/b")
    proxy.drop_publish_rate(1, topic="loss/c", direction="up")
    proxy.drop_publish_rate(0, topic="loss/a")
    sender.publish("loss/b", "b", qos=0)
    sender.publish("loss/a", "a", qos=0)
    assert device.message().topic == "loss/a", "loss/a healed, loss/b still lost"
    proxy.drop_publish_rate(0)  # every loss towards the device
    sender.publish("loss/b", "b", qos=0)
    assert device.message().topic == "loss/b"
    device.publish("loss/c", "c", qos=0)  # still lost on the way up
    sender.publish("loss/end", "end", qos=0)
    assert device.message().topic == "loss/end"

    def losses() -> list[str]:
        return [f["topic"] for f in proxy.frames if f.get("fault") == "loss"]

    # loss/c goes up the device's connection, loss/end down another: either may come first
    until(lambda: len(losses()) >= 2, 5.0, "the loss of loss/c on its way up")
    assert losses() == ["loss/b", "loss/c"]


def test_acknowledged_losses_are_answered_to_the_broker_for_the_device(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    """Half of 100 QoS 1 messages lost on the way down, each answered upwards with the PUBACK
    for its packet id, and none of the device's own PUBACKs missing for the others."""
    device = connected(proxy, clients, "lossy-qos1")
    device.subscribe("loss/#", qos=1)
    device.subscribe("kept/#", qos=1)
    sender = direct(broker, clients, "lossy-qos1-sender")
    proxy.drop_publish_rate(0.5, topic="loss/#", seed=3, acknowledge=True)
    for n in range(100):
        sender.publish(f"loss/{n}", str(n), qos=1)
    sender.publish("kept/end", "end", qos=1)
    got = []
    while (topic := device.message().topic) != "kept/end":
        got.append(topic)
    lost = [f for f in proxy.frames if f.get("fault") == "loss" and f["type"] == "PUBLISH"]
    acked = r"Received PUBACK from lossy-qos1 \("
    until(lambda: len(broker.lines(acked)) == 101, 5.0, "mosquitto's log of 101 PUBACKs")
    acks = [f for f in proxy.frames if f.get("fault") == "loss" and f["type"] == "PUBACK"]
    assert 25 <= len(lost) <= 75 and len(got) + len(lost) == 100
    assert sorted(f["packet_id"] for f in acks) == sorted(f["packet_id"] for f in lost)
    assert {f["direction"] for f in acks} == {"up"}


def test_delay_publish_is_overtaken_by_the_others(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    listener = direct(broker, clients, "watcher")
    listener.subscribe("ota/#")
    device = connected(proxy, clients, "delayer")
    proxy.delay_publish(0.6, topic="ota/late")
    start = time.monotonic()
    device.publish("ota/late", "1", qos=1)
    device.publish("ota/early", "2", qos=1)
    assert listener.message().topic == "ota/early"
    assert listener.message().topic == "ota/late"
    assert time.monotonic() - start >= 0.6


def test_drop_puback_up_leaves_the_broker_waiting_and_it_resends_on_reconnect(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    device = connected(proxy, clients, "forgetful", clean=False)
    device.subscribe("firmware/update", qos=1)
    proxy.drop_puback(direction="up")
    send_direct(broker, "firmware/update", "c0")
    first = device.message()
    assert not first.dup
    wait_log(broker, r"Sending PUBLISH to forgetful")
    assert not broker.lines(r"Received PUBACK from forgetful")
    device.close()
    again = connected(proxy, clients, "forgetful", clean=False)
    resent = again.message()
    assert (resent.payload, resent.dup, resent.mid) == (b"c0", True, first.mid)
    wait_log(broker, r"Received PUBACK from forgetful")
    again.paho.unsubscribe("firmware/update")


def test_drop_puback_down_leaves_the_publish_unacknowledged(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    device = connected(proxy, clients, "waiting")
    proxy.drop_puback(direction="down")
    info = device.publish("esp32_status", "OTA:PROGRESS:1/2", qos=1)
    wait_log(broker, r"Sending PUBACK to waiting")
    info.wait_for_publish(0.5)
    assert not info.is_published()
    device.publish("esp32_status", "next", qos=1).wait_for_publish(5)


def test_delay_puback_delays_the_acknowledgement(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    device = connected(proxy, clients, "patient")
    proxy.delay_puback(0.5, direction="down")
    start = time.monotonic()
    device.publish("esp32_status", "x", qos=1).wait_for_publish(5)
    assert time.monotonic() - start >= 0.5
    start = time.monotonic()
    device.publish("esp32_status", "y", qos=1).wait_for_publish(5)
    assert time.monotonic() - start < 0.5


def test_redeliver_sends_the_publish_again_with_dup_and_keeps_the_broker_out_of_it(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    device = connected(proxy, clients, "twice")
    device.subscribe("server_cmd", qos=1)
    send_direct(broker, "server_cmd", "once")
    first = device.message()
    wait_log(broker, r"Received PUBACK from twice")
    assert proxy.redeliver("server_cmd") == 1
    second = device.message()
    assert (first.payload, first.dup) == (b"once", False)
    assert (second.payload, second.dup, second.mid) == (b"once", True, first.mid)
    until(
        lambda: [f for f in proxy.frames if f.get("fault") == "absorbed"],
        2,
        "the device's PUBACK for the copy kept from the broker",
    )
    assert len(broker.lines(r"Received PUBACK from twice")) == 1
    with pytest.raises(LookupError, match="no QoS 1 PUBLISH on 'nothing/here'"):
        proxy.redeliver("nothing/here")


def test_refuse_connects_answers_the_code_twice_then_lets_the_client_in(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    proxy.refuse_connects(2, 5)
    address = proxy.endpoint
    for _ in range(2):
        refused = mosquitto_pub(address, "-i", "refused", "-t", "t", "-m", "m")
        assert refused.returncode != 0
        assert "not authorised" in refused.stderr.lower(), refused.stderr
    accepted = mosquitto_pub(address, "-i", "refused", "-t", "t", "-m", "m")
    assert accepted.returncode == 0, accepted.stderr
    assert len(broker.lines(r"New client connected from \S+ as refused ")) == 1
    assert [e["event"] for e in proxy.events].count("open") == 3
    assert len(proxy.connects) == 3
    codes = [f["return_code"] for f in proxy.frames if f["type"] == "CONNACK"]
    assert codes == [5, 5, 0]


def test_refuse_connects_speaks_mqtt5_reason_codes_to_an_mqtt5_client(
    proxy: MqttProxy, clients: list[Client]
) -> None:
    proxy.refuse_connects(1, 5)
    client = Client(proxy.endpoint, "v5", level=5)
    clients.append(client)
    reason = client.connect()
    assert reason.is_failure and str(reason) == "Not authorized" and reason.value == 0x87


def test_clear_undoes_every_fault(
    proxy: MqttProxy, broker: Mosquitto, clients: list[Client]
) -> None:
    proxy.refuse_connects(1, 5)
    proxy.delay(5)
    proxy.drop_publish()
    proxy.clear()
    device = connected(proxy, clients, "cleared")
    start = time.monotonic()
    device.publish("t", "x", qos=1).wait_for_publish(2)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda p: p.refuse_connects(1, 0), "refuses nothing"),
        (lambda p: p.drop_publish(direction="sideways"), "direction 'sideways'"),
        (lambda p: p.drop_puback(count=0), "count 0"),
        (lambda p: p.delay(-1), "0 or more"),
        (lambda p: p.drop_publish_rate(1.5), "rate 1.5"),
        (lambda p: p.drop_publish_rate(0.1, direction="in"), "direction 'in'"),
    ],
)
def test_a_fault_that_makes_no_sense_is_refused(call, problem: str, proxy: MqttProxy) -> None:
    with pytest.raises(ValueError, match=problem):
        call(proxy)


def send_direct(broker: Mosquitto, topic: str, payload: str) -> None:
    """Publish at QoS 1 with mosquitto_pub, straight to the broker."""
    address = (broker.endpoint.host, broker.endpoint.port)
    done = mosquitto_pub(address, "-t", topic, "-m", payload, "-q", "1")
    assert done.returncode == 0, done.stderr
