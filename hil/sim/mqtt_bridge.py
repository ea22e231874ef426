"""One MQTT connection the emulated modem holds to the real broker, over aiomqtt.

The modem's socket is what the broker sees: the protocol level the firmware configured, the
client id it acquired, its keepalive and clean-session flag, and for an SSL/TLS client the
handshake its SSL context asks for (hil.sim.tls). A modem that loses power takes no leave of
the broker, so `abort` drops the TCP connection without an MQTT DISCONNECT.

The keepalive is the module's own (SIM7500/SIM7600 MQTT AT Command Manual: `<keepalive_time>`
of AT+CMQTTCONNECT, the connection's loss reported as `+CMQTTCONNLOST: <client>,<cause>`): a
PINGREQ once a keepalive passed without a packet either way, and the link taken for dead when
the broker has sent nothing for keepalive x 1.5 with that PINGREQ unanswered, the grace MQTT
3.1.1 (section 3.1.2.10) gives the server. The module then closes its socket. A link that goes
silent without closing is noticed by this alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiomqtt
import paho.mqtt.client as mqtt

from hil.sim.tls import CERT_NOT_SET, HANDSHAKE_FAIL, CertificateNotSet, TlsSettings

log = logging.getLogger("hil.sim.mqtt_bridge")

CONNECT_TIMEOUT_S = 10.0
BROKER_GRACE = 1.5  # a broker drops a silent client after 1.5 x its keepalive (MQTT 3.1.1)
KEEPALIVE_CHECKS = 20  # the module looks at its keepalive timers this often per keepalive
_SILENT: set[int] = set()  # sockets of sessions whose modem lost power, held until the broker
# gives up on them


def _close_quietly(fd: int) -> None:
    if fd in _SILENT:
        _SILENT.discard(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def close_silent_sessions() -> None:
    """Close every socket still held for a powered-off modem (the twin is stopping)."""
    for fd in list(_SILENT):
        _close_quietly(fd)


# CONNACK refusal codes (MQTT 3.1/3.1.1) to the modem's +CMQTTCONNECT error codes. paho 2
# hands a 3.1.1 refusal on as the MQTT 5 reason code it stands for (convert_connack_rc_to_
# reason_code: 1 -> 132, 2 -> 133, 3 -> 136, 4 -> 134, 5 -> 135).
_REFUSED = {1: 27, 2: 28, 3: 29, 4: 30, 5: 31, 132: 27, 133: 28, 136: 29, 134: 30, 135: 31}
SOCK_CONNECT_FAIL = 3
NO_CONNECTION = 11
TIMEOUT = 17


@dataclass(frozen=True)
class ConnectParams:
    host: str
    port: int
    client_id: str
    version: int  # 3 = MQTT 3.1, 4 = MQTT 3.1.1 (AT+CMQTTCFG="version")
    keepalive: int
    clean: bool
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = field(default=None, repr=False)  # None: MQTT over plain TCP


class BrokerSession:
    """A connected client; `on_message(topic, payload)` and `on_lost()` report the broker's side."""

    def __init__(
        self,
        params: ConnectParams,
        on_message: Callable[[str, bytes], None],
        on_lost: Callable[[], None],
    ) -> None:
        protocol = aiomqtt.ProtocolVersion.V31
        if params.version == 4:
            protocol = aiomqtt.ProtocolVersion.V311
        self._tls = params.tls is not None
        self._refused: int | None = None  # the TLS setup's error code, answered at connect
        tls_context = None
        if params.tls is not None:
            try:
                tls_context = params.tls.context()
            except CertificateNotSet:
                self._refused = CERT_NOT_SET
            except ssl.SSLError:
                self._refused = HANDSHAKE_FAIL
        self._client = aiomqtt.Client(
            params.host,
            params.port,
            identifier=params.client_id,
            protocol=protocol,
            clean_session=params.clean,
            keepalive=params.keepalive,
            username=params.username,
            password=params.password,
            timeout=CONNECT_TIMEOUT_S,
            tls_context=tls_context,
        )
        self._on_message = on_message
        self._on_lost = on_lost
        self._keepalive = params.keepalive
        self._reader: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()

    async def connect(self) -> int:
        """Connect; 0 or the modem's error code for the failure."""
        if self._refused is not None:
            return self._refused
        try:
            await self._client.__aenter__()
        except asyncio.CancelledError:  # the power went, or the twin stops, mid-connect
            # aiomqtt leaves the socket open, the broker waiting on it; when it closes, aiomqtt's
            # callback asks the cancelled CONNACK future for its exception and raises.
            with contextlib.suppress(OSError):
                self._client._client._sock_close()
            self._collect()
            raise
        except aiomqtt.MqttCodeError as exc:
            code = exc.rc if isinstance(exc.rc, int) else getattr(exc.rc, "value", 1)
            return _REFUSED.get(code, SOCK_CONNECT_FAIL)
        except (aiomqtt.MqttError, OSError) as exc:
            # aiomqtt keeps only the text of what paho raised: an SSLError's starts "[SSL".
            if self._tls and (isinstance(exc, ssl.SSLError) or str(exc).startswith("[SSL")):
                return HANDSHAKE_FAIL
            return SOCK_CONNECT_FAIL
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        if self._keepalive:
            self._keepalive_task = loop.create_task(self._keep_alive())
        return 0

    async def _keep_alive(self) -> None:
        """Ping the broker and give the link up as the module does (see the module docstring).

        paho's own check (a PINGREQ's answer awaited a whole keepalive, looked at once a
        second) is switched off for this one: the module's timers decide, not paho's.
        """
        paho = self._client._client  # the timers live in paho; aiomqtt does not show them
        paho._check_keepalive = lambda: None
        keepalive = float(self._keepalive)
        while True:
            await asyncio.sleep(keepalive / KEEPALIVE_CHECKS)
            now = time.monotonic()  # paho's clock (paho.mqtt.client.time_func)
            last_in = paho._last_bytes_received
            if paho._ping_t and now - last_in >= keepalive * BROKER_GRACE:
                log.info("keepalive: no PINGRESP from the broker; the link is dead")
                paho._sock_close()
                paho._do_on_disconnect(
                    packet_from_broker=False, v1_rc=mqtt.MQTTErrorCode.MQTT_ERR_KEEPALIVE
                )
                return
            if not paho._ping_t and now - min(last_in, paho._last_msg_out) >= keepalive:
                paho._send_pingreq()

    async def _read(self) -> None:
        try:
            async for message in self._client.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                self._on_message(message.topic.value, data)
        except aiomqtt.MqttError:
            if not self._closing:
                self._on_lost()

    async def publish(
        self, topic: str, payload: bytes, qos: int, timeout: float, retain: bool = False
    ) -> int:
        """0 once the broker has it (PUBACK at QoS 1); 17 when that takes over `timeout`."""
        return await self._exchange(
            self._client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf),
            timeout,
        )

    async def subscribe(self, topics: list[tuple[str, int]]) -> int:
        return await self._exchange(self._client.subscribe(topics), None)

    async def unsubscribe(self, topics: list[str]) -> int:
        return await self._exchange(self._client.unsubscribe(topics), None)

    async def _exchange(self, operation: Awaitable[object], timeout: float | None) -> int:
        """The modem's result code for one request to the broker.

        aiomqtt waits for an acknowledgement even after the connection died; a session that
        was aborted or closed answers at once instead, so the modem's FIFO to the broker never
        waits behind a request of a connection that no longer exists.
        """
        request = asyncio.ensure_future(operation)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait(
                {request, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (request, closed):
                task.cancel()
            await asyncio.gather(request, closed, return_exceptions=True)
        if request not in done:
            return NO_CONNECTION if closed in done else TIMEOUT
        if request.cancelled() or isinstance(request.exception(), aiomqtt.MqttError):
            return NO_CONNECTION
        request.result()
        return 0

    async def disconnect(self) -> None:
        """A clean MQTT DISCONNECT, as AT+CMQTTDISC sends."""
        self._closing = True
        self._closed.set()
        await self._stop_reader()
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            await self._client.__aexit__(None, None, None)
        self._collect()

    async def abort(self) -> None:
        """Go silent, as a modem losing power does: no DISCONNECT, no FIN, no RST.

        The broker learns of it only when its keepalive runs out (1.5 x keepalive), as with a
        real module whose supply was cut. The socket is kept open, unread, until then.
        """
        self._closing = True
        self._closed.set()
        await self._stop_reader()
        paho = self._client._client  # aiomqtt offers no abort: go under it to paho
        sock = paho.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                held = os.dup(sock.fileno())  # so paho closing its socket sends nothing
                asyncio.get_running_loop().call_later(
                    self._keepalive * BROKER_GRACE, _close_quietly, held
                )
                _SILENT.add(held)
            with contextlib.suppress(OSError):
                paho._sock_close()  # unregisters from the event loop, then closes its fd
        with contextlib.suppress(aiomqtt.MqttError, OSError, Exception):
            await asyncio.wait_for(self._client.__aexit__(None, None, None), 2.0)
        self._collect()

    def _collect(self) -> None:
        """Take the outcome aiomqtt left on its connection futures, now nothing else will.

        A connection the broker drops while the session closes (a stopping twin whose broker
        stops too) leaves an "Unexpected disconnection" on aiomqtt's `_disconnected`: the
        reader that would have taken it is cancelled, and aiomqtt's exit returns early on a
        future already done without taking it. Untaken, asyncio logs it at garbage collection
        as "Future exception was never retrieved".
        """
        for future in (self._client._connected, self._client._disconnected):
            if future.done() and not future.cancelled():
                future.exception()

    async def _stop_reader(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            await asyncio.gather(self._keepalive_task, return_exceptions=True)
            self._keepalive_task = None
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._reader = None
