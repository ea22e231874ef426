"""The emulated SIM7600's HTTPS against `hil ota serve --tls-cert/--tls-key` as a user runs it,
on a CA made for the test session: the modem, told that CA in an AT+CSSLCFG context, reads a
range that curl, trusting the same CA, reads byte for byte alike; a server whose certificate
another CA signed is refused at the handshake (715) and never sees a request; a context that
wants a CA and names none is 719, one that checks nothing reaches either server. What the
ClientHello carries is seen by `openssl s_server`: the host's name only with "enableSNI"."""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.broker.tls import Authority, BrokerPki, Issued
from tests.http_ota.conftest import curl, cut
from tests.http_ota.test_modem_http import Command, modem_online, read_body
from tests.http_ota.test_serve_cli import Serving
from tests.tls.conftest import SServer

CA_FILE = "ota-ca.pem"
SPAN = (4096, 6143)  # the range both clients ask for, a block as the firmware asks
pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("hil")), reason="needs curl and the hil command"
)


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Issued, Issued]:
    """The session's CA, its certificate for 127.0.0.1, and one another CA signed."""
    folder = tmp_path_factory.mktemp("ota-pki")
    ours = Authority.create(folder / "ours", "hil OTA test CA")
    theirs = Authority.create(folder / "theirs", "someone else's CA")
    hosts = ("127.0.0.1",)
    return (
        ours,
        ours.issue(folder / "ours", "ota server", hosts=hosts),
        theirs.issue(folder / "theirs", "impostor", hosts=hosts),
    )


@pytest.fixture
def serve(image_file: Path) -> Iterator:
    """`serve(pair)`: `hil ota serve` over HTTPS on that certificate and key, stopped after."""
    started: list[Serving] = []

    def start(pair: Issued) -> Serving:
        child = Serving(
            str(image_file), "--host", "127.0.0.1", "--port", "0",
            "--tls-cert", str(pair.cert), "--tls-key", str(pair.key),
        )  # fmt: skip
        started.append(child)
        assert child.url.startswith("https://127.0.0.1:"), child.first
        return child

    yield start
    for child in started:
        if child.process.poll() is None:
            child.stop(signal.SIGTERM)


async def trust(cmd: Command, ca: Path | None, authmode: int = 1, sni: bool = True) -> None:
    """SSL context 0 as a firmware sets it: the CA downloaded to the module, SNI on."""
    if ca is not None:
        pem = ca.read_bytes()
        await cmd(f'AT+CCERTDOWN="{CA_FILE}",{len(pem)}', data=pem)
        await cmd(f'AT+CSSLCFG="cacert",0,"{CA_FILE}"')
    await cmd('AT+CSSLCFG="sslversion",0,4')
    await cmd(f'AT+CSSLCFG="authmode",0,{authmode}')
    if sni:
        await cmd('AT+CSSLCFG="enableSNI",0,1')


async def get_range(cmd: Command, url: str) -> str:
    """A GET of SPAN through context 0; the +HTTPACTION line."""
    await cmd("AT+HTTPINIT")
    await cmd('AT+HTTPPARA="SSLCFG",0')
    await cmd(f'AT+HTTPPARA="URL","{url}/firmware.bin"')
    await cmd(f'AT+HTTPPARA="USERDATA","Range: bytes={SPAN[0]}-{SPAN[1]}"')
    return (await cmd("AT+HTTPACTION=0", wait_for="+HTTPACTION:"))[-1]


def test_a_range_over_https_is_what_curl_reads_with_the_same_ca(
    serve, authorities, image_file: Path
) -> None:
    ca, pair, _ = authorities
    server = serve(pair)
    length = SPAN[1] - SPAN[0] + 1
    reference = curl(f"{server.url}/firmware.bin", "-r", f"{SPAN[0]}-{SPAN[1]}", cacert=ca.cert)
    assert reference.status == 206 and reference.body == cut(image_file, SPAN[0], length)

    async def scenario() -> bytes:
        async with modem_online() as cmd:
            await trust(cmd, ca.cert)
            assert await get_range(cmd, server.url) == f"+HTTPACTION: 0,206,{length}"
            return await read_body(cmd, length)

    assert asyncio.run(scenario()) == reference.body
    _code, out, _err = server.stop(signal.SIGTERM)
    assert f"GET /firmware.bin [Range: bytes={SPAN[0]}-{SPAN[1]}] -> 206" in out


def test_a_server_another_ca_signed_is_refused_at_the_handshake(serve, authorities) -> None:
    ca, _, impostor = authorities
    server = serve(impostor)
    assert curl(f"{server.url}/version", cacert=ca.cert).exit != 0, "curl refuses it too"

    async def scenario() -> str:
        async with modem_online() as cmd:
            await trust(cmd, ca.cert)
            return await get_range(cmd, server.url)

    assert asyncio.run(scenario()) == "+HTTPACTION: 0,715,0"  # handshake failed
    _code, out, err = server.stop(signal.SIGTERM)
    assert "GET" not in out and "stopped after 0 requests" in err


def test_a_context_wanting_a_ca_it_does_not_name_is_ca_missed(serve, authorities) -> None:
    server = serve(authorities[1])

    async def scenario() -> str:
        async with modem_online() as cmd:
            await trust(cmd, None, authmode=1)
            return await get_range(cmd, server.url)

    assert asyncio.run(scenario()) == "+HTTPACTION: 0,719,0"  # CA missed


def test_authmode_0_checks_no_certificate(serve, authorities) -> None:
    server = serve(authorities[2])  # the impostor: nothing is checked, so it is taken

    async def scenario() -> str:
        async with modem_online() as cmd:
            await trust(cmd, None, authmode=0)
            return await get_range(cmd, server.url)

    assert asyncio.run(scenario()) == f"+HTTPACTION: 0,206,{SPAN[1] - SPAN[0] + 1}"


@pytest.mark.parametrize("sni", [True, False], ids=["enableSNI", "no_SNI"])
def test_the_client_hello_names_the_host_only_with_sni_enabled(tmp_path: Path, sni: bool) -> None:
    pki = BrokerPki.create(tmp_path / "pki")  # a server certificate for localhost

    async def scenario() -> str:
        async with modem_online() as cmd:
            await trust(cmd, pki.ca, sni=sni)
            async with SServer(pki.server.cert, pki.server.key, pki.ca) as server:
                await cmd("AT+HTTPINIT")
                await cmd('AT+HTTPPARA="SSLCFG",0')
                await cmd(f'AT+HTTPPARA="URL","https://localhost:{server.port}/firmware.bin"')
                await cmd("AT+HTTPACTION=0")  # s_server never answers: its output is the point
                return await server.read_until(b"GET /firmware.bin")

    output = asyncio.run(scenario())
    assert "GET /firmware.bin HTTP/1.1" in output, output  # the request, after the handshake
    assert ('TLS client extension "server name"' in output) == sni, output
