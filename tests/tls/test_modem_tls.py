"""The emulated SIM7600's TLS client, as AT+CSSLCFG configures it, against mosquitto over TLS
and `openssl s_server`: what it verifies, what it presents, whether it names the server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hil.broker import BrokerEndpoint, free_port
from hil.broker.mosquitto import MosquittoBroker, MosquittoOptions
from hil.broker.tls import BrokerPki
from tests.tls.conftest import MUTUAL, Modem, SServer, needs_openssl_and_mosquitto, spawn

pytestmark = needs_openssl_and_mosquitto

CONNECTED = "+CMQTTCONNECT: 0,0"
HANDSHAKE_FAIL = "+CMQTTCONNECT: 0,32"


def probe_connections(broker: MosquittoBroker) -> list[dict]:
    return [c for c in broker.connections() if c["client_id"] == "probe"]


async def test_mutual_tls_to_a_broker_that_requires_a_certificate(
    mutual: tuple[MosquittoBroker, BrokerEndpoint], modem: Modem
) -> None:
    broker, endpoint = mutual
    await modem.configure('"sslversion",0,4', *MUTUAL, '"enableSNI",0,1')
    assert await modem.connect(endpoint.port) == CONNECTED
    assert [c["protocol"] for c in probe_connections(broker)] == ["3.1.1"]
    await modem.cmd("AT+CMQTTTOPIC=0,5", data=b"t/tls")
    await modem.cmd("AT+CMQTTPAYLOAD=0,2", data=b"hi")
    assert await modem.cmd("AT+CMQTTPUB=0,1,60", wait_for="+CMQTTPUB:") == "+CMQTTPUB: 0,0"


async def test_without_its_certificate_the_broker_refuses_the_handshake(
    mutual: tuple[MosquittoBroker, BrokerEndpoint], modem: Modem
) -> None:
    broker, endpoint = mutual
    await modem.configure('"authmode",0,1', '"cacert",0,"ca.pem"')
    assert await modem.connect(endpoint.port) == HANDSHAKE_FAIL
    assert not probe_connections(broker)


@pytest.mark.parametrize(
    ("authmode", "result"), [(0, CONNECTED), (1, HANDSHAKE_FAIL), (2, HANDSHAKE_FAIL)]
)
async def test_a_broker_of_another_ca_is_refused_unless_nothing_is_verified(
    tmp_path: Path, foreign: BrokerPki, modem: Modem, authmode: int, result: str
) -> None:
    for broker, endpoint in spawn(
        tmp_path,
        cafile=str(foreign.ca),
        certfile=str(foreign.server.cert),
        keyfile=str(foreign.server.key),
    ):
        await modem.configure(f'"authmode",0,{authmode}', *MUTUAL[1:])
        assert await modem.connect(endpoint.port) == result
        assert bool(probe_connections(broker)) == (result == CONNECTED)


@pytest.mark.parametrize("sni", [True, False], ids=["enableSNI", "no_SNI"])
async def test_the_client_hello_names_the_host_only_with_sni_enabled(
    pki: BrokerPki, modem: Modem, sni: bool
) -> None:
    await modem.configure(*MUTUAL, *(['"enableSNI",0,1'] if sni else []))
    async with SServer(pki.server.cert, pki.server.key, pki.ca) as server:
        # s_server never answers the CONNECT: the attempt is left to the modem's close.
        connecting = asyncio.create_task(modem.connect(server.port))
        output = await server.read_until(b"MQTT")  # the CONNECT, after the handshake
    connecting.cancel()
    assert "MQTT" in output, output
    assert ('TLS client extension "server name"' in output) == sni, output
    assert ("localhost" in output.split("subject=")[0]) == sni
    assert "subject=CN = hil device" in output  # authmode 2 presents the device's certificate


@pytest.mark.parametrize(
    "settings",
    [
        ('"authmode",0,1',),
        ('"authmode",0,2', '"cacert",0,"ca.pem"'),
        ('"authmode",0,3', '"clientcert",0,"cert.pem"'),
    ],
    ids=["server_without_cacert", "mutual_without_pair", "client_without_key"],
)
async def test_a_certificate_the_authmode_needs_must_be_set(
    modem: Modem, settings: tuple[str, ...]
) -> None:
    await modem.configure(*settings)
    assert await modem.connect(free_port()) == "+CMQTTCONNECT: 0,33"


async def test_tls_older_than_1_2_fails_its_handshake(
    mutual: tuple[MosquittoBroker, BrokerEndpoint], modem: Modem
) -> None:
    broker, endpoint = mutual
    await modem.configure('"sslversion",0,2', *MUTUAL)
    assert await modem.connect(endpoint.port) == HANDSHAKE_FAIL
    assert not probe_connections(broker)


@pytest.mark.parametrize(
    "setting", ['"authmode",0,4', '"sslversion",0,5', '"enableSNI",0,2', '"cacert",0,"no.pem"']
)
async def test_settings_the_module_does_not_take_are_refused(modem: Modem, setting: str) -> None:
    await modem.error(f"AT+CSSLCFG={setting}")


async def test_a_plain_client_ignores_the_ssl_context(tmp_path: Path, modem: Modem) -> None:
    """AT+CMQTTACCQ without server type 1 speaks plain MQTT, whatever context 0 says."""
    broker = MosquittoBroker(MosquittoOptions(), tmp_path / "plain")
    endpoint = broker.start()
    try:
        await modem.configure(*MUTUAL)
        assert await modem.connect(endpoint.port, server_type=0, host="127.0.0.1") == CONNECTED
    finally:
        broker.stop()
