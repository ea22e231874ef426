"""The harness's MQTT client: every message in and out recorded, and awaited from a cursor.

It owns one aiomqtt connection as an async context manager. Each record carries time,
direction, topic, QoS and payload and goes to the current test's `mqtt.jsonl` as it happens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomqtt

from hil.broker import BrokerEndpoint, BrokerError

log = logging.getLogger("hil.mqtt")

Match = str | re.Pattern[str] | Callable[["MqttRecord"], bool] | None
# What a record keeps of a payload: the modem's own limit is 10,240 bytes a publish, so anything
# longer is already wrong, and its first 64 KiB say enough about it.
MAX_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class MqttRecord:
    index: int
    time: float
    direction: str  # "in" (from the broker) or "out" (published by the harness)
    topic: str
    qos: int
    payload: bytes  # at most MAX_PAYLOAD bytes of it: see `size`
    retain: bool = False  # the broker's stored copy, sent on subscribing, not a live message
    size: int = -1  # the payload's real length when it was cut, else -1

    @property
    def cut(self) -> bool:
        return self.size >= 0

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    def to_json(self) -> str:
        try:
            payload, encoding = self.payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(self.payload).decode(), "base64"
        return json.dumps(
            {
                "time": datetime.fromtimestamp(self.time).isoformat(timespec="milliseconds"),
                "dir": self.direction,
                "topic": self.topic,
                "qos": self.qos,
                "payload": payload,
                "encoding": encoding,
                **({"size": self.size} if self.cut else {}),
            }
        )


class MqttTimeout(AssertionError):
    """The device did not publish what the test waited for."""


def tls_context(endpoint: BrokerEndpoint) -> ssl.SSLContext | None:
    """An SSL context verifying the broker against the rig's CA (unless `insecure` is written)."""
    tls = endpoint.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    if tls.cert and tls.key:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _ConnectErrors(logging.Handler):
    """paho's socket errors while connecting.

    aiomqtt ignores a connection the broker drops before CONNACK and waits out its timeout; a
    broker that wants a client certificate drops it just so, with only this log line to say why.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        self.seen = asyncio.Event()
        self._loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._loop.call_soon_threadsafe(self.seen.set)


_REFUSED_CREDENTIALS = (4, 5, 134, 135)  # CONNACK: bad user name or password, not authorized


def _connect_failure(endpoint: BrokerEndpoint, error: str, rc: object, socket_errors: str) -> str:
    """What went wrong connecting and what to change, in the rig's terms."""
    tls = endpoint.tls
    if "CERTIFICATE_VERIFY_FAILED" in error:
        if "mismatch" in error:
            return (
                f"server certificate does not match host {endpoint.host} ({error}); use a "
                "[broker] host the certificate names"
            )
        ca = tls.ca if tls and tls.ca else "the system CAs"
        return (
            f"server certificate not trusted by ca {ca} ({error}); set [broker] ca to the "
            "CA that signed the broker's certificate"
        )
    if "CERTIFICATE_REQUIRED" in socket_errors:
        return "broker requires a client certificate: set cert and key in [broker]"
    if tls and tls.cert and "ALERT" in socket_errors:
        return (
            f"broker refused the client certificate {tls.cert} ({socket_errors}); set cert "
            "and key in [broker] to a pair signed by the broker's CA"
        )
    code = getattr(rc, "value", rc)
    if code in _REFUSED_CREDENTIALS:
        source = f"from ${endpoint.password_env}" if endpoint.password_env else "no password_env"
        return (
            f"bad username or password ({source}); check [broker] username and the "
            "password variable"
        )
    detail = "; ".join(filter(None, (error, socket_errors)))
    return f"{detail}; check [broker] host, port, TLS files, username and the password variable"


def _matches(record: MqttRecord, match: Match) -> bool:
    if match is None:
        return True
    if isinstance(match, str):
        return record.text == match
    if isinstance(match, re.Pattern):
        return match.fullmatch(record.text) is not None
    return bool(match(record))


class BrokerLost(BrokerError):
    """The broker went away mid-run and did not come back: the rig is at fault."""


