"""The emulated SIM7600: its AT command set over the UART, bridged to the real broker.

It answers like the module as modem_facts.md describes it: CR LF framed results, `>` prompts for
data, `+CMQTT…` result codes after `OK`, unsolicited `+CMQTTRX…` for incoming messages. Without
power it answers nothing; on power it boots (`RDY` … `PB DONE`) and registers after a delay.
Certificates live in flash and survive a power cut; everything else is forgotten. A client
acquired for SSL/TLS connects as its SSL context says (hil.sim.tls has the rules and sources).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from hil.sim.at import AtSyntaxError, Command, parse
from hil.sim.link import Link
from hil.sim.modem_http import HTTP_HANDLERS, HttpService
from hil.sim.mqtt_bridge import BrokerSession, ConnectParams, close_silent_sessions
from hil.sim.tls import FILES, NUMBERS, TlsSettings
from hil.sim.uart import UartEnd

log = logging.getLogger("hil.sim.modem")

BOOT_S = 15.0  # power-on to RDY on hardware (10-20 s)
REGISTRATION_S = 10.0  # PB DONE to network registration
MQTT_CLIENTS = 2
MAX_TOPIC = 1024
MAX_PAYLOAD = 10240
IP_ADDRESS = "10.64.12.34"
PUB_TIMEOUT_S = 60  # AT+CMQTTPUB's default <pub_timeout>

# +CMQTT error codes (modem_facts.md)
OK, FAILED, NETWORK_NOT_OPENED, CLIENT_INDEX, NO_CONNECTION = 0, 1, 9, 10, 11
INVALID_PARAM, NOT_SUPPORTED, CLIENT_BUSY, TOPIC_EMPTY, CLIENT_USED = 12, 13, 14, 18, 19
NOT_ACQUIRED, NOT_RELEASED, LENGTH, ALREADY_OPENED = 20, 21, 22, 23


class CmqttError(Exception):
    """A +CMQTT command refused with `+<NAME>: <client>,<code>` then ERROR."""

    def __init__(self, code: int, client: int | None = 0) -> None:
        super().__init__(code)
        self.code = code
        self.client = client


@dataclass
class MqttClient:
    """One acquired client index: its settings, the pending topic/payload, its connection."""

    client_id: str
    version: int = 3  # the module's default is MQTT 3.1 until AT+CMQTTCFG="version",<i>,4
    tls: bool = False  # AT+CMQTTACCQ's <server_type> 1: an SSL/TLS client (hil.sim.tls)
    ssl_ctx: int | None = None
    topic: bytes | None = None
    payload: bytes = b""
    sub_topics: list[tuple[str, int]] = field(default_factory=list)
    unsub_topics: list[str] = field(default_factory=list)
    session: BrokerSession | None = None
    connecting: bool = False


class Sim7600(HttpService):
    """The module: power, boot, registration, and the AT interpreter on its UART end."""

    def __init__(
        self,
        uart: UartEnd,
        link: Link,
        time_scale: float,
    ) -> None:
        self._uart = uart
        self._link = link
        self._time_scale = time_scale
        self.certs: dict[str, bytes] = {}  # in flash: survives power loss
        self.powered = False
        self._generation = 0  # bumped on every power loss; stale callbacks check it
        self._boot_task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.echo = True
        self.cmee = 0
        self.ready = False
        self.registered = False
        self.net_open = False
        self.pdp: dict[int, str] = {}
        self.pdp_active = False
        self.ssl_cfg: dict[tuple[int, str], int | str] = {}
        self.mqtt_started = False
        self.clients: dict[int, MqttClient] = {}
        self._buffer = bytearray()
        self._data_wanted: tuple[int, Callable[[bytes], None]] | None = None
        self._http_reset()

    # -- power --------------------------------------------------------------------------------

    async def set_power(self, on: bool) -> None:
        """Switch the module's supply; a cut forgets everything but flash and kills the link."""
        if on == self.powered:
            return
        self.powered = on
        if on:
            log.info("modem power on")
            self._boot_task = asyncio.get_running_loop().create_task(self._boot())
            return
        log.info("modem power cut")
        self._generation += 1
        if self._boot_task is not None:
            self._boot_task.cancel()
            self._boot_task = None
        self._link.clear()
        sessions = [c.session for c in self.clients.values() if c.session is not None]
        self._reset()
        self._uart.discard_input()
        self._uart.drop_held()
        self._uart.hold(False)
        for session in sessions:
            await session.abort()

    async def _boot(self) -> None:
        await asyncio.sleep(BOOT_S * self._time_scale)
        self.ready = True
        self._uart.discard_input()  # bytes sent to a booting module are lost
        for line in ("RDY", "+CPIN: READY", "SMS DONE", "PB DONE"):
            self._send_line(line)
        await asyncio.sleep(REGISTRATION_S * self._time_scale)
        self.registered = True
        log.info("modem registered on the network")

    async def close(self) -> None:
        """Power down for good (the twin is stopping): drop links, stop tasks."""
        await self.set_power(False)
        await self._link.close()
        close_silent_sessions()

    # -- UART ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read the UART for ever; bytes arriving while unpowered or booting are lost."""
        while True:
            data = await self._uart.read()
            if not (self.powered and self.ready):
                continue
            self._buffer += data
            self._consume()

    def _consume(self) -> None:
        while self._buffer:
            if self._data_wanted is not None:
                size, done = self._data_wanted
                if len(self._buffer) < size:
                    return
                chunk = bytes(self._buffer[:size])
                del self._buffer[:size]
                self._data_wanted = None
                done(chunk)
                continue
            end = next((i for i, b in enumerate(self._buffer) if b in (0x0D, 0x0A)), -1)
            if end < 0:
                return
            line = self._buffer[:end].decode("latin-1")
            del self._buffer[: end + 1]
            if not line.strip():
                continue
            if self.echo:
                self._uart.write(line.encode("latin-1") + b"\r\n")
            # Like the module, keep URCs back from a command line to its final result: they
            # would otherwise split the answer (and the `>` prompt from its OK).
            self._uart.hold(True)
            self._execute(line)

    def _write(self, data: bytes) -> None:
        self._uart.write(data)

    def _send_line(self, line: str) -> None:
        self._write(b"\r\n" + line.encode() + b"\r\n")

    def _ok(self) -> None:
        self._send_line("OK")
        self._uart.hold(False)

    def _error(self, text: str = "operation not allowed") -> None:
        if self.cmee == 2:
            self._send_line(f"+CME ERROR: {text}")
        elif self.cmee == 1:
            self._send_line("+CME ERROR: 3")
        else:
            self._send_line("ERROR")
        self._uart.hold(False)

    def _prompt(self, size: int, done: Callable[[bytes], None]) -> None:
        """`>` then exactly `size` raw bytes for `done`."""
        self._data_wanted = (size, done)
        self._write(b"\r\n>")

    def _later(self, deliver: Callable[[], Awaitable[None]]) -> None:
        """Run `deliver` across the link to the broker (upstream), unless the power goes first."""
        generation = self._generation

        async def guarded() -> None:
            if generation == self._generation:
                await deliver()

        self._link.up.send(guarded)

    def _urc(self, line: str, generation: int | None = None) -> None:
        """An answer from the network side, delivered downstream in order."""
        generation = self._generation if generation is None else generation

        async def deliver() -> None:
            if generation == self._generation and self.powered:
                self._unsolicited(b"\r\n" + line.encode() + b"\r\n")

        self._link.down.send(deliver)

    def _unsolicited(self, data: bytes) -> None:
        """Unsolicited output waits in the module for a free line, one piece at a time, so the
        answer to a command sent meanwhile goes out before URCs that have not started yet."""
        self._uart.write_when_idle(data)

    # -- interpreter --------------------------------------------------------------------------

    def _handler(self, name: str) -> Callable[[Sim7600, Command], None] | None:
        """The command's handler; `ATE0` and `ATE1` share ATE's."""
        return _HANDLERS.get(name) or _HANDLERS.get(name.rstrip("0123456789"))

    def _execute(self, line: str) -> None:
        try:
            cmd = parse(line)
        except AtSyntaxError as exc:
            log.debug("modem: %s", exc)
            self._error("invalid command")
            return
        handler = self._handler(cmd.name)
        if handler is None:
            self._error("unknown command")
            return
        try:
            handler(self, cmd)
        except AtSyntaxError as exc:
            log.debug("modem: %s", exc)
            self._error("invalid parameter")
        except CmqttError as exc:
            prefix = cmd.name
            if exc.client is None:
                self._send_line(f"{prefix}: {exc.code}")
            else:
                self._send_line(f"{prefix}: {exc.client},{exc.code}")
            self._error()

    def at(self, cmd: Command) -> None:
        self._ok()

    def ate(self, cmd: Command) -> None:
        self.echo = cmd.name == "ATE1"
        self._ok()

    def cmee_(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f"+CMEE: {self.cmee}")
        else:
            value = cmd.arg(0, int)
            if value not in (0, 1, 2):
                raise AtSyntaxError("CMEE takes 0, 1 or 2")
            self.cmee = value
        self._ok()

    def cpin(self, cmd: Command) -> None:
        self._send_line("+CPIN: READY")
        self._ok()

    def creg(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f"{cmd.name}: 0,{1 if self.registered else 2}")
        self._ok()

    def csq(self, cmd: Command) -> None:
        self._send_line("+CSQ: 23,99" if self.registered else "+CSQ: 99,99")
        self._ok()

    def cpsi(self, cmd: Command) -> None:
        if self.registered:
            self._send_line(
                "+CPSI: LTE,Online,238-01,0xD48,27447553,262,EUTRAN-BAND20,6300,3,3,-94,-1032,-745"
            )
        else:
            self._send_line("+CPSI: NO SERVICE,Online")
        self._ok()

    def cgdcont(self, cmd: Command) -> None:
        if cmd.query:
            for cid, apn in sorted(self.pdp.items()):
                self._send_line(f'+CGDCONT: {cid},"IP","{apn}","0.0.0.0",0,0')
        else:
            cid = cmd.arg(0, int)
            cmd.arg(1, str)
            self.pdp[cid] = str(cmd.arg(2, str, ""))
        self._ok()

    def cgact(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f"+CGACT: 1,{int(self.pdp_active)}")
            self._ok()
            return
        state = cmd.arg(0, int)
        if state == 1 and not self.registered:
            self._error("no network service")
            return
        self.pdp_active = state == 1
        self._ok()

    def netopen(self, cmd: Command) -> None:
        if cmd.query:
            self._send_line(f"+NETOPEN: {int(self.net_open)}")
            self._ok()
            return
        if self.net_open:
            self._send_line("+IP ERROR: Network is already opened")
            self._error()
            return
        self._ok()
        if self.registered:
            self.net_open = True
            self.pdp_active = True
            self._send_line("+NETOPEN: 0")
        else:
            self._send_line("+NETOPEN: 1")

    def netclose(self, cmd: Command) -> None:
        self.net_open = False
        self._ok()
        self._send_line("+NETCLOSE: 0")

    def cgpaddr(self, cmd: Command) -> None:
        cid = cmd.arg(0, int, 1)
        self._send_line(f"+CGPADDR: {cid},{IP_ADDRESS if self.pdp_active else '0.0.0.0'}")
        self._ok()

    # -- certificates and TLS ------------------------------------------------------------------

    def ccertdown(self, cmd: Command) -> None:
        name, size = cmd.arg(0, str), cmd.arg(1, int)
        if not 0 < size <= 10240:
            raise AtSyntaxError("certificate size out of range")

        def store(data: bytes) -> None:
            self.certs[str(name)] = data
            self._ok()

        self._prompt(int(size), store)

    def ccertlist(self, cmd: Command) -> None:
        for name in sorted(self.certs):
            self._send_line(f'+CCERTLIST: "{name}"')
        self._ok()

    def ccertdele(self, cmd: Command) -> None:
        name = str(cmd.arg(0, str))
        if self.certs.pop(name, None) is None:
            self._error("file not found")
            return
        self._ok()

    def csslcfg(self, cmd: Command) -> None:
        key = str(cmd.arg(0, str)).lower()
        known = {
            "sslversion",
            "authmode",
            "cacert",
            "clientcert",
            "clientkey",
            "enablesni",
            "ignorelocaltime",
            "ciphersuites",
            "negotiatetime",
        }
        if key not in known:
            raise AtSyntaxError(f"unknown CSSLCFG key {key!r}")
        ctx = int(cmd.arg(1, int))
        value = cmd.args[2] if len(cmd.args) > 2 else None
        if value is None:
            raise AtSyntaxError("CSSLCFG value missing")
        if key in NUMBERS and value not in NUMBERS[key]:
            raise AtSyntaxError(f"CSSLCFG {key} takes one of {list(NUMBERS[key])}")
        if key in FILES and value not in self.certs:
            self._error("file not found")
            return
        self.ssl_cfg[(ctx, key)] = value
        self._ok()

    # -- MQTT ---------------------------------------------------------------------------------

    def _client(self, cmd: Command, acquired: bool = True) -> tuple[int, MqttClient | None]:
        index = int(cmd.arg(0, int))
        if not 0 <= index < MQTT_CLIENTS:
            raise CmqttError(CLIENT_INDEX, index)
        client = self.clients.get(index)
        if acquired and client is None:
            raise CmqttError(NOT_ACQUIRED, index)
        return index, client

    def cmqttstart(self, cmd: Command) -> None:
        if self.mqtt_started:
            raise CmqttError(ALREADY_OPENED, None)
        if not self.registered:
            raise CmqttError(NETWORK_NOT_OPENED, None)
        self.mqtt_started = True
        self._ok()
        self._send_line("+CMQTTSTART: 0")

    def cmqttstop(self, cmd: Command) -> None:
        if not self.mqtt_started:
            raise CmqttError(NETWORK_NOT_OPENED, None)
        if self.clients:
            raise CmqttError(NOT_RELEASED, None)
        self.mqtt_started = False
        self._ok()
        self._send_line("+CMQTTSTOP: 0")

    def cmqttaccq(self, cmd: Command) -> None:
        if not self.mqtt_started:
            raise CmqttError(NETWORK_NOT_OPENED)
        index, client = self._client(cmd, acquired=False)
        if client is not None:
            raise CmqttError(CLIENT_USED, index)
        client_id = str(cmd.arg(1, str))
        server_type = cmd.arg(2, int, 0)
        if not client_id or server_type not in (0, 1):
            raise CmqttError(INVALID_PARAM, index)
        self.clients[index] = MqttClient(client_id, tls=server_type == 1)
        self._ok()

    def cmqttrel(self, cmd: Command) -> None:
        index, client = self._client(cmd)
        assert client is not None
        if client.session is not None or client.connecting:
            raise CmqttError(CLIENT_BUSY, index)
        del self.clients[index]
        self._ok()

    def cmqttcfg(self, cmd: Command) -> None:
        key = str(cmd.arg(0, str)).lower()
        index = int(cmd.arg(1, int))
        client = self.clients.get(index)
        if client is None:
            raise CmqttError(NOT_ACQUIRED, index)
        if key == "version":
            version = int(cmd.arg(2, int))
            if version not in (3, 4):
                raise CmqttError(INVALID_PARAM, index)
            if client.session is not None:
                raise CmqttError(CLIENT_BUSY, index)
            client.version = version
        elif key not in ("checkutf8", "optimeout"):
            raise CmqttError(NOT_SUPPORTED, index)
        self._ok()

    def cmqttsslcfg(self, cmd: Command) -> None:
        _, client = self._client(cmd)
        assert client is not None
        client.ssl_ctx = int(cmd.arg(1, int))
        self._ok()

    def cmqttconnect(self, cmd: Command) -> None:
        index, client = self._client(cmd)
        assert client is not None
        if client.session is not None or client.connecting:
            raise CmqttError(CLIENT_USED, index)
        url = urlsplit(str(cmd.arg(1, str)))
        if url.scheme not in ("tcp", "ssl") or not url.hostname or not url.port:
            raise CmqttError(INVALID_PARAM, index)
        username = str(cmd.arg(4, str)) if len(cmd.args) > 4 else None
        password = str(cmd.arg(5, str)) if len(cmd.args) > 5 else None
        params = ConnectParams(
            host=url.hostname,
            port=url.port,
            client_id=client.client_id,
            version=client.version,
            keepalive=int(cmd.arg(2, int)),
            clean=bool(cmd.arg(3, int)),
            username=username,
            password=password,
            tls=self._tls_settings(client.ssl_ctx or 0) if client.tls else None,
        )
        client.connecting = True
        self._ok()
        generation = self._generation

        def on_message(topic: str, payload: bytes) -> None:
            self._rx(index, topic, payload, generation)

        def on_lost() -> None:
            if generation == self._generation and client.session is not None:
                client.session = None
                self._urc(f"+CMQTTCONNLOST: {index},1", generation)

        async def connect() -> None:
            session = BrokerSession(params, on_message, on_lost)
            code = await session.connect()
            client.connecting = False
            if generation != self._generation:
                if code == OK:
                    await session.abort()
                return
            if code == OK:
                client.session = session
            log.info("modem: MQTT connect as %s (v%d): %d", params.client_id, params.version, code)
            self._urc(f"+CMQTTCONNECT: {index},{code}", generation)

        self._later(connect)

    def _tls_settings(self, ctx: int) -> TlsSettings:
        """SSL context `ctx` as it stands now, with the files it names as they are in flash."""
        settings = {key: value for (index, key), value in self.ssl_cfg.items() if index == ctx}
        return TlsSettings.of(settings, self.certs)

    def cmqttdisc(self, cmd: Command) -> None:
        index, client = self._client(cmd)
        assert client is not None
        session = client.session
        if session is None:
            raise CmqttError(NO_CONNECTION, index)
        client.session = None
        self._ok()

        async def disconnect() -> None:
            await session.disconnect()
            self._urc(f"+CMQTTDISC: {index},0")

        self._later(disconnect)

    def _data(self, cmd: Command, limit: int, store: Callable[[MqttClient, bytes], None]) -> None:
        index, client = self._client(cmd)
        assert client is not None
        size = int(cmd.arg(1, int))
        if not 0 < size <= limit:
            raise CmqttError(LENGTH, index)

        def done(data: bytes) -> None:
            store(client, data)
            self._ok()

        self._prompt(size, done)

    def cmqtttopic(self, cmd: Command) -> None:
        self._data(cmd, MAX_TOPIC, lambda c, d: setattr(c, "topic", d))

    def cmqttpayload(self, cmd: Command) -> None:
        self._data(cmd, MAX_PAYLOAD, lambda c, d: setattr(c, "payload", d))

    def cmqttpub(self, cmd: Command) -> None:
        index, client = self._client(cmd)
        assert client is not None
        qos = int(cmd.arg(1, int))
        # The module's publish timeout, scaled like every other modem delay of the twin.
        timeout = int(cmd.arg(2, int, PUB_TIMEOUT_S)) * self._time_scale
        retain = bool(cmd.arg(3, int, 0))
        if client.topic is None:
            raise CmqttError(TOPIC_EMPTY, index)
        session = client.session
        if session is None:
            raise CmqttError(NO_CONNECTION, index)
        topic, payload = client.topic.decode("utf-8", "replace"), client.payload
        client.topic, client.payload = None, b""
        self._ok()

        async def publish() -> None:
            code = await session.publish(topic, payload, qos, timeout, retain)
            self._urc(f"+CMQTTPUB: {index},{code}")

        self._later(publish)

    def cmqttsubtopic(self, cmd: Command) -> None:
        qos = int(cmd.arg(2, int))
        self._data(cmd, MAX_TOPIC, lambda c, d: c.sub_topics.append((d.decode(), qos)))

    def cmqttsub(self, cmd: Command) -> None:
        index, client = self._client(cmd)
        assert client is not None
        if len(cmd.args) >= 3:
            qos = int(cmd.arg(2, int))
            size = int(cmd.arg(1, int))
            if not 0 < size <= MAX_TOPIC:
                raise CmqttError(LENGTH, index)

            def done(data: bytes) -> None:
                client.sub_topics.append((data.decode(), qos))
                self._ok()
                self._subscribe(index, client)

            self._prompt(size, done)
            return
        if not client.sub_topics:
            raise CmqttError(TOPIC_EMPTY, index)
        self._ok()
        self._subscribe(index, client)

    def _subscribe(self, index: int, client: MqttClient) -> None:
        topics, client.sub_topics = client.sub_topics, []
        session = client.session
        if session is None:
            self._send_line(f"+CMQTTSUB: {index},{NO_CONNECTION}")
            return

        async def subscribe() -> None:
            code = await session.subscribe(topics)
            self._urc(f"+CMQTTSUB: {index},{code}")

        self._later(subscribe)

    def cmqttunsubtopic(self, cmd: Command) -> None:
        self._data(cmd, MAX_TOPIC, lambda c, d: c.unsub_topics.append(d.decode()))

    def cmqttunsub(self, cmd: Command) -> None:
        index, client = self._client(cmd)
        assert client is not None
        if not client.unsub_topics:
            raise CmqttError(TOPIC_EMPTY, index)
        topics, client.unsub_topics = client.unsub_topics, []
        session = client.session
        if session is None:
            raise CmqttError(NO_CONNECTION, index)
        self._ok()

        async def unsubscribe() -> None:
            code = await session.unsubscribe(topics)
            self._urc(f"+CMQTTUNSUB: {index},{code}")

        self._later(unsubscribe)

    def _rx(self, index: int, topic: str, payload: bytes, generation: int) -> None:
        """An incoming message, as the module's +CMQTTRX… URC block, after the downlink delay."""
        raw_topic = topic.encode()

        async def deliver() -> None:
            if generation != self._generation or not self.powered:
                return
            self._unsolicited(
                f"\r\n+CMQTTRXSTART: {index},{len(raw_topic)},{len(payload)}\r\n"
                f"+CMQTTRXTOPIC: {index},{len(raw_topic)}\r\n".encode()
                + raw_topic
                + f"\r\n+CMQTTRXPAYLOAD: {index},{len(payload)}\r\n".encode()
                + payload
                + f"\r\n+CMQTTRXEND: {index}\r\n".encode()
            )

        self._link.down.send(deliver)


