"""The device's TLS, seen from the network: it names its broker (SNI), presents its client
certificate, and refuses a broker whose certificate it cannot verify.

Cloud brokers (AWS IoT, Azure IoT Hub) refuse a client that sends no SNI, and a SIM7600 sends
none unless told `AT+CSSLCFG="enableSNI",0,1` (seed 002); a modem set to `authmode` 0 verifies
nothing and talks to any server. Through the rig's MQTT proxy ending the device's TLS on the
broker's certificate (`[broker] proxy = true` with `tls = true`), each CONNECT carries the server
name the device asked for and the subject of the certificate it presented. For the refusal the
proxy poses as the broker with a certificate of another CA, and the device's next handshakes
must end before any CONNECT.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from hil.broker.tls import BrokerPki
from hil.proxy.impostor import Impostor

pytestmark = [
    pytest.mark.hil,
    pytest.mark.needs("tls"),
    pytest.mark.needs("proxy"),
    pytest.mark.asyncio(loop_scope="session"),
]
POLL_S = 0.05
ATTEMPTS = 2  # handshakes the device must begin with the impostor, none reaching CONNECT


@pytest.fixture
def tls_proxy(proxy):
    """The proxy, when it ends the device's TLS (a virtual rig, whose twin trusts its CA)."""
    if proxy.device_tls is None:
        pytest.skip("the proxy forwards plain MQTT: the device's TLS does not end at it")
    return proxy


async def device_connects(dut, proxy) -> list:
    await dut.current_version()  # online: it has connected at least once
    found = list(proxy.connects)
    assert found, "no CONNECT of the device was seen through the proxy, though it is online"
    return found


@pytest.mark.smoke
async def test_device_names_the_broker_in_sni(dut, rig, tls_proxy) -> None:
    host = rig.broker.options.host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        pytest.skip(f"the rig's broker is the address {host}, and SNI carries host names only")
    names = {c.sni for c in await device_connects(dut, tls_proxy)}
    assert names == {host}, (
        f"device asked for server name(s) {sorted(names, key=str)} (None: no SNI); the broker "
        f"is {host!r}, and brokers that need SNI refuse a client without it "
        '(AT+CSSLCFG="enableSNI",0,1)'
    )


async def test_device_presents_its_client_certificate(dut, rig, tls_proxy) -> None:
    if not getattr(rig.broker.options, "require_certificate", False):
        pytest.skip("the rig's broker does not ask clients for a certificate")
    subjects = {c.client_cert for c in await device_connects(dut, tls_proxy)}
    assert None not in subjects, (
        "device connected without a client certificate; mutual TLS needs authmode 2 with "
        "clientcert and clientkey"
    )


async def test_device_refuses_a_broker_it_cannot_verify(dut, tls_proxy, tmp_path: Path) -> None:
    await dut.current_version()
    foreign = BrokerPki.create(tmp_path / "foreign")  # a CA the device was never given
    limit = dut.limits.recovery_s
    loop = asyncio.get_running_loop()
    since = len(tls_proxy.connects)
    with Impostor(tls_proxy, foreign.server.cert, foreign.server.key) as impostor:
        tls_proxy.drop()
        deadline = loop.time() + limit
        while impostor.hellos < ATTEMPTS and len(tls_proxy.connects) == since:
            assert loop.time() < deadline, (
                f"the device began {impostor.hellos} TLS handshake(s) with the proxy within "
                f"{limit:g} s of its connection being dropped; {ATTEMPTS} were expected"
            )
            await asyncio.sleep(POLL_S)
        accepted = tls_proxy.connects[since:]
        online = dut.mqtt.mark()
    assert not accepted, (
        f"device sent its CONNECT ({accepted[0].client_id}) to a server whose certificate "
        "another CA signed: it does not verify its broker (authmode 0 or 3, or no cacert)"
    )
    await dut.wait_online(limit, since=online)  # the broker's own certificate again