class MqttRecorder:
    """One client connection for a test session, subscribed to the device's status topic."""

    RECONNECT_S = 10.0
    RECONNECT_POLL_S = 0.5

    def __init__(
        self, endpoint: BrokerEndpoint, subscribe: list[str], client_id: str | None = None
    ) -> None:
        self.endpoint = endpoint
        self.topics = subscribe
        self.client_id = client_id or f"hil-{uuid.uuid4().hex[:8]}"
        self.records: list[MqttRecord] = []
        self.cursor = 0
        self.sink: Callable[[str], None] | None = None
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._taps: dict[str, list[asyncio.Queue[MqttRecord]]] = {}
        self.lost: BrokerLost | None = None

    def _new_client(self, logger: logging.Logger) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.endpoint.host,
            self.endpoint.port,
            username=self.endpoint.username,
            password=self.endpoint.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            tls_context=tls_context(self.endpoint),
            timeout=10,
            logger=logger,
        )

    async def __aenter__(self) -> MqttRecorder:
        errors = _ConnectErrors(asyncio.get_running_loop())
        paho_log = logging.getLogger(f"hil.mqtt.{self.client_id}")
        paho_log.addHandler(errors)
        paho_log.propagate = False
        self._client = self._new_client(paho_log)
        connect = asyncio.ensure_future(self._client.__aenter__())
        dropped = asyncio.ensure_future(errors.seen.wait())
        try:
            await asyncio.wait({connect, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if not connect.done():
                connect.cancel()
            error, rc = "", None
            try:
                await connect
            except asyncio.CancelledError:
                error = "the broker closed the connection"
            except aiomqtt.MqttError as exc:
                error, rc = str(exc), getattr(exc, "rc", None)
        finally:
            dropped.cancel()
            paho_log.removeHandler(errors)
            paho_log.propagate = True
        if error:
            self._client = None
            reason = _connect_failure(self.endpoint, error, rc, "; ".join(errors.messages))
            raise BrokerError(
                f"cannot connect to broker {self.endpoint} as {self.client_id}: {reason}"
            )
        for topic in self.topics:
            await self._client.subscribe(topic, qos=1)
        self._reader = asyncio.create_task(self._read(), name="hil-mqtt-reader")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self._client:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await self._client.__aexit__(None, None, None)
            self._client = None

    async def _read(self) -> None:
        """Record what comes in; a dropped connection is taken up again, or reported."""
        while True:
            assert self._client is not None
            try:
                async for message in self._client.messages:
                    payload = message.payload
                    if isinstance(payload, str):
                        payload = payload.encode()
                    elif not isinstance(payload, bytes | bytearray):
                        payload = str(payload).encode()
                    await self._add(
                        "in", message.topic.value, message.qos, bytes(payload), bool(message.retain)
                    )
                return
            except aiomqtt.MqttError as exc:
                if not await self._reconnect(exc):
                    return

    async def _reconnect(self, cause: Exception) -> bool:
        """Connect again within RECONNECT_S (a broker restart); else every wait and publish
        fails with BrokerLost, a rig error naming the broker, not a device timeout."""
        log.warning("lost the connection to broker %s: %s; reconnecting", self.endpoint, cause)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.__aexit__(None, None, None), 1.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.RECONNECT_S
        last: Exception = cause
        while loop.time() < deadline:
            client = self._new_client(logging.getLogger(f"hil.mqtt.{self.client_id}"))
            try:
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    await client.__aenter__()
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(self.RECONNECT_POLL_S)  # paces the retries, bounded above
                continue
            self._client = client
            log.warning("reconnected to broker %s", self.endpoint)
            return True
        self.lost = BrokerLost(
            f"lost the connection to broker {self.endpoint} ({cause}) and could not reconnect "
            f"within {self.RECONNECT_S:g} s ({last}); check that the broker is running and "
            "reachable ([broker] in the rig file)"
        )
        async with self._changed:
            self._changed.notify_all()
        return False

    async def _add(
        self, direction: str, topic: str, qos: int, payload: bytes, retain: bool = False
    ) -> MqttRecord:
        size = len(payload) if len(payload) > MAX_PAYLOAD else -1
        payload = payload[:MAX_PAYLOAD]  # a flood of huge messages must not fill memory
        async with self._changed:
            record = MqttRecord(
                len(self.records), time.time(), direction, topic, qos, payload, retain, size
            )
            self.records.append(record)
            self._changed.notify_all()
        if self.sink:
            self.sink(record.to_json() + "\n")
        if direction == "in":
            for queue in self._taps.get(topic, []):
                queue.put_nowait(record)
        return record

    async def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> MqttRecord:
        """Publish and record; with QoS 1 this returns once the broker has acknowledged it."""
        if self.lost is not None:
            raise self.lost
        if self._client is None:
            raise BrokerError("MQTT client used outside its session")
        data = payload.encode() if isinstance(payload, str) else payload
        record = await self._add("out", topic, qos, data)
        try:
            await self._client.publish(topic, data, qos=qos)
        except aiomqtt.MqttError as exc:
            raise BrokerLost(
                f"could not publish to broker {self.endpoint}: {exc}; check that the broker is "
                "running and reachable ([broker] in the rig file)"
            ) from None
        return record

    def mark(self) -> int:
        return len(self.records)

    def skip(self) -> None:
        """Move the cursor past everything received so far."""
        self.cursor = self.mark()

    def last_received(self, topic: str) -> MqttRecord | None:
        """The newest live message that came in on `topic` (a retained copy is not news)."""
        for record in reversed(self.records):
            if record.direction == "in" and record.topic == topic and not record.retain:
                return record
        return None

    def received(self, topic: str, since: int = 0) -> list[MqttRecord]:
        return [r for r in self.records[since:] if r.direction == "in" and r.topic == topic]

    async def expect(
        self, topic: str, match: Match = None, timeout: float = 10.0, *, since: int | None = None
    ) -> MqttRecord:
        """Wait for an incoming message on `topic` matching `match` at or after the cursor.

        `match` is the exact payload text, a regex the whole payload must match, or a predicate.
        On a match the cursor moves past it, so consecutive expects check order.
        """
        start = self.cursor if since is None else since
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._changed:
            while True:
                for record in self.records[start:]:
                    incoming = record.direction == "in" and record.topic == topic
                    if incoming and _matches(record, match):
                        self.cursor = record.index + 1
                        return record
                start = len(self.records)
                if self.lost is not None:
                    raise self.lost
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise MqttTimeout(self._timeout_message(topic, match, timeout))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    def _timeout_message(self, topic: str, match: Match, timeout: float) -> str:
        want = match.pattern if isinstance(match, re.Pattern) else match
        if callable(want):
            want = getattr(want, "__name__", "a predicate")
        seen = self.received(topic)[-8:]
        tail = "\n".join(f"    {r.text[:120]!r}" for r in seen) or "    (nothing)"
        return (
            f"mqtt: no message on {topic!r} matching {want!r} within {timeout:g} s; "
            f"the last ones on that topic were:\n{tail}"
        )

    @contextlib.asynccontextmanager
    async def tap(self, topic: str) -> AsyncIterator[asyncio.Queue[MqttRecord]]:
        """A queue of every message arriving on `topic` while the block runs."""
        queue: asyncio.Queue[MqttRecord] = asyncio.Queue()
        self._taps.setdefault(topic, []).append(queue)
        try:
            yield queue
        finally:
            self._taps[topic].remove(queue)