_HANDLERS: dict[str, Callable[[Sim7600, Command], None]] = {
    "AT": Sim7600.at,
    "ATE": Sim7600.ate,
    "+CMEE": Sim7600.cmee_,
    "+CPIN": Sim7600.cpin,
    "+CREG": Sim7600.creg,
    "+CEREG": Sim7600.creg,
    "+CSQ": Sim7600.csq,
    "+CPSI": Sim7600.cpsi,
    "+CGDCONT": Sim7600.cgdcont,
    "+CGACT": Sim7600.cgact,
    "+NETOPEN": Sim7600.netopen,
    "+NETCLOSE": Sim7600.netclose,
    "+CGPADDR": Sim7600.cgpaddr,
    "+CCERTDOWN": Sim7600.ccertdown,
    "+CCERTLIST": Sim7600.ccertlist,
    "+CCERTDELE": Sim7600.ccertdele,
    "+CSSLCFG": Sim7600.csslcfg,
    "+CMQTTSTART": Sim7600.cmqttstart,
    "+CMQTTSTOP": Sim7600.cmqttstop,
    "+CMQTTACCQ": Sim7600.cmqttaccq,
    "+CMQTTREL": Sim7600.cmqttrel,
    "+CMQTTCFG": Sim7600.cmqttcfg,
    "+CMQTTSSLCFG": Sim7600.cmqttsslcfg,
    "+CMQTTCONNECT": Sim7600.cmqttconnect,
    "+CMQTTDISC": Sim7600.cmqttdisc,
    "+CMQTTTOPIC": Sim7600.cmqtttopic,
    "+CMQTTPAYLOAD": Sim7600.cmqttpayload,
    "+CMQTTPUB": Sim7600.cmqttpub,
    "+CMQTTSUBTOPIC": Sim7600.cmqttsubtopic,
    "+CMQTTSUB": Sim7600.cmqttsub,
    "+CMQTTUNSUBTOPIC": Sim7600.cmqttunsubtopic,
    "+CMQTTUNSUB": Sim7600.cmqttunsub,
    **HTTP_HANDLERS,
}
